//! Logout tokens (OpenID Connect Back-Channel Logout 1.0 §2.4): `typ` `logout+jwt`, signed
//! like access tokens, about one device (`sid`) of one user (`sub`), for one client (`aud`);
//! never a `nonce`.

use serde::Serialize;
use serde_json::json;

use crate::crypto::signing::{SigningError, SigningKeys};

pub const LOGOUT_TOKEN_TYP: &str = "logout+jwt";
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A logout token is good for two minutes.
pub const LOGOUT_TOKEN_TTL_SECS: i64 = 120;

#[derive(Serialize)]
struct LogoutClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
    sub: &'a str,
    sid: &'a str,
    events: serde_json::Value,
}

/// Signs the logout token telling `client_id` that device `device_id` of `user_id` ended.
pub fn issue(
    keys: &SigningKeys,
    issuer: &str,
    client_id: &str,
    user_id: &str,
    device_id: &str,
    now: i64,
) -> Result<String, SigningError> {
    let claims = LogoutClaims {
        iss: issuer,
        aud: client_id,
        iat: now,
        exp: now + LOGOUT_TOKEN_TTL_SECS,
        jti: uuid::Uuid::new_v4().to_string(),
        sub: user_id,
        sid: device_id,
        events: json!({ BACKCHANNEL_LOGOUT_EVENT: {} }),
    };
    keys.sign(LOGOUT_TOKEN_TYP, &claims, now)
}
