//! Per-user data-encryption keys (DEKs) and the ciphertexts made with them.
//!
//! - A DEK is 256 random bits, made in the same transaction as its user, and stored only
//!   wrapped by the master keyring. The wrap's associated data binds a purpose label, the user
//!   id and the key version (the keyring adds the master key's id), so a wrapped key copied to
//!   another user's row, or given another version, does not unwrap.
//! - A user can have several versions; new data is encrypted under the newest, and old ones
//!   keep decrypting. Deleting the user deletes every version (crypto-shredding).
//! - Ciphertext: `idb1:v<version>:<base64url(nonce (24) | XChaCha20-Poly1305 ciphertext+tag)>`,
//!   encoded with SIMD base64 (`base64-simd`): the text form would otherwise cost a third of
//!   the time of a 64 KiB encryption.
//!   Its associated data binds the format, the user id, the version and the caller's context.
//! - Unwrapped DEKs live in a bounded cache for a bounded time, as ciphers that zeroize their
//!   key when the last holder drops them. Deleting a user evicts them at once on this replica;
//!   other replicas find the user gone in the database on their next use.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use diesel::prelude::*;
use zeroize::Zeroizing;

use super::keyring::{KeyringError, MasterKeyring};
use crate::db::schema::user_keys;
use crate::db::{DbConnection, DbError};

/// A user's key version: 1 for the key made with the user, then one more per rotation.
pub type KeyVersion = i32;

