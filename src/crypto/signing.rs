//! Signing keys for access tokens: generated here, stored with the private part wrapped by the
//! master keyring, published in the JWKS ahead of use, and kept there until every token they
//! signed has expired.

use std::sync::{Arc, RwLock};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::prelude::*;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;
use serde_json::json;

use super::keyring::{KeyringError, MasterKeyring};
use crate::config::SigningAlg;
use crate::db::schema::signing_keys;
use crate::db::{self, DbConnection, DbError};

/// The notice that signing keys changed (`db::notify`).
pub const CHANGED: &str = "keys";
/// `Cache-Control: max-age` of the JWKS.
pub const JWKS_MAX_AGE_SECS: i64 = 300;
/// How often every replica reloads keys from the database (see `housekeeping`).
pub const KEY_RELOAD_SECS: i64 = 60;
/// A new key signs only after every replica has published it and every cache has refreshed.
pub const PUBLISH_LEAD_SECS: i64 = JWKS_MAX_AGE_SECS + KEY_RELOAD_SECS + 5;
/// Clock leeway granted to verifiers of our tokens, added to retention.
const VERIFIER_LEEWAY_SECS: i64 = 60;
const ROTATION_LOCK_ID: i64 = 0x1db_5167;

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("signing key {kid}: {source}")]
    Unwrap { kid: String, source: KeyringError },
    #[error("signing key {0} is malformed")]
    Malformed(String),
    #[error("key generation failed")]
    Generation,
    #[error("no signing key is active")]
    NoActiveKey,
    #[error("cannot sign: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

impl From<diesel::result::Error> for SigningError {
    fn from(e: diesel::result::Error) -> Self {
        SigningError::Db(e.into())
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = signing_keys)]
struct SigningKeyRow {
    kid: String,
    alg: String,
    private_key_wrapped: Vec<u8>,
    public_jwk: String,
    created_at: i64,
    activates_at: i64,
}

/// Where a key is in its life: published ahead of signing, signing, retired (still published
/// while tokens it signed may live), withdrawn (no longer published).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Published,
    Signing,
    Retired,
    Withdrawn,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Published => "published",
            KeyState::Signing => "signing",
            KeyState::Retired => "retired",
            KeyState::Withdrawn => "withdrawn",
        }
    }
}

pub struct KeySummary {
    pub kid: String,
    pub alg: String,
    pub state: KeyState,
    pub created_at: i64,
    pub activates_at: i64,
}

pub struct LoadedKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    pub decoding: DecodingKey,
    jwk: serde_json::Value,
    pub created_at: i64,
    pub activates_at: i64,
}

/// The keys known to this process, refreshed from the database.
pub struct SigningKeys {
    /// Sorted by `activates_at`, oldest first.
    keys: RwLock<Arc<Vec<Arc<LoadedKey>>>>,
    keyring: Arc<MasterKeyring>,
    alg: SigningAlg,
    access_ttl_secs: i64,
    rotation_secs: i64,
}

impl SigningKeys {
    pub fn new(
        keyring: Arc<MasterKeyring>,
        alg: SigningAlg,
        access_ttl_secs: i64,
        rotation_secs: i64,
    ) -> Self {
        Self { keys: RwLock::new(Arc::new(Vec::new())), keyring, alg, access_ttl_secs, rotation_secs }
    }

