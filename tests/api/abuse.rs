//! Denial of service and abuse: wrong client secrets, a failing key endpoint, nonces, the
//! device cap, paging, retention and rate limits.

use std::collections::BTreeSet;

use futures_util::future::join_all;
use serde_json::json;

use crate::support::*;

/// `n` introspection calls at once as `client`/`secret`, each its own task.
async fn introspect_concurrently(app: &TestApp, n: usize, client: &str, secret: &str) -> Vec<Answer> {
    let tasks = (0..n).map(|_| {
        let http = app.client.clone();
        let url = app.url("/oauth/introspect");
        let (client, secret) = (client.to_string(), secret.to_string());
        tokio::spawn(async move {
            let r = http.post(url).basic_auth(client, Some(secret)).form(&[("token", "x")]).send().await;
            Answer::read(r.expect("introspection request")).await
        })
    });
    join_all(tasks).await.into_iter().map(|r| r.expect("task")).collect()
}

fn statuses(answers: &[Answer]) -> BTreeSet<u16> {
    answers.iter().map(|a| a.status.as_u16()).collect()
}

async fn wrong_secrets_are_refused_while_a_legitimate_call_goes_through(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.per_ip_per_second = 0).await;
    let signed = app.sign_in().await;

    let flood = introspect_concurrently(&app, 300, "svc", "wrong-secret");
    let legitimate = app.introspect(&signed.access_token);
    let (flood, legitimate) = tokio::join!(flood, legitimate);

    legitimate.assert_status(200);
    assert_eq!(legitimate.body["active"], json!(true), "{}", legitimate.text);
    assert_eq!(statuses(&flood), BTreeSet::from([401]), "every wrong secret is 401 invalid_client");
}
both_backends!(wrong_secrets_are_refused_while_a_legitimate_call_goes_through);

async fn wrong_secrets_from_one_address_are_throttled_without_locking_out_the_client(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.per_ip_per_second = 5).await;
    let signed = app.sign_in().await;

    let flood = introspect_concurrently(&app, 50, "svc", "wrong-secret").await;
    let legitimate = app.introspect(&signed.access_token).await;

    assert_eq!(statuses(&flood), BTreeSet::from([401, 429]), "past the burst, wrong secrets get 429");
    legitimate.assert_status(200);
    assert_eq!(legitimate.body["active"], json!(true), "{}", legitimate.text);
}
both_backends!(wrong_secrets_from_one_address_are_throttled_without_locking_out_the_client);

async fn argon2_secrets_of_older_configs_still_authenticate(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.legacy_client = true).await;
    let signed = app.sign_in().await;

    let a = app.introspect_as(Auth::Basic(LEGACY_CLIENT, LEGACY_SECRET), &signed.access_token).await;

    a.assert_status(200);
    assert_eq!(a.body["active"], json!(true), "{}", a.text);
    app.introspect_as(Auth::Basic(LEGACY_CLIENT, "nope"), &signed.access_token)
        .await
        .assert_oauth_error(401, "invalid_client");
}
both_backends!(argon2_secrets_of_older_configs_still_authenticate);

async fn a_flood_of_wrong_argon2_secrets_is_queued_boundedly_and_answered_503_past_it(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.legacy_client = true;
        c.per_ip_per_second = 0;
    })
    .await;

    let flood = introspect_concurrently(&app, 60, LEGACY_CLIENT, "wrong-secret").await;

    let busy: Vec<&Answer> = flood.iter().filter(|a| a.status.as_u16() == 503).collect();
    assert!(!busy.is_empty(), "no request was turned away; the queue is unbounded: {:?}", statuses(&flood));
    busy[0].assert_oauth_error(503, "temporarily_unavailable");
    assert!(busy[0].header("retry-after").is_some(), "503 without Retry-After");
    assert!(statuses(&flood).is_subset(&BTreeSet::from([401, 503])), "{:?}", statuses(&flood));
}
both_backends!(a_flood_of_wrong_argon2_secrets_is_queued_boundedly_and_answered_503_past_it);

