//! Clients made in the admin console, stored in the database: listing, creating (with the checks
//! on a new client), disabling, deleting, and upgrading an argon2 secret hash to `$sha256$`.

use diesel::prelude::*;
use secrecy::SecretString;

use super::secrets::{hash_secret, SecretCheck};
use super::{Client, ClientKind};
use crate::db::schema::clients as stored_clients;
use crate::db::{DbConnection, DbError};

/// A client made in the admin console, as stored (`redirect_uris` and `scopes` as JSON arrays).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = stored_clients)]
pub struct StoredClient {
    pub client_id: String,
    pub kind: String,
    secret_hash: Option<String>,
    pub redirect_uris: String,
    pub scopes: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    pub backchannel_logout_uri: Option<String>,
    pub dpop_required: bool,
}

impl StoredClient {
    pub(super) fn to_client(&self) -> Option<Client> {
        let kind = ClientKind::parse(&self.kind)?;
        let secret = match kind {
            ClientKind::Public => None,
            ClientKind::Confidential => Some(SecretCheck::parse(self.secret_hash.as_deref()?)?),
        };
        Some(Client {
            id: self.client_id.clone(),
            kind,
            secret,
            redirect_uris: serde_json::from_str(&self.redirect_uris).ok()?,
            scopes: serde_json::from_str(&self.scopes).ok()?,
            backchannel_logout_uri: self.backchannel_logout_uri.clone().filter(|u| !u.is_empty()),
            post_logout_redirect_uris: Vec::new(),
            dpop_required: self.dpop_required,
        })
    }

    pub fn redirect_uri_list(&self) -> Vec<String> {
        serde_json::from_str(&self.redirect_uris).unwrap_or_default()
    }

    pub fn scope_list(&self) -> Vec<String> {
        serde_json::from_str(&self.scopes).unwrap_or_default()
    }
}

/// What the admin console asks for when it makes a client.
pub struct NewClient {
    pub client_id: String,
    pub kind: ClientKind,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    /// Token requests without a DPoP proof are refused.
    pub dpop_required: bool,
}

