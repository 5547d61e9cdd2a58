//! The DNS wire format as far as the dns monitor reports it: the question of a captured message.
//!
//! The probe copies at most `DNS_MSG_MAX` bytes of each message and records the real length
//! beside them. Every label length and every compression pointer is checked against the real
//! length first (past it, the message is malformed) and against the captured bytes second (past
//! those, the name was cut by the capture, not by the sender). Pointers must jump strictly before
//! the start of the run they were found in, so every jump moves backwards and a loop cannot
//! form; a hop limit bounds the work on top of that.

use thiserror::Error;

/// Bytes of the fixed header (RFC 1035 4.1.1).
pub const HEADER_LEN: usize = 12;
/// A name's wire form, length bytes included, is at most 255 bytes (RFC 1035 2.3.4).
pub const MAX_NAME_WIRE: usize = 255;
/// At most this many compression pointers in one name; the backwards rule already ends loops.
pub const MAX_HOPS: usize = 32;

/// Why a question name cannot be decoded from what the sender put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("name: byte at offset {offset} is past the message end ({len} bytes)")]
    PastEnd { offset: usize, len: usize },
    #[error("name: compression pointer at offset {at} to {target} does not point before {floor}")]
    PointerNotBackwards { at: usize, target: usize, floor: usize },
    #[error("name: compression pointer at offset {at} points into the header")]
    PointerIntoHeader { at: usize },
    #[error("name: more than {MAX_HOPS} compression pointers")]
    TooManyHops,
    #[error("name: longer than {MAX_NAME_WIRE} bytes")]
    TooLong,
    #[error("name: reserved label type {kind:#04x} at offset {offset}")]
    ReservedLabel { kind: u8, offset: usize },
}

/// The first question of a message, as far as it could be read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Question {
    /// Dotted text without the trailing dot (`.` for the root); `None` when malformed or absent.
    /// When `cut`, the labels read before the capture ended.
    pub name: Option<String>,
    pub qtype: Option<u16>,
    /// The capture ended before the question did.
    pub cut: bool,
    /// The sender's message is malformed: no name is given rather than a wrong one.
    pub malformed: Option<NameError>,
}

/// Outcome of reading one byte range: in the capture, past the capture, or past the message.
enum Span<'a> {
    Here(&'a [u8]),
    Cut,
}

/// `len` bytes at `at`, checked against the real length first and the capture second.
fn span(captured: &[u8], real_len: usize, at: usize, len: usize) -> Result<Span<'_>, NameError> {
    let end = at.checked_add(len).ok_or(NameError::PastEnd { offset: at, len: real_len })?;
    if end > real_len {
        return Err(NameError::PastEnd { offset: end - 1, len: real_len });
    }
    match captured.get(at..end) {
        Some(s) => Ok(Span::Here(s)),
        None => Ok(Span::Cut),
    }
}

/// Appends one label as `dig` prints it: `.` and `\` escaped, other non-printables as `\DDD`.
fn push_label(out: &mut String, label: &[u8]) {
    if !out.is_empty() {
        out.push('.');
    }
    for &b in label {
        match b {
            b'.' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x21..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
}

/// Walks the name starting at `start`. Returns the text and the offset just after the name in
/// the message (where the question's type follows); no offset when the capture cut the name.
fn name(captured: &[u8], real_len: usize, start: usize) -> Result<(String, Option<usize>), NameError> {
    let mut text = String::new();
    let mut pos = start;
    // Start of the run being read: a pointer must jump strictly before it.
    let mut floor = start;
    let mut after: Option<usize> = None;
    let mut wire_len = 0usize;
    let mut hops = 0usize;
    loop {
        let b = match span(captured, real_len, pos, 1)? {
            Span::Here(s) => s[0],
            Span::Cut => return Ok((text, None)),
        };
        match b >> 6 {
            0 => {
                let len = b as usize;
                wire_len += 1 + len;
                if wire_len > MAX_NAME_WIRE {
                    return Err(NameError::TooLong);
                }
                if len == 0 {
                    let end = after.unwrap_or(pos + 1);
                    if text.is_empty() {
                        text.push('.');
                    }
                    return Ok((text, Some(end)));
                }
                match span(captured, real_len, pos + 1, len)? {
                    Span::Here(label) => push_label(&mut text, label),
                    Span::Cut => return Ok((text, None)),
                }
                pos += 1 + len;
            }
            3 => {
                let low = match span(captured, real_len, pos + 1, 1)? {
                    Span::Here(s) => s[0],
                    Span::Cut => return Ok((text, None)),
                };
                let target = (((b & 0x3f) as usize) << 8) | low as usize;
                if target < HEADER_LEN {
                    return Err(NameError::PointerIntoHeader { at: pos });
                }
                if target >= floor {
                    return Err(NameError::PointerNotBackwards { at: pos, target, floor });
                }
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(NameError::TooManyHops);
                }
                after.get_or_insert(pos + 2);
                floor = target;
                pos = target;
            }
            _ => return Err(NameError::ReservedLabel { kind: b & 0xc0, offset: pos }),
        }
    }
}

/// Decodes the first question of a message. `captured` holds the bytes the probe copied,
/// `real_len` is the message's true length; `qdcount` comes from the header.
pub fn question(captured: &[u8], real_len: usize, qdcount: u16) -> Question {
    if qdcount == 0 {
        return Question::default();
    }
    let captured = &captured[..captured.len().min(real_len)];
    match name(captured, real_len, HEADER_LEN) {
        Err(e) => Question { malformed: Some(e), cut: false, ..Default::default() },
        Ok((text, None)) => Question { name: Some(text), qtype: None, cut: true, malformed: None },
        Ok((text, Some(end))) => match span(captured, real_len, end, 2) {
            Ok(Span::Here(t)) => {
                Question { name: Some(text), qtype: Some(u16::from_be_bytes([t[0], t[1]])), cut: false, malformed: None }
            }
            Ok(Span::Cut) => Question { name: Some(text), qtype: None, cut: true, malformed: None },
            Err(e) => Question { name: None, qtype: None, cut: false, malformed: Some(e) },
        },
    }
}

/// The mnemonic of a query type (IANA DNS parameters), for the common ones.
pub fn qtype_name(qtype: u16) -> Option<&'static str> {
    Some(match qtype {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        39 => "DNAME",
        41 => "OPT",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        52 => "TLSA",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        _ => return None,
    })
}

