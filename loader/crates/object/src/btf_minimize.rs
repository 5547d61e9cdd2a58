//! `tapio-load btf minimize`: cuts a full kernel BTF down to the types the bundle's CO-RE
//! relocations reach, so an operator can ship a few kilobytes per kernel to nodes without
//! `/sys/kernel/btf/vmlinux` (the idea of `bpftool gen min_core_btf`, written from the BTF format
//! in the kernel's `Documentation/bpf/btf.rst` and libbpf's documented CO-RE semantics).
//!
//! How it works:
//! 1. every CO-RE relocation record of every object's `.BTF.ext` (insn_off, type_id,
//!    access_str_off, kind) is read, together with the object's own (local) `.BTF`;
//! 2. the relocation's root type is looked up in the full (target) BTF by kind and by its name
//!    without a `___flavor` suffix, exactly the candidates a CO-RE loader would consider;
//! 3. field relocations walk their access string ("0:1:3") through the local type, then follow the
//!    same member *names* through each candidate target type (looking through anonymous structs
//!    and unions, as libbpf and aya do); a candidate that matches keeps the members on that path;
//! 4. structs and unions are written with only the kept members, at their original offsets and with
//!    their original size, so every offset and size a relocation computes is the full BTF's answer;
//!    a pointer whose target nothing reaches becomes `void *` (its size is all a relocation needs);
//! 5. the kept types are renumbered and written as a fresh BTF blob (header, types, strings).
//!
//! The result relocates the bundle exactly as the full BTF does; `tapio-load check --btf` proves
//! it on a real verifier.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use object::{Object as _, ObjectSection as _};
use thiserror::Error;

pub use crate::btf::kind;
use crate::btf::BTF_MAGIC;

/// Why a BTF could not be minimized.
#[derive(Debug, Error)]
pub enum MinimizeError {
    #[error("btf minimize: read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("btf minimize: write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("btf minimize: {what}: {source}")]
    Btf {
        what: String,
        #[source]
        source: RawBtfError,
    },
    #[error("btf minimize: object {file}: {detail}")]
    Object { file: String, detail: String },
    #[error("btf minimize: object {file}: relocation {index}: bad access string {access:?}")]
    Access { file: String, index: usize, access: String },
}

/// Why raw BTF (or `.BTF.ext`) bytes could not be read.
#[derive(Debug, Error)]
pub enum RawBtfError {
    #[error("{0} bytes is too short for a header")]
    TooShort(usize),
    #[error("bad magic {0:#06x} (big-endian BTF is not supported)")]
    BadMagic(u16),
    #[error("{what} at byte {offset} runs past the end ({total} bytes)")]
    OutOfBounds { what: &'static str, offset: usize, total: usize },
    #[error("unknown type kind {kind} at type id {id}")]
    UnknownKind { kind: u32, id: u32 },
    #[error(transparent)]
    Other(crate::btf::BtfError),
}

/// The header checks are [`crate::btf::sections`]'; its errors keep this module's wording.
impl From<crate::btf::BtfError> for RawBtfError {
    fn from(e: crate::btf::BtfError) -> Self {
        use crate::btf::BtfError as E;
        match e {
            E::TooShort(n) => Self::TooShort(n),
            E::BadMagic(m) => Self::BadMagic(m),
            E::OutOfBounds { what, offset, total, .. } => Self::OutOfBounds { what, offset, total },
            E::UnknownKind { kind, id } => Self::UnknownKind { kind, id },
            other => Self::Other(other),
        }
    }
}

fn u32_at(data: &[u8], off: usize, what: &'static str) -> Result<u32, RawBtfError> {
    data.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(RawBtfError::OutOfBounds { what, offset: off, total: data.len() })
}

/// One BTF type record as stored: the 12-byte common part and the kind's trailing words.
///
/// Kept raw (not decoded into an enum) because the minimizer writes types back out: a raw record
/// round-trips every kind, including ones this code never needs to understand.
#[derive(Debug, Clone)]
pub struct RawType {
    pub name_off: u32,
    pub info: u32,
    pub size_or_type: u32,
    /// The words after the common part (int encoding, array, members, enumerators, params, ...).
    pub extra: Vec<u32>,
}

impl RawType {
    pub fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    pub fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
    pub fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }
}

