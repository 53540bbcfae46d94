//! Key material: the master keyring that wraps every stored secret, and the signing keys
//! behind idbridge's access tokens and JWKS.

pub mod blind_index;
pub mod keyring;
pub mod server_secrets;
pub mod signing;
pub mod user_keys;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A URL-safe random string carrying `N` bytes of entropy.
pub fn random_token<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<N>())
}

/// SHA-256, base64url: how tokens and assertions are stored and looked up.
pub fn sha256_b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(data))
}

/// How many wrapped keys (user keys, signing keys, server secrets, code profiles, provider
/// tokens) each master key id wraps:
/// what `keys status` prints, and what start-up checks against the keyring.
pub fn wrapped_key_usage(
    conn: &mut crate::db::DbConnection,
) -> Result<std::collections::BTreeMap<String, i64>, crate::db::DbError> {
    use diesel::prelude::*;

    use crate::db::schema::{authorization_codes, provider_tokens, server_secrets, signing_keys};
    let mut usage: std::collections::BTreeMap<String, i64> =
        user_keys::count_by_wrapping_key(conn)?.into_iter().collect();
    let signing: Vec<Vec<u8>> = signing_keys::table.select(signing_keys::private_key_wrapped).load(conn)?;
    let secrets: Vec<Vec<u8>> = server_secrets::table.select(server_secrets::wrapped).load(conn)?;
    // The profiles authorization codes carry until redeemed (a minute at most).
    let profiles: Vec<Vec<u8>> = authorization_codes::table
        .filter(authorization_codes::profile.is_not_null())
        .select(authorization_codes::profile.assume_not_null())
        .load(conn)?;
    // Tokens providers gave for users (Apple's refresh tokens), kept or waiting to be revoked.
    let provider_tokens: Vec<Vec<u8>> = provider_tokens::table.select(provider_tokens::wrapped).load(conn)?;
    for wrapped in signing.iter().chain(&secrets).chain(&profiles).chain(&provider_tokens) {
        if let Some(id) = keyring::MasterKeyring::wrapping_key_id(wrapped) {
            *usage.entry(id).or_default() += 1;
        }
    }
    Ok(usage)
}