/// Why a new client was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NewClientError {
    #[error("the client id must be 2 to 64 characters: lower-case letters, digits, '.', '_' or '-'")]
    BadId,
    #[error("a client with this id already exists")]
    Taken,
    #[error("redirect URI `{0}`: {1}")]
    BadRedirect(String, &'static str),
    #[error("a public client needs at least one redirect URI")]
    NoRedirect,
    #[error("scopes must be 1 to 20 words of letters, digits, ':', '.', '_' or '-'")]
    BadScopes,
    #[error("back-channel logout URI: {0}")]
    BadLogoutUri(&'static str),
}

/// Checks a client made in the console. Redirect URIs follow RFC 8252: absolute, without a
/// fragment, and `https`, or `http` on a loopback address, or a private-use scheme in reverse
/// domain form (`com.example.app:/cb`).
pub fn check_new_client(client: &NewClient) -> Result<(), NewClientError> {
    let id = &client.client_id;
    let id_ok = (2..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if !id_ok {
        return Err(NewClientError::BadId);
    }
    for uri in &client.redirect_uris {
        check_redirect_uri(uri).map_err(|why| NewClientError::BadRedirect(uri.clone(), why))?;
    }
    if client.kind == ClientKind::Public && client.redirect_uris.is_empty() {
        return Err(NewClientError::NoRedirect);
    }
    let scope_ok = |s: &String| {
        (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b":._-".contains(&b))
    };
    if client.scopes.is_empty() || client.scopes.len() > 20 || !client.scopes.iter().all(scope_ok) {
        return Err(NewClientError::BadScopes);
    }
    if let Some(uri) = &client.backchannel_logout_uri {
        check_redirect_uri(uri).map_err(NewClientError::BadLogoutUri)?;
        if !uri.starts_with("https://") && !uri.starts_with("http://") {
            return Err(NewClientError::BadLogoutUri("must be https, or http on loopback"));
        }
    }
    Ok(())
}

/// One redirect URI per RFC 8252 §7: `Err` says why not.
pub fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    if uri.len() > 2048 || uri.contains(char::is_whitespace) || uri.contains(char::is_control) {
        return Err("too long or contains spaces");
    }
    let parsed = url::Url::parse(uri).map_err(|_| "not an absolute URI")?;
    if parsed.fragment().is_some() || uri.contains('#') {
        return Err("must not have a fragment");
    }
    match parsed.scheme() {
        "https" if parsed.host().is_some() => Ok(()),
        "http" => match parsed.host() {
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => Ok(()),
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => Ok(()),
            Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => Ok(()),
            _ => Err("http is allowed only on a loopback address; use https"),
        },
        scheme if scheme.contains('.') => Ok(()),
        _ => Err("must be https, http on loopback, or a private-use scheme like com.example.app"),
    }
}

/// The clients made in the console, enabled or not, oldest first.
pub fn list_stored(conn: &mut DbConnection) -> Result<Vec<StoredClient>, DbError> {
    Ok(stored_clients::table
        .order((stored_clients::created_at.asc(), stored_clients::client_id.asc()))
        .select(StoredClient::as_select())
        .load(conn)?)
}

/// Stores a new client; a confidential one gets a new secret (256 random bits), returned once
/// and stored only as its SHA-256 `secret_hash`, like a configured client's: a secret this
/// random needs no slow hash, and a flood of wrong secrets costs a digest each. `Taken` when
/// the id exists.
pub fn insert_stored(
    conn: &mut DbConnection,
    client: &NewClient,
    now: i64,
) -> Result<Result<Option<SecretString>, NewClientError>, DbError> {
    let exists: i64 = stored_clients::table
        .filter(stored_clients::client_id.eq(&client.client_id))
        .count()
        .get_result(conn)?;
    // An id that live devices still carry (a client deleted from the configuration) is taken:
    // a new client must not inherit their sessions.
    let in_use: i64 = crate::db::schema::devices::table
        .filter(crate::db::schema::devices::client_id.eq(&client.client_id))
        .filter(crate::db::schema::devices::revoked_at.is_null())
        .count()
        .get_result(conn)?;
    if exists > 0 || in_use > 0 {
        return Ok(Err(NewClientError::Taken));
    }
    let secret = (client.kind == ClientKind::Confidential).then(crate::crypto::random_token::<32>);
    let row = StoredClient {
        client_id: client.client_id.clone(),
        kind: client.kind.as_str().into(),
        secret_hash: secret.as_deref().map(hash_secret),
        redirect_uris: serde_json::to_string(&client.redirect_uris).map_err(|_| DbError::Task)?,
        scopes: serde_json::to_string(&client.scopes).map_err(|_| DbError::Task)?,
        created_at: now,
        disabled_at: None,
        backchannel_logout_uri: client.backchannel_logout_uri.clone(),
        dpop_required: client.dpop_required,
    };
    // A savepoint: a concurrent creation of the same id is "taken", not a failed transaction.
    let inserted = conn.transaction(|c| diesel::insert_into(stored_clients::table).values(&row).execute(c));
    match inserted {
        Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => {
            return Ok(Err(NewClientError::Taken))
        }
        other => other?,
    };
    notify_clients_changed(conn)?;
    Ok(Ok(secret.map(SecretString::from)))
}

/// Replaces a console client's argon2 `secret_hash` with the SHA-256 one of `secret`, which
/// just verified against it: from then on its checks cost a digest, and a flood of wrong
/// secrets cannot queue it out. Only while the stored hash is still `old_hash`.
pub fn upgrade_stored_secret(
    conn: &mut DbConnection,
    client_id: &str,
    old_hash: &str,
    secret: &str,
) -> Result<bool, DbError> {
    let n = diesel::update(
        stored_clients::table
            .filter(stored_clients::client_id.eq(client_id))
            .filter(stored_clients::secret_hash.eq(old_hash)),
    )
    .set(stored_clients::secret_hash.eq(hash_secret(secret)))
    .execute(conn)?;
    if n == 1 {
        notify_clients_changed(conn)?;
    }
    Ok(n == 1)
}

/// Disables or enables a stored client; `false` when there is none or it already was so.
pub fn set_stored_disabled(
    conn: &mut DbConnection,
    client_id: &str,
    disabled: bool,
    now: i64,
) -> Result<bool, DbError> {
    // Only a change of state writes.
    let target = stored_clients::table.find(client_id);
    let n = if disabled {
        diesel::update(target.filter(stored_clients::disabled_at.is_null()))
            .set(stored_clients::disabled_at.eq(now))
            .execute(conn)?
    } else {
        diesel::update(target.filter(stored_clients::disabled_at.is_not_null()))
            .set(stored_clients::disabled_at.eq(None::<i64>))
            .execute(conn)?
    };
    if n == 1 {
        notify_clients_changed(conn)?;
    }
    Ok(n == 1)
}

/// A stored client, if there is one by this id.
pub fn find_stored(conn: &mut DbConnection, client_id: &str) -> Result<Option<StoredClient>, DbError> {
    Ok(stored_clients::table.find(client_id).select(StoredClient::as_select()).first(conn).optional()?)
}

/// Deletes a stored client; `false` when there is none. Its devices stop working, as for a
/// client removed from the configuration.
pub fn delete_stored(conn: &mut DbConnection, client_id: &str) -> Result<bool, DbError> {
    let n = diesel::delete(stored_clients::table.find(client_id)).execute(conn)?;
    notify_clients_changed(conn)?;
    Ok(n == 1)
}

/// Other replicas reload their stored clients at once rather than at their next reload.
fn notify_clients_changed(conn: &mut DbConnection) -> Result<(), DbError> {
    crate::db::notify::publish(conn, super::CHANGED, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_follow_rfc_8252() {
        assert!(check_redirect_uri("https://app.example/cb").is_ok());
        assert!(check_redirect_uri("http://127.0.0.1/cb").is_ok());
        assert!(check_redirect_uri("http://[::1]:8000/cb").is_ok());
        assert!(check_redirect_uri("com.example.app:/oauth2redirect").is_ok());
        assert!(check_redirect_uri("http://app.example/cb").is_err());
        assert!(check_redirect_uri("https://app.example/cb#frag").is_err());
        assert!(check_redirect_uri("/relative").is_err());
        assert!(check_redirect_uri("javascript:alert(1)").is_err());
        assert!(check_redirect_uri("data:text/html,x").is_err());
    }
}
