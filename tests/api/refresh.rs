//! Refresh-token rotation, reuse detection and the grace window.

use std::collections::BTreeSet;

use serde_json::json;

use crate::support::*;

const CONCURRENT: usize = 20;

/// Presents `refresh_token` CONCURRENT times at once (one tokio task each); returns the answers.
async fn refresh_concurrently(app: &TestApp, refresh_token: &str) -> Vec<Answer> {
    let handles: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/oauth/token");
            let rt = refresh_token.to_string();
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", rt.as_str()),
                        ("client_id", "app"),
                    ])
                    .send()
                    .await
                    .expect("refresh request");
                Answer::read(r).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for h in handles {
        answers.push(h.await.expect("refresh task"));
    }
    answers
}

fn summary(answers: &[Answer]) -> Vec<String> {
    answers.iter().map(|a| format!("{} {}", a.status.as_u16(), a.error().unwrap_or(""))).collect()
}

async fn refresh_answers_like_sign_in_for_the_same_device(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let a = app.refresh(&signed.refresh_token).await;

    a.assert_status(200);
    let cache = a.header("cache-control").unwrap_or_default();
    assert!(cache.contains("no-store"), "Cache-Control: {cache:?}");
    assert_eq!(a.body["token_type"], json!("Bearer"), "{}", a.text);
    assert_eq!(a.body["expires_in"], json!(600), "{}", a.text);
    assert_eq!(a.str("device_id"), signed.device_id);
    assert_ne!(a.str("refresh_token"), signed.refresh_token);
    let claims = jwt_claims(a.str("access_token"));
    assert_eq!(claims["sid"], json!(signed.device_id));
    assert_eq!(claims["sub"], json!(signed.user_id));
}
all_backends!(refresh_answers_like_sign_in_for_the_same_device);

async fn spent_token_within_grace_gets_the_same_successor(backend: Backend) {
    let app = spawn_app(backend).await; // grace 10s
    let signed = app.sign_in().await;
    let first = app.refresh(&signed.refresh_token).await;
    first.assert_status(200);

    let retry = app.refresh(&signed.refresh_token).await;

    retry.assert_status(200);
    assert_eq!(
        retry.str("refresh_token"),
        first.str("refresh_token"),
        "a retry within the grace must return the same successor"
    );
    assert_eq!(
        app.count(&format!("refresh_tokens WHERE spent_at IS NULL AND device_id = '{}'", signed.device_id))
            .await,
        1,
        "the chain must not fork"
    );
}
all_backends!(spent_token_within_grace_gets_the_same_successor);

async fn spent_token_after_grace_is_invalid_grant(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.refresh_reuse_grace = "0s".into()).await;
    let signed = app.sign_in().await;
    app.refresh(&signed.refresh_token).await.assert_status(200);

    let reuse = app.refresh(&signed.refresh_token).await;

    reuse.assert_oauth_error(400, "invalid_grant");
}
all_backends!(spent_token_after_grace_is_invalid_grant);

async fn reuse_after_grace_revokes_the_newest_refresh_token(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.refresh_reuse_grace = "0s".into()).await;
    let signed = app.sign_in().await;
    let successor = app.refresh(&signed.refresh_token).await;
    successor.assert_status(200);
    app.refresh(&signed.refresh_token).await.assert_oauth_error(400, "invalid_grant");

    let a = app.refresh(successor.str("refresh_token")).await;

    a.assert_oauth_error(400, "invalid_grant");
}
all_backends!(reuse_after_grace_revokes_the_newest_refresh_token);

async fn reuse_after_grace_ends_the_devices_access_tokens(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.refresh_reuse_grace = "0s".into()).await;
    let signed = app.sign_in().await;
    let successor = app.refresh(&signed.refresh_token).await;
    successor.assert_status(200);
    app.refresh(&signed.refresh_token).await.assert_oauth_error(400, "invalid_grant");

    let me_old = app.get_me(&signed.access_token).await;
    let me_new = app.get_me(successor.str("access_token")).await;

    me_old.assert_status(401);
    me_new.assert_status(401);
}
all_backends!(reuse_after_grace_ends_the_devices_access_tokens);