/// A whole BTF blob, every type kept as a raw record: `types[id - 1]` is type `id`.
#[derive(Debug, Clone)]
pub struct RawBtf {
    pub types: Vec<RawType>,
    pub strings: Vec<u8>,
}

/// How many trailing 32-bit words a type of this kind carries.
fn extra_words(kind: u32, vlen: usize, id: u32) -> Result<usize, RawBtfError> {
    crate::btf::trailing_words(kind, vlen).ok_or(RawBtfError::UnknownKind { kind, id })
}

impl RawBtf {
    /// Parses a raw BTF blob (a `.BTF` section or a file such as `/sys/kernel/btf/vmlinux`).
    pub fn parse(data: &[u8]) -> Result<Self, RawBtfError> {
        let (types, strings) = crate::btf::sections(data)?;
        let strings = strings.to_vec();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < types.len() {
            let id = out.len() as u32 + 1;
            let name_off = u32_at(types, pos, "type")?;
            let info = u32_at(types, pos + 4, "type")?;
            let size_or_type = u32_at(types, pos + 8, "type")?;
            pos += 12;
            let words = extra_words((info >> 24) & 0x1f, (info & 0xffff) as usize, id)?;
            let extra = (0..words).map(|i| u32_at(types, pos + 4 * i, "type data")).collect::<Result<Vec<_>, _>>()?;
            pos += 4 * words;
            out.push(RawType { name_off, info, size_or_type, extra });
        }
        Ok(Self { types: out, strings })
    }

    /// The type with this id (`None` for 0, `void`, and for ids past the end).
    pub fn get(&self, id: u32) -> Option<&RawType> {
        id.checked_sub(1).and_then(|i| self.types.get(i as usize))
    }

