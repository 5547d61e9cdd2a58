//! The runtime's mirrors of what user space writes into a probe's maps (its configuration) have
//! the layout recorded in each object's own BTF. They live in tapio-runtime, beside the map code
//! that writes them, because aya needs them to implement `aya::Pod`; the mirrors of the records
//! the probes write are tapio-abi's and are checked by its own test (`loader/crates/abi/tests/layout.rs`),
//! which also shows that a drifted mirror is caught.

use tapio_object::{btf::StructLayout, layout::check_objects, mirror_layout};

fn mirrors() -> Vec<(&'static str, StructLayout)> {
    vec![
        // The source filter's flags word, in every object that carries the filter.
        ("process", mirror_layout!("tapio_filter_config", tapio_runtime::filter::FilterConfig { flags, _pad0 })),
        ("security", mirror_layout!("tapio_filter_config", tapio_runtime::filter::FilterConfig { flags, _pad0 })),
        (
            "security",
            mirror_layout!("security_config", tapio_runtime::monitors::security::SecurityConfig { init_mnt_ns, _pad0 }),
        ),
        (
            "advanced",
            mirror_layout!("advanced_config", tapio_runtime::monitors::advanced::AdvancedConfig {
                dedup_window_ns, flush_ns, batch_size, target_tgid, ignore_tgid, use_filter
            }),
        ),
    ]
}

/// Every architecture's bundle (the tests embed both), as for the record mirrors.
#[rstest::rstest]
fn runtime_config_mirrors_match_object_btf(#[values(tapio_bundle::Arch::X86_64, tapio_bundle::Arch::Arm64)] arch: tapio_bundle::Arch) {
    let objects = tapio_bundle::objects_for(arch).expect("all-arches embeds every bundle");
    let checked = check_objects(objects.iter().map(|o| (o.monitor, o.file, o.bytes)), &mirrors())
        .unwrap_or_else(|e| panic!("{arch} {e}"));
    assert!(checked >= 4, "{arch}: checked only {checked} struct layouts");
}
