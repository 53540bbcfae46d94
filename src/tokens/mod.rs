//! idbridge's own tokens: access tokens (JWT), refresh tokens (rotation, reuse) and sign-in nonces.

pub mod access;
pub mod nonce;
pub mod refresh;
