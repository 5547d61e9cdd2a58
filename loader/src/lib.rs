//! tapio-load: loads the tapio-probes eBPF bundle on the running kernel, attaches what that
//! kernel can run, decodes events into typed records and says plainly what it could not do.

pub mod attribution;
pub mod btf;
pub mod btf_minimize;
pub mod cgroup2;
pub mod cgroup_link;
pub mod config;
pub mod config_watch;
pub mod check;
pub mod bundle;
pub mod dns;
pub mod errors;
pub mod events;
pub mod features;
pub mod helpers;
pub mod inspect;
pub mod layout;
pub mod lint;
pub mod logging;
pub mod monitors;
pub mod output;
pub mod pin;
pub mod plan;
pub mod privileges;
pub mod run;
pub mod snapshot;
pub mod sock_owners;
pub mod tracefs;
pub mod transport;
pub mod workload;