const CIPHERTEXT_FORMAT: &str = "idb1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Users whose unwrapped keys are cached at once.
const CACHE_USERS: usize = 10_000;
/// How long an unwrapped key stays cached.
const CACHE_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum UserKeyError {
    /// Not a ciphertext of this format, or not valid base64.
    #[error("the ciphertext is malformed")]
    Malformed,
    /// Altered, another user's, another context's, or of a key version the user lacks.
    #[error("the ciphertext cannot be decrypted with this user's keys and this context")]
    Invalid,
    /// The user (and so every key) is gone.
    #[error("the user no longer exists")]
    UserGone,
    #[error("a user key cannot be unwrapped: {0}")]
    Unwrap(KeyringError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for UserKeyError {
    fn from(e: diesel::result::Error) -> Self {
        UserKeyError::Db(e.into())
    }
}

/// The unwrapped keys of one user, by version.
struct CachedUser {
    versions: Mutex<HashMap<KeyVersion, Arc<XChaCha20Poly1305>>>,
    loaded_at: Instant,
}

/// The per-user keys: wrapping, unwrapping, the cache, and encryption with them.
pub struct UserKeys {
    keyring: Arc<MasterKeyring>,
    cache: quick_cache::sync::Cache<String, Arc<CachedUser>>,
}

fn wrap_aad(user_id: &str, version: KeyVersion) -> Vec<u8> {
    format!("idbridge:user-dek\0{user_id}\0{version}").into_bytes()
}

/// `idb1 NUL user_id NUL version (4 bytes, big-endian) context`: the context comes last, so the
/// parts cannot be shifted into one another.
fn ciphertext_aad(user_id: &str, version: KeyVersion, context: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(CIPHERTEXT_FORMAT.len() + user_id.len() + 6 + context.len());
    aad.extend_from_slice(CIPHERTEXT_FORMAT.as_bytes());
    aad.push(0);
    aad.extend_from_slice(user_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(context.as_bytes());
    aad
}

/// A ciphertext taken apart: its key version and `nonce | ciphertext+tag`.
pub struct ParsedCiphertext {
    pub version: KeyVersion,
    body: Vec<u8>,
}

/// Reads `idb1:v<n>:<base64url>`; only the canonical spelling of each part is accepted, so
/// every changed character is a changed ciphertext.
pub fn parse_ciphertext(text: &str) -> Result<ParsedCiphertext, UserKeyError> {
    let mut parts = text.splitn(3, ':');
    let (Some(format), Some(version), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(UserKeyError::Malformed);
    };
    let digits = version.strip_prefix('v').ok_or(UserKeyError::Malformed)?;
    let version: KeyVersion = digits.parse().map_err(|_| UserKeyError::Malformed)?;
    if format != CIPHERTEXT_FORMAT || version < 1 || digits != version.to_string() {
        return Err(UserKeyError::Malformed);
    }
    let body = base64_simd::URL_SAFE_NO_PAD.decode_to_vec(body).map_err(|_| UserKeyError::Malformed)?;
    if body.len() < NONCE_LEN + TAG_LEN {
        return Err(UserKeyError::Malformed);
    }
    Ok(ParsedCiphertext { version, body })
}

/// Encrypts under one user's key `version`, binding the user, version and context. The data
/// is encrypted in place in the buffer that becomes the ciphertext (one allocation, no copy).
pub fn seal(
    cipher: &XChaCha20Poly1305,
    user_id: &str,
    version: KeyVersion,
    context: &str,
    plaintext: &[u8],
) -> String {
    let nonce = super::random_bytes::<NONCE_LEN>();
    let aad = ciphertext_aad(user_id, version, context);
    let mut body = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    body.extend_from_slice(&nonce);
    body.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut body[NONCE_LEN..])
        .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
    body.extend_from_slice(&tag);
    let mut text = String::with_capacity(16 + base64_simd::URL_SAFE_NO_PAD.encoded_length(body.len()));
    let _ = write!(text, "{CIPHERTEXT_FORMAT}:v{version}:");
    base64_simd::URL_SAFE_NO_PAD.encode_append(&body, &mut text);
    text
}

/// Decrypted data, left where it was decrypted (no copy): a view into the decoded buffer.
pub struct Plaintext {
    buffer: Vec<u8>,
    end: usize,
}

impl std::ops::Deref for Plaintext {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buffer[NONCE_LEN..self.end]
    }
}

/// Decrypts a parsed ciphertext with the user's key of its version, in place.
pub fn open(
    cipher: &XChaCha20Poly1305,
    user_id: &str,
    parsed: ParsedCiphertext,
    context: &str,
) -> Result<Plaintext, UserKeyError> {
    let mut buffer = parsed.body;
    let aad = ciphertext_aad(user_id, parsed.version, context);
    let end = buffer.len() - TAG_LEN;
    let tag = Tag::clone_from_slice(&buffer[end..]);
    let (nonce, data) = buffer[..end].split_at_mut(NONCE_LEN);
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(nonce), &aad, data, &tag)
        .map_err(|_| UserKeyError::Invalid)?;
    Ok(Plaintext { buffer, end })
}

impl UserKeys {
    pub fn new(keyring: Arc<MasterKeyring>) -> Self {
        Self { keyring, cache: quick_cache::sync::Cache::new(CACHE_USERS) }
    }

    pub fn keyring(&self) -> &Arc<MasterKeyring> {
        &self.keyring
    }

    /// Makes key `version` for the user (random, wrapped) inside the caller's transaction, and
    /// returns it ready to use.
    pub fn create(
        &self,
        conn: &mut DbConnection,
        user_id: &str,
        version: KeyVersion,
        now: i64,
    ) -> Result<Arc<XChaCha20Poly1305>, DbError> {
        let (dek, wrapped, wrapped_by) = self.new_key(user_id, version);
        diesel::insert_into(user_keys::table)
            .values((
                user_keys::user_id.eq(user_id),
                user_keys::version.eq(version),
                user_keys::wrapped_by.eq(wrapped_by),
                user_keys::wrapped.eq(wrapped),
                user_keys::created_at.eq(now),
            ))
            .execute(conn)?;
        Ok(Arc::new(XChaCha20Poly1305::new(dek.as_slice().into())))
    }

