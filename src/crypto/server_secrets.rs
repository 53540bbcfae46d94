//! Server secrets: random 32-byte keys for one purpose each (the refresh-token successor key,
//! the nonce key), stored in the database wrapped by the master keyring.
//!
//! They are not derived from a master key's bytes, so they outlive a master-key rotation and
//! every replica reads the same ones whatever its keyring's order.

use diesel::prelude::*;
use secrecy::{ExposeSecret, SecretBox};

use super::keyring::{KeyringError, MasterKeyring};
use crate::db::schema::server_secrets;
use crate::db::{self, DbConnection, DbError};

/// Serialises the first creation of a secret across replicas (PostgreSQL advisory lock).
const CREATE_LOCK_ID: i64 = 0x1db_5ec7;

/// The purposes that have a server secret.
pub const REFRESH_SUCCESSOR: &str = "refresh-token-successor";
pub const NONCE: &str = "nonce";
pub const EMAIL_BLIND_INDEX: &str = "email-blind-index";
pub const AUDIT_CHAIN: &str = "audit-chain";

#[derive(Debug, thiserror::Error)]
pub enum ServerSecretError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("server secret `{name}`: {source}")]
    Unwrap { name: String, source: KeyringError },
}

impl From<diesel::result::Error> for ServerSecretError {
    fn from(e: diesel::result::Error) -> Self {
        ServerSecretError::Db(e.into())
    }
}

/// A 32-byte key held in memory only as long as the process needs it.
pub struct ServerSecret(SecretBox<[u8; 32]>);

impl ServerSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

fn aad(name: &str) -> String {
    format!("idbridge:server-secret:{name}")
}

/// The secret for `name`, created (random, wrapped) the first time any replica asks.
/// Runs inside a write transaction.
pub fn load_or_create(
    conn: &mut DbConnection,
    keyring: &MasterKeyring,
    name: &str,
) -> Result<ServerSecret, ServerSecretError> {
    db::lock_for_transaction(conn, CREATE_LOCK_ID)?;
    let existing: Option<Vec<u8>> =
        server_secrets::table.find(name).select(server_secrets::wrapped).first(conn).optional()?;
    let bytes = match existing {
        Some(wrapped) => {
            let plain = keyring
                .unwrap(&wrapped, aad(name).as_bytes())
                .map_err(|source| ServerSecretError::Unwrap { name: name.to_string(), source })?;
            <[u8; 32]>::try_from(plain.as_slice()).map_err(|_| ServerSecretError::Unwrap {
                name: name.to_string(),
                source: KeyringError::Corrupt,
            })?
        }
        None => {
            let fresh = super::random_bytes::<32>();
            diesel::insert_into(server_secrets::table)
                .values((
                    server_secrets::name.eq(name),
                    server_secrets::wrapped.eq(keyring.wrap(&fresh, aad(name).as_bytes())),
                    server_secrets::created_at.eq(crate::clock::now()),
                ))
                .execute(conn)?;
            fresh
        }
    };
    Ok(ServerSecret::from_bytes(bytes))
}

/// Rewraps one server secret under the keyring's first key; `false` when it already was.
pub fn rewrap(
    conn: &mut DbConnection,
    keyring: &MasterKeyring,
    name: &str,
) -> Result<bool, ServerSecretError> {
    let wrapped: Vec<u8> = server_secrets::table.find(name).select(server_secrets::wrapped).first(conn)?;
    if keyring.is_current(&wrapped) {
        return Ok(false);
    }
    let plain = keyring
        .unwrap(&wrapped, aad(name).as_bytes())
        .map_err(|source| ServerSecretError::Unwrap { name: name.to_string(), source })?;
    diesel::update(server_secrets::table.find(name))
        .set(server_secrets::wrapped.eq(keyring.wrap(&plain, aad(name).as_bytes())))
        .execute(conn)?;
    Ok(true)
}

/// Every stored server secret's name.
pub fn names(conn: &mut DbConnection) -> Result<Vec<String>, DbError> {
    Ok(server_secrets::table.select(server_secrets::name).order(server_secrets::name.asc()).load(conn)?)
}

/// Rewraps every server secret not yet under the keyring's first key, one per transaction.
/// Returns (rewrapped, total).
pub async fn rewrap_all(
    db: &crate::db::Db,
    keyring: std::sync::Arc<MasterKeyring>,
) -> Result<(usize, usize), ServerSecretError> {
    let all = db.run(|conn| Ok::<_, ServerSecretError>(names(conn)?)).await?;
    let mut rewrapped = 0;
    for name in &all {
        let (ring, name) = (keyring.clone(), name.clone());
        if db.write(move |conn| rewrap(conn, &ring, &name)).await? {
            rewrapped += 1;
        }
    }
    Ok((rewrapped, all.len()))
}