    /// The string at `off` in the string section ("" when out of range).
    pub fn str_at(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// The name of type `id` ("" for anonymous types and `void`).
    pub fn name(&self, id: u32) -> &str {
        self.get(id).map_or("", |t| self.str_at(t.name_off))
    }

    /// The kind of type `id` (0 for `void`).
    pub fn kind(&self, id: u32) -> u32 {
        self.get(id).map_or(0, RawType::kind)
    }

    /// Members of a struct or union: (name offset, type id, raw offset word).
    pub fn members(&self, id: u32) -> Vec<(u32, u32, u32)> {
        match self.get(id) {
            Some(t) if matches!(t.kind(), kind::STRUCT | kind::UNION) => {
                t.extra.chunks_exact(3).map(|m| (m[0], m[1], m[2])).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Follows typedefs and qualifiers to the type they name, returning every id passed through
    /// (the start included) and the id reached.
    fn skip_aliases(&self, mut id: u32) -> (Vec<u32>, u32) {
        let mut passed = Vec::new();
        // A malformed chain could loop; BTF never nests more than a few qualifiers deep.
        for _ in 0..64 {
            match self.kind(id) {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    passed.push(id);
                    id = self.get(id).map_or(0, |t| t.size_or_type);
                }
                _ => break,
            }
        }
        (passed, id)
    }
}

/// A CO-RE relocation kind (`enum bpf_core_relo_kind`).
pub mod relo_kind {
    pub const FIELD_BYTE_OFFSET: u32 = 0;
    pub const FIELD_RSHIFT_U64: u32 = 5;
    pub const TYPE_ID_LOCAL: u32 = 6;
    pub const TYPE_ID_TARGET: u32 = 7;
    pub const TYPE_EXISTS: u32 = 8;
    pub const TYPE_SIZE: u32 = 9;
    pub const ENUMVAL_EXISTS: u32 = 10;
    pub const ENUMVAL_VALUE: u32 = 11;
    pub const TYPE_MATCHES: u32 = 12;
}

/// One `bpf_core_relo` record of `.BTF.ext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreRelo {
    /// The program section the record belongs to.
    pub section: String,
    pub insn_off: u32,
    pub type_id: u32,
    pub access: String,
    pub kind: u32,
}

/// Reads every CO-RE relocation record of a `.BTF.ext` section; strings resolve in `local`.
///
/// `btf::core_relocation_count` only counts them; the minimizer needs each record's fields.
pub fn core_relos(btf_ext: &[u8], local: &RawBtf) -> Result<Vec<CoreRelo>, RawBtfError> {
    if btf_ext.len() < 8 {
        return Err(RawBtfError::TooShort(btf_ext.len()));
    }
    let magic = u16::from_le_bytes([btf_ext[0], btf_ext[1]]);
    if magic != BTF_MAGIC {
        return Err(RawBtfError::BadMagic(magic));
    }
    let hdr_len = u32_at(btf_ext, 4, ".BTF.ext header")? as usize;
    // Headers shorter than 32 bytes predate CO-RE: no relocations.
    if hdr_len < 32 {
        return Ok(Vec::new());
    }
    let off = u32_at(btf_ext, 24, ".BTF.ext header")? as usize;
    let len = u32_at(btf_ext, 28, ".BTF.ext header")? as usize;
    let start = hdr_len + off;
    let sub = btf_ext
        .get(start..start + len)
        .ok_or(RawBtfError::OutOfBounds { what: "core_relo section", offset: start, total: btf_ext.len() })?;
    let mut out = Vec::new();
    if sub.is_empty() {
        return Ok(out);
    }
    let rec_size = u32_at(sub, 0, "core_relo record size")? as usize;
    let mut pos = 4;
    while pos < sub.len() {
        let section = local.str_at(u32_at(sub, pos, "core_relo section")?).to_owned();
        let num = u32_at(sub, pos + 4, "core_relo section")? as usize;
        pos += 8;
        for _ in 0..num {
            out.push(CoreRelo {
                section: section.clone(),
                insn_off: u32_at(sub, pos, "core_relo record")?,
                type_id: u32_at(sub, pos + 4, "core_relo record")?,
                access: local.str_at(u32_at(sub, pos + 8, "core_relo record")?).to_owned(),
                kind: u32_at(sub, pos + 12, "core_relo record")?,
            });
            pos += rec_size;
        }
    }
    Ok(out)
}

/// A type name without its `___flavor` suffix, as CO-RE matches names (`task_struct___old` is
/// a local flavor of `task_struct`). The suffix starts at the last `___` that sits between two
/// characters other than `_`.
pub fn essential_name(name: &str) -> &str {
    let b = name.as_bytes();
    if b.len() >= 5 {
        for i in (0..=b.len() - 5).rev() {
            if b[i] != b'_' && &b[i + 1..i + 4] == b"___" && b[i + 4] != b'_' {
                return &name[..=i];
            }
        }
    }
    name
}

/// Whether two kinds are the same for CO-RE candidate matching (enum and enum64 are).
fn kinds_compatible(local: u32, target: u32) -> bool {
    local == target || matches!((local, target), (kind::ENUM, kind::ENUM64) | (kind::ENUM64, kind::ENUM))
}

/// One step of a field access, as a loader matches it against the target: a named member, or an
/// array index (anonymous members are looked through, so they are not steps).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Member(String),
    Index,
}

/// What to keep of the target BTF.
#[derive(Default)]
struct Keep {
    types: BTreeSet<u32>,
    /// Kept member indices of structs and unions (a kept struct absent here keeps no member).
    members: HashMap<u32, BTreeSet<usize>>,
    /// Types whose pointers are followed (type relocations compare pointee kinds).
    deep: HashSet<u32>,
}

impl Keep {
    /// Keeps `id` and what its record refers to. Struct members are kept only when accessed;
    /// pointees only with `follow_pointers`, otherwise the pointer is written as `void *`.
    fn mark(&mut self, btf: &RawBtf, id: u32, follow_pointers: bool) {
        if id == 0 {
            return;
        }
        let fresh = self.types.insert(id);
        if follow_pointers {
            if !self.deep.insert(id) {
                return;
            }
        } else if !fresh {
            return;
        }
        let Some(t) = btf.get(id) else { return };
        match t.kind() {
            kind::PTR if follow_pointers => self.mark(btf, t.size_or_type, true),
            kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                self.mark(btf, t.size_or_type, follow_pointers);
            }
            kind::ARRAY => {
                self.mark(btf, t.extra[0], follow_pointers);
                self.mark(btf, t.extra[1], follow_pointers);
            }
            kind::FUNC_PROTO => {
                self.mark(btf, t.size_or_type, follow_pointers);
                for p in t.extra.chunks_exact(2) {
                    self.mark(btf, p[1], follow_pointers);
                }
            }
            _ => {}
        }
    }

