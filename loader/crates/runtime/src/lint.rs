//! The bundle's half of `tapio-load lint`: which of the embedded objects a kernel of a given
//! version gets. The lint itself (judging objects against a kernel version) is an offline object
//! tool, `tapio_object::lint`; choosing among the bundle's variants needs the bundle, which the
//! object tools may not import, so it stays here with the rest of the runtime's choices of
//! object.

use thiserror::Error;

use crate::bundle::{self, EmbeddedObject, Transport};
use tapio_object::lint::KernelVersion;

/// Why the bundle's objects for a kernel could not be listed.
#[derive(Debug, Error)]
pub enum BundleError {
    #[error("lint: no {arch} bundle in this build (build tapio-load with `--features all-arches`)")]
    NoBundle { arch: bundle::Arch },
}

const fn v(major: u32, minor: u32) -> KernelVersion {
    KernelVersion::new(major, minor)
}

/// The first kernel an embedded object is built for, beyond its transport: the `.bloom.` build of
/// a monitor is its bloom-filter variant (5.16); every other object is for every kernel.
fn variant_since(object: &EmbeddedObject) -> KernelVersion {
    if object.file.contains(".bloom.") {
        v(5, 16)
    } else {
        v(0, 0)
    }
}

/// The variants of `arch`'s bundle meant for kernel `min`: the ring-buffer objects from 5.8, the
/// perf-buffer (legacy) objects before, and optional variants (bloom filter) only from their own
/// version. Another architecture than the binary's own is there only with `all-arches`.
pub fn bundle_objects_for(min: KernelVersion, arch: bundle::Arch) -> Result<Vec<&'static EmbeddedObject>, BundleError> {
    let transport = if min >= v(5, 8) { Transport::Ringbuf } else { Transport::Perf };
    let objects = bundle::objects_for(arch).ok_or(BundleError::NoBundle { arch })?;
    Ok(objects.iter().filter(|o| o.transport == transport && variant_since(o) <= min).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_object::lint::{lint, render_text, Gate, LintReport, Severity};

    fn bundle_report(min: &str) -> LintReport {
        let min = KernelVersion::parse(min).unwrap();
        let objects: Vec<(String, &[u8])> =
            bundle_objects_for(min, bundle::Arch::TARGET).unwrap().iter().map(|o| (o.file.to_owned(), o.bytes)).collect();
        lint(&objects, min, Some(bundle::Arch::TARGET)).unwrap()
    }

    #[test]
    fn picks_the_variants_for_a_kernel() {
        let t = bundle::Arch::TARGET;
        assert!(bundle_objects_for(v(4, 19), t).unwrap().iter().all(|o| o.transport == Transport::Perf));
        assert!(bundle_objects_for(v(5, 8), t).unwrap().iter().all(|o| o.transport == Transport::Ringbuf));
        assert!(bundle_objects_for(v(6, 1), t).unwrap().iter().all(|o| o.transport == Transport::Ringbuf));
        assert!(!bundle_objects_for(v(5, 8), t).unwrap().iter().any(|o| o.file.contains(".bloom.")));
        assert!(bundle_objects_for(v(5, 8), t).unwrap().iter().all(|o| o.arch == t));
    }

    #[test]
    fn probe_read_user_is_rewritten_not_missing_at_4_19() {
        let report = bundle_report("4.19");
        let rewritten: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.gate == Gate::Helper && f.name.starts_with("bpf_probe_read_"))
            .collect();
        assert!(!rewritten.is_empty());
        assert!(rewritten.iter().all(|f| f.severity == Severity::Rewritten));
    }

    #[test]
    fn legacy_variants_are_clean_at_4_19() {
        let report = bundle_report("4.19");
        assert!(!report.failed(), "{}", render_text(&report));
    }

    #[rstest::rstest]
    fn ringbuf_variants_are_clean_on_5_8_and_newer(#[values("5.8", "5.16", "6.1")] min: &str) {
        let report = bundle_report(min);
        assert!(!report.failed(), "{}", render_text(&report));
    }
}
