//! Session rules: a client's scopes now bound its devices, a disabled user's devices stop at
//! once, a grace retry never walks past a spent successor, and the successor key outlives a
//! master-key rotation.

use serde_json::json;

use crate::support::*;

async fn lowering_a_clients_scopes_narrows_its_existing_devices(backend: Backend) {
    let app = spawn_app(backend).await; // app: openid profile api
    let signed = app.sign_in().await;
    assert_eq!(scope_set(signed.body["scope"].as_str().unwrap()), ["api", "openid", "profile"]);

    let narrowed = app.restart_with(|c| c.app_scopes = vec!["openid".into()]).await;

    let refreshed = narrowed.refresh(&signed.refresh_token).await;
    refreshed.assert_status(200);
    assert_eq!(refreshed.str("scope"), "openid", "refresh grants only what the client may grant now");
    assert_eq!(jwt_claims(refreshed.str("access_token"))["scope"], json!("openid"));
    let seen = narrowed.introspect(&signed.access_token).await;
    assert_eq!(seen.body["scope"], json!("openid"), "introspection narrows an older token: {}", seen.text);
    let wider = narrowed
        .post_form(
            "/oauth/token",
            Auth::Public("app"),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refreshed.str("refresh_token")),
                ("scope", "api"),
            ],
        )
        .await;
    wider.assert_oauth_error(400, "invalid_scope");
}
both_backends!(lowering_a_clients_scopes_narrows_its_existing_devices);

async fn a_device_of_a_removed_client_stops_working(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let without_app = app.restart_with(|c| c.app_client = false).await;

    without_app.get_me(&signed.access_token).await.assert_status(401);
    let a = without_app.introspect(&signed.access_token).await;
    assert_eq!(a.body, json!({"active": false}), "{}", a.text);
    let r = without_app.introspect(&signed.refresh_token).await;
    assert_eq!(r.body, json!({"active": false}), "{}", r.text);
    without_app.refresh(&signed.refresh_token).await.assert_oauth_error(401, "invalid_client");
}
both_backends!(a_device_of_a_removed_client_stops_working);

async fn a_disabled_user_is_refused_everywhere_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let out = app.run_cli(&["users", "disable", &signed.user_id]).await;

    assert!(out.status.success(), "users disable: {}", String::from_utf8_lossy(&out.stderr));
    app.refresh(&signed.refresh_token).await.assert_oauth_error(400, "invalid_grant");
    // The CLI is another process: the server learns of it by notification (PostgreSQL) or by
    // its catch-up read of recent revocations (both backends).
    eventually("the disabled user's access token is refused", || async {
        app.get_me(&signed.access_token).await.status.as_u16() == 401
    })
    .await;
    assert_eq!(app.introspect(&signed.access_token).await.body, json!({"active": false}));
    let again = app.exchange(&app.google.id_token_for(&signed.google_sub), &[]).await;
    again.assert_oauth_error(400, "invalid_request");
    assert_eq!(app.count("audit_events WHERE action = 'user.disable'").await, 1, "disabling is audited");

    let out = app.run_cli(&["users", "enable", &signed.user_id]).await;

    assert!(out.status.success(), "users enable: {}", String::from_utf8_lossy(&out.stderr));
    app.sign_in_as(&signed.google_sub).await;
    assert_eq!(app.count("audit_events WHERE action = 'user.enable'").await, 1, "enabling is audited");
}
both_backends!(a_disabled_user_is_refused_everywhere_at_once);

/// Disabling through the database alone (not the CLI, the console or the API, which revoke the
/// devices too) stops refresh at once; access tokens, checked from memory, run out with their
/// lifetime.
async fn a_user_disabled_in_the_database_cannot_refresh(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    app.execute_sql(&format!("UPDATE users SET disabled_at = 1 WHERE id = '{}'", signed.user_id)).await;

    assert_eq!(app.introspect(&signed.refresh_token).await.body, json!({"active": false}));
    app.refresh(&signed.refresh_token).await.assert_oauth_error(400, "invalid_grant");
}
both_backends!(a_user_disabled_in_the_database_cannot_refresh);

async fn a_grace_retry_after_its_successor_was_spent_is_reuse(backend: Backend) {
    let app = spawn_app(backend).await; // grace 10s
    let t0 = app.sign_in().await;
    let s1 = app.refresh(&t0.refresh_token).await;
    s1.assert_status(200);
    let s2 = app.refresh(s1.str("refresh_token")).await;
    s2.assert_status(200);

    let walk = app.refresh(&t0.refresh_token).await;

    walk.assert_oauth_error(400, "invalid_grant");
    app.refresh(s2.str("refresh_token")).await.assert_oauth_error(400, "invalid_grant");
    app.get_me(s2.str("access_token")).await.assert_status(401);
}
both_backends!(a_grace_retry_after_its_successor_was_spent_is_reuse);

async fn a_grace_retry_gets_the_same_successor_after_a_master_key_rotation(backend: Backend) {
    let app = spawn_app(backend).await; // grace 10s
    let t0 = app.sign_in().await;
    let s1 = app.refresh(&t0.refresh_token).await;
    s1.assert_status(200);
    let old = app.dir().join("master.key").display().to_string();
    let new = write_master_key_named(app.dir(), "new.key");

    let both = app.restart_with(|c| c.master_keys = vec![new.clone(), old.clone()]).await;
    let out = both.run_cli(&["keys", "rotate-master"]).await;
    assert!(out.status.success(), "rotate-master: {}", String::from_utf8_lossy(&out.stderr));
    let only_new = app.restart_with(|c| c.master_keys = vec![new.clone()]).await;

    let retry = only_new.refresh(&t0.refresh_token).await;

    retry.assert_status(200);
    assert_eq!(retry.str("refresh_token"), s1.str("refresh_token"), "the same successor after the rotation");
}
both_backends!(a_grace_retry_gets_the_same_successor_after_a_master_key_rotation);
