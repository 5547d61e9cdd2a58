//! Which kernels the matrix boots: the manifest of kernel lines and the lock that pins each to
//! one package ([`manifest`]), the Debian package indices the lock is resolved from ([`index`]),
//! and the mirror this host's apt already uses ([`apt`]). Nothing here downloads a package or
//! boots anything.

pub mod apt;
pub mod index;
pub mod manifest;
pub mod shard;