    fn mark_member(&mut self, btf: &RawBtf, parent: u32, index: usize) {
        self.mark(btf, parent, false);
        self.members.entry(parent).or_default().insert(index);
    }
}

/// Type ids of the target by essential name, to find CO-RE candidates quickly.
fn name_index(btf: &RawBtf) -> HashMap<&str, Vec<u32>> {
    let mut index: HashMap<&str, Vec<u32>> = HashMap::new();
    for (i, t) in btf.types.iter().enumerate() {
        let name = btf.str_at(t.name_off);
        if !name.is_empty() {
            index.entry(essential_name(name)).or_default().push(i as u32 + 1);
        }
    }
    index
}

/// Finds member `name` in struct/union `id`, looking through anonymous struct/union members.
/// Returns the (parent, member index) pairs from `id` down to the member, and the member's type.
fn find_member(btf: &RawBtf, id: u32, name: &str, depth: usize) -> Option<(Vec<(u32, usize)>, u32)> {
    if depth > 32 {
        return None;
    }
    for (i, (name_off, ty, _)) in btf.members(id).into_iter().enumerate() {
        let member_name = btf.str_at(name_off);
        if member_name == name {
            return Some((vec![(id, i)], ty));
        }
        if member_name.is_empty() {
            let (_, inner) = btf.skip_aliases(ty);
            if matches!(btf.kind(inner), kind::STRUCT | kind::UNION) {
                if let Some((mut path, found)) = find_member(btf, inner, name, depth + 1) {
                    path.insert(0, (id, i));
                    return Some((path, found));
                }
            }
        }
    }
    None
}

/// Turns a local access string into steps by walking the local type.
fn local_steps(local: &RawBtf, root: u32, access: &[usize]) -> Option<Vec<Step>> {
    let (_, mut cur) = local.skip_aliases(root);
    let mut steps = Vec::new();
    for &acc in access.iter().skip(1) {
        match local.kind(cur) {
            kind::STRUCT | kind::UNION => {
                let (name_off, ty, _) = *local.members(cur).get(acc)?;
                let name = local.str_at(name_off);
                if !name.is_empty() {
                    steps.push(Step::Member(name.to_owned()));
                }
                cur = local.skip_aliases(ty).1;
            }
            kind::ARRAY => {
                steps.push(Step::Index);
                cur = local.skip_aliases(local.get(cur)?.extra[0]).1;
            }
            _ => return None,
        }
    }
    Some(steps)
}

/// Follows `steps` through target candidate `cand`; on success keeps everything on the path.
fn match_field(target: &RawBtf, cand: u32, steps: &[Step], keep: &mut Keep) -> bool {
    let mut members: Vec<(u32, usize)> = Vec::new();
    let mut types: Vec<u32> = vec![cand];
    let (passed, mut cur) = target.skip_aliases(cand);
    types.extend(passed);
    for step in steps {
        types.push(cur);
        match (step, target.kind(cur)) {
            (Step::Member(name), kind::STRUCT | kind::UNION) => {
                let Some((path, ty)) = find_member(target, cur, name, 0) else { return false };
                for &(parent, _) in &path {
                    types.push(parent);
                }
                members.extend(path);
                let (passed, next) = target.skip_aliases(ty);
                types.extend(passed);
                cur = next;
            }
            (Step::Index, kind::ARRAY) => {
                let Some(t) = target.get(cur) else { return false };
                let (elem, index_type) = (t.extra[0], t.extra[1]);
                types.push(index_type);
                let (passed, next) = target.skip_aliases(elem);
                types.extend(passed);
                cur = next;
            }
            _ => return false,
        }
    }
    for id in types {
        keep.mark(target, id, false);
    }
    for (parent, index) in members {
        keep.mark_member(target, parent, index);
        let ty = target.members(parent)[index].1;
        keep.mark(target, ty, false);
    }
    keep.mark(target, cur, false);
    true
}

