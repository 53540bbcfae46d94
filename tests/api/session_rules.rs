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

/// Moves a revocation back in time, as if it had happened `secs` ago.
async fn age_revocation(app: &TestApp, device_id: &str, secs: i64) {
    app.execute_sql(&format!("UPDATE revocations SET at = at - {secs} WHERE device_id = '{device_id}'"))
        .await;
}

/// Every way an access token is accepted refuses it.
async fn assert_refused_everywhere(app: &TestApp, access_token: &str) {
    app.get_me(access_token).await.assert_status(401);
    let sealed = app
        .post_json_bearer("/v1/crypto/encrypt", access_token, &json!({"plaintext": "eA==", "context": ""}))
        .await;
    sealed.assert_status(401);
    assert_eq!(app.introspect(access_token).await.body, json!({"active": false}));
}

async fn a_revoked_devices_token_stays_refused_after_access_ttl_is_lowered(backend: Backend) {
    let app = spawn_app(backend).await; // access_ttl 10m
    let signed = app.sign_in().await;
    app.revoke(&signed.refresh_token, Auth::Public("app")).await.assert_status(200);
    // Five minutes later: longer than the new lifetime plus every leeway.
    age_revocation(&app, &signed.device_id, 300).await;

    let lowered = app.restart_with(|c| c.access_ttl = "5s".into()).await;

    assert_refused_everywhere(&lowered, &signed.access_token).await;
}
both_backends!(a_revoked_devices_token_stays_refused_after_access_ttl_is_lowered);

async fn a_disabled_users_token_stays_refused_after_access_ttl_is_lowered_and_raised_again(backend: Backend) {
    let app = spawn_app(backend).await; // access_ttl 10m
    let signed = app.sign_in().await;
    let out = app.run_cli(&["users", "disable", &signed.user_id]).await;
    assert!(out.status.success(), "users disable: {}", String::from_utf8_lossy(&out.stderr));
    age_revocation(&app, &signed.device_id, 300).await;

    let lowered = app.restart_with(|c| c.access_ttl = "5s".into()).await;
    // The lowered server's sweep must not forget what a 10-minute token needs.
    let db = idbridge::db::Db::new(&app.db.url, 1).expect("open the database");
    let liveness = std::sync::Arc::new(idbridge::sessions::Liveness::default());
    liveness.set_access_ttl(5);
    let retention = default_retention();
    idbridge::housekeeping::sweep(&db, &liveness, retention, idbridge::clock::now()).await.expect("sweep");
    let raised = app.restart_with(|c| c.access_ttl = "10m".into()).await;

    assert_refused_everywhere(&lowered, &signed.access_token).await;
    assert_refused_everywhere(&raised, &signed.access_token).await;
}
both_backends!(a_disabled_users_token_stays_refused_after_access_ttl_is_lowered_and_raised_again);

/// Four clients keep signing in as one Google subject while `users disable` runs: whatever
/// interleaving happens, the user is left with no live device and no token that works.
async fn sign_ins_racing_a_disable_leave_no_live_device(backend: Backend) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let app = spawn_app_with(backend, |c| {
        c.max_devices_per_user = 10_000;
        c.per_ip_per_second = 0;
    })
    .await;
    let first = app.sign_in().await;
    let disabled = AtomicBool::new(false);

    let sign_in_until_refused = || async {
        let mut granted = Vec::new();
        for _ in 0..2_000 {
            let after_disable = disabled.load(Ordering::SeqCst);
            let a = app.exchange(&app.google.id_token_for(&first.google_sub), &[]).await;
            if a.status.as_u16() == 200 {
                assert!(
                    !after_disable,
                    "a sign-in that began after the disable returned succeeded: {}",
                    a.text
                );
                granted.push(Tokens::from_answer(&a, &first.google_sub));
            } else {
                a.assert_oauth_error(400, "invalid_request");
                if after_disable {
                    break;
                }
            }
        }
        granted
    };
    let disable = async {
        let out = app.run_cli(&["users", "disable", &first.user_id]).await;
        disabled.store(true, Ordering::SeqCst);
        out
    };
    let (a, b, c, d, out) = tokio::join!(
        sign_in_until_refused(),
        sign_in_until_refused(),
        sign_in_until_refused(),
        sign_in_until_refused(),
        disable
    );

    assert!(out.status.success(), "users disable: {}", String::from_utf8_lossy(&out.stderr));
    let live =
        app.count(&format!("devices WHERE user_id = '{}' AND revoked_at IS NULL", first.user_id)).await;
    assert_eq!(live, 0, "devices left live after the disable");
    let granted: Vec<Tokens> = [a, b, c, d].into_iter().flatten().chain([first]).collect();
    for tokens in &granted {
        eventually("a token handed out around the disable is refused", || async {
            app.get_me(&tokens.access_token).await.status.as_u16() == 401
        })
        .await;
        app.refresh(&tokens.refresh_token).await.assert_oauth_error(400, "invalid_grant");
    }
}
both_backends!(sign_ins_racing_a_disable_leave_no_live_device);