    fn snapshot(&self) -> Arc<Vec<Arc<LoadedKey>>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads every key from the database and unwraps it.
    pub fn reload(&self, conn: &mut DbConnection) -> Result<(), SigningError> {
        let rows: Vec<SigningKeyRow> = signing_keys::table
            .order(signing_keys::activates_at.asc())
            .select(SigningKeyRow::as_select())
            .load(conn)?;
        let mut loaded = Vec::with_capacity(rows.len());
        for row in rows {
            loaded.push(Arc::new(self.load_row(row)?));
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    fn load_row(&self, row: SigningKeyRow) -> Result<LoadedKey, SigningError> {
        let malformed = || SigningError::Malformed(row.kid.clone());
        let der = self
            .keyring
            .unwrap(&row.private_key_wrapped, aad(&row.kid).as_bytes())
            .map_err(|source| SigningError::Unwrap { kid: row.kid.clone(), source })?;
        let jwk: serde_json::Value = serde_json::from_str(&row.public_jwk).map_err(|_| malformed())?;
        let field = |name: &str| jwk.get(name).and_then(|v| v.as_str()).ok_or_else(malformed);
        let (alg, encoding, decoding) = match row.alg.as_str() {
            "ES256" => (
                Algorithm::ES256,
                EncodingKey::from_ec_der(&der),
                DecodingKey::from_ec_components(field("x")?, field("y")?).map_err(|_| malformed())?,
            ),
            "EdDSA" => (
                Algorithm::EdDSA,
                EncodingKey::from_ed_der(&der),
                DecodingKey::from_ed_components(field("x")?).map_err(|_| malformed())?,
            ),
            "RS256" => (
                Algorithm::RS256,
                EncodingKey::from_rsa_der(&der),
                DecodingKey::from_rsa_components(field("n")?, field("e")?).map_err(|_| malformed())?,
            ),
            _ => return Err(malformed()),
        };
        Ok(LoadedKey {
            kid: row.kid,
            alg,
            encoding,
            decoding,
            jwk,
            created_at: row.created_at,
            activates_at: row.activates_at,
        })
    }

    /// Makes the first key, active at once, when the database has none. Safe to race.
    pub fn ensure_initial_key(&self, conn: &mut DbConnection, now: i64) -> Result<bool, SigningError> {
        db::lock_for_transaction(conn, ROTATION_LOCK_ID)?;
        let count: i64 = signing_keys::table.count().get_result(conn)?;
        if count > 0 {
            return Ok(false);
        }
        self.insert_new_key(conn, now, now)?;
        Ok(true)
    }

    /// Adds a key that starts signing once every cache of the JWKS has seen it.
    pub fn add_key(&self, conn: &mut DbConnection, now: i64) -> Result<String, SigningError> {
        db::lock_for_transaction(conn, ROTATION_LOCK_ID)?;
        self.insert_new_key(conn, now, now + PUBLISH_LEAD_SECS)
    }

    /// Adds a key when the newest is older than `keys.signing_key_rotation` less the publish lead.
    pub fn rotate_if_due(&self, conn: &mut DbConnection, now: i64) -> Result<Option<String>, SigningError> {
        db::lock_for_transaction(conn, ROTATION_LOCK_ID)?;
        let newest: Option<i64> =
            signing_keys::table.select(diesel::dsl::max(signing_keys::activates_at)).first(conn)?;
        match newest {
            Some(at) if at + self.rotation_secs - PUBLISH_LEAD_SECS > now => Ok(None),
            _ => self.insert_new_key(conn, now, now + PUBLISH_LEAD_SECS).map(Some),
        }
    }

    fn insert_new_key(
        &self,
        conn: &mut DbConnection,
        now: i64,
        activates_at: i64,
    ) -> Result<String, SigningError> {
        let kid = super::random_token::<12>();
        let (alg, der, mut jwk) = generate(self.alg)?;
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg);
        jwk["use"] = json!("sig");
        let row = SigningKeyRow {
            private_key_wrapped: self.keyring.wrap(&der, aad(&kid).as_bytes()),
            kid: kid.clone(),
            alg: alg.to_string(),
            public_jwk: jwk.to_string(),
            created_at: now,
            activates_at,
        };
        diesel::insert_into(signing_keys::table).values(&row).execute(conn)?;
        // Every replica reloads its keys now rather than at its next periodic reload.
        db::notify::publish(conn, CHANGED, "")?;
        Ok(kid)
    }

    /// Keys a verifier may still meet: those not yet signing, the signing one, and retired ones
    /// whose last token has not expired.
    fn published(&self, now: i64) -> Vec<Arc<LoadedKey>> {
        let keys = self.snapshot();
        (0..keys.len()).filter(|&i| self.is_published(&keys, i, now)).map(|i| keys[i].clone()).collect()
    }

    /// A key retires when a later key becomes active, and stays published while its tokens may live.
    fn is_published(&self, keys: &[Arc<LoadedKey>], index: usize, now: i64) -> bool {
        let retention = self.access_ttl_secs + VERIFIER_LEEWAY_SECS;
        let retired_at = keys[index + 1..].iter().map(|k| k.activates_at).find(|&at| at <= now);
        retired_at.is_none_or(|at| at + retention > now)
    }

    /// The key that signs now: the newest one already active.
    pub fn current(&self, now: i64) -> Option<Arc<LoadedKey>> {
        self.snapshot().iter().rev().find(|k| k.activates_at <= now).cloned()
    }

    /// A published key by `kid`, for verifying our own tokens.
    /// Runs on every access-token check, so it looks up one key rather than listing them all.
    pub fn find(&self, kid: &str, now: i64) -> Option<Arc<LoadedKey>> {
        let keys = self.snapshot();
        let index = keys.iter().position(|k| k.kid == kid)?;
        self.is_published(&keys, index, now).then(|| keys[index].clone())
    }

    pub fn jwks(&self, now: i64) -> serde_json::Value {
        json!({ "keys": self.published(now).iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }

    /// Every key with its state now, newest first, for the admin console.
    pub fn summary(&self, now: i64) -> Vec<KeySummary> {
        let keys = self.snapshot();
        let current = self.current(now).map(|k| k.kid.clone());
        let mut list: Vec<KeySummary> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| KeySummary {
                kid: key.kid.clone(),
                alg: format!("{:?}", key.alg),
                state: if current.as_deref() == Some(key.kid.as_str()) {
                    KeyState::Signing
                } else if key.activates_at > now {
                    KeyState::Published
                } else if self.is_published(&keys, i, now) {
                    KeyState::Retired
                } else {
                    KeyState::Withdrawn
                },
                created_at: key.created_at,
                activates_at: key.activates_at,
            })
            .collect();
        list.reverse();
        list
    }

    /// Signs `claims` with the current key, header `typ` as given.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T, now: i64) -> Result<String, SigningError> {
        let key = self.current(now).ok_or(SigningError::NoActiveKey)?;
        let mut header = Header::new(key.alg);
        header.typ = Some(typ.to_string());
        header.kid = Some(key.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &key.encoding)?)
    }