    /// A fresh random key for the user's `version`: the key itself, its wrapped form, and the id
    /// of the master key that wrapped it (what a `user_keys` row stores).
    pub fn new_key(&self, user_id: &str, version: KeyVersion) -> (Zeroizing<[u8; 32]>, Vec<u8>, String) {
        let dek = Zeroizing::new(super::random_bytes::<32>());
        let wrapped = self.keyring.wrap(dek.as_slice(), &wrap_aad(user_id, version));
        let wrapped_by = MasterKeyring::wrapping_key_id(&wrapped).unwrap_or_default();
        (dek, wrapped, wrapped_by)
    }

    /// The user's newest key version; `None` when the user (with every key) is gone.
    pub fn newest_version(conn: &mut DbConnection, user_id: &str) -> Result<Option<KeyVersion>, DbError> {
        Ok(user_keys::table
            .filter(user_keys::user_id.eq(user_id))
            .select(diesel::dsl::max(user_keys::version))
            .first::<Option<KeyVersion>>(conn)?)
    }

    /// The user's key `version` when this replica has it unwrapped and fresh.
    pub fn cached(&self, user_id: &str, version: KeyVersion) -> Option<Arc<XChaCha20Poly1305>> {
        let entry = self.cache.get(user_id).filter(|e| e.loaded_at.elapsed() < CACHE_TTL)?;
        let versions = entry.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions.get(&version).cloned()
    }

    /// The user's key `version`, from the cache or unwrapped from the database; `None` when
    /// the user has no such version.
    pub fn cipher(
        &self,
        conn: &mut DbConnection,
        user_id: &str,
        version: KeyVersion,
    ) -> Result<Option<Arc<XChaCha20Poly1305>>, UserKeyError> {
        if let Some(cipher) = self.cached(user_id, version) {
            return Ok(Some(cipher));
        }
        let entry = match self.cache.get(user_id).filter(|e| e.loaded_at.elapsed() < CACHE_TTL) {
            Some(entry) => entry,
            None => {
                let fresh =
                    Arc::new(CachedUser { versions: Mutex::new(HashMap::new()), loaded_at: Instant::now() });
                self.cache.insert(user_id.to_string(), fresh.clone());
                fresh
            }
        };
        if let Some(cipher) = entry.versions.lock().unwrap_or_else(|p| p.into_inner()).get(&version) {
            return Ok(Some(cipher.clone()));
        }
        let wrapped: Option<Vec<u8>> =
            user_keys::table.find((user_id, version)).select(user_keys::wrapped).first(conn).optional()?;
        let Some(wrapped) = wrapped else {
            return Ok(None);
        };
        let dek = Zeroizing::new(
            self.keyring.unwrap(&wrapped, &wrap_aad(user_id, version)).map_err(UserKeyError::Unwrap)?,
        );
        if dek.len() != 32 {
            return Err(UserKeyError::Unwrap(KeyringError::Corrupt));
        }
        let cipher = Arc::new(XChaCha20Poly1305::new(dek.as_slice().into()));
        entry.versions.lock().unwrap_or_else(|p| p.into_inner()).insert(version, cipher.clone());
        Ok(Some(cipher))
    }

    /// Encrypts for the user under their newest key: `(ciphertext, version)`.
    pub fn encrypt(
        &self,
        conn: &mut DbConnection,
        user_id: &str,
        context: &str,
        plaintext: &[u8],
    ) -> Result<(String, KeyVersion), UserKeyError> {
        let version = Self::newest_version(conn, user_id)?.ok_or(UserKeyError::UserGone)?;
        let cipher = self.cipher(conn, user_id, version)?.ok_or(UserKeyError::UserGone)?;
        Ok((seal(&cipher, user_id, version, context, plaintext), version))
    }

    /// Decrypts one of the user's ciphertexts.
    pub fn decrypt(
        &self,
        conn: &mut DbConnection,
        user_id: &str,
        context: &str,
        ciphertext: &str,
    ) -> Result<Plaintext, UserKeyError> {
        let parsed = parse_ciphertext(ciphertext)?;
        let newest = Self::newest_version(conn, user_id)?.ok_or(UserKeyError::UserGone)?;
        if parsed.version > newest {
            return Err(UserKeyError::Invalid);
        }
        let cipher = self.cipher(conn, user_id, parsed.version)?.ok_or(UserKeyError::Invalid)?;
        open(&cipher, user_id, parsed, context)
    }

