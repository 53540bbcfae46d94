//! The access token format (RFC 9068) and its verification against the published JWKS.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use crate::support::*;

async fn access_token_is_an_es256_at_jwt_verifiable_with_the_jwks(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let header = decode_header(&signed.access_token).expect("access token header");
    let jwks = app.get("/.well-known/jwks.json").await;

    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, Algorithm::ES256);
    let kid = header.kid.expect("access token header has a kid");
    jwks.assert_status(200);
    let set: JwkSet = serde_json::from_str(&jwks.text).expect("JWKS parses as a JWK set");
    let jwk = set.find(&kid).unwrap_or_else(|| panic!("kid {kid} not in the JWKS: {}", jwks.text));
    let key = DecodingKey::from_jwk(jwk).expect("usable JWK");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[PUBLIC_URL]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = decode::<Value>(&signed.access_token, &key, &validation)
        .expect("access token verifies against the published key");
    let _ = data;
}
both_backends!(access_token_is_an_es256_at_jwt_verifiable_with_the_jwks);

async fn access_token_carries_the_rfc9068_claims_and_no_personal_data(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({"email": "ada@example.com", "name": "Ada"}));
    let a = app.exchange(&token, &[]).await;
    let signed = Tokens::from_answer(&a, "");

    let c = jwt_claims(&signed.access_token);

    assert_eq!(c["iss"], json!(PUBLIC_URL), "{c}");
    let aud_ok = c["aud"] == json!(AUDIENCE) || c["aud"] == json!([AUDIENCE]);
    assert!(aud_ok, "aud must be tokens.audience: {c}");
    let sub = c["sub"].as_str().unwrap_or_default();
    assert!(uuid::Uuid::parse_str(sub).is_ok(), "sub must be a UUID: {c}");
    assert_eq!(c["client_id"], json!("app"), "{c}");
    assert_eq!(c["sid"], json!(signed.device_id), "sid must be the device id: {c}");
    assert!(c["jti"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
    let (iat, exp) = (c["iat"].as_i64(), c["exp"].as_i64());
    assert!(iat.is_some() && exp.is_some(), "iat/exp must be numbers: {c}");
    assert_eq!(exp.unwrap() - iat.unwrap(), 600, "exp - iat must be access_ttl: {c}");
    assert_eq!(scope_set(c["scope"].as_str().unwrap_or_default()), scope_set("openid profile api"), "{c}");
    assert_eq!(c["idp"], json!("google"), "{c}");
    for personal in ["email", "name", "email_verified", "given_name"] {
        assert!(c.get(personal).is_none(), "personal claim {personal} in access token: {c}");
    }
}
both_backends!(access_token_carries_the_rfc9068_claims_and_no_personal_data);

async fn each_access_token_has_its_own_jti(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let refreshed = app.refresh(&signed.refresh_token).await;

    refreshed.assert_status(200);
    assert_ne!(jwt_claims(&signed.access_token)["jti"], jwt_claims(refreshed.str("access_token"))["jti"]);
}
both_backends!(each_access_token_has_its_own_jti);
