//! A small reader for the BTF an object carries (`.BTF` and the header of `.BTF.ext`).
//!
//! aya-obj parses BTF too but keeps its types crate-private. We need struct layouts (to prove
//! the Rust mirrors of the event structs), and the CO-RE relocation count for `inspect`, so we
//! read the format ourselves: it is small and stable (kernel `Documentation/bpf/btf.rst`).

use thiserror::Error;

/// The magic number of little-endian BTF.
pub const BTF_MAGIC: u16 = 0xeb9f;

/// BTF kind numbers (`BTF_KIND_*` in the uapi `linux/btf.h`).
pub mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;

    /// The kernel's name for a kind, as `bpftool btf dump` prints it.
    pub fn name(kind: u32) -> &'static str {
        match kind {
            INT => "INT",
            PTR => "PTR",
            ARRAY => "ARRAY",
            STRUCT => "STRUCT",
            UNION => "UNION",
            ENUM => "ENUM",
            FWD => "FWD",
            TYPEDEF => "TYPEDEF",
            VOLATILE => "VOLATILE",
            CONST => "CONST",
            RESTRICT => "RESTRICT",
            FUNC => "FUNC",
            FUNC_PROTO => "FUNC_PROTO",
            VAR => "VAR",
            DATASEC => "DATASEC",
            FLOAT => "FLOAT",
            DECL_TAG => "DECL_TAG",
            TYPE_TAG => "TYPE_TAG",
            ENUM64 => "ENUM64",
            _ => "UNKNOWN",
        }
    }
}

/// Why BTF could not be read.
#[derive(Debug, Error)]
pub enum BtfError {
    #[error("btf: {0} bytes is too short for a header")]
    TooShort(usize),
    #[error("btf: bad magic {0:#06x} (big-endian objects are not supported)")]
    BadMagic(u16),
    #[error("btf: {what} at {offset}+{len} runs past the end ({total} bytes)")]
    OutOfBounds { what: &'static str, offset: usize, len: usize, total: usize },
    #[error("btf: unknown type kind {kind} at type id {id}")]
    UnknownKind { kind: u32, id: u32 },
    #[error("btf: no struct named {0}")]
    NoStruct(String),
    #[error("btf: type id {0} does not exist")]
    NoType(u32),
}

/// One member of a struct or union, with its offset in bits.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub type_id: u32,
    pub bit_offset: u32,
}

/// The parts of a BTF type this project needs; other kinds keep only their kind.
#[derive(Debug, Clone)]
pub enum Type {
    Int { name: String, size: u32 },
    Ptr { target: u32 },
    Array { elem: u32, len: u32 },
    Struct { name: String, size: u32, members: Vec<Member>, union: bool },
    Enum { name: String, size: u32 },
    /// typedef, volatile, const, restrict, type tag: transparent for layout.
    Alias { name: String, target: u32 },
    Other { kind: u32, name: String },
}

/// Parsed type table: `types[id - 1]` is type `id` (id 0 is `void`).
#[derive(Debug, Clone)]
pub struct Btf {
    types: Vec<Type>,
}

fn u32_at(data: &[u8], off: usize, what: &'static str) -> Result<u32, BtfError> {
    data.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::OutOfBounds { what, offset: off, len: 4, total: data.len() })
}

fn name_at(strings: &[u8], off: u32) -> String {
    let start = off as usize;
    strings
        .get(start..)
        .map(|s| {
            let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        })
        .unwrap_or_default()
}

/// The type and string sections of raw BTF (a `.BTF` section or `/sys/kernel/btf/vmlinux`).
pub fn sections(data: &[u8]) -> Result<(&[u8], &[u8]), BtfError> {
    if data.len() < 24 {
        return Err(BtfError::TooShort(data.len()));
    }
    let magic = u16::from_le_bytes([data[0], data[1]]);
    if magic != BTF_MAGIC {
        return Err(BtfError::BadMagic(magic));
    }
    let hdr_len = u32_at(data, 4, "header")? as usize;
    let type_off = u32_at(data, 8, "header")? as usize;
    let type_len = u32_at(data, 12, "header")? as usize;
    let str_off = u32_at(data, 16, "header")? as usize;
    let str_len = u32_at(data, 20, "header")? as usize;
    let section = |what, off: usize, len: usize| {
        let start = hdr_len + off;
        data.get(start..start + len).ok_or(BtfError::OutOfBounds { what, offset: start, len, total: data.len() })
    };
    Ok((section("type section", type_off, type_len)?, section("string section", str_off, str_len)?))
}

/// One type record as stored: the 12-byte common part, decoded, and where its kind-specific
/// trailing data starts in the type section.
struct RawType {
    id: u32,
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    size_or_type: u32,
    trailing: usize,
}

