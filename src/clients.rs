//! OAuth clients: the registry built from `[[clients]]`, client authentication (argon2
//! secret hashes), and the scope rules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::config::ClientKind;
use crate::config::ClientSettings;

pub const DEV_PUBLIC_CLIENT: &str = "dev-app";
pub const DEV_CONFIDENTIAL_CLIENT: &str = "dev-service";
pub const DEV_CONFIDENTIAL_SECRET: &str = "dev-secret";
/// Verified secrets remembered per client, so argon2 runs once per secret, not per request.
const VERIFIED_CACHE_PER_CLIENT: usize = 8;

#[derive(Debug)]
pub struct Client {
    pub id: String,
    pub kind: ClientKind,
    secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
}

impl Client {
    /// The granted scope: the request when it is a subset of the client's scopes, else its scopes.
    pub fn resolve_scope(&self, requested: Option<&str>) -> Result<String, InvalidScope> {
        resolve_scope(&self.scopes, requested)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct InvalidScope;

/// `requested` narrowed to `allowed`; empty or absent means all of `allowed`.
pub fn resolve_scope(allowed: &[String], requested: Option<&str>) -> Result<String, InvalidScope> {
    let requested: Vec<&str> = requested.unwrap_or("").split(' ').filter(|s| !s.is_empty()).collect();
    if requested.is_empty() {
        return Ok(allowed.join(" "));
    }
    let mut granted: Vec<&str> = Vec::new();
    for scope in requested {
        if !allowed.iter().any(|a| a == scope) {
            return Err(InvalidScope);
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    Ok(granted.join(" "))
}

/// What a request presented: `client_id`, and a secret from HTTP Basic or the form.
pub struct ClientCredentials {
    pub client_id: String,
    pub secret: Option<SecretString>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("client authentication failed")]
pub struct ClientAuthError;

pub struct ClientRegistry {
    clients: HashMap<String, Arc<Client>>,
    verified: Mutex<HashMap<String, Vec<[u8; 32]>>>,
    /// One argon2 verification at a time: each takes ~19 MiB, and a burst of first requests
    /// would otherwise run one per request at once.
    argon2_gate: tokio::sync::Mutex<()>,
}

impl ClientRegistry {
    pub fn from_settings(settings: &[ClientSettings]) -> Self {
        let clients = settings
            .iter()
            .map(|c| {
                let client = Client {
                    id: c.client_id.clone(),
                    kind: c.kind,
                    secret_hash: Some(c.secret_hash.clone()).filter(|h| !h.is_empty()),
                    redirect_uris: c.redirect_uris.clone(),
                    scopes: c.scopes.clone(),
                };
                (c.client_id.clone(), Arc::new(client))
            })
            .collect();
        Self { clients, verified: Mutex::new(HashMap::new()), argon2_gate: tokio::sync::Mutex::new(()) }
    }

    pub fn get(&self, client_id: &str) -> Option<Arc<Client>> {
        self.clients.get(client_id).cloned()
    }

    /// A public client is known by its id; a confidential one must prove its secret.
    pub async fn authenticate(&self, credentials: ClientCredentials) -> Result<Arc<Client>, ClientAuthError> {
        let client = self.get(&credentials.client_id).ok_or(ClientAuthError)?;
        match client.kind {
            ClientKind::Public => Ok(client),
            ClientKind::Confidential => {
                let secret = credentials.secret.ok_or(ClientAuthError)?;
                let fingerprint: [u8; 32] = Sha256::new()
                    .chain_update(client.id.as_bytes())
                    .chain_update([0])
                    .chain_update(secret.expose_secret().as_bytes())
                    .finalize()
                    .into();
                if self.was_verified(&client.id, &fingerprint) {
                    return Ok(client);
                }
                let _one_at_a_time = self.argon2_gate.lock().await;
                if self.was_verified(&client.id, &fingerprint) {
                    return Ok(client);
                }
                let hash = client.secret_hash.clone().ok_or(ClientAuthError)?;
                let ok = tokio::task::spawn_blocking(move || verify_secret(&hash, secret.expose_secret()))
                    .await
                    .unwrap_or(false);
                if !ok {
                    return Err(ClientAuthError);
                }
                self.remember_verified(&client.id, fingerprint);
                Ok(client)
            }
        }
    }

    fn was_verified(&self, client_id: &str, fingerprint: &[u8; 32]) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.get(client_id).is_some_and(|known| known.iter().any(|k| bool::from(k.ct_eq(fingerprint))))
    }

    fn remember_verified(&self, client_id: &str, fingerprint: [u8; 32]) {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let known = verified.entry(client_id.to_string()).or_default();
        if known.len() >= VERIFIED_CACHE_PER_CLIENT {
            known.remove(0);
        }
        known.push(fingerprint);
    }
}

/// The PHC string for `secret_hash`, as printed by `idbridge clients hash-secret`.
pub fn hash_secret(secret: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any input")
        .to_string()
}

fn verify_secret(hash: &str, secret: &str) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|parsed| Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_requested_scope_grants_the_clients_scopes() {
        assert_eq!(resolve_scope(&scopes(&["openid", "api"]), None).unwrap(), "openid api");
    }

    #[test]
    fn a_scope_outside_the_clients_is_refused() {
        assert_eq!(resolve_scope(&scopes(&["openid", "api"]), Some("api admin")), Err(InvalidScope));
    }

    #[test]
    fn a_hashed_secret_verifies_only_itself() {
        let hash = hash_secret("s3cret");
        assert!(verify_secret(&hash, "s3cret"));
        assert!(!verify_secret(&hash, "s3cret!"));
    }
}
