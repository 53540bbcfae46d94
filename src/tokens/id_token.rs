//! ID tokens of the browser flow (OIDC Core §2): signed like access tokens but with `typ` `JWT`,
//! so neither passes for the other. `at_hash` binds the access token issued with it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256, Sha512};

use crate::crypto::signing::{SigningError, SigningKeys};

pub const ID_TOKEN_TYP: &str = "JWT";

#[derive(Serialize)]
struct IdTokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    azp: &'a str,
    iat: i64,
    exp: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    at_hash: String,
    idp: &'a str,
    /// The device: what RP-initiated and back-channel logout name.
    sid: &'a str,
}

/// What an ID token says.
pub struct IdTokenGrant<'a> {
    pub issuer: &'a str,
    pub user_id: &'a str,
    pub client_id: &'a str,
    pub auth_time: i64,
    pub nonce: Option<&'a str>,
    pub idp: &'a str,
    pub access_token: &'a str,
    pub ttl_secs: i64,
    pub device_id: &'a str,
}

/// The left half of the access token's hash, with the hash of the signing algorithm
/// (SHA-256 for ES256 and RS256, SHA-512 for EdDSA over Ed25519).
fn at_hash(access_token: &str, alg: jsonwebtoken::Algorithm) -> String {
    match alg {
        jsonwebtoken::Algorithm::EdDSA => {
            let digest = Sha512::digest(access_token.as_bytes());
            URL_SAFE_NO_PAD.encode(&digest[..32])
        }
        _ => {
            let digest = Sha256::digest(access_token.as_bytes());
            URL_SAFE_NO_PAD.encode(&digest[..16])
        }
    }
}

/// What a valid `id_token_hint` says (RP-initiated logout).
#[derive(Debug, serde::Deserialize)]
pub struct Hint {
    pub sub: String,
    pub aud: String,
    pub sid: String,
}

/// Checks an ID token idbridge issued, expired or not (an `id_token_hint`): signature with a
/// published key, `typ`, `iss`. `None` for anything else.
pub fn verify_hint(keys: &SigningKeys, issuer: &str, token: &str, now: i64) -> Option<Hint> {
    if token.len() > 8 * 1024 {
        return None;
    }
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.typ.as_deref() != Some(ID_TOKEN_TYP) {
        return None;
    }
    let key = keys.find(header.kid.as_deref()?, now)?;
    let mut validation = jsonwebtoken::Validation::new(key.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["iss", "sub", "aud"]);
    jsonwebtoken::decode::<Hint>(token, &key.decoding, &validation).ok().map(|d| d.claims)
}

pub fn issue(keys: &SigningKeys, grant: &IdTokenGrant<'_>, now: i64) -> Result<String, SigningError> {
    let alg = keys.current(now).ok_or(SigningError::NoActiveKey)?.alg;
    let claims = IdTokenClaims {
        iss: grant.issuer,
        sub: grant.user_id,
        aud: grant.client_id,
        azp: grant.client_id,
        iat: now,
        exp: now + grant.ttl_secs,
        auth_time: grant.auth_time,
        nonce: grant.nonce,
        at_hash: at_hash(grant.access_token, alg),
        idp: grant.idp,
        sid: grant.device_id,
    };
    keys.sign(ID_TOKEN_TYP, &claims, now)
}