/// How many 32-bit words of kind-specific data follow a record's common part
/// (Documentation/bpf/btf.rst); None for a kind this reader does not know.
pub fn trailing_words(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        kind::INT | kind::VAR | kind::DECL_TAG => 1,
        kind::PTR | kind::FWD | kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT
        | kind::FUNC | kind::FLOAT | kind::TYPE_TAG => 0,
        kind::ARRAY => 3,
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 3 * vlen,
        kind::ENUM | kind::FUNC_PROTO => 2 * vlen,
        _ => return None,
    })
}

/// Calls `f` with every record of `types` in id order until it returns false. Only the record
/// boundaries are checked here; what a record holds is the caller's to read.
fn walk(types: &[u8], mut f: impl FnMut(&RawType) -> Result<bool, BtfError>) -> Result<(), BtfError> {
    let mut pos = 0;
    let mut id = 0;
    while pos < types.len() {
        id += 1;
        let info = u32_at(types, pos + 4, "type")?;
        let raw = RawType {
            id,
            name_off: u32_at(types, pos, "type")?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: u32_at(types, pos + 8, "type")?,
            trailing: pos + 12,
        };
        let len = 4 * trailing_words(raw.kind, raw.vlen).ok_or(BtfError::UnknownKind { kind: raw.kind, id })?;
        if raw.trailing + len > types.len() {
            return Err(BtfError::OutOfBounds { what: "type", offset: raw.trailing, len, total: types.len() });
        }
        if !f(&raw)? {
            return Ok(());
        }
        pos = raw.trailing + len;
    }
    Ok(())
}

/// The id of the first type called `name` whose kind `want` accepts, found without building the
/// type table: for the kernel's multi-megabyte BTF, where one id is all a feature probe needs and
/// a parsed copy would sit beside the one the loader already holds.
pub fn find_type_id(data: &[u8], name: &str, want: fn(u32) -> bool) -> Result<Option<u32>, BtfError> {
    let (types, strings) = sections(data)?;
    let mut found = None;
    walk(types, |raw| {
        let at = raw.name_off as usize;
        let matches = want(raw.kind)
            && strings.get(at..at + name.len()) == Some(name.as_bytes())
            && strings.get(at + name.len()) == Some(&0);
        if matches {
            found = Some(raw.id);
        }
        Ok(!matches)
    })?;
    Ok(found)
}

impl Btf {
    /// Parses the contents of a `.BTF` section (or a raw BTF file such as `/sys/kernel/btf/vmlinux`).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let (types, strings) = sections(data)?;
        let mut out = Vec::new();
        walk(types, |raw| {
            let name = name_at(strings, raw.name_off);
            let (kind, pos, size_or_type) = (raw.kind, raw.trailing, raw.size_or_type);
            let ty = match kind {
                1 => Type::Int { name, size: size_or_type },
                2 => Type::Ptr { target: size_or_type },
                3 => Type::Array { elem: u32_at(types, pos, "array")?, len: u32_at(types, pos + 8, "array")? },
                4 | 5 => {
                    let mut members = Vec::with_capacity(raw.vlen);
                    for m in 0..raw.vlen {
                        let at = pos + 12 * m;
                        let raw_offset = u32_at(types, at + 8, "member")?;
                        members.push(Member {
                            name: name_at(strings, u32_at(types, at, "member")?),
                            type_id: u32_at(types, at + 4, "member")?,
                            // With kind_flag set the top byte holds a bitfield size.
                            bit_offset: if raw.kind_flag { raw_offset & 0xff_ffff } else { raw_offset },
                        });
                    }
                    Type::Struct { name, size: size_or_type, members, union: kind == 5 }
                }
                6 | 19 => Type::Enum { name, size: size_or_type },
                8..=11 | 18 => Type::Alias { name, target: size_or_type },
                _ => Type::Other { kind, name },
            };
            out.push(ty);
            Ok(true)
        })?;
        Ok(Self { types: out })
    }

    /// The type with this id; id 0 (`void`) and unknown ids are errors.
    pub fn type_by_id(&self, id: u32) -> Result<&Type, BtfError> {
        id.checked_sub(1)
            .and_then(|i| self.types.get(i as usize))
            .ok_or(BtfError::NoType(id))
    }

    /// Every type, in id order (the first is id 1).
    pub fn types(&self) -> impl Iterator<Item = &Type> {
        self.types.iter()
    }

    /// The number of types (not counting `void`).
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether the table holds no types at all.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Size in bytes of a type, looking through typedefs and qualifiers.
    pub fn size_of(&self, id: u32) -> Result<u64, BtfError> {
        Ok(match self.type_by_id(id)? {
            Type::Int { size, .. } | Type::Enum { size, .. } | Type::Struct { size, .. } => *size as u64,
            Type::Ptr { .. } => 8,
            Type::Array { elem, len } => self.size_of(*elem)? * *len as u64,
            Type::Alias { target, .. } => self.size_of(*target)?,
            Type::Other { .. } => 0,
        })
    }

    /// The byte layout of a struct: (member name, byte offset, byte size), in declaration order.
    pub fn struct_layout(&self, name: &str) -> Result<StructLayout, BtfError> {
        let found = self.types.iter().find_map(|t| match t {
            Type::Struct { name: n, size, members, union: false } if n == name => Some((size, members)),
            _ => None,
        });
        let (size, members) = found.ok_or_else(|| BtfError::NoStruct(name.to_owned()))?;
        let fields = members
            .iter()
            .map(|m| Ok((m.name.clone(), (m.bit_offset / 8) as usize, self.size_of(m.type_id)? as usize)))
            .collect::<Result<_, BtfError>>()?;
        Ok(StructLayout { name: name.to_owned(), size: *size as usize, fields })
    }
}

