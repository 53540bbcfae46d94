//! The browser flow's server-side state: logins in flight (bound to the browser's login cookie,
//! single use, 10 minutes) and authorization codes (stored as hashes, single use, 60 seconds,
//! PKCE S256 required for every client; RFC 6749 §4.1, RFC 7636).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::crypto::keyring::MasterKeyring;
use crate::crypto::{random_token, sha256_b64};
use crate::db::schema::{authorization_codes, login_states};
use crate::db::{DbConnection, DbError};
use crate::providers::{ProviderKind, UpstreamGrant, VerifiedAssertion};

pub const LOGIN_TTL_SECS: i64 = 600;
pub const CODE_TTL_SECS: i64 = 60;
/// Used codes are kept this long past their expiry, so a late reuse still revokes.
const USED_CODE_RETENTION_SECS: i64 = 600;

/// A login in flight, from `/oauth/authorize` to the provider's callback.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = login_states)]
pub struct LoginState {
    /// Random; also the `state` sent to the upstream provider.
    pub id: String,
    pub browser_hash: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub client_state: Option<String>,
    pub scope: String,
    pub nonce: Option<String>,
    pub provider: String,
    pub upstream_nonce: Option<String>,
    pub upstream_verifier: Option<String>,
    pub expires_at: i64,
    /// RFC 9449 §10: the thumbprint of the key the code's redemption must prove.
    pub dpop_jkt: Option<String>,
}

pub fn save_login(conn: &mut DbConnection, login: &LoginState) -> Result<(), DbError> {
    diesel::insert_into(login_states::table).values(login).execute(conn)?;
    Ok(())
}

/// `true` when the login `id` exists for this browser: a read, before any write is spent on it.
pub fn login_exists(conn: &mut DbConnection, id: &str, browser_hash: &str) -> Result<bool, DbError> {
    let hash: Option<String> =
        login_states::table.find(id).select(login_states::browser_hash).first(conn).optional()?;
    Ok(hash.is_some_and(|h| bool::from(h.as_bytes().ct_eq(browser_hash.as_bytes()))))
}

/// Takes (and deletes) the login `id` when it belongs to this browser and has not expired:
/// a replayed callback, another browser's, or an old one finds nothing.
pub fn take_login(
    conn: &mut DbConnection,
    id: &str,
    browser_hash: &str,
    now: i64,
) -> Result<Option<LoginState>, DbError> {
    let found: Option<LoginState> =
        login_states::table.find(id).select(LoginState::as_select()).first(conn).optional()?;
    let Some(login) = found else {
        return Ok(None);
    };
    if !bool::from(login.browser_hash.as_bytes().ct_eq(browser_hash.as_bytes())) {
        return Ok(None);
    }
    let taken = diesel::delete(login_states::table.find(id)).execute(conn)?;
    Ok((taken == 1 && login.expires_at > now).then_some(login))
}

/// The provider's name and e-mail, carried wrapped in the code row; and what the provider
/// gave idbridge to keep for the user (Apple's refresh token), stored at redemption.
#[derive(Serialize, Deserialize)]
struct CarriedProfile {
    name: Option<String>,
    email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upstream: Option<CarriedGrant>,
}

#[derive(Serialize, Deserialize)]
struct CarriedGrant {
    client_id: String,
    refresh_token: String,
}

fn profile_aad(code_hash: &str) -> String {
    format!("idbridge:code-profile:{code_hash}")
}

/// Issues a code for a finished login; returns the code to send to the client.
/// Rewraps the person's profile that unredeemed authorization codes carry under the keyring's
/// first master key (`keys rotate-master`). A profile no key of the keyring opens (its code is
/// useless anyway, and lives a minute) is deleted with its code. Returns (rewrapped, total).
pub fn rewrap_profiles(conn: &mut DbConnection, keyring: &MasterKeyring) -> Result<(usize, usize), DbError> {
    let rows: Vec<(String, Option<Vec<u8>>)> = authorization_codes::table
        .filter(authorization_codes::profile.is_not_null())
        .select((authorization_codes::code_hash, authorization_codes::profile))
        .load(conn)?;
    let mut rewrapped = 0;
    for (code_hash, wrapped) in &rows {
        let Some(wrapped) = wrapped.as_ref().filter(|w| !keyring.is_current(w)) else { continue };
        let aad = profile_aad(code_hash);
        let target = authorization_codes::table.find(code_hash);
        match keyring.unwrap(wrapped, aad.as_bytes()) {
            Ok(plain) => {
                let fresh = keyring.wrap(&plain, aad.as_bytes());
                diesel::update(target).set(authorization_codes::profile.eq(Some(fresh))).execute(conn)?;
                rewrapped += 1;
            }
            Err(_) => {
                diesel::delete(target).execute(conn)?;
            }
        }
    }
    Ok((rewrapped, rows.len()))
}