/// What [`minimize`] produced.
#[derive(Debug, Clone)]
pub struct Minimized {
    /// The BTF blob to write.
    pub bytes: Vec<u8>,
    /// Types kept out of the full BTF's count.
    pub types_kept: usize,
    pub types_total: usize,
    pub relocations: usize,
    /// Relocations whose type has no candidate in the full BTF (a loader resolves them the same
    /// way with either file: as "does not exist").
    pub unmatched: usize,
}

/// One object to minimize for: a name (for errors) and its ELF bytes.
pub struct ObjectInput<'a> {
    pub file: &'a str,
    pub bytes: &'a [u8],
}

/// Reads an object's local BTF, its CO-RE relocations and its tracepoint program sections.
fn read_object(obj: &ObjectInput<'_>) -> Result<(RawBtf, Vec<CoreRelo>, Vec<String>), MinimizeError> {
    let object_err = |detail: String| MinimizeError::Object { file: obj.file.to_owned(), detail };
    let elf = object::File::parse(obj.bytes).map_err(|e| object_err(e.to_string()))?;
    let sections: Vec<String> = elf.sections().filter_map(|s| s.name().ok().map(str::to_owned)).collect();
    let btf_data = elf
        .section_by_name(".BTF")
        .ok_or_else(|| object_err("no .BTF section".to_owned()))?
        .data()
        .map_err(|e| object_err(e.to_string()))?;
    let local = RawBtf::parse(btf_data)
        .map_err(|source| MinimizeError::Btf { what: format!("object {} .BTF", obj.file), source })?;
    let relos = match elf.section_by_name(".BTF.ext") {
        Some(s) => {
            let data = s.data().map_err(|e| object_err(e.to_string()))?;
            core_relos(data, &local)
                .map_err(|source| MinimizeError::Btf { what: format!("object {} .BTF.ext", obj.file), source })?
        }
        None => Vec::new(),
    };
    Ok((local, relos, sections))
}

/// The context types the kernel hands tracepoint programs, kept whole so a program reading its
/// context through CO-RE finds it: `trace_event_raw_<event>`, `syscall_trace_enter`/`_exit` for
/// every `syscalls/` event (kernel/trace/trace.h; not raw_syscalls' `trace_event_raw_sys_enter`,
/// whose offsets differ where trace_entry is not 8 bytes), and `bpf_raw_tracepoint_args` for
/// raw tracepoints.
fn context_type_names(section: &str) -> Vec<String> {
    let mut parts = section.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("tracepoint" | "tp"), Some("syscalls"), Some(event)) => {
            let generic = if event.starts_with("sys_enter") { "enter" } else { "exit" };
            vec![format!("syscall_trace_{generic}")]
        }
        (Some("tracepoint" | "tp"), Some(_), Some(event)) => vec![format!("trace_event_raw_{event}")],
        (Some("raw_tracepoint" | "raw_tp"), _, _) => vec!["bpf_raw_tracepoint_args".to_owned()],
        _ => Vec::new(),
    }
}

