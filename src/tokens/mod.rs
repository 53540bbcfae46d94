//! idbridge's own tokens: access tokens (JWT), ID tokens, refresh tokens (rotation, reuse),
//! sign-in nonces, and the browser flow's logins and authorization codes.

pub mod access;
pub mod codes;
pub mod dpop;
pub mod id_token;
pub mod logout;
pub mod nonce;