async fn reuse_after_grace_is_audited(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.refresh_reuse_grace = "0s".into()).await;
    let signed = app.sign_in().await;
    app.refresh(&signed.refresh_token).await.assert_status(200);
    let before = app.count("audit_events").await;

    app.refresh(&signed.refresh_token).await.assert_oauth_error(400, "invalid_grant");

    let after = app.count("audit_events").await;
    assert!(after > before, "no audit event for refresh-token reuse ({before} -> {after})");
}
all_backends!(reuse_after_grace_is_audited);

async fn concurrent_refreshes_within_grace_share_one_successor(backend: Backend) {
    let app = spawn_app(backend).await; // grace 10s
    let signed = app.sign_in().await;

    let answers = refresh_concurrently(&app, &signed.refresh_token).await;

    let successors: BTreeSet<&str> =
        answers.iter().filter(|a| a.status == 200).map(|a| a.str("refresh_token")).collect();
    assert!(
        successors.len() == 1,
        "{} distinct successors among the 200 answers; statuses {:?}",
        successors.len(),
        summary(&answers)
    );
    let live = app
        .count(&format!("refresh_tokens WHERE spent_at IS NULL AND device_id = '{}'", signed.device_id))
        .await;
    assert_eq!(live, 1, "live refresh tokens of the device after the race");
}
all_backends!(concurrent_refreshes_within_grace_share_one_successor);

async fn concurrent_refreshes_within_grace_all_succeed(backend: Backend) {
    let app = spawn_app(backend).await; // grace 10s
    let signed = app.sign_in().await;

    let answers = refresh_concurrently(&app, &signed.refresh_token).await;

    assert!(
        answers.iter().all(|a| a.status == 200),
        "every presentation within the grace is an idempotent retry; statuses {:?}; first failure: {}",
        summary(&answers),
        answers.iter().find(|a| a.status != 200).map(|a| a.text.as_str()).unwrap_or("")
    );
}
all_backends!(concurrent_refreshes_within_grace_all_succeed);

async fn concurrent_refreshes_without_grace_let_exactly_one_win(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.refresh_reuse_grace = "0s".into()).await;
    let signed = app.sign_in().await;

    let answers = refresh_concurrently(&app, &signed.refresh_token).await;

    let ok = answers.iter().filter(|a| a.status == 200).count();
    let refused = answers.iter().filter(|a| a.status == 400 && a.error() == Some("invalid_grant")).count();
    assert_eq!((ok, refused), (1, CONCURRENT - 1), "statuses {:?}", summary(&answers));
    let live = app
        .count(&format!("refresh_tokens WHERE spent_at IS NULL AND device_id = '{}'", signed.device_id))
        .await;
    assert!(live <= 1, "the chain forked: {live} live refresh tokens");
}
all_backends!(concurrent_refreshes_without_grace_let_exactly_one_win);

async fn refresh_token_of_another_client_is_invalid_grant(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let a = app.refresh_as(Auth::Basic("svc", SVC_SECRET), &signed.refresh_token).await;

    a.assert_oauth_error(400, "invalid_grant");
}
all_backends!(refresh_token_of_another_client_is_invalid_grant);

async fn refresh_token_idle_past_the_idle_ttl_is_invalid_grant(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.refresh_idle_ttl = "0s".into()).await;
    let signed = app.sign_in().await;

    let a = app.refresh(&signed.refresh_token).await;

    a.assert_oauth_error(400, "invalid_grant");
}
all_backends!(refresh_token_idle_past_the_idle_ttl_is_invalid_grant);