pub fn issue_code(
    conn: &mut DbConnection,
    keyring: &MasterKeyring,
    login: &LoginState,
    assertion: &VerifiedAssertion,
    now: i64,
) -> Result<String, DbError> {
    let code = random_token::<32>();
    let code_hash = sha256_b64(code.as_bytes());
    let upstream = assertion.upstream.as_ref().map(|g| CarriedGrant {
        client_id: g.client_id.clone(),
        refresh_token: secrecy::ExposeSecret::expose_secret(&g.refresh_token).to_string(),
    });
    let profile = zeroize::Zeroizing::new(
        serde_json::to_vec(&CarriedProfile {
            name: assertion.name.clone(),
            email: assertion.email.clone(),
            email_verified: assertion.email_verified,
            upstream,
        })
        .expect("a profile serialises"),
    );
    diesel::insert_into(authorization_codes::table)
        .values((
            authorization_codes::code_hash.eq(&code_hash),
            authorization_codes::client_id.eq(&login.client_id),
            authorization_codes::redirect_uri.eq(&login.redirect_uri),
            authorization_codes::code_challenge.eq(&login.code_challenge),
            authorization_codes::scope.eq(&login.scope),
            authorization_codes::nonce.eq(&login.nonce),
            authorization_codes::provider.eq(assertion.provider.as_str()),
            authorization_codes::subject.eq(&assertion.subject),
            authorization_codes::profile.eq(Some(keyring.wrap(&profile, profile_aad(&code_hash).as_bytes()))),
            authorization_codes::auth_time.eq(now),
            authorization_codes::expires_at.eq(now + CODE_TTL_SECS),
            authorization_codes::dpop_jkt.eq(&login.dpop_jkt),
        ))
        .execute(conn)?;
    Ok(code)
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = authorization_codes)]
struct CodeRow {
    code_hash: String,
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    scope: String,
    nonce: Option<String>,
    provider: String,
    subject: String,
    profile: Option<Vec<u8>>,
    auth_time: i64,
    expires_at: i64,
    used_at: Option<i64>,
    device_id: Option<String>,
    dpop_jkt: Option<String>,
}

/// A code redeemed: what the sign-in and the ID token need.
pub struct Redeemed {
    pub code_hash: String,
    pub assertion: VerifiedAssertion,
    pub scope: String,
    pub nonce: Option<String>,
    pub auth_time: i64,
}

/// Why a code was refused (all `invalid_grant`).
#[derive(Debug, PartialEq, Eq)]
pub enum CodeRefused {
    Unknown,
    Expired,
    /// Used before: the device it made is to be revoked.
    Reused {
        device_id: Option<String>,
    },
    OtherClient,
    RedirectMismatch,
    PkceMismatch,
    /// The code was bound to a DPoP key (`dpop_jkt`) the request did not prove.
    DpopMismatch,
}

/// `BASE64URL(SHA-256(verifier)) == challenge`, with a verifier of 43 to 128 unreserved
/// characters (RFC 7636 §4.1).
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    well_formed && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// A code challenge as RFC 7636 S256 makes them: 43 base64url characters.
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43 && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A code as the token request presents it.
#[derive(Clone, Copy)]
pub struct PresentedCode<'a> {
    pub code: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub verifier: &'a str,
    /// The thumbprint of the DPoP key the request proved, if any.
    pub dpop_jkt: Option<&'a str>,
}