    pub fn is_loaded(&self) -> bool {
        !self.snapshot().is_empty()
    }
}

fn aad(kid: &str) -> String {
    format!("idbridge:signing-key:{kid}")
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh key pair: the private key in the DER form jsonwebtoken's aws-lc backend reads,
/// and the public JWK members.
fn generate(alg: SigningAlg) -> Result<(&'static str, Vec<u8>, serde_json::Value), SigningError> {
    let rng = SystemRandom::new();
    let fail = |_| SigningError::Generation;
    match alg {
        SigningAlg::ES256 => {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(fail)?;
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .map_err(|_| SigningError::Generation)?;
            let point = pair.public_key().as_ref();
            // Uncompressed SEC1 point: 0x04 | x (32) | y (32).
            let (x, y) = point[1..].split_at(32);
            Ok((
                "ES256",
                pkcs8.as_ref().to_vec(),
                json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)}),
            ))
        }
        SigningAlg::EdDSA => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(fail)?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| SigningError::Generation)?;
            let x = b64(pair.public_key().as_ref());
            Ok(("EdDSA", pkcs8.as_ref().to_vec(), json!({"kty": "OKP", "crv": "Ed25519", "x": x})))
        }
        SigningAlg::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(fail)?;
            let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).map_err(fail)?;
            // jsonwebtoken's RSA signer reads PKCS#1, the key inside the PKCS#8 envelope.
            let info =
                pkcs8::PrivateKeyInfo::try_from(pkcs8.as_ref()).map_err(|_| SigningError::Generation)?;
            let public = pair.public_key();
            let jwk = json!({
                "kty": "RSA",
                "n": b64(public.modulus().big_endian_without_leading_zero()),
                "e": b64(public.exponent().big_endian_without_leading_zero()),
            });
            Ok(("RS256", info.private_key.to_vec(), jwk))
        }
    }
}