/// `n` sign-ins at once, each with its own fresh ID token.
async fn sign_in_concurrently(app: &TestApp, n: usize) -> Vec<Answer> {
    let tokens: Vec<String> = (0..n).map(|_| app.google.id_token_for(&fake_google::random_sub())).collect();
    join_all(tokens.iter().map(|t| app.exchange(t, &[]))).await
}

async fn concurrent_sign_ins_share_one_failed_key_fetch_and_then_back_off(backend: Backend) {
    let app = spawn_app(backend).await;
    app.google.set_jwks_failing(true);

    let answers = sign_in_concurrently(&app, 6).await;

    for a in &answers {
        a.assert_oauth_error(503, "temporarily_unavailable");
    }
    assert_eq!(app.google.jwks_fetches(), 1, "waiting sign-ins must share one fetch, not take turns");
    app.exchange(&app.google.id_token_for("1"), &[]).await.assert_oauth_error(503, "temporarily_unavailable");
    assert_eq!(app.google.jwks_fetches(), 1, "right after a failure the cache backs off");
    app.assert_nothing_written().await;
}
both_backends!(concurrent_sign_ins_share_one_failed_key_fetch_and_then_back_off);

async fn issuing_nonces_writes_nothing_and_a_nonce_is_still_single_use(backend: Backend) {
    let app = spawn_app(backend).await;
    let nonces: Vec<String> = join_all((0..40).map(|_| app.nonce())).await;

    assert_eq!(app.count("nonces").await, 0, "issuing a nonce must not write a row");
    let token = app.google.id_token(json!({"sub": "123", "nonce": nonces[0]}));
    app.exchange(&token, &[("nonce", &nonces[0])]).await.assert_status(200);
    let again = app.google.id_token(json!({"sub": "123", "nonce": nonces[0]}));
    app.exchange(&again, &[("nonce", &nonces[0])]).await.assert_oauth_error(400, "invalid_request");
}
both_backends!(issuing_nonces_writes_nothing_and_a_nonce_is_still_single_use);

async fn a_nonce_issued_to_another_client_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let other = app.post_form("/oauth/nonce", Auth::Basic("svc", SVC_SECRET), &[]).await;
    let nonce = other.str("nonce").to_string();

    let token = app.google.id_token(json!({"nonce": nonce}));
    let a = app.exchange(&token, &[("nonce", &nonce)]).await;

    a.assert_oauth_error(400, "invalid_request");
    app.assert_nothing_written().await;
}
both_backends!(a_nonce_issued_to_another_client_is_refused);

async fn a_sign_in_past_the_device_cap_ends_the_longest_idle_device(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.max_devices_per_user = 2).await;
    let first = app.sign_in_as("42").await;
    let idle = app.sign_in_as("42").await;
    let an_hour_ago = fake_google::now() - 3600;
    app.execute_sql(&format!(
        "UPDATE devices SET last_seen_at = {an_hour_ago} WHERE id = '{}'",
        idle.device_id
    ))
    .await;

    let third = app.sign_in_as("42").await;

    let live =
        app.count(&format!("devices WHERE user_id = '{}' AND revoked_at IS NULL", third.user_id)).await;
    assert_eq!(live, 2, "the cap keeps two live devices");
    app.refresh(&idle.refresh_token).await.assert_oauth_error(400, "invalid_grant");
    app.get_me(&idle.access_token).await.assert_status(401);
    app.refresh(&first.refresh_token).await.assert_status(200);
    app.get_me(&third.access_token).await.assert_status(200);
    let evicted = app
        .count(&format!("audit_events WHERE action = 'device.evicted' AND device_id = '{}'", idle.device_id))
        .await;
    assert_eq!(evicted, 1, "the eviction is audited");
}
both_backends!(a_sign_in_past_the_device_cap_ends_the_longest_idle_device);

