//! What a VM boots, as files on disk: a locked kernel's packages downloaded, verified and cached
//! ([`fetch`], which also finds the kernel image, its modules and its config in them), a `.deb`
//! unpacked in pure Rust ([`deb`]), and the static guest agent built for musl ([`guest`]); [`lock`]
//! keeps two harness processes from writing one cache entry or output directory at once.

pub mod deb;
pub mod fetch;
pub mod guest;
pub mod lock;