/// Rewraps every signing key not yet under the keyring's first master key, one row per
/// transaction, so an interrupted run resumes where it stopped. Returns (rewrapped, total).
pub async fn rewrap_all(
    db: &crate::db::Db,
    keyring: Arc<MasterKeyring>,
    progress: impl Fn(usize, usize),
) -> Result<(usize, usize), SigningError> {
    let kids: Vec<String> = db
        .run(|conn| Ok::<_, SigningError>(signing_keys::table.select(signing_keys::kid).load(conn)?))
        .await?;
    let total = kids.len();
    let mut rewrapped = 0;
    for (done, kid) in kids.into_iter().enumerate() {
        let ring = keyring.clone();
        let changed = db
            .write(move |conn| {
                let wrapped: Vec<u8> =
                    signing_keys::table.find(&kid).select(signing_keys::private_key_wrapped).first(conn)?;
                if ring.is_current(&wrapped) {
                    return Ok(false);
                }
                let plain = ring
                    .unwrap(&wrapped, aad(&kid).as_bytes())
                    .map_err(|source| SigningError::Unwrap { kid: kid.clone(), source })?;
                diesel::update(signing_keys::table.find(&kid))
                    .set(signing_keys::private_key_wrapped.eq(ring.wrap(&plain, aad(&kid).as_bytes())))
                    .execute(conn)?;
                Ok::<_, SigningError>(true)
            })
            .await?;
        rewrapped += usize::from(changed);
        progress(done + 1, total);
    }
    Ok((rewrapped, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    fn kids(keys: &SigningKeys, now: i64) -> Vec<String> {
        let jwks = keys.jwks(now);
        let mut kids: Vec<String> =
            jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect();
        kids.sort();
        kids
    }

    fn store() -> (tempfile::TempDir, Db, SigningKeys) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(&format!("sqlite://{}/keys.db", dir.path().display()), 1).unwrap();
        db.migrate().unwrap();
        let ring = Arc::new(MasterKeyring::from_keys(vec![[1; 32]]));
        (dir, db, SigningKeys::new(ring, SigningAlg::ES256, 600, 3600))
    }

    #[test]
    fn a_new_key_is_published_before_it_signs_and_the_old_one_stays_until_its_tokens_expire() {
        let (_dir, db, keys) = store();
        let mut conn = db.get().unwrap();
        let t0 = 1_000_000;
        keys.ensure_initial_key(&mut conn, t0).unwrap();
        let new_kid = keys.add_key(&mut conn, t0 + 10).unwrap();
        keys.reload(&mut conn).unwrap();
        let first = keys.current(t0 + 10).unwrap().kid.clone();

        assert_ne!(first, new_kid, "the new key must not sign before caches have seen it");
        let mut both = vec![first.clone(), new_kid.clone()];
        both.sort();
        assert_eq!(kids(&keys, t0 + 10), both, "the new key is published at once");

        let switch = t0 + 10 + PUBLISH_LEAD_SECS;
        assert_eq!(keys.current(switch).unwrap().kid, new_kid);
        assert!(keys.find(&first, switch + 600 + 59).is_some(), "kept while its tokens may live");
        assert!(keys.find(&first, switch + 600 + 60).is_none(), "dropped once they have expired");
        assert_eq!(kids(&keys, switch + 600 + 60), vec![new_kid]);
    }

    #[test]
    fn rotation_is_due_one_publish_lead_before_the_interval_ends() {
        let (_dir, db, keys) = store();
        let mut conn = db.get().unwrap();
        let t0 = 1_000_000;
        keys.ensure_initial_key(&mut conn, t0).unwrap();
        assert_eq!(keys.rotate_if_due(&mut conn, t0 + 3600 - PUBLISH_LEAD_SECS - 1).unwrap(), None);
        assert!(keys.rotate_if_due(&mut conn, t0 + 3600 - PUBLISH_LEAD_SECS).unwrap().is_some());
    }

    #[test]
    fn every_algorithm_signs_tokens_its_own_jwk_verifies() {
        for alg in [SigningAlg::ES256, SigningAlg::EdDSA, SigningAlg::RS256] {
            let (_dir, db, _) = store();
            let ring = Arc::new(MasterKeyring::from_keys(vec![[2; 32]]));
            let keys = SigningKeys::new(ring, alg, 600, 3600);
            let mut conn = db.get().unwrap();
            keys.ensure_initial_key(&mut conn, 100).unwrap();
            keys.reload(&mut conn).unwrap();
            let token = keys.sign("at+jwt", &json!({"sub": "x", "exp": 10_000_000_000i64}), 100).unwrap();
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(keys.jwks(100)["keys"][0].clone()).unwrap();
            let key = DecodingKey::from_jwk(&jwk).unwrap();
            let mut validation = jsonwebtoken::Validation::new(keys.current(100).unwrap().alg);
            validation.set_required_spec_claims(&["exp"]);
            validation.validate_aud = false;
            jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation)
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        }
    }
}
