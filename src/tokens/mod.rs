//! idbridge's own tokens: signed JWT access tokens (RFC 9068) and opaque, rotating refresh
//! tokens stored only as hashes.

pub mod access;
pub mod refresh;
