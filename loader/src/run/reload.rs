//! Configuration changes while the run streams: SIGHUP, or an edit of the watched file
//! (crate::config_watch). What can change without reloading a program is applied; an invalid
//! file changes nothing.

use std::{sync::atomic::Ordering, time::Duration};

use tracing::{info, warn};

use crate::{
    config::{self, Config, Reload},
    dns::Sequencer,
    events::DecodeOptions,
    filter,
    output::metrics::{Counters, SharedObjects},
};

/// Re-reads the configuration file and applies what can change without reloading any program
/// (argv_max, dns_timeout_ms, the advanced monitor's sampling, dedup window, batch size and
/// flush bound). An invalid file is refused and the running values stay. `trigger` starts the
/// log line. Returns the new configuration, for the caller's filters.
pub(super) fn reload(
    trigger: &str,
    decode: &mut DecodeOptions,
    dns: &mut Sequencer,
    source: Option<&Reload>,
    counters: &Counters,
    objects: &SharedObjects,
) -> Option<Config> {
    let Some(source) = source else {
        warn!("{trigger}: no --config file to re-read; ignored");
        return None;
    };
    match source.load() {
        Ok(config) => {
            decode.argv_max = config.argv_max;
            decode.dns_timeout = Duration::from_millis(config.dns_timeout_ms);
            dns.set_window(decode.dns_timeout);
            config::reload_advanced(objects.iter().map(|(_, ebpf)| ebpf), &config);
            counters.config_reloads.fetch_add(1, Ordering::Relaxed);
            info!(argv_max = config.argv_max, dns_timeout_ms = config.dns_timeout_ms, "{trigger}: configuration reloaded");
            Some(config)
        }
        Err(e) => {
            counters.config_reload_errors.fetch_add(1, Ordering::Relaxed);
            warn!("{trigger}: {e}; keeping the running configuration");
            None
        }
    }
}

/// A reload's filters: the agent applies them from the next event; the kernel maps are rewritten
/// in place after the current pass (no program is detached). Objects loaded without the kernel
/// filter cannot turn it on (its switch is read-only after load): the agent applies it there.
pub(super) fn filters_reloaded(filtering: &mut filter::Active, filters: filter::Filters) {
    if filtering.filters == filters {
        return;
    }
    if !filtering.kernel_on && filters.any() {
        warn!("filters: the monitors were loaded without the kernel filter; the new filters apply in the agent until the next start");
    }
    info!(filters = ?filters, "filters: reloaded");
    filtering.filters = filters;
    filtering.dirty = true;
}
