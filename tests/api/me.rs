//! `/v1/me`: the signed-in person, their devices, and Bearer authentication (RFC 6750).

use serde_json::{json, Value};

use crate::support::fake_google::random_sub;
use crate::support::*;

fn device<'a>(list: &'a Answer, id: &str) -> &'a Value {
    list.body["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no devices array: {}", list.text))
        .iter()
        .find(|d| d["id"] == json!(id))
        .unwrap_or_else(|| panic!("device {id} not listed: {}", list.text))
}

async fn devices_list_marks_the_callers_device_current(backend: Backend) {
    let app = spawn_app(backend).await;
    let sub = random_sub();
    let phone = app.sign_in_as(&sub).await;
    let laptop = app.sign_in_as(&sub).await;

    let list = app.get_bearer("/v1/me/devices", &phone.access_token).await;

    list.assert_status(200);
    assert_eq!(list.body["devices"].as_array().map(Vec::len), Some(2), "{}", list.text);
    assert_eq!(device(&list, &phone.device_id)["current"], json!(true), "{}", list.text);
    assert_eq!(device(&list, &laptop.device_id)["current"], json!(false), "{}", list.text);
}
all_backends!(devices_list_marks_the_callers_device_current);

async fn deleting_another_own_device_ends_its_access_token_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let sub = random_sub();
    let phone = app.sign_in_as(&sub).await;
    let laptop = app.sign_in_as(&sub).await;

    let del = app.delete_bearer(&format!("/v1/me/devices/{}", laptop.device_id), &phone.access_token).await;

    del.assert_status(204);
    app.get_me(&laptop.access_token).await.assert_status(401);
    app.get_me(&phone.access_token).await.assert_status(200);
    app.refresh(&laptop.refresh_token).await.assert_oauth_error(400, "invalid_grant");
}
all_backends!(deleting_another_own_device_ends_its_access_token_at_once);

async fn deleting_a_device_of_another_user_is_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let mallory = app.sign_in().await;
    let victim = app.sign_in().await;

    let del = app.delete_bearer(&format!("/v1/me/devices/{}", victim.device_id), &mallory.access_token).await;

    del.assert_status(404);
    app.get_me(&victim.access_token).await.assert_status(200);
    assert_eq!(app.count("devices WHERE revoked_at IS NULL").await, 2);
}
all_backends!(deleting_a_device_of_another_user_is_404);

async fn logout_all_ends_every_device_of_the_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let sub = random_sub();
    let phone = app.sign_in_as(&sub).await;
    let laptop = app.sign_in_as(&sub).await;
    let someone_else = app.sign_in().await;

    let a = app.post_bearer("/v1/me/logout-all", &phone.access_token).await;

    a.assert_status(204);
    app.get_me(&phone.access_token).await.assert_status(401);
    app.get_me(&laptop.access_token).await.assert_status(401);
    app.refresh(&laptop.refresh_token).await.assert_oauth_error(400, "invalid_grant");
    app.get_me(&someone_else.access_token).await.assert_status(200);
}
all_backends!(logout_all_ends_every_device_of_the_user);

async fn missing_bearer_is_401_with_a_bearer_challenge(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app.get("/v1/me").await;

    a.assert_status(401);
    let www = a.header("www-authenticate").unwrap_or_default();
    assert!(www.starts_with("Bearer"), "WWW-Authenticate: {www:?}");
}
all_backends!(missing_bearer_is_401_with_a_bearer_challenge);

async fn google_id_token_is_not_an_access_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let id_token = app.google.id_token(json!({}));

    let a = app.get_me(&id_token).await;

    a.assert_status(401);
    let www = a.header("www-authenticate").unwrap_or_default();
    assert!(www.contains("invalid_token"), "WWW-Authenticate: {www:?}");
}
all_backends!(google_id_token_is_not_an_access_token);

async fn access_token_with_altered_claims_is_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let victim = app.sign_in().await;
    let attacker = app.sign_in().await;
    // attacker's signature, victim's claims
    let mut parts: Vec<&str> = attacker.access_token.split('.').collect();
    let victim_claims = victim.access_token.split('.').nth(1).unwrap().to_string();
    parts[1] = &victim_claims;
    let forged = parts.join(".");

    let a = app.get_me(&forged).await;

    a.assert_status(401);
}
all_backends!(access_token_with_altered_claims_is_401);

async fn v1_errors_are_problem_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let mallory = app.sign_in().await;
    let victim = app.sign_in().await;

    let not_found =
        app.delete_bearer(&format!("/v1/me/devices/{}", victim.device_id), &mallory.access_token).await;
    let unauthorized = app.get_me("garbage").await;

    for a in [&not_found, &unauthorized] {
        let ct = a.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/problem+json"),
            "{} answered with Content-Type {ct:?}: {}",
            a.status,
            a.text
        );
        assert_eq!(a.body["status"], json!(a.status.as_u16()), "{}", a.text);
        for field in ["type", "title"] {
            assert!(a.body[field].is_string(), "problem field {field} missing: {}", a.text);
        }
    }
}
all_backends!(v1_errors_are_problem_json);

async fn access_token_with_alg_none_is_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;
    let claims = signed.access_token.split('.').nth(1).unwrap().to_string();
    let header = fake_google::b64url(br#"{"alg":"none","typ":"at+jwt"}"#);
    let forged = format!("{header}.{claims}.");

    let a = app.get_me(&forged).await;

    a.assert_status(401);
}
all_backends!(access_token_with_alg_none_is_401);

async fn access_token_with_a_zero_ecdsa_signature_is_401(backend: Backend) {
    // CVE-2022-21449 ("psychic signatures"): r = s = 0
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;
    let mut parts: Vec<String> = signed.access_token.split('.').map(str::to_string).collect();
    parts[2] = fake_google::b64url(&[0u8; 64]);
    let forged = parts.join(".");

    let a = app.get_me(&forged).await;

    a.assert_status(401);
}
all_backends!(access_token_with_a_zero_ecdsa_signature_is_401);

async fn access_token_signed_by_a_foreign_key_is_401(backend: Backend) {
    // a token signed by Google's key, shaped like an idbridge access token
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;
    let mut claims = jwt_claims(&signed.access_token);
    claims["aud"] = json!("http://elsewhere.test/api");
    let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": app.google.current_kid()});
    let forged = app.google.sign_rs256(&header, &claims);

    let a = app.get_me(&forged).await;

    a.assert_status(401);
}
all_backends!(access_token_signed_by_a_foreign_key_is_401);

async fn deleting_the_current_device_ends_its_own_access_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let del = app.delete_bearer(&format!("/v1/me/devices/{}", signed.device_id), &signed.access_token).await;

    del.assert_status(204);
    app.get_me(&signed.access_token).await.assert_status(401);
}
all_backends!(deleting_the_current_device_ends_its_own_access_token);

async fn deleting_a_device_that_does_not_exist_is_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let unknown =
        app.delete_bearer(&format!("/v1/me/devices/{}", uuid::Uuid::new_v4()), &signed.access_token).await;
    let malformed = app.delete_bearer("/v1/me/devices/not-a-device-id", &signed.access_token).await;

    unknown.assert_status(404);
    malformed.assert_status(404);
}
all_backends!(deleting_a_device_that_does_not_exist_is_404);
