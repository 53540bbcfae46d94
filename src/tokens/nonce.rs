//! Sign-in nonces, stateless until spent: a nonce is random bytes, its expiry and an HMAC over
//! both and the client id, so issuing one writes nothing. Using one records it as spent (the
//! primary key decides between concurrent uses) until it would have expired anyway.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::prelude::*;
use diesel::result::DatabaseErrorKind;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::crypto::server_secrets::ServerSecret;
use crate::db::schema::nonces;
use crate::db::{DbConnection, DbError};

pub const NONCE_TTL_SECS: i64 = 600;
const RANDOM_LEN: usize = 16;
const TAG_LEN: usize = 16;
const ENCODED_LEN: usize = RANDOM_LEN + 8 + TAG_LEN;

/// The key behind nonces: a server secret, so every replica accepts every other's nonces.
pub struct NonceKey(pub ServerSecret);

#[derive(Debug, thiserror::Error)]
pub enum NonceError {
    #[error("the nonce is unknown, expired, already used, or issued to another client")]
    Invalid,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl NonceKey {
    fn tag(&self, client_id: &str, random: &[u8], expires_at: i64) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.0.bytes()).expect("HMAC takes any key length");
        mac.update(b"idbridge nonce\0");
        mac.update(client_id.as_bytes());
        mac.update(b"\0");
        mac.update(random);
        mac.update(&expires_at.to_be_bytes());
        mac
    }

    /// A new nonce for `client_id`, valid for [`NONCE_TTL_SECS`].
    pub fn issue(&self, client_id: &str, now: i64) -> String {
        let random = crate::crypto::random_bytes::<RANDOM_LEN>();
        let expires_at = now + NONCE_TTL_SECS;
        let tag = self.tag(client_id, &random, expires_at).finalize().into_bytes();
        let mut raw = Vec::with_capacity(ENCODED_LEN);
        raw.extend_from_slice(&random);
        raw.extend_from_slice(&expires_at.to_be_bytes());
        raw.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The nonce's expiry when it is ours, for `client_id`, and not expired; it is not spent here.
    pub fn check(&self, nonce: &str, client_id: &str, now: i64) -> Result<i64, NonceError> {
        let raw = URL_SAFE_NO_PAD.decode(nonce).map_err(|_| NonceError::Invalid)?;
        if raw.len() != ENCODED_LEN {
            return Err(NonceError::Invalid);
        }
        let (random, rest) = raw.split_at(RANDOM_LEN);
        let (expiry, tag) = rest.split_at(8);
        let expires_at = i64::from_be_bytes(expiry.try_into().map_err(|_| NonceError::Invalid)?);
        self.tag(client_id, random, expires_at)
            .verify_truncated_left(tag)
            .map_err(|_| NonceError::Invalid)?;
        if expires_at <= now {
            return Err(NonceError::Invalid);
        }
        Ok(expires_at)
    }

    /// Checks the nonce and records it as spent, inside the caller's transaction.
    pub fn spend(
        &self,
        conn: &mut DbConnection,
        nonce: &str,
        client_id: &str,
        now: i64,
    ) -> Result<(), NonceError> {
        let expires_at = self.check(nonce, client_id, now)?;
        // A savepoint keeps the transaction usable after a unique violation (PostgreSQL).
        let recorded = conn.transaction(|c| {
            diesel::insert_into(nonces::table)
                .values((
                    nonces::nonce.eq(nonce),
                    nonces::client_id.eq(client_id),
                    nonces::expires_at.eq(expires_at),
                ))
                .execute(c)
        });
        match recorded {
            Ok(_) => Ok(()),
            Err(diesel::result::Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                Err(NonceError::Invalid)
            }
            Err(e) => Err(NonceError::Db(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> NonceKey {
        NonceKey(ServerSecret::from_bytes([byte; 32]))
    }

    #[test]
    fn a_nonce_checks_for_its_client_until_it_expires() {
        let k = key(1);
        let nonce = k.issue("app", 1_000);
        assert_eq!(k.check(&nonce, "app", 1_000).unwrap(), 1_000 + NONCE_TTL_SECS);
        assert!(matches!(k.check(&nonce, "other", 1_000), Err(NonceError::Invalid)));
        assert!(matches!(k.check(&nonce, "app", 1_000 + NONCE_TTL_SECS), Err(NonceError::Invalid)));
        assert!(matches!(key(2).check(&nonce, "app", 1_000), Err(NonceError::Invalid)));
    }

    #[test]
    fn an_altered_or_foreign_nonce_is_refused() {
        let k = key(1);
        let nonce = k.issue("app", 1_000);
        let mut raw = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        raw[RANDOM_LEN + 7] ^= 1; // a later expiry
        assert!(matches!(k.check(&URL_SAFE_NO_PAD.encode(raw), "app", 1_000), Err(NonceError::Invalid)));
        assert!(matches!(k.check("made-up", "app", 1_000), Err(NonceError::Invalid)));
    }
}