/// The mnemonic of a header response code (RFC 1035, RFC 2136).
pub fn rcode_name(rcode: u8) -> Option<&'static str> {
    Some(match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with one question, then `rest`.
    fn msg(rest: &[u8]) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(rest);
        m
    }

    #[test]
    fn plain_name_and_type() {
        let m = msg(b"\x05tapio\x04test\x00\x00\x1c\x00\x01");
        let q = question(&m, m.len(), 1);
        assert_eq!(q.name.as_deref(), Some("tapio.test"));
        assert_eq!(q.qtype, Some(28));
        assert!(!q.cut && q.malformed.is_none());
    }

    #[test]
    fn root_and_escapes() {
        let m = msg(b"\x00\x00\x02\x00\x01");
        assert_eq!(question(&m, m.len(), 1).name.as_deref(), Some("."));
        let m = msg(b"\x03a.b\x02\x01\\\x00\x00\x01\x00\x01");
        assert_eq!(question(&m, m.len(), 1).name.as_deref(), Some("a\\.b.\\001\\\\"));
    }

    #[test]
    fn backward_pointer_is_followed() {
        // "test" at 12, then the question at 18: "tapio" + pointer to 12.
        let mut m = msg(b"\x04test\x00");
        let q_at = m.len();
        m.extend_from_slice(b"\x05tapio\xc0\x0c\x00\x01\x00\x01");
        // Decode from q_at by placing the name there: call name() directly.
        let (text, end) = name(&m, m.len(), q_at).unwrap();
        assert_eq!(text, "tapio.test");
        assert_eq!(end, Some(q_at + 8));
    }

    #[test]
    fn pointer_loops_end_as_malformed() {
        // A pointer to itself.
        let m = msg(b"\xc0\x0c\x00\x01");
        assert!(matches!(question(&m, m.len(), 1).malformed, Some(NameError::PointerNotBackwards { .. })));
        // Two runs pointing at each other: 12 -> label, pointer to 12 (same run start).
        let m = msg(b"\x01a\xc0\x0c");
        let q = question(&m, m.len(), 1);
        assert!(q.malformed.is_some() && q.name.is_none(), "{q:?}");
        // A forward pointer.
        let m = msg(b"\xc0\x20\x00\x01\x00\x01");
        assert!(question(&m, m.len(), 1).malformed.is_some());
        // Into the header.
        let m = msg(b"\xc0\x02");
        assert_eq!(question(&m, m.len(), 1).malformed, Some(NameError::PointerIntoHeader { at: 12 }));
    }

    #[test]
    fn bounds_use_the_real_length() {
        // The label claims 20 bytes but the message ends after 5.
        let m = msg(b"\x14abcde");
        let q = question(&m, m.len(), 1);
        assert!(matches!(q.malformed, Some(NameError::PastEnd { .. })), "{q:?}");
        assert_eq!(q.name, None);
        // Captured bytes beyond the real length (a stale buffer tail) are not trusted.
        let m = msg(b"\x05tapio\x04test\x00\x00\x01\x00\x01");
        let q = question(&m, 12 + 8, 1);
        assert!(q.malformed.is_some(), "{q:?}");
        // Within the real length but past the capture: cut, not malformed.
        let q = question(&m[..12 + 8], m.len(), 1);
        assert_eq!((q.name.as_deref(), q.cut, q.malformed), (Some("tapio"), true, None));
        // Type cut off by the capture.
        let q = question(&m[..m.len() - 4], m.len(), 1);
        assert_eq!((q.name.as_deref(), q.qtype, q.cut), (Some("tapio.test"), None, true));
    }

    #[test]
    fn long_names_and_reserved_labels() {
        let mut rest = Vec::new();
        for _ in 0..5 {
            rest.push(63);
            rest.extend_from_slice(&[b'x'; 63]);
        }
        rest.push(0);
        let m = msg(&rest);
        assert_eq!(question(&m, m.len(), 1).malformed, Some(NameError::TooLong));
        let m = msg(b"\x41abc");
        assert!(matches!(question(&m, m.len(), 1).malformed, Some(NameError::ReservedLabel { kind: 0x40, .. })));
    }

    #[test]
    fn no_question() {
        let m = msg(b"");
        assert_eq!(question(&m, m.len(), 0), Question::default());
    }
}