async fn refresh_token_past_the_max_ttl_is_invalid_grant(backend: Backend) {
    // refresh_max_ttl may not be shorter than refresh_idle_ttl, so a config cannot make the
    // session end first; instead the device's session end (refresh_max_ttl after sign-in) is
    // moved into the past in the database, as if 90 days had gone by.
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;
    app.execute_sql(&format!(
        "UPDATE devices SET session_expires_at = {} WHERE id = '{}'",
        fake_google::now() - 1,
        signed.device_id
    ))
    .await;

    let a = app.refresh(&signed.refresh_token).await;

    a.assert_oauth_error(400, "invalid_grant");
}
all_backends!(refresh_token_past_the_max_ttl_is_invalid_grant);

async fn garbage_refresh_token_is_invalid_grant(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app.refresh("not-a-refresh-token-at-all").await;

    a.assert_oauth_error(400, "invalid_grant");
}
all_backends!(garbage_refresh_token_is_invalid_grant);

async fn refresh_with_a_narrower_scope_gets_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let a = app
        .post_form(
            "/oauth/token",
            Auth::Public("app"),
            &[("grant_type", "refresh_token"), ("refresh_token", &signed.refresh_token), ("scope", "api")],
        )
        .await;

    a.assert_status(200);
    assert_eq!(a.str("scope"), "api");
    assert_eq!(jwt_claims(a.str("access_token"))["scope"], json!("api"));
}
all_backends!(refresh_with_a_narrower_scope_gets_it);

async fn refresh_cannot_widen_the_granted_scope(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = app.exchange(&app.google.id_token(json!({})), &[("scope", "api")]).await;
    let signed = Tokens::from_answer(&a, "");

    let wider = app
        .post_form(
            "/oauth/token",
            Auth::Public("app"),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &signed.refresh_token),
                ("scope", "openid api"),
            ],
        )
        .await;

    wider.assert_oauth_error(400, "invalid_scope");
}
all_backends!(refresh_cannot_widen_the_granted_scope);

async fn refresh_with_a_scope_outside_the_device_spends_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    let refused = app
        .post_form(
            "/oauth/token",
            Auth::Public("app"),
            &[("grant_type", "refresh_token"), ("refresh_token", &signed.refresh_token), ("scope", "admin")],
        )
        .await;

    refused.assert_oauth_error(400, "invalid_scope");
    assert_eq!(
        app.count("refresh_tokens WHERE spent_at IS NOT NULL").await,
        0,
        "the refused refresh spent the token"
    );
    app.refresh(&signed.refresh_token).await.assert_status(200);
}
all_backends!(refresh_with_a_scope_outside_the_device_spends_nothing);

/// Reuse detection ends the device but keeps the device's own last-seen, address and user
/// agent; the replaying request's user agent is on the reuse's audit event.
async fn a_reused_refresh_token_does_not_overwrite_the_devices_own_data(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.refresh_reuse_grace = "0s".into()).await;
    let signed = app.sign_in().await;
    let refresh_with = |token: String, user_agent: &'static str| {
        let request = app.client.post(app.url("/oauth/token")).header("user-agent", user_agent).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token.as_str()),
            ("client_id", "app"),
        ]);
        async move { Answer::read(request.send().await.expect("refresh")).await }
    };
    refresh_with(signed.refresh_token.clone(), "honest-app/1.0").await.assert_status(200);
    app.execute_sql(&format!("UPDATE devices SET last_seen_at = 1234 WHERE id = '{}'", signed.device_id))
        .await;

    let replay = refresh_with(signed.refresh_token.clone(), "attacker/6.6").await;

    replay.assert_oauth_error(400, "invalid_grant");
    let device = format!("devices WHERE id = '{}'", signed.device_id);
    assert_eq!(app.count(&format!("{device} AND revoked_at IS NOT NULL")).await, 1, "the device is revoked");
    assert_eq!(
        app.count(&format!("{device} AND user_agent = 'honest-app/1.0' AND last_seen_at = 1234")).await,
        1,
        "the device keeps its own user agent and last-seen"
    );
    let reuse = "audit_events WHERE action = 'refresh_token.reuse' AND user_agent = 'attacker/6.6'";
    assert_eq!(app.count(reuse).await, 1, "the replay's user agent is on the audit event");
}
all_backends!(a_reused_refresh_token_does_not_overwrite_the_devices_own_data);
