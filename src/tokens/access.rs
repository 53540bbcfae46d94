//! Access tokens: RFC 9068 JWTs, `typ` `at+jwt`, signed with the current signing key.
//! No personal data beyond the user id.

use serde::{Deserialize, Serialize};

use crate::crypto::signing::{SigningError, SigningKeys};

pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    /// The device (session) id.
    pub sid: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    pub scope: String,
    pub idp: String,
    /// RFC 9449 §6.1: the DPoP key the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// RFC 7800 `cnf`, as DPoP uses it: the SHA-256 thumbprint of the key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Confirmation {
    pub jkt: String,
}

impl AccessClaims {
    /// The thumbprint of the DPoP key this token is bound to, if it is.
    pub fn jkt(&self) -> Option<&str> {
        self.cnf.as_ref().map(|c| c.jkt.as_str())
    }

    /// `DPoP` for a bound token, else `Bearer` (introspection's `token_type`).
    pub fn token_type(&self) -> &'static str {
        token_type(self.cnf.is_some())
    }
}

/// The `token_type` of an access token: `DPoP` when it is bound to a key, else `Bearer`.
pub fn token_type(bound: bool) -> &'static str {
    if bound {
        "DPoP"
    } else {
        "Bearer"
    }
}

/// What the issuer and verifier need to agree on.
#[derive(Debug, Clone)]
pub struct AccessTokenPolicy {
    pub issuer: String,
    pub audience: String,
    pub ttl_secs: i64,
}

pub struct Grant<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub client_id: &'a str,
    pub scope: &'a str,
    pub idp: &'a str,
    /// When the device's session ends: no access token outlives it.
    pub session_expires_at: i64,
    /// The DPoP key the token is bound to (`cnf.jkt`), when the request proved one.
    pub dpop_jkt: Option<&'a str>,
}

pub fn issue(
    keys: &SigningKeys,
    policy: &AccessTokenPolicy,
    grant: &Grant<'_>,
    now: i64,
) -> Result<String, SigningError> {
    let claims = AccessClaims {
        iss: policy.issuer.clone(),
        sub: grant.user_id.to_string(),
        aud: policy.audience.clone(),
        client_id: grant.client_id.to_string(),
        sid: grant.device_id.to_string(),
        jti: uuid::Uuid::new_v4().to_string(),
        iat: now,
        exp: (now + policy.ttl_secs).min(grant.session_expires_at.max(now + 1)),
        scope: grant.scope.to_string(),
        idp: grant.idp.to_string(),
        cnf: grant.dpop_jkt.map(|jkt| Confirmation { jkt: jkt.to_string() }),
    };
    keys.sign(ACCESS_TOKEN_TYP, &claims, now)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the access token is invalid")]
pub struct InvalidAccessToken;

/// Checks signature (the key's own algorithm only), `typ`, `iss`, `aud`, `exp`, and that the
/// token's lifetime (`exp - iat`) is within today's `access_ttl`.
/// Whether the device is still live is the caller's second check.
pub fn verify(
    keys: &SigningKeys,
    policy: &AccessTokenPolicy,
    token: &str,
    now: i64,
) -> Result<AccessClaims, InvalidAccessToken> {
    if token.len() > 8 * 1024 {
        return Err(InvalidAccessToken);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| InvalidAccessToken)?;
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
    });
    if !typ_ok {
        return Err(InvalidAccessToken);
    }
    let key = header.kid.as_deref().and_then(|kid| keys.find(kid, now)).ok_or(InvalidAccessToken)?;
    let mut validation = jsonwebtoken::Validation::new(key.alg);
    validation.leeway = 0;
    validation.set_issuer(&[&policy.issuer]);
    validation.set_audience(&[&policy.audience]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
        .map(|data| data.claims)
        .map_err(|_| InvalidAccessToken)?;
    // A token issued under a longer `access_ttl` than today's is refused: the revocations kept
    // in memory cover today's lifetime, and a revoked device's older token must not outlive them.
    if claims.exp.saturating_sub(claims.iat) > policy.ttl_secs {
        return Err(InvalidAccessToken);
    }
    Ok(claims)
}

/// A JWT has two dots; a refresh token has none.
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}