/// Minimizes `full` (a complete kernel BTF) for the CO-RE relocations of `objects`.
pub fn minimize(full: &[u8], objects: &[ObjectInput<'_>]) -> Result<Minimized, MinimizeError> {
    let target =
        RawBtf::parse(full).map_err(|source| MinimizeError::Btf { what: "full btf".to_owned(), source })?;
    let index = name_index(&target);
    let mut keep = Keep::default();
    let mut relocations = 0;
    let mut unmatched = 0;
    let mut contexts = BTreeSet::new();

    for obj in objects {
        let (local, relos, sections) = read_object(obj)?;
        contexts.extend(sections.iter().flat_map(|s| context_type_names(s)));
        for (i, relo) in relos.iter().enumerate() {
            relocations += 1;
            if relo.kind == relo_kind::TYPE_ID_LOCAL {
                continue;
            }
            let local_kind = local.kind(relo.type_id);
            let local_name = essential_name(local.name(relo.type_id));
            let candidates: Vec<u32> = index
                .get(local_name)
                .map(|ids| ids.iter().copied().filter(|&id| kinds_compatible(local_kind, target.kind(id))).collect())
                .unwrap_or_default();
            if candidates.is_empty() {
                unmatched += 1;
                continue;
            }
            match relo.kind {
                relo_kind::FIELD_BYTE_OFFSET..=relo_kind::FIELD_RSHIFT_U64 => {
                    let access: Vec<usize> = relo
                        .access
                        .split(':')
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .map_err(|_| MinimizeError::Access { file: obj.file.to_owned(), index: i, access: relo.access.clone() })?;
                    let steps = local_steps(&local, relo.type_id, &access)
                        .ok_or_else(|| MinimizeError::Access { file: obj.file.to_owned(), index: i, access: relo.access.clone() })?;
                    let mut any = false;
                    for &cand in &candidates {
                        // The root stays even when the field is missing: the loader then sees
                        // the same "type present, field absent" answer as with the full BTF.
                        keep.mark(&target, cand, false);
                        any |= match_field(&target, cand, &steps, &mut keep);
                    }
                    if !any {
                        unmatched += 1;
                    }
                }
                relo_kind::TYPE_ID_TARGET | relo_kind::TYPE_EXISTS | relo_kind::TYPE_SIZE | relo_kind::TYPE_MATCHES => {
                    for &cand in &candidates {
                        keep.mark(&target, cand, true);
                    }
                }
                relo_kind::ENUMVAL_EXISTS | relo_kind::ENUMVAL_VALUE => {
                    for &cand in &candidates {
                        keep.mark(&target, cand, false);
                    }
                }
                _ => {}
            }
        }
    }
    for name in &contexts {
        for &id in index.get(name.as_str()).into_iter().flatten() {
            if matches!(target.kind(id), kind::STRUCT | kind::UNION) {
                for i in 0..target.members(id).len() {
                    keep.mark_member(&target, id, i);
                    keep.mark(&target, target.members(id)[i].1, false);
                }
            }
        }
    }

    Ok(Minimized {
        bytes: write(&target, &keep),
        types_kept: keep.types.len(),
        types_total: target.types.len(),
        relocations,
        unmatched,
    })
}

/// A string section being built: "" at offset 0, each distinct string once.
struct Strings {
    bytes: Vec<u8>,
    offsets: HashMap<String, u32>,
}

impl Strings {
    fn new() -> Self {
        Self { bytes: vec![0], offsets: HashMap::from([(String::new(), 0)]) }
    }
    fn add(&mut self, s: &str) -> u32 {
        if let Some(&off) = self.offsets.get(s) {
            return off;
        }
        let off = self.bytes.len() as u32;
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        self.offsets.insert(s.to_owned(), off);
        off
    }
}

/// Writes the kept types, renumbered in their original order, as a BTF blob.
fn write(target: &RawBtf, keep: &Keep) -> Vec<u8> {
    let new_id: BTreeMap<u32, u32> = keep.types.iter().enumerate().map(|(i, &id)| (id, i as u32 + 1)).collect();
    // A reference to a type not kept becomes `void` (only pointers and unaccessed pointees do).
    let remap = |id: u32| new_id.get(&id).copied().unwrap_or(0);
    let mut strings = Strings::new();
    let mut words: Vec<u32> = Vec::new();
    for &id in &keep.types {
        let Some(t) = target.get(id) else { continue };
        let name = strings.add(target.str_at(t.name_off));
        let k = t.kind();
        match k {
            kind::STRUCT | kind::UNION => {
                let kept = keep.members.get(&id);
                let members: Vec<&[u32]> = t
                    .extra
                    .chunks_exact(3)
                    .enumerate()
                    .filter(|(i, _)| kept.is_some_and(|set| set.contains(i)))
                    .map(|(_, m)| m)
                    .collect();
                words.extend([name, (t.info & !0xffff) | members.len() as u32, t.size_or_type]);
                for m in members {
                    words.extend([strings.add(target.str_at(m[0])), remap(m[1]), m[2]]);
                }
            }
            kind::PTR | kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                words.extend([name, t.info, remap(t.size_or_type)]);
            }
            kind::ARRAY => {
                words.extend([name, t.info, 0, remap(t.extra[0]), remap(t.extra[1]), t.extra[2]]);
            }
            kind::ENUM | kind::ENUM64 => {
                words.extend([name, t.info, t.size_or_type]);
                let per = if k == kind::ENUM { 2 } else { 3 };
                for e in t.extra.chunks_exact(per) {
                    words.push(strings.add(target.str_at(e[0])));
                    words.extend(&e[1..]);
                }
            }
            kind::FUNC_PROTO => {
                words.extend([name, t.info, remap(t.size_or_type)]);
                for p in t.extra.chunks_exact(2) {
                    words.extend([strings.add(target.str_at(p[0])), remap(p[1])]);
                }
            }
            // INT, FWD, FLOAT: no references; copied as they are.
            _ => {
                words.extend([name, t.info, t.size_or_type]);
                words.extend(&t.extra);
            }
        }
    }
    let type_len = (words.len() * 4) as u32;
    let mut out = Vec::with_capacity(24 + type_len as usize + strings.bytes.len());
    out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
    out.push(1); // version
    out.push(0); // flags
    for w in [24, 0, type_len, type_len, strings.bytes.len() as u32] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&strings.bytes);
    out
}

