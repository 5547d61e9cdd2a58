//! Reload on Kubernetes: the loader watches its configuration file. A ConfigMap volume is a
//! directory where `tapio.toml -> ..data/tapio.toml` and `..data -> ..<timestamp>`; the kubelet
//! updates it by writing a new `..<timestamp>` directory and renaming a `..data_tmp` symlink over
//! `..data`. The test builds that layout, swaps it as the kubelet does, and sees the new values
//! applied with the same programs attached (no detach, no signal); an invalid file swapped in is
//! refused and counted, and the running values stay.

mod common;

use std::{
    os::unix::fs::symlink,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{http_get, sample};

/// Writes `..<version>/tapio.toml` and points `..data` at it atomically, as the kubelet does.
fn configmap_update(dir: &Path, version: &str, text: &str) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir(&data).expect("create the ConfigMap version directory");
    std::fs::write(data.join("tapio.toml"), text).expect("write tapio.toml");
    let tmp = dir.join("..data_tmp");
    symlink(format!("..{version}"), &tmp).expect("symlink ..data_tmp");
    std::fs::rename(&tmp, dir.join("..data")).expect("rename ..data_tmp over ..data");
}

fn program_ids(page: &str) -> Vec<String> {
    page.lines().filter(|l| l.starts_with("tapio_program_id{")).map(str::to_owned).collect()
}

fn await_counter(port: u16, name: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = http_get(port, "/metrics");
        if sample(&page, name).unwrap_or(0.0) >= at_least || Instant::now() > deadline {
            return page;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_configmap_swap_is_applied_without_a_signal_or_a_detach() {
    if common::skip_unless_root("a_configmap_swap_is_applied_without_a_signal_or_a_detach") {
        return;
    }
    let _kernel = common::kernel_lock();
    let port = common::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |argv_max: u32| format!("monitors = [\"process\"]\nmetrics_address = \"127.0.0.1:{port}\"\nargv_max = {argv_max}\n");
    configmap_update(dir.path(), "2026_01_01_00_00_00.1", &config(8));
    symlink("..data/tapio.toml", dir.path().join("tapio.toml")).expect("symlink tapio.toml");
    let file = dir.path().join("tapio.toml");
    let loader = common::Loader::start(&["--config", file.to_str().expect("utf-8 path")]);
    let (_, before) = http_get(port, "/metrics");
    assert!(!program_ids(&before).is_empty(), "{before}");
    assert_eq!(sample(&before, "tapio_config_reloads_total"), Some(0.0), "{before}");

    // An invalid version is refused, counted, and changes nothing.
    configmap_update(dir.path(), "2026_01_01_00_00_00.2", "argv_max = 0\n");
    let refused = await_counter(port, "tapio_config_reload_errors_total", 1.0);
    assert_eq!(sample(&refused, "tapio_config_reload_errors_total"), Some(1.0), "the invalid swap was not seen:\n{refused}");

    configmap_update(dir.path(), "2026_01_01_00_00_00.3", &config(2));
    let after = await_counter(port, "tapio_config_reloads_total", 1.0);
    assert_eq!(sample(&after, "tapio_config_reloads_total"), Some(1.0), "the ConfigMap swap was not applied:\n{after}");
    assert_eq!(program_ids(&before), program_ids(&after), "program ids changed across the reload");

    // argv_max = 2 now applies to new execs.
    let mut seen = Vec::new();
    Command::new("/bin/echo").args(["a", "b", "c", "d"]).stdout(Stdio::null()).status().expect("run echo");
    let exec = loader
        .wait_for(&mut seen, Duration::from_secs(10), |e| e["event"] == "exec" && e["filename"].as_str().is_some_and(|f| f.ends_with("/echo")))
        .unwrap_or_else(|| panic!("no exec of echo; saw {seen:?}"));
    assert_eq!(exec.event["argv"].as_array().map(Vec::len), Some(2), "{}", exec.event);

    // A touch that changes nothing is not a reload.
    let current = dir.path().join("..2026_01_01_00_00_00.3").join("tapio.toml");
    std::fs::write(&current, config(2)).expect("rewrite the same content");
    std::thread::sleep(Duration::from_millis(500));
    let (_, quiet) = http_get(port, "/metrics");
    assert_eq!(sample(&quiet, "tapio_config_reloads_total"), Some(1.0), "an unchanged file was reloaded:\n{quiet}");

    let (_, stderr, status) = loader.finish();
    assert!(status.success(), "tapio-load failed: {stderr}");
    assert!(stderr.contains("config file changed: configuration reloaded"), "{stderr}");
}