async fn the_device_list_pages_with_limit_and_cursor(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut devices = BTreeSet::new();
    let mut last = None;
    for _ in 0..5 {
        let t = app.sign_in_as("77").await;
        devices.insert(t.device_id.clone());
        last = Some(t);
    }
    let token = last.unwrap().access_token;

    let mut seen = Vec::new();
    let mut path = "/v1/me/devices?limit=2".to_string();
    loop {
        let page = app.get_bearer(&path, &token).await;
        page.assert_status(200);
        let items = page.body["devices"].as_array().unwrap().clone();
        assert!(items.len() <= 2, "a page holds at most `limit` devices: {}", page.text);
        seen.extend(items.iter().map(|d| d["id"].as_str().unwrap().to_string()));
        match page.body.get("next_cursor").and_then(|c| c.as_str()) {
            Some(cursor) => path = format!("/v1/me/devices?limit=2&cursor={cursor}"),
            None => break,
        }
    }

    assert_eq!(seen.len(), 5, "every device once: {seen:?}");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), devices);
    app.get_bearer("/v1/me/devices?limit=0", &token).await.assert_status(400);
    app.get_bearer("/v1/me/devices?limit=101", &token).await.assert_status(400);
    app.get_bearer("/v1/me/devices?cursor=bm90LWEtY3Vyc29y", &token).await.assert_status(400);
}
both_backends!(the_device_list_pages_with_limit_and_cursor);

async fn the_sweep_deletes_audit_events_and_ended_devices_past_their_retention(backend: Backend) {
    let app = spawn_app(backend).await;
    let ended = app.sign_in().await;
    let kept = app.sign_in().await;
    app.revoke(&ended.refresh_token, Auth::Public("app")).await.assert_status(200);
    // Sealed into the audit chain in the order they happened: retention removes the oldest
    // run of sealed events, here the first sign-in's.
    assert!(app.run_cli(&["audit", "verify"]).await.status.success());
    let long_ago = fake_google::now() - 400 * 86_400;
    app.execute_sql(&format!("UPDATE devices SET revoked_at = {long_ago} WHERE id = '{}'", ended.device_id))
        .await;
    app.execute_sql(&format!(
        "UPDATE audit_events SET at = {long_ago} WHERE device_id = '{}'",
        ended.device_id
    ))
    .await;
    let audit_before = app.count("audit_events").await;

    let db = idbridge::db::Db::new(&app.db.url, 1).expect("open the database");
    let retention = default_retention();
    let swept = idbridge::housekeeping::sweep(&db, &Default::default(), retention, fake_google::now())
        .await
        .expect("sweep");

    assert_eq!(swept.devices, 1, "{swept:?}");
    assert_eq!(app.count(&format!("devices WHERE id = '{}'", ended.device_id)).await, 0);
    assert_eq!(app.count(&format!("devices WHERE id = '{}'", kept.device_id)).await, 1);
    assert!(
        swept.audit_events >= 1
            && app.count("audit_events").await == audit_before - swept.audit_events as i64
    );
    assert_eq!(app.count("audit_chain WHERE checkpoint_seq = 1").await, 1, "{swept:?}");
    app.get_me(&kept.access_token).await.assert_status(200);
}
both_backends!(the_sweep_deletes_audit_events_and_ended_devices_past_their_retention);

async fn too_many_requests_from_one_address_get_429_with_retry_after(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.per_ip_per_second = 2).await;

    let answers = join_all((0..12).map(|_| app.post_form("/oauth/nonce", Auth::Public("app"), &[]))).await;

    let limited: Vec<&Answer> = answers.iter().filter(|a| a.status.as_u16() == 429).collect();
    assert!(!limited.is_empty(), "no 429 after 12 requests at 2/s: {:?}", statuses(&answers));
    limited[0].assert_oauth_error(429, "temporarily_unavailable");
    let retry_after: u64 = limited[0].header("retry-after").expect("Retry-After").parse().expect("seconds");
    assert!(retry_after >= 1, "Retry-After {retry_after}");
}
both_backends!(too_many_requests_from_one_address_get_429_with_retry_after);

async fn too_many_requests_of_one_client_get_429(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.per_ip_per_second = 0;
        c.per_client_per_second = 2;
    })
    .await;

    let answers = join_all((0..12).map(|_| app.introspect("x"))).await;

    assert!(statuses(&answers).contains(&429), "no 429 after 12 calls at 2/s: {:?}", statuses(&answers));
    let other = app.post_form("/oauth/nonce", Auth::Public("app"), &[]).await;
    other.assert_status(200);
}
both_backends!(too_many_requests_of_one_client_get_429);