    /// Decrypts without touching the database when the key is cached: for a caller whose user
    /// was just checked to exist (a live access token). `None` on a cache miss.
    pub fn decrypt_cached(
        &self,
        user_id: &str,
        context: &str,
        ciphertext: &str,
    ) -> Option<Result<Plaintext, UserKeyError>> {
        let parsed = match parse_ciphertext(ciphertext) {
            Ok(parsed) => parsed,
            Err(e) => return Some(Err(e)),
        };
        let cipher = self.cached(user_id, parsed.version)?;
        Some(open(&cipher, user_id, parsed, context))
    }

    /// Moves a ciphertext to the user's newest key without handing out its plaintext.
    pub fn rewrap(
        &self,
        conn: &mut DbConnection,
        user_id: &str,
        context: &str,
        ciphertext: &str,
    ) -> Result<(String, KeyVersion), UserKeyError> {
        let plaintext = self.decrypt(conn, user_id, context, ciphertext)?;
        self.encrypt(conn, user_id, context, &plaintext)
    }

    /// A new key version for new encryptions (inside the caller's write transaction).
    pub fn rotate(
        &self,
        conn: &mut DbConnection,
        user_id: &str,
        now: i64,
    ) -> Result<KeyVersion, UserKeyError> {
        let newest = Self::newest_version(conn, user_id)?.ok_or(UserKeyError::UserGone)?;
        let version = newest + 1;
        self.create(conn, user_id, version, now)?;
        self.forget(user_id);
        Ok(version)
    }

    /// Unwraps a stored key row: for audits that check, for example, that no key appears in
    /// plaintext in a database file or dump.
    pub fn unwrap_stored(
        &self,
        user_id: &str,
        version: KeyVersion,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
        self.keyring.unwrap(wrapped, &wrap_aad(user_id, version)).map(Zeroizing::new)
    }

    /// Drops the user's unwrapped keys from this replica's cache (after deletion or rotation).
    pub fn forget(&self, user_id: &str) {
        self.cache.remove(user_id);
    }
}

/// The master key ids other than the keyring's first that wrap user keys, with their counts:
/// what [`rewrap_batch`] works through.
pub fn stale_wrapping_keys(
    conn: &mut DbConnection,
    keyring: &MasterKeyring,
) -> Result<Vec<(String, i64)>, DbError> {
    let current = keyring.key_ids().into_iter().next().unwrap_or_default();
    Ok(count_by_wrapping_key(conn)?.into_iter().filter(|(id, _)| *id != current).collect())
}

/// Rewraps up to `batch` user keys wrapped by one of the `old` master key ids under the
/// keyring's first key, in the caller's transaction, and returns how many. Run it until it
/// returns 0: a run that is stopped loses only its open batch, and a rerun takes up what is
/// left.
pub fn rewrap_batch(
    conn: &mut DbConnection,
    keyring: &MasterKeyring,
    old: &[String],
    batch: i64,
) -> Result<usize, UserKeyError> {
    let current = keyring.key_ids().into_iter().next().unwrap_or_default();
    if old.is_empty() {
        return Ok(0);
    }
    // Rows of the old key ids, found through the `wrapped_by` index (not a scan past the
    // rows already rewrapped).
    let rows: Vec<(String, KeyVersion, Vec<u8>)> = user_keys::table
        .filter(user_keys::wrapped_by.eq_any(old))
        .limit(batch)
        .select((user_keys::user_id, user_keys::version, user_keys::wrapped))
        .load(conn)?;
    let mut rewrapped = Vec::with_capacity(rows.len());
    for (user_id, version, wrapped) in rows {
        let aad = wrap_aad(&user_id, version);
        let dek = Zeroizing::new(keyring.unwrap(&wrapped, &aad).map_err(UserKeyError::Unwrap)?);
        rewrapped.push((user_id, version, keyring.wrap(&dek, &aad)));
    }
    store_rewrapped(conn, &rewrapped, &current)?;
    Ok(rewrapped.len())
}