/// Redeems a code in the caller's write transaction: exactly once, by its client, with the
/// same redirect URI, the PKCE verifier, and a proof by its DPoP key when it was bound to one.
/// A used code comes back as `Reused`.
pub fn redeem(
    conn: &mut DbConnection,
    keyring: &MasterKeyring,
    presented: &PresentedCode<'_>,
    now: i64,
) -> Result<Result<Redeemed, CodeRefused>, DbError> {
    let PresentedCode { code, client_id, redirect_uri, verifier, dpop_jkt } = *presented;
    let code_hash = sha256_b64(code.as_bytes());
    let found: Option<CodeRow> =
        authorization_codes::table.find(&code_hash).select(CodeRow::as_select()).first(conn).optional()?;
    let Some(row) = found else {
        return Ok(Err(CodeRefused::Unknown));
    };
    if row.used_at.is_some() {
        return Ok(Err(CodeRefused::Reused { device_id: row.device_id }));
    }
    if row.client_id != client_id {
        return Ok(Err(CodeRefused::OtherClient));
    }
    if row.expires_at <= now {
        return Ok(Err(CodeRefused::Expired));
    }
    if row.redirect_uri != redirect_uri {
        return Ok(Err(CodeRefused::RedirectMismatch));
    }
    if !pkce_matches(verifier, &row.code_challenge) {
        return Ok(Err(CodeRefused::PkceMismatch));
    }
    if row.dpop_jkt.is_some() && row.dpop_jkt.as_deref() != dpop_jkt {
        return Ok(Err(CodeRefused::DpopMismatch));
    }
    // The conditional write decides between concurrent redemptions.
    let won = diesel::update(
        authorization_codes::table.find(&code_hash).filter(authorization_codes::used_at.is_null()),
    )
    .set(authorization_codes::used_at.eq(now))
    .execute(conn)?;
    if won != 1 {
        // A concurrent redemption won and has committed: revoke what it made.
        let device_id: Option<Option<String>> = authorization_codes::table
            .find(&code_hash)
            .select(authorization_codes::device_id)
            .first(conn)
            .optional()?;
        return Ok(Err(CodeRefused::Reused { device_id: device_id.flatten() }));
    }
    let profile: CarriedProfile = row
        .profile
        .as_deref()
        .and_then(|wrapped| keyring.unwrap(wrapped, profile_aad(&row.code_hash).as_bytes()).ok())
        .and_then(|plain| serde_json::from_slice(&plain).ok())
        .unwrap_or(CarriedProfile { name: None, email: None, email_verified: None, upstream: None });
    let provider = ProviderKind::from_stored(&row.provider).ok_or(DbError::Task)?;
    Ok(Ok(Redeemed {
        assertion: VerifiedAssertion {
            provider,
            subject: row.subject,
            email: profile.email,
            email_verified: profile.email_verified,
            name: profile.name,
            nonce: None,
            assertion_hash: None,
            expires_at: row.expires_at,
            audience: None,
            upstream: profile.upstream.map(|g| UpstreamGrant {
                client_id: g.client_id,
                refresh_token: secrecy::SecretString::from(g.refresh_token),
            }),
        },
        code_hash: row.code_hash,
        scope: row.scope,
        nonce: row.nonce,
        auth_time: row.auth_time,
    }))
}

/// Records the device a code made, so a reuse of the code can revoke it.
pub fn attach_device(conn: &mut DbConnection, code_hash: &str, device_id: &str) -> Result<(), DbError> {
    diesel::update(authorization_codes::table.find(code_hash))
        .set(authorization_codes::device_id.eq(Some(device_id)))
        .execute(conn)?;
    Ok(())
}

/// Deletes expired logins and codes past their reuse window; returns how many.
pub fn delete_expired(conn: &mut DbConnection, now: i64) -> Result<usize, DbError> {
    let logins =
        diesel::delete(login_states::table.filter(login_states::expires_at.le(now))).execute(conn)?;
    let codes = diesel::delete(
        authorization_codes::table.filter(authorization_codes::expires_at.le(now - USED_CODE_RETENTION_SECS)),
    )
    .execute(conn)?;
    Ok(logins + codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_the_rfc_7636_example() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_s256_challenge(challenge));
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXx", challenge));
        assert!(!pkce_matches("short", challenge));
    }
}
