//! `tapio-load inspect`: what each embedded object holds, read offline from the ELF alone.
//!
//! Nothing is loaded into the kernel. Programs, maps and instructions come from aya-obj's parser;
//! section names, helper calls, the CO-RE relocation count and the architecture (the build's
//! note, checked against the code: [`crate::arch`]) are read here. The portability lint builds on
//! the same report.

use std::collections::BTreeSet;

use object::{Object as _, ObjectSection as _};
use serde::Serialize;
use thiserror::Error;

use crate::{arch, btf, helpers::helper_name};

/// Why an object could not be inspected.
#[derive(Debug, Error)]
pub enum InspectError {
    #[error("inspect {file}: not a valid BPF ELF object: {detail}")]
    Elf { file: String, detail: String },
    #[error("inspect {file}: {source}")]
    Btf {
        file: String,
        #[source]
        source: btf::BtfError,
    },
    #[error("inspect {file}: program {program} has no code")]
    NoCode { file: String, program: String },
}

/// One program of an object.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramInfo {
    pub name: String,
    pub section: String,
    pub program_type: String,
    /// What it attaches to (`sched/sched_process_exec`), empty when the section names none.
    pub attach_target: String,
    pub instructions: usize,
    pub helpers: Vec<String>,
}

/// One map of an object.
#[derive(Debug, Clone, Serialize)]
pub struct MapInfo {
    pub name: String,
    pub map_type: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// Everything `inspect` reports about one object.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectInfo {
    pub file: String,
    /// The architecture it was built for, and the code that shows it.
    pub arch: arch::ArchInfo,
    pub programs: Vec<ProgramInfo>,
    pub maps: Vec<MapInfo>,
    pub core_relocations: usize,
}

/// The kernel's name for a map type (`enum bpf_map_type`), or the number.
pub fn map_type_name(t: u32) -> String {
    const NAMES: &[&str] = &[
        "unspec", "hash", "array", "prog_array", "perf_event_array", "percpu_hash", "percpu_array",
        "stack_trace", "cgroup_array", "lru_hash", "lru_percpu_hash", "lpm_trie", "array_of_maps",
        "hash_of_maps", "devmap", "sockmap", "cpumap", "xskmap", "sockhash", "cgroup_storage",
        "reuseport_sockarray", "percpu_cgroup_storage", "queue", "stack", "sk_storage",
        "devmap_hash", "struct_ops", "ringbuf", "inode_storage", "task_storage", "bloom_filter",
        "user_ringbuf", "cgrp_storage",
    ];
    NAMES.get(t as usize).map_or_else(|| t.to_string(), |n| (*n).to_owned())
}

/// Splits a section name into (program type, attach target), as libbpf names sections.
pub fn classify_section(section: &str) -> (String, String) {
    let (kind, rest) = section.split_once('/').unwrap_or((section, ""));
    let program_type = match kind {
        "tracepoint" | "tp" => "tracepoint",
        "raw_tracepoint" | "raw_tp" => "raw_tracepoint",
        "tp_btf" => "tracing (tp_btf)",
        "fentry" => "tracing (fentry)",
        "fexit" => "tracing (fexit)",
        "kprobe" => "kprobe",
        "kretprobe" => "kprobe (return)",
        "lsm" => "lsm",
        "xdp" => "xdp",
        "tc" | "classifier" => "sched_cls",
        "socket" => "socket_filter",
        other => other,
    };
    (program_type.to_owned(), rest.to_owned())
}

/// An object's bytes read twice, as the offline tools need them: the ELF (sections, symbols,
/// notes) and aya-obj's parse (programs, maps, relocations). The error is what is wrong, for the
/// caller to name the file in its own error.
pub(crate) fn parse(bytes: &[u8]) -> Result<(object::File<'_>, aya_obj::Object), String> {
    let elf = object::File::parse(bytes).map_err(|e| e.to_string())?;
    let parsed = aya_obj::Object::parse(bytes).map_err(|e| {
        // aya-obj's top-level message is generic; its source says what is wrong.
        match std::error::Error::source(&e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        }
    })?;
    Ok((elf, parsed))
}

/// Inspects one object's bytes; `file` names it in errors and output.
pub fn inspect(file: &str, bytes: &[u8]) -> Result<ObjectInfo, InspectError> {
    let elf_err = |detail: String| InspectError::Elf { file: file.to_owned(), detail };
    let (elf, parsed) = parse(bytes).map_err(elf_err)?;

    let mut programs = Vec::new();
    for (name, program) in &parsed.programs {
        let section = elf
            .section_by_index(object::SectionIndex(program.section_index))
            .ok()
            .and_then(|s| s.name().ok().map(str::to_owned))
            .unwrap_or_default();
        let function = parsed
            .functions
            .get(&program.function_key())
            .ok_or_else(|| InspectError::NoCode { file: file.to_owned(), program: name.clone() })?;
        let helpers: BTreeSet<String> = function
            .instructions
            .iter()
            .filter(|insn| insn.code == 0x85 && insn.src_reg() == 0)
            .map(|insn| helper_name(insn.imm).map_or_else(|| format!("helper#{}", insn.imm), str::to_owned))
            .collect();
        let (program_type, attach_target) = classify_section(&section);
        programs.push(ProgramInfo {
            name: name.clone(),
            section,
            program_type,
            attach_target,
            instructions: function.instructions.len(),
            helpers: helpers.into_iter().collect(),
        });
    }
    programs.sort_by(|a, b| a.name.cmp(&b.name));

    let mut maps: Vec<MapInfo> = parsed
        .maps
        .iter()
        .filter(|(name, _)| !name.starts_with('.'))
        .map(|(name, m)| MapInfo {
            name: name.clone(),
            map_type: map_type_name(m.map_type()),
            key_size: m.key_size(),
            value_size: m.value_size(),
            max_entries: m.max_entries(),
        })
        .collect();
    maps.sort_by(|a, b| a.name.cmp(&b.name));

    let core_relocations = match elf.section_by_name(".BTF.ext") {
        Some(section) => {
            let data = section.data().map_err(|e| elf_err(e.to_string()))?;
            btf::core_relocation_count(data)
                .map_err(|source| InspectError::Btf { file: file.to_owned(), source })?
        }
        None => 0,
    };
    let mut evidence = match elf.section_by_name(".BTF") {
        Some(section) => {
            let data = section.data().map_err(|e| elf_err(e.to_string()))?;
            let btf = btf::Btf::parse(data).map_err(|source| InspectError::Btf { file: file.to_owned(), source })?;
            arch::btf_evidence(&btf)
        }
        None => Vec::new(),
    };
    evidence.extend(arch::target_evidence(programs.iter().map(|p| (p.program_type.as_str(), p.attach_target.as_str()))));
    let arch = arch::ArchInfo { note: arch::read_note(&elf), evidence };
    Ok(ObjectInfo { file: file.to_owned(), arch, programs, maps, core_relocations })
}

