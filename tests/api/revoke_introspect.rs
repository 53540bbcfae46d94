//! Revocation (RFC 7009) and introspection (RFC 7662).

use serde_json::json;

use crate::support::*;

const LIVE_DEVICES: &str = "devices WHERE revoked_at IS NULL";

async fn revoking_unknown_or_malformed_tokens_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for token in ["no-such-token", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
            v.push(app.revoke(token, Auth::Public("app")).await.status.as_u16());
        }
        v
    };

    assert_eq!(statuses, vec![200, 200, 200]);
    assert_eq!(app.count(LIVE_DEVICES).await, 1);
    app.get_me(&signed.access_token).await.assert_status(200);
    app.refresh(&signed.refresh_token).await.assert_status(200);
}
all_backends!(revoking_unknown_or_malformed_tokens_changes_nothing);

async fn revoking_a_token_of_another_client_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let a = app.revoke(&signed.refresh_token, Auth::Basic("svc", SVC_SECRET)).await;

    a.assert_status(200);
    assert_eq!(app.count(LIVE_DEVICES).await, 1);
    app.refresh(&signed.refresh_token).await.assert_status(200);
}
all_backends!(revoking_a_token_of_another_client_changes_nothing);

async fn revoke_with_a_wrong_client_secret_is_invalid_client(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let a = app.revoke(&signed.refresh_token, Auth::Basic("svc", "wrong-secret")).await;

    a.assert_oauth_error(401, "invalid_client");
    assert_eq!(app.count(LIVE_DEVICES).await, 1);
}
all_backends!(revoke_with_a_wrong_client_secret_is_invalid_client);

async fn revoking_an_access_token_revokes_its_device(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let a = app.revoke(&signed.access_token, Auth::Public("app")).await;

    a.assert_status(200);
    assert_eq!(app.count(LIVE_DEVICES).await, 0);
    app.get_me(&signed.access_token).await.assert_status(401);
    app.refresh(&signed.refresh_token).await.assert_oauth_error(400, "invalid_grant");
}
all_backends!(revoking_an_access_token_revokes_its_device);

async fn revoking_a_refresh_token_leaves_other_devices_alone(backend: Backend) {
    let app = spawn_app(backend).await;
    let sub = fake_google::random_sub();
    let phone = app.sign_in_as(&sub).await;
    let laptop = app.sign_in_as(&sub).await;

    app.revoke(&phone.refresh_token, Auth::Public("app")).await.assert_status(200);

    app.get_me(&phone.access_token).await.assert_status(401);
    app.get_me(&laptop.access_token).await.assert_status(200);
    app.refresh(&laptop.refresh_token).await.assert_status(200);
}
all_backends!(revoking_a_refresh_token_leaves_other_devices_alone);

// ---- introspection -------------------------------------------------------------------------

async fn introspection_by_a_public_client_is_invalid_client(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let a = app.introspect_as(Auth::Public("app"), &signed.access_token).await;

    a.assert_oauth_error(401, "invalid_client");
}
all_backends!(introspection_by_a_public_client_is_invalid_client);

async fn introspection_with_a_wrong_secret_is_invalid_client(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let a = app.introspect_as(Auth::Basic("svc", "not-the-secret"), &signed.access_token).await;

    a.assert_oauth_error(401, "invalid_client");
}
all_backends!(introspection_with_a_wrong_secret_is_invalid_client);

async fn introspection_without_client_authentication_is_invalid_client(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let a = app.introspect_as(Auth::Anonymous, &signed.access_token).await;

    a.assert_oauth_error(401, "invalid_client");
}
all_backends!(introspection_without_client_authentication_is_invalid_client);

async fn live_access_token_introspects_active_with_its_claims(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;
    let claims = jwt_claims(&signed.access_token);

    let a = app.introspect(&signed.access_token).await;

    a.assert_status(200);
    let b = &a.body;
    assert_eq!(b["active"], json!(true), "{}", a.text);
    assert_eq!(b["sub"], json!(signed.user_id), "{}", a.text);
    assert_eq!(b["client_id"], json!("app"), "{}", a.text);
    assert_eq!(b["sid"], json!(signed.device_id), "{}", a.text);
    assert_eq!(
        scope_set(b["scope"].as_str().unwrap_or_default()),
        scope_set("openid profile api"),
        "{}",
        a.text
    );
    assert_eq!(b["exp"], claims["exp"], "{}", a.text);
    assert_eq!(b["iat"], claims["iat"], "{}", a.text);
    assert_eq!(b["iss"], json!(PUBLIC_URL), "{}", a.text);
    assert!(b["aud"] == json!(AUDIENCE) || b["aud"] == json!([AUDIENCE]), "aud: {}", a.text);
    assert!(b["token_type"].is_string(), "token_type missing: {}", a.text);
    assert_eq!(b["idp"], json!("google"), "{}", a.text);
}
all_backends!(live_access_token_introspects_active_with_its_claims);

async fn introspection_accepts_client_secret_in_the_form(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let a = app.introspect_as(Auth::Post("svc", SVC_SECRET), &signed.access_token).await;

    a.assert_status(200);
    assert_eq!(a.body["active"], json!(true), "{}", a.text);
}
all_backends!(introspection_accepts_client_secret_in_the_form);

async fn access_token_of_a_revoked_device_introspects_exactly_inactive(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;
    app.revoke(&signed.refresh_token, Auth::Public("app")).await.assert_status(200);

    let a = app.introspect(&signed.access_token).await;

    a.assert_status(200);
    assert_eq!(a.body, json!({"active": false}), "{}", a.text);
}
all_backends!(access_token_of_a_revoked_device_introspects_exactly_inactive);

async fn garbage_introspects_exactly_inactive(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app.introspect("this-is-not-a-token").await;

    a.assert_status(200);
    assert_eq!(a.body, json!({"active": false}), "{}", a.text);
}
all_backends!(garbage_introspects_exactly_inactive);

async fn google_id_token_introspects_exactly_inactive(backend: Backend) {
    let app = spawn_app(backend).await;
    let id_token = app.google.id_token(serde_json::json!({}));

    let a = app.introspect(&id_token).await;

    a.assert_status(200);
    assert_eq!(a.body, json!({"active": false}), "{}", a.text);
}
all_backends!(google_id_token_introspects_exactly_inactive);

async fn revoke_with_a_wrong_type_hint_still_revokes(backend: Backend) {
    // RFC 7009 §2.1: a wrong hint makes the server search further, it does not change the result
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let a = app
        .post_form(
            "/oauth/revoke",
            Auth::Public("app"),
            &[("token", &signed.access_token), ("token_type_hint", "refresh_token")],
        )
        .await;

    a.assert_status(200);
    assert_eq!(app.count(LIVE_DEVICES).await, 0);
    app.get_me(&signed.access_token).await.assert_status(401);
}
all_backends!(revoke_with_a_wrong_type_hint_still_revokes);