/// Reads `from`, minimizes it for `objects` and writes the result to `out`.
pub fn minimize_file(
    from: &std::path::Path,
    out: &std::path::Path,
    objects: &[ObjectInput<'_>],
) -> Result<Minimized, MinimizeError> {
    let full = std::fs::read(from).map_err(|source| MinimizeError::Read { path: from.display().to_string(), source })?;
    let minimized = minimize(&full, objects)?;
    std::fs::write(out, &minimized.bytes)
        .map_err(|source| MinimizeError::Write { path: out.display().to_string(), source })?;
    Ok(minimized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_flavor_suffixes_like_core_does() {
        assert_eq!(essential_name("task_struct___old"), "task_struct");
        assert_eq!(essential_name("task_struct"), "task_struct");
        assert_eq!(essential_name("a___b___c"), "a___b");
        assert_eq!(essential_name("__x"), "__x");
        assert_eq!(essential_name("____"), "____");
    }

    #[test]
    fn context_types_of_tracepoints() {
        assert_eq!(context_type_names("tracepoint/syscalls/sys_enter_read"), ["syscall_trace_enter"]);
        assert_eq!(context_type_names("tracepoint/syscalls/sys_exit_read"), ["syscall_trace_exit"]);
        assert_eq!(context_type_names("tracepoint/raw_syscalls/sys_enter"), ["trace_event_raw_sys_enter"]);
        assert_eq!(context_type_names("tracepoint/sched/sched_process_exec"), ["trace_event_raw_sched_process_exec"]);
        assert_eq!(context_type_names("raw_tracepoint/mark_victim"), ["bpf_raw_tracepoint_args"]);
        assert!(context_type_names("xdp").is_empty());
    }

    /// issue 15 (PREEMPT_RT): a `syscalls/` program that reads its context through raw_syscalls'
    /// `trace_event_raw_sys_enter/exit` gets offsets that are wrong wherever trace_entry is not
    /// 8 bytes (Debian's 6.1 rt: attach fails with EACCES, or args shift by one). Every such
    /// relocation must be against `syscall_trace_enter/exit`, the events' own layout.
    #[test]
    fn syscall_tracepoints_read_their_own_context_layout() {
        let mut checked = 0;
        for obj in crate::bundle::OBJECTS {
            let (local, relos, _) = read_object(&ObjectInput { file: obj.file, bytes: obj.bytes }).expect("object");
            for r in relos.iter().filter(|r| r.section.starts_with("tracepoint/syscalls/")) {
                let root = essential_name(local.name(r.type_id));
                assert!(
                    !root.starts_with("trace_event_raw_sys_"),
                    "{} {}: context read through raw_syscalls' {root}",
                    obj.file,
                    r.section
                );
                checked += usize::from(root.starts_with("syscall_trace_"));
            }
        }
        assert!(checked > 0, "no syscalls/ program reads its context through CO-RE");
    }
}