/// `app` restarted with `refresh_max_ttl = "1h"`.
async fn with_an_hours_maximum(app: &TestApp) -> TestApp {
    app.restart_with(|c| {
        c.refresh_idle_ttl = "30m".into();
        c.refresh_max_ttl = "1h".into();
    })
    .await
}

async fn lowering_refresh_max_ttl_reaches_devices_signed_in_before(backend: Backend) {
    let app = spawn_app(backend).await; // refresh_max_ttl 90d
    let older = app.sign_in().await;
    // Signed in two hours ago, under the old maximum.
    app.execute_sql(&format!(
        "UPDATE devices SET created_at = created_at - 7200 WHERE id = '{}'",
        older.device_id
    ))
    .await;

    let lowered = with_an_hours_maximum(&app).await;

    assert_eq!(lowered.introspect(&older.refresh_token).await.body, json!({"active": false}));
    lowered.refresh(&older.refresh_token).await.assert_oauth_error(400, "invalid_grant");
    lowered.get_me(&older.access_token).await.assert_status(401);
    // A device signed in half an hour ago keeps the rest of the new maximum, and no more.
    let recent = app.sign_in().await;
    app.execute_sql(&format!(
        "UPDATE devices SET created_at = created_at - 1800 WHERE id = '{}'",
        recent.device_id
    ))
    .await;
    let lowered = with_an_hours_maximum(&app).await;
    let seen = lowered.introspect(&recent.refresh_token).await;
    let session_end = jwt_claims(&recent.access_token)["iat"].as_i64().unwrap() - 1800 + 3600;
    let exp = seen.body["exp"].as_i64().expect("an exp");
    assert!(
        (exp - session_end).abs() <= 2,
        "the refresh token ends with the shortened session: {}",
        seen.text
    );
    let newer = lowered.sign_in().await;
    lowered.refresh(&newer.refresh_token).await.assert_status(200);
}
both_backends!(lowering_refresh_max_ttl_reaches_devices_signed_in_before);

/// API.md: however a device ends, every running idbridge of that database refuses its access
/// token within 1 second, on SQLite as on PostgreSQL. The command line is another process.
async fn a_revocation_by_the_command_line_reaches_the_server_within_a_second(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;
    app.get_me(&signed.access_token).await.assert_status(200);

    // Three times: a periodic re-read every 2 s would meet the second by luck now and then.
    for signed in [signed, app.sign_in().await, app.sign_in().await] {
        let out = app.run_cli(&["users", "revoke-all", &signed.user_id]).await;

        assert!(out.status.success(), "users revoke-all: {}", String::from_utf8_lossy(&out.stderr));
        within_the_contracts_second("the revoked device's access token is refused", || async {
            app.get_me(&signed.access_token).await.status.as_u16() == 401
        })
        .await;
        assert_eq!(app.introspect(&signed.access_token).await.body, json!({"active": false}));
    }
}
both_backends!(a_revocation_by_the_command_line_reaches_the_server_within_a_second);

/// PostgreSQL, the race made certain: a disable has marked the user and revoked their devices
/// but not committed, when two sign-ins of that user arrive (one on the one-statement path, one
/// with a nonce on the transactional path). Each either waits for the disable and is refused,
/// or finishes first and is seen by it; no device may be live afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_during_an_uncommitted_disable_leave_no_live_device() {
    let app = spawn_app(Backend::Postgres).await;
    let first = app.sign_in().await;
    let user = first.user_id.clone();
    let nonce = app.nonce().await;
    let disable = app
        .hold(&format!(
            "UPDATE users SET disabled_at = 1 WHERE id = '{user}'; \
             UPDATE devices SET revoked_at = 1 WHERE user_id = '{user}' AND revoked_at IS NULL"
        ))
        .await;

    let quick = tokio::spawn({
        let (app, token) = (app.clone(), app.google.id_token_for(&first.google_sub));
        async move { app.exchange(&token, &[]).await }
    });
    let general = tokio::spawn({
        let token = app.google.id_token(json!({"sub": first.google_sub, "nonce": nonce}));
        let (app, nonce) = (app.clone(), nonce.clone());
        async move { app.exchange(&token, &[("nonce", &nonce)]).await }
    });
    eventually("both sign-ins wait for the user's row or are done", || async {
        let done = [quick.is_finished(), general.is_finished()].iter().filter(|d| **d).count() as i64;
        done + app
            .count("pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
            .await
            >= 2
    })
    .await;
    tokio::task::spawn_blocking(move || disable.commit()).await.unwrap();
    let (quick, general) = (quick.await.unwrap(), general.await.unwrap());

    let live = app.count(&format!("devices WHERE user_id = '{user}' AND revoked_at IS NULL")).await;
    assert_eq!(
        live, 0,
        "devices left live: quick {} {}, general {} {}",
        quick.status, quick.text, general.status, general.text
    );
    quick.assert_oauth_error(400, "invalid_request");
    general.assert_oauth_error(400, "invalid_request");
}
