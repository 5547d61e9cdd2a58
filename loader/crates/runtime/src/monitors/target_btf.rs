//! The BTF a monitor is relocated against and its fentry/fexit programs are resolved in, held so
//! that at most one parsed copy of the kernel's types is alive at a time.
//!
//! Why this is not simply a `&Btf` parsed once and lent to every load: aya's `EbpfLoader::new()`
//! parses `/sys/kernel/btf/vmlinux` itself, whatever the caller lends it afterwards. A caller
//! that keeps its own parsed copy for the whole start-up therefore holds two at every
//! `EbpfLoader::new()`: on 6.18 with aya 0.14 one copy is 12.5 MB of heap (125,872 types of 72
//! bytes each in a 9.4 MB vector, 2.3 MB of strings, the members) and the parse reads the 5.5 MB
//! file whole besides, which made the agent's start-up peak 48 MiB. With the kernel's own BTF
//! each loader's copy is used as it is and dropped with the loader, and the few fentry/fexit
//! programs get a copy of their own after it ([`FexitTypes`]).

use aya::{Btf, BtfError, EbpfLoader};

/// Where aya reads the kernel's BTF (`Btf::from_sys_fs`, `EbpfLoader::new`).
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The BTF objects are relocated against.
#[derive(Debug, Clone, Copy)]
pub enum TargetBtf<'a> {
    /// The running kernel's own: each object's loader parses it and drops it with the loader, and
    /// fentry/fexit programs parse it once more when one is loaded. Parse it once first
    /// (`Btf::from_sys_fs`) and drop it: aya's loader treats a kernel BTF it cannot read or
    /// parse as none and would load without relocating.
    Kernel,
    /// Types the caller parsed (an external BTF file), lent to every load.
    Parsed(&'a Btf),
    /// No BTF: nothing is relocated and fentry/fexit programs cannot load.
    Off,
}

impl<'a> From<Option<&'a Btf>> for TargetBtf<'a> {
    fn from(btf: Option<&'a Btf>) -> Self {
        btf.map_or(Self::Off, Self::Parsed)
    }
}

impl<'a> From<&'a Btf> for TargetBtf<'a> {
    fn from(btf: &'a Btf) -> Self {
        Self::Parsed(btf)
    }
}

impl<'a> TargetBtf<'a> {
    /// A loader relocating against this BTF. For [`TargetBtf::Kernel`] it keeps the copy
    /// `EbpfLoader::new()` parsed; the other two replace it (and free it).
    pub fn loader(self) -> EbpfLoader<'a> {
        let mut loader = EbpfLoader::new();
        match self {
            Self::Kernel => {}
            Self::Parsed(btf) => {
                loader.btf(Some(btf));
            }
            Self::Off => {
                loader.btf(None);
            }
        }
        loader
    }
}

/// The types one monitor's fentry/fexit programs are resolved in: for [`TargetBtf::Kernel`] a
/// copy parsed the first time such a program is loaded, after the object's loader (and its copy)
/// is gone, and dropped with the monitor's load.
pub struct FexitTypes<'a> {
    target: TargetBtf<'a>,
    parsed: Option<Btf>,
}

impl<'a> FexitTypes<'a> {
    pub fn new(target: TargetBtf<'a>) -> Self {
        Self { target, parsed: None }
    }

    /// The BTF to resolve an fentry/fexit target in; None for [`TargetBtf::Off`].
    pub fn get(&mut self) -> Result<Option<&Btf>, BtfError> {
        match self.target {
            TargetBtf::Off => Ok(None),
            TargetBtf::Parsed(btf) => Ok(Some(btf)),
            TargetBtf::Kernel => {
                if self.parsed.is_none() {
                    self.parsed = Some(Btf::from_sys_fs()?);
                }
                Ok(self.parsed.as_ref())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fentry/fexit programs get the lent types as they are, none when BTF is off, and the
    /// kernel's own parsed once however many ask.
    #[test]
    fn fexit_types_follow_the_target() {
        let lent = Btf::new();
        let mut parsed = FexitTypes::new(TargetBtf::Parsed(&lent));
        assert!(parsed.get().expect("lent types").is_some_and(|b| std::ptr::eq(b, &lent)));
        assert!(FexitTypes::new(TargetBtf::Off).get().expect("no BTF is no error").is_none());
        if std::fs::metadata(KERNEL_BTF).is_err() {
            return; // a kernel without BTF: nothing more to look at here
        }
        let mut kernel = FexitTypes::new(TargetBtf::Kernel);
        assert!(kernel.parsed.is_none(), "nothing is parsed before a program asks");
        let first: *const Btf = kernel.get().expect("kernel BTF").expect("some");
        let again: *const Btf = kernel.get().expect("kernel BTF").expect("some");
        assert!(std::ptr::eq(first, again), "parsed once");
    }
}