/// Reads the `.BTF` section of an object.
pub fn object_btf(file: &str, bytes: &[u8]) -> Result<btf::Btf, InspectError> {
    let elf = object::File::parse(bytes)
        .map_err(|e| InspectError::Elf { file: file.to_owned(), detail: e.to_string() })?;
    let section = elf.section_by_name(".BTF").ok_or_else(|| InspectError::Elf {
        file: file.to_owned(),
        detail: "no .BTF section".to_owned(),
    })?;
    let data = section
        .data()
        .map_err(|e| InspectError::Elf { file: file.to_owned(), detail: e.to_string() })?;
    btf::Btf::parse(data).map_err(|source| InspectError::Btf { file: file.to_owned(), source })
}

/// Renders reports as text for a terminal.
pub fn render_text(infos: &[ObjectInfo]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for info in infos {
        let _ = writeln!(out, "{}  arch={}  ({} CO-RE relocations)", info.file, info.arch, info.core_relocations);
        if !info.arch.evidence.is_empty() {
            let shown: Vec<String> = info.arch.evidence.iter().map(|e| format!("{} ({})", e.what, e.arch)).collect();
            let _ = writeln!(out, "  arch evidence: {}", shown.join(", "));
        }
        for problem in info.arch.problems(None) {
            let _ = writeln!(out, "  arch PROBLEM: {problem}");
        }
        for p in &info.programs {
            let _ = writeln!(
                out,
                "  program {:<16} {:<38} type={:<16} target={:<28} insns={}",
                p.name, p.section, p.program_type, p.attach_target, p.instructions
            );
            let _ = writeln!(out, "    helpers: {}", p.helpers.join(", "));
        }
        for m in &info.maps {
            let _ = writeln!(
                out,
                "  map     {:<16} type={:<16} key={} value={} max_entries={}",
                m.name, m.map_type, m.key_size, m.value_size, m.max_entries
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSection, ObjectSymbol};

    use crate::arch;

    /// Every object of every bundle (the tests embed both, `all-arches`) carries the note of the
    /// bundle it is in, and nothing in its code contradicts it: an arm64 object with x86
    /// registers or an `__x64_sys_*` target fails here.
    #[rstest::rstest]
    fn every_object_is_built_for_its_bundles_arch(#[values(arch::Arch::X86_64, arch::Arch::Arm64)] bundle_arch: arch::Arch) {
        let objects = crate::bundle::objects_for(bundle_arch).expect("all-arches embeds every bundle");
        for obj in objects {
            assert_eq!(obj.arch, bundle_arch);
            let info = super::inspect(obj.file, obj.bytes).expect("inspect");
            assert_eq!(info.arch.note, arch::Note::Arch { arch: bundle_arch }, "{bundle_arch} {}", obj.file);
            assert_eq!(info.arch.problems(Some(bundle_arch)), Vec::<String>::new(), "{bundle_arch} {}", obj.file);
            assert_eq!(info.arch.arch(), Some(bundle_arch));
        }
    }

    /// issue 15, item 6: a program the kernel may run nested with another on the same CPU, or
    /// preempted (cgroup_skb: migration off only, in process context and in softirq alike, with
    /// no recursion guard; fexit: migration off only), must not build records in a per-CPU slot,
    /// which the other run would overwrite half-way. Only `stats` (counters) is allowed there.
    #[test]
    fn nestable_programs_use_no_per_cpu_scratch() {
        let mut checked = 0;
        for obj in crate::bundle::OBJECTS {
            let info = super::inspect(obj.file, obj.bytes).expect("inspect");
            let percpu: Vec<&str> = info
                .maps
                .iter()
                .filter(|m| m.map_type == super::map_type_name(6) && m.name != "stats")
                .map(|m| m.name.as_str())
                .collect();
            let elf = object::File::parse(obj.bytes).expect("elf");
            for section in elf.sections() {
                let name = section.name().unwrap_or_default();
                if !(name.starts_with("cgroup_skb/") || name.starts_with("fexit/") || name.starts_with("fentry/")) {
                    continue;
                }
                checked += 1;
                for (_, reloc) in section.relocations() {
                    let object::RelocationTarget::Symbol(index) = reloc.target() else { continue };
                    let symbol = elf.symbol_by_index(index).expect("symbol");
                    let target = symbol.name().unwrap_or_default();
                    assert!(!percpu.contains(&target), "{} {name}: uses the per-CPU map {target}", obj.file);
                }
            }
        }
        assert!(checked > 0, "no cgroup_skb or fexit program found");
    }
}
