//! The master keyring: 32-byte keys from `file:` or `env:` sources. The first key wraps;
//! every key unwraps. Wrapping is XChaCha20-Poly1305 with the owner bound in as associated data.
//!
//! Wrapped format: `0x02 | key id (8 bytes) | nonce (24 bytes) | ciphertext+tag`. Format 2 binds
//! the format byte and the master key's id into the associated data as well, ahead of the
//! caller's; format 1 (without them) still unwraps and is rewrapped by `keys rotate-master`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::SecretBox;
use sha2::{Digest, Sha256};

const FORMAT_V1: u8 = 1;
const FORMAT_V2: u8 = 2;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("master key source `{0}`: {1}")]
    Source(String, String),
    #[error("no master key in the keyring can unwrap this value")]
    NoKey,
    #[error("the wrapped value is malformed or was altered")]
    Corrupt,
}

struct MasterKey {
    id: [u8; KEY_ID_LEN],
    cipher: XChaCha20Poly1305,
    /// Kept only so the key bytes are zeroized when the keyring is dropped.
    _material: SecretBox<[u8; 32]>,
}

pub struct MasterKeyring {
    keys: Vec<MasterKey>,
}

impl std::fmt::Debug for MasterKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKeyring({} keys)", self.keys.len())
    }
}

impl MasterKeyring {
    /// Loads every source; the order is kept (first wraps).
    pub fn load(sources: &[String]) -> Result<Self, KeyringError> {
        let keys = sources.iter().map(|s| load_source(s)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_keys(keys))
    }

    pub fn from_keys(keys: Vec<[u8; 32]>) -> Self {
        let keys = keys
            .into_iter()
            .map(|k| {
                let digest = Sha256::new().chain_update(b"idbridge master key id").chain_update(k).finalize();
                let mut id = [0u8; KEY_ID_LEN];
                id.copy_from_slice(&digest[..KEY_ID_LEN]);
                MasterKey {
                    id,
                    cipher: XChaCha20Poly1305::new(&k.into()),
                    _material: SecretBox::new(Box::new(k)),
                }
            })
            .collect();
        Self { keys }
    }

    /// A new master key, base64, as printed by `idbridge keys generate-master`.
    pub fn generate() -> String {
        STANDARD.encode(super::random_bytes::<32>())
    }

    pub fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        let nonce = super::random_bytes::<NONCE_LEN>();
        let bound = bound_aad(FORMAT_V2, &key.id, aad);
        let sealed = key
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &bound })
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + sealed.len());
        out.push(FORMAT_V2);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyringError> {
        if wrapped.len() < 1 + KEY_ID_LEN + NONCE_LEN + 16 || !matches!(wrapped[0], FORMAT_V1 | FORMAT_V2) {
            return Err(KeyringError::Corrupt);
        }
        let (id, rest) = wrapped[1..].split_at(KEY_ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let key = self.keys.iter().find(|k| k.id == id).ok_or(KeyringError::NoKey)?;
        let bound;
        let aad = if wrapped[0] == FORMAT_V2 {
            bound = bound_aad(FORMAT_V2, &key.id, aad);
            bound.as_slice()
        } else {
            aad
        };
        key.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| KeyringError::Corrupt)
    }

    /// `true` when the value is wrapped by the first (current) master key, in the current format.
    pub fn is_current(&self, wrapped: &[u8]) -> bool {
        wrapped.len() > KEY_ID_LEN && wrapped[0] == FORMAT_V2 && wrapped[1..1 + KEY_ID_LEN] == self.keys[0].id
    }

    /// The id (hex) of the master key that wrapped `wrapped`, as `keys status` shows it.
    pub fn wrapping_key_id(wrapped: &[u8]) -> Option<String> {
        (wrapped.len() > KEY_ID_LEN).then(|| hex(&wrapped[1..1 + KEY_ID_LEN]))
    }

    /// The ids (hex) of the keyring's keys, the wrapping one first.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| hex(&k.id)).collect()
    }
}

