//! Proves each Rust mirror of a C event struct has the layout the compiled object records in BTF.
//!
//! The C header is the one definition; Rust mirrors it with `#[repr(C)]`. A drift (a field added
//! on one side, a type widened) would decode garbage silently, so every mirror declares its
//! fields with [`mirror_layout!`] and a test compares them with the object's own BTF.

use thiserror::Error;

use crate::btf::{Btf, BtfError, StructLayout};

/// A difference between a Rust mirror and the struct in the object's BTF.
#[derive(Debug, Error)]
pub enum LayoutError {
    #[error("layout {0}: {1}")]
    Btf(String, #[source] BtfError),
    #[error("layout {name}: size is {rust} bytes in Rust, {btf} in the object's BTF")]
    Size { name: String, rust: usize, btf: usize },
    #[error("layout {name}: Rust has {rust} fields, the object's BTF has {btf}")]
    FieldCount { name: String, rust: usize, btf: usize },
    #[error(
        "layout {name}: field {index} is `{rust_field}` at offset {rust_offset} size {rust_size} in Rust, \
         `{btf_field}` at offset {btf_offset} size {btf_size} in the object's BTF"
    )]
    Field {
        name: String,
        index: usize,
        rust_field: String,
        rust_offset: usize,
        rust_size: usize,
        btf_field: String,
        btf_offset: usize,
        btf_size: usize,
    },
}

/// Builds the [`StructLayout`] of a `#[repr(C)]` Rust struct from its field list.
///
/// `mirror_layout!("c_name", RustType { field_a, field_b })` lists the fields in C order; names
/// must equal the C names so a renamed field is caught too.
#[macro_export]
macro_rules! mirror_layout {
    ($c_name:literal, $ty:ty { $($field:ident),* $(,)? }) => {{
        fn size_of_field<T, F>(_: impl Fn(&T) -> &F) -> usize {
            ::core::mem::size_of::<F>()
        }
        $crate::btf::StructLayout {
            name: $c_name.to_owned(),
            size: ::core::mem::size_of::<$ty>(),
            fields: vec![$(
                (
                    stringify!($field).to_owned(),
                    ::core::mem::offset_of!($ty, $field),
                    size_of_field(|s: &$ty| &s.$field),
                ),
            )*],
        }
    }};
}

/// Checks each mirror against the struct of its name in every object of its monitor, given as
/// (monitor, file name, bytes); returns how many were compared, or the first failure named by
/// its file. Both mirror tests (the records' in tapio-abi, the runtime's configurations) walk the
/// bundle this way, so a mirror is never compared with another monitor's object.
pub fn check_objects<'a>(
    objects: impl IntoIterator<Item = (&'a str, &'a str, &'a [u8])>,
    mirrors: &[(&str, StructLayout)],
) -> Result<usize, String> {
    let mut checked = 0;
    for (monitor, file, bytes) in objects {
        let ours: Vec<&StructLayout> = mirrors.iter().filter(|(m, _)| *m == monitor).map(|(_, l)| l).collect();
        if ours.is_empty() {
            continue;
        }
        let btf = crate::inspect::object_btf(file, bytes).map_err(|e| e.to_string())?;
        for mirror in ours {
            check(&btf, mirror).map_err(|e| format!("{file}: {e}"))?;
            checked += 1;
        }
    }
    Ok(checked)
}

/// Compares a Rust mirror with the struct of the same name in `btf`; the first difference wins.
pub fn check(btf: &Btf, rust: &StructLayout) -> Result<(), LayoutError> {
    let name = rust.name.clone();
    let c = btf.struct_layout(&rust.name).map_err(|e| LayoutError::Btf(name.clone(), e))?;
    if c.size != rust.size {
        return Err(LayoutError::Size { name, rust: rust.size, btf: c.size });
    }
    for (index, (r, b)) in rust.fields.iter().zip(&c.fields).enumerate() {
        if r != b {
            return Err(LayoutError::Field {
                name,
                index,
                rust_field: r.0.clone(),
                rust_offset: r.1,
                rust_size: r.2,
                btf_field: b.0.clone(),
                btf_offset: b.1,
                btf_size: b.2,
            });
        }
    }
    if c.fields.len() != rust.fields.len() {
        return Err(LayoutError::FieldCount { name, rust: rust.fields.len(), btf: c.fields.len() });
    }
    Ok(())
}
