//! OAuth clients: those of `[[clients]]` (plus the dev clients in dev mode) and those made in
//! the admin console; client authentication; the scope rules.
//!
//! Secret hashes idbridge writes are `$sha256$`: `clients new-secret` and `clients hash-secret`
//! print them for `[[clients]]`, and the console stores them for the clients it makes. Secrets
//! idbridge makes are 256 random bits, so one digest, checked in constant time, is enough.
//! Argon2 hashes still verify, from older `[[clients]]` entries (a warning at start; the file is
//! never rewritten) and from console clients stored before console secrets were SHA-256: a few
//! at a time, and past a bounded queue the answer is "busy" (503), so a flood of wrong secrets
//! cannot hold up other clients. A console client's argon2 hash is replaced by the `$sha256$` of
//! its secret when that secret next passes argon2 in a client authentication
//! ([`upgrade_stored_secret`]).

mod registry;
mod secrets;
mod stored;

pub use crate::config::ClientKind;
pub use registry::{ClientAuthError, ClientCredentials, ClientRegistry};
pub use secrets::{hash_secret, new_secret, SHA256_PREFIX};
pub use stored::{
    check_new_client, check_redirect_uri, delete_stored, find_stored, insert_stored, list_stored,
    set_stored_disabled, upgrade_stored_secret, NewClient, NewClientError, StoredClient,
};

use secrets::{secret_digest, SecretCheck};

pub const DEV_PUBLIC_CLIENT: &str = "dev-app";
pub const DEV_CONFIDENTIAL_CLIENT: &str = "dev-service";
pub const DEV_CONFIDENTIAL_SECRET: &str = "dev-secret";
/// idbridge's own admin console, signing in through the browser flow. Only the console
/// redeems its codes (in-process); `/oauth/token` does not know this client.
pub const ADMIN_CLIENT: &str = "idbridge-admin";
/// The path the browser flow returns admins to.
pub const ADMIN_CALLBACK_PATH: &str = "/admin/callback";
/// The notice that the console's clients changed (`db::notify`).
pub const CHANGED: &str = "clients";

#[derive(Debug)]
pub struct Client {
    pub id: String,
    pub kind: ClientKind,
    secret: Option<SecretCheck>,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    /// Where a logout token is POSTed when a device of this client ends.
    pub backchannel_logout_uri: Option<String>,
    /// Where `/oauth/logout` may send the browser back to.
    pub post_logout_redirect_uris: Vec<String>,
    /// Token requests without a DPoP proof are refused.
    pub dpop_required: bool,
}

impl Client {
    /// The granted scope: the request when it is a subset of the client's scopes, else its scopes.
    pub fn resolve_scope(&self, requested: Option<&str>) -> Result<String, InvalidScope> {
        resolve_scope(&self.scopes, requested)
    }

    /// What of an earlier grant the client may still use: the grant narrowed to its scopes now,
    /// so lowering a client's `scopes` reaches its existing devices and tokens.
    pub fn current_scope(&self, granted: &str) -> String {
        let mut kept: Vec<&str> = Vec::new();
        for scope in granted.split(' ').filter(|s| !s.is_empty()) {
            if self.scopes.iter().any(|a| a == scope) && !kept.contains(&scope) {
                kept.push(scope);
            }
        }
        kept.join(" ")
    }
}

#[cfg(test)]
impl Client {
    pub fn for_tests(id: &str, kind: ClientKind, redirect_uris: Vec<String>) -> Self {
        Self {
            id: id.into(),
            kind,
            secret: None,
            redirect_uris,
            scopes: vec!["openid".into(), "api".into()],
            backchannel_logout_uri: None,
            post_logout_redirect_uris: Vec::new(),
            dpop_required: false,
        }
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

fn dev_clients() -> [Client; 2] {
    let scopes = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    [
        Client {
            id: DEV_PUBLIC_CLIENT.into(),
            kind: ClientKind::Public,
            secret: None,
            redirect_uris: vec!["http://127.0.0.1/callback".into()],
            scopes: scopes(&["openid", "profile", "api"]),
            backchannel_logout_uri: None,
            post_logout_redirect_uris: Vec::new(),
            dpop_required: false,
        },
        Client {
            id: DEV_CONFIDENTIAL_CLIENT.into(),
            kind: ClientKind::Confidential,
            secret: Some(SecretCheck::Sha256(secret_digest(DEV_CONFIDENTIAL_SECRET))),
            redirect_uris: vec![],
            scopes: scopes(&["api", "crypto"]),
            backchannel_logout_uri: None,
            post_logout_redirect_uris: Vec::new(),
            dpop_required: false,
        },
    ]
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
    fn lowering_a_clients_scopes_narrows_what_it_was_granted() {
        let client = dev_clients().into_iter().next().unwrap();
        assert_eq!(client.current_scope("openid api admin"), "openid api");
    }
}