/// How many user keys each master key id wraps, for `keys status` and the start-up check.
pub fn count_by_wrapping_key(conn: &mut DbConnection) -> Result<Vec<(String, i64)>, DbError> {
    Ok(user_keys::table
        .group_by(user_keys::wrapped_by)
        .select((user_keys::wrapped_by, diesel::dsl::count_star()))
        .order(user_keys::wrapped_by.asc())
        .load(conn)?)
}

/// Stores rewrapped user keys `(user_id, version, wrapped)`, all now wrapped by `wrapped_by`.
/// PostgreSQL takes the batch in one statement (arrays through `unnest`); SQLite, whose
/// statements cost no round trip, one `UPDATE` per row.
fn store_rewrapped(
    conn: &mut DbConnection,
    rows: &[(String, i32, Vec<u8>)],
    wrapped_by: &str,
) -> Result<(), DbError> {
    use diesel::prelude::*;
    use diesel::sql_types::{Array, Binary, Integer, Text};

    match conn {
        DbConnection::Pg(c) => {
            let users: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
            let versions: Vec<i32> = rows.iter().map(|r| r.1).collect();
            let wrapped: Vec<&[u8]> = rows.iter().map(|r| r.2.as_slice()).collect();
            diesel::sql_query(
                "UPDATE user_keys AS k SET wrapped = v.wrapped, wrapped_by = $4 \
                 FROM unnest($1::text[], $2::int[], $3::bytea[]) AS v(user_id, version, wrapped) \
                 WHERE k.user_id = v.user_id AND k.version = v.version",
            )
            .bind::<Array<Text>, _>(users)
            .bind::<Array<Integer>, _>(versions)
            .bind::<Array<Binary>, _>(wrapped)
            .bind::<Text, _>(wrapped_by)
            .execute(c)?;
        }
        DbConnection::Sqlite(c) => {
            for (user_id, version, wrapped) in rows {
                diesel::update(user_keys::table.find((user_id, version)))
                    .set((user_keys::wrapped.eq(wrapped), user_keys::wrapped_by.eq(wrapped_by)))
                    .execute(c)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(byte: u8) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&[byte; 32].into())
    }

    #[test]
    fn a_ciphertext_opens_only_for_its_user_context_and_key() {
        let k = cipher(1);
        let text = seal(&k, "user-a", 1, "notes", b"hello");
        let parsed = || parse_ciphertext(&text).unwrap();
        assert_eq!(&*open(&k, "user-a", parsed(), "notes").unwrap(), b"hello");
        assert!(matches!(open(&k, "user-b", parsed(), "notes"), Err(UserKeyError::Invalid)));
        assert!(matches!(open(&k, "user-a", parsed(), "other"), Err(UserKeyError::Invalid)));
        assert!(matches!(open(&cipher(2), "user-a", parsed(), "notes"), Err(UserKeyError::Invalid)));
    }

    #[test]
    fn every_changed_character_is_refused() {
        let k = cipher(1);
        let text = seal(&k, "u", 1, "", b"some data here");
        for i in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let Ok(changed) = String::from_utf8(bytes) else { continue };
            let result = parse_ciphertext(&changed).and_then(|p| open(&k, "u", p, ""));
            assert!(result.is_err(), "changing character {i} of {text} went unnoticed");
        }
    }

    #[test]
    fn the_version_is_part_of_the_associated_data() {
        let k = cipher(1);
        let text = seal(&k, "u", 1, "", b"x");
        let relabelled = text.replacen("idb1:v1:", "idb1:v2:", 1);
        let parsed = parse_ciphertext(&relabelled).unwrap();
        assert!(open(&k, "u", parsed, "").is_err());
        assert!(parse_ciphertext(&text.replacen(":v1:", ":v01:", 1)).is_err());
    }
}
