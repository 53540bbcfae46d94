//! Client secrets: the `$sha256$` form idbridge writes (`hash_secret`, `new_secret`) and the
//! argon2 (PHC) hashes it still verifies.

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The prefix of a `secret_hash` in the current form.
pub const SHA256_PREFIX: &str = "$sha256$";

/// How a confidential client's secret is checked.
pub(super) enum SecretCheck {
    /// `$sha256$` + base64url(SHA-256(label | secret)): for secrets of 256 random bits.
    Sha256([u8; 32]),
    /// A PHC argon2 string, accepted from configurations and console clients written before the
    /// SHA-256 form.
    Argon2(String),
}

impl std::fmt::Debug for SecretCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecretCheck::Sha256(_) => "Sha256(..)",
            SecretCheck::Argon2(_) => "Argon2(..)",
        })
    }
}

impl SecretCheck {
    pub(super) fn parse(hash: &str) -> Option<Self> {
        if let Some(encoded) = hash.strip_prefix(SHA256_PREFIX) {
            let digest = URL_SAFE_NO_PAD.decode(encoded).ok()?;
            return digest.try_into().ok().map(SecretCheck::Sha256);
        }
        let parsed = PasswordHash::new(hash).ok()?;
        parsed.algorithm.as_str().starts_with("argon2").then(|| SecretCheck::Argon2(hash.to_string()))
    }
}

pub(super) fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::new().chain_update(b"idbridge client secret\0").chain_update(secret.as_bytes()).finalize().into()
}

/// The `secret_hash` for a secret, as printed by `idbridge clients hash-secret`.
pub fn hash_secret(secret: &str) -> String {
    format!("{SHA256_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret_digest(secret)))
}

/// A new client secret (256 random bits) and its `secret_hash`.
pub fn new_secret() -> (String, String) {
    let secret = crate::crypto::random_token::<32>();
    let hash = hash_secret(&secret);
    (secret, hash)
}

/// Largest argon2 memory cost accepted from a `secret_hash` (256 MiB).
const ARGON2_MAX_BLOCKS: usize = 256 * 1024;

/// Verifies `secret` against a PHC argon2 string, in `memory` (grown when the hash needs more),
/// so repeated verifications allocate nothing.
pub(super) fn verify_argon2_in(hash: &str, secret: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else { return false };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else { return false };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else { return false };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    let blocks = params.block_count();
    if blocks > ARGON2_MAX_BLOCKS {
        return false;
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        secret.as_bytes(),
        salt,
        &mut out,
        &mut memory[..blocks],
    );
    hashed.is_ok() && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
fn verify_argon2(hash: &str, secret: &str) -> bool {
    verify_argon2_in(hash, secret, &mut Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_secret_verifies_only_itself() {
        let Some(SecretCheck::Sha256(expected)) = SecretCheck::parse(&hash_secret("s3cret")) else {
            panic!("hash_secret prints the SHA-256 form");
        };
        assert_eq!(secret_digest("s3cret"), expected);
        assert_ne!(secret_digest("s3cret!"), expected);
    }

    #[test]
    fn argon2_hashes_from_older_configs_still_parse_and_garbage_does_not() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let phc = Argon2::default().hash_password(b"old", &salt).unwrap().to_string();
        assert!(matches!(SecretCheck::parse(&phc), Some(SecretCheck::Argon2(_))));
        assert!(verify_argon2(&phc, "old") && !verify_argon2(&phc, "new"));
        assert!(SecretCheck::parse("$sha256$tooshort").is_none());
        assert!(SecretCheck::parse("plain").is_none());
    }
}