/// A struct's size and its fields as (name, byte offset, byte size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructLayout {
    pub name: String,
    pub size: usize,
    pub fields: Vec<(String, usize, usize)>,
}

/// Counts CO-RE relocation records in a `.BTF.ext` section (0 when it has no CO-RE part).
pub fn core_relocation_count(btf_ext: &[u8]) -> Result<usize, BtfError> {
    if btf_ext.len() < 8 {
        return Err(BtfError::TooShort(btf_ext.len()));
    }
    let magic = u16::from_le_bytes([btf_ext[0], btf_ext[1]]);
    if magic != BTF_MAGIC {
        return Err(BtfError::BadMagic(magic));
    }
    let hdr_len = u32_at(btf_ext, 4, "btf.ext header")? as usize;
    // The CO-RE fields follow func_info and line_info in headers of 32 bytes or more.
    if hdr_len < 32 {
        return Ok(0);
    }
    let off = u32_at(btf_ext, 24, "btf.ext header")? as usize;
    let len = u32_at(btf_ext, 28, "btf.ext header")? as usize;
    let start = hdr_len + off;
    let sub = btf_ext.get(start..start + len).ok_or(BtfError::OutOfBounds {
        what: "core_relo section",
        offset: start,
        len,
        total: btf_ext.len(),
    })?;
    if sub.is_empty() {
        return Ok(0);
    }
    let rec_size = u32_at(sub, 0, "core_relo record size")? as usize;
    let mut pos = 4;
    let mut count = 0;
    while pos < sub.len() {
        let num = u32_at(sub, pos + 4, "core_relo section info")? as usize;
        count += num;
        pos += 8 + num * rec_size;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw BTF: 1 int "int", 2 func_proto () -> int, 3 func "tcp_connect", 4 typedef "td" -> int.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0tcp_connect\0td\0";
        let words: [u32; 13] = [
            1, 1 << 24, 4, 32, // int, 32 bits
            0, 13 << 24, 1, // func_proto, no params
            5, 12 << 24, 2, // func
            17, 8 << 24, 1, // typedef
        ];
        let types: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]); // version, flags
        for w in [24, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(strings);
        out
    }

    #[test]
    fn finds_a_type_by_name_and_kind_without_parsing() {
        let data = blob();
        assert_eq!(find_type_id(&data, "tcp_connect", |k| k == 12).unwrap(), Some(3));
        assert_eq!(find_type_id(&data, "td", |k| k == 8).unwrap(), Some(4));
        // The kind filter applies, and a name must match whole, not as a prefix.
        assert_eq!(find_type_id(&data, "int", |k| k == 12).unwrap(), None);
        assert_eq!(find_type_id(&data, "tcp", |k| k == 12).unwrap(), None);
        // The scan and the parser agree on ids.
        let parsed = Btf::parse(&data).unwrap();
        assert!(matches!(parsed.type_by_id(3), Ok(Type::Other { kind: 12, name }) if name == "tcp_connect"));
        assert!(matches!(parsed.type_by_id(4), Ok(Type::Alias { target: 1, .. })));
    }

    #[test]
    fn a_truncated_record_is_an_error() {
        let mut data = blob();
        // Cut the type section two bytes short of the last record's end.
        let type_len = u32::from_le_bytes(data[12..16].try_into().unwrap());
        data[12..16].copy_from_slice(&(type_len - 2).to_le_bytes());
        assert!(find_type_id(&data, "td", |k| k == 8).is_err());
        assert!(Btf::parse(&data).is_err());
    }
}