fn bound_aad(format: u8, key_id: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut bound = Vec::with_capacity(1 + KEY_ID_LEN + aad.len());
    bound.push(format);
    bound.extend_from_slice(key_id);
    bound.extend_from_slice(aad);
    bound
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn load_source(source: &str) -> Result<[u8; 32], KeyringError> {
    let fail = |m: String| KeyringError::Source(source.to_string(), m);
    let text = read_secret_source(source, true).map_err(fail)?;
    let bytes = STANDARD.decode(text.trim()).map_err(|_| fail("not base64".into()))?;
    bytes.try_into().map_err(|_| fail("a master key is 32 bytes".into()))
}

/// The text of a secret given as `file:PATH` or `env:VAR`. With `owner_only`, a file group
/// or others may read is refused; without, it is only warned about.
pub fn read_secret_source(source: &str, owner_only: bool) -> Result<zeroize::Zeroizing<String>, String> {
    if let Some(path) = source.strip_prefix("file:") {
        match refuse_if_shared(path) {
            Err(e) if owner_only => return Err(e),
            Err(e) => tracing::warn!(path, "{e}"),
            Ok(()) => {}
        }
        std::fs::read_to_string(path)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| format!("cannot read the file: {e}"))
    } else if let Some(var) = source.strip_prefix("env:") {
        std::env::var(var).map(zeroize::Zeroizing::new).map_err(|_| "the variable is not set".into())
    } else {
        Err("must be file:PATH or env:VAR".into())
    }
}

/// A master key file that group or others can read is refused: `chmod 600` it.
#[cfg(unix)]
fn refuse_if_shared(path: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!("the file has mode {mode:03o}; group and others must not read it (chmod 600)"));
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_if_shared(_path: &str) -> Result<(), String> {
    Ok(())
}

/// Creates a master key file with mode 0600 when it does not exist (dev mode).
pub fn create_key_file_if_missing(path: &std::path::Path) -> std::io::Result<bool> {
    use std::io::Write;
    if path.exists() {
        return Ok(false);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{}", MasterKeyring::generate())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwrap_needs_the_same_associated_data() {
        let ring = MasterKeyring::from_keys(vec![[7u8; 32]]);
        let wrapped = ring.wrap(b"secret", b"owner-a");
        assert_eq!(ring.unwrap(&wrapped, b"owner-a").unwrap(), b"secret");
        assert!(matches!(ring.unwrap(&wrapped, b"owner-b"), Err(KeyringError::Corrupt)));
    }

    #[test]
    fn any_key_of_the_ring_unwraps_and_the_first_wraps() {
        let old = MasterKeyring::from_keys(vec![[1u8; 32]]);
        let wrapped = old.wrap(b"x", b"");
        let rotated = MasterKeyring::from_keys(vec![[2u8; 32], [1u8; 32]]);
        assert_eq!(rotated.unwrap(&wrapped, b"").unwrap(), b"x");
        assert!(!rotated.is_current(&wrapped));
        assert!(rotated.is_current(&rotated.wrap(b"x", b"")));
    }

    #[test]
    fn the_wrapping_key_id_is_bound_into_the_associated_data() {
        let ring = MasterKeyring::from_keys(vec![[4u8; 32], [5u8; 32]]);
        let mut wrapped = ring.wrap(b"secret", b"aad");
        let other = MasterKeyring::from_keys(vec![[5u8; 32]]);
        wrapped[1..1 + KEY_ID_LEN].copy_from_slice(&other.keys[0].id);
        assert!(ring.unwrap(&wrapped, b"aad").is_err(), "a relabelled key id must not unwrap");
        assert_eq!(MasterKeyring::wrapping_key_id(&ring.wrap(b"x", b"")), Some(ring.key_ids()[0].clone()));
    }

    #[test]
    fn a_flipped_bit_is_refused() {
        let ring = MasterKeyring::from_keys(vec![[3u8; 32]]);
        let mut wrapped = ring.wrap(b"secret", b"");
        let last = wrapped.len() - 1;
        wrapped[last] ^= 1;
        assert!(ring.unwrap(&wrapped, b"").is_err());
    }
}
