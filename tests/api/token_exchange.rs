//! Sign-in by RFC 8693 token exchange of a Google ID token.

use serde_json::json;

use crate::support::fake_google::random_sub;
use crate::support::*;

async fn sign_in_then_refresh_then_revoke(backend: Backend) {
    let app = spawn_app(backend).await;
    let sub = random_sub();

    let signed = app.sign_in_as(&sub).await;
    let me = app.get_me(&signed.access_token).await;
    me.assert_status(200);
    assert_eq!(me.body["id"], json!(signed.user_id), "{}", me.text);
    assert_eq!(me.body["identities"][0]["provider"], json!("google"), "{}", me.text);
    assert_eq!(me.body["identities"][0]["subject"], json!(sub), "{}", me.text);

    let refreshed = app.refresh(&signed.refresh_token).await;
    refreshed.assert_status(200);
    let newest = refreshed.str("refresh_token").to_string();
    assert_ne!(newest, signed.refresh_token, "refresh must rotate the refresh token");

    app.revoke(&newest, Auth::Public("app")).await.assert_status(200);

    app.refresh(&newest).await.assert_oauth_error(400, "invalid_grant");
    let me = app.get_me(&signed.access_token).await;
    me.assert_status(401);
    let www = me.header("www-authenticate").unwrap_or_default();
    assert!(www.contains("invalid_token"), "WWW-Authenticate after revocation: {www:?}");
}
all_backends!(sign_in_then_refresh_then_revoke);

async fn sign_in_answer_has_the_contract_shape(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app.exchange(&app.google.id_token(json!({})), &[]).await;

    a.assert_status(200);
    let cache = a.header("cache-control").unwrap_or_default();
    assert!(cache.contains("no-store"), "Cache-Control: {cache:?}");
    assert_eq!(a.body["token_type"], json!("Bearer"), "{}", a.text);
    assert_eq!(a.body["issued_token_type"], json!(ACCESS_TOKEN_TYPE), "{}", a.text);
    assert_eq!(a.body["expires_in"], json!(600), "{}", a.text);
    assert_eq!(
        scope_set(a.str("scope")),
        scope_set("openid profile api"),
        "default scope is the client's scopes: {}",
        a.text
    );
    assert!(uuid::Uuid::parse_str(a.str("device_id")).is_ok(), "{}", a.text);
    let rt = a.str("refresh_token");
    assert!(
        rt.len() >= 43 && rt.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c)),
        "refresh token must be URL-safe with >= 256 bits: {rt:?}"
    );
    assert!(!a.str("access_token").is_empty());
}
all_backends!(sign_in_answer_has_the_contract_shape);

async fn replayed_id_token_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({}));

    let first = app.exchange(&token, &[]).await;
    let second = app.exchange(&token, &[]).await;

    first.assert_status(200);
    second.assert_oauth_error(400, "invalid_request");
    assert_eq!(app.count("users").await, 1);
    assert_eq!(app.count("devices").await, 1);
}
all_backends!(replayed_id_token_is_refused);

async fn same_subject_twice_is_one_user_with_two_devices(backend: Backend) {
    let app = spawn_app(backend).await;
    let sub = random_sub();

    let first = app.sign_in_as(&sub).await;
    let second = app.sign_in_as(&sub).await;

    assert_eq!(first.user_id, second.user_id, "same (provider, sub) must be the same user");
    assert_ne!(first.device_id, second.device_id, "each sign-in is a new device");
    assert_eq!(app.count("users").await, 1);
    assert_eq!(app.count("devices").await, 2);
}
all_backends!(same_subject_twice_is_one_user_with_two_devices);

async fn same_email_with_another_subject_is_another_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let email = "shared@example.com";
    let (sub_a, sub_b) = (random_sub(), random_sub());

    let a = app.exchange(&app.google.id_token(json!({"sub": sub_a, "email": email})), &[]).await;
    let b = app.exchange(&app.google.id_token(json!({"sub": sub_b, "email": email})), &[]).await;

    let a = Tokens::from_answer(&a, &sub_a);
    let b = Tokens::from_answer(&b, &sub_b);
    assert_ne!(a.user_id, b.user_id, "users must never be merged by email");
    assert_eq!(app.count("users").await, 2);
}
all_backends!(same_email_with_another_subject_is_another_user);

async fn second_allowlisted_audience_is_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({"aud": "google-client-2", "azp": "google-client-2"}));

    let a = app.exchange(&token, &[]).await;

    a.assert_status(200);
}
all_backends!(second_allowlisted_audience_is_accepted);

async fn requested_scope_subset_is_granted(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app.exchange(&app.google.id_token(json!({})), &[("scope", "api")]).await;

    a.assert_status(200);
    assert_eq!(a.str("scope"), "api");
    assert_eq!(jwt_claims(a.str("access_token"))["scope"], json!("api"));
}
all_backends!(requested_scope_subset_is_granted);

async fn scope_outside_the_clients_is_invalid_scope(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app.exchange(&app.google.id_token(json!({})), &[("scope", "api admin")]).await;

    a.assert_oauth_error(400, "invalid_scope");
    app.assert_nothing_written().await;
}
all_backends!(scope_outside_the_clients_is_invalid_scope);

async fn unknown_grant_type_is_unsupported_grant_type(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app
        .post_form(
            "/oauth/token",
            Auth::Public("app"),
            &[("grant_type", "password"), ("username", "a"), ("password", "b")],
        )
        .await;

    a.assert_oauth_error(400, "unsupported_grant_type");
}
all_backends!(unknown_grant_type_is_unsupported_grant_type);

async fn unknown_client_is_invalid_client(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app.exchange_as(Auth::Public("no-such-app"), &app.google.id_token(json!({})), &[]).await;

    a.assert_oauth_error(401, "invalid_client");
    app.assert_nothing_written().await;
}
all_backends!(unknown_client_is_invalid_client);

async fn device_name_and_platform_are_kept(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app
        .exchange(
            &app.google.id_token(json!({})),
            &[("device_name", "Ada's Pixel"), ("device_platform", "android")],
        )
        .await;

    let t = Tokens::from_answer(&a, "");
    let list = app.get_bearer("/v1/me/devices", &t.access_token).await;
    list.assert_status(200);
    let d = &list.body["devices"][0];
    assert_eq!(d["id"], json!(t.device_id), "{}", list.text);
    assert_eq!(d["name"], json!("Ada's Pixel"), "{}", list.text);
    assert_eq!(d["platform"], json!("android"), "{}", list.text);
    assert_eq!(d["client_id"], json!("app"), "{}", list.text);
}
all_backends!(device_name_and_platform_are_kept);

/// Runs `n` token exchanges at once (one tokio task each).
async fn exchange_concurrently(app: &TestApp, tokens: Vec<String>) -> Vec<Answer> {
    let handles: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let client = app.client.clone();
            let url = app.url("/oauth/token");
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .form(&[
                        ("grant_type", TOKEN_EXCHANGE),
                        ("subject_token", token.as_str()),
                        ("subject_token_type", ID_TOKEN_TYPE),
                        ("client_id", "app"),
                    ])
                    .send()
                    .await
                    .expect("exchange request");
                Answer::read(r).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("exchange task"));
    }
    out
}

fn statuses(answers: &[Answer]) -> Vec<String> {
    answers.iter().map(|a| format!("{} {}", a.status.as_u16(), a.error().unwrap_or(""))).collect()
}

async fn concurrent_replays_of_one_id_token_let_exactly_one_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({}));

    let answers = exchange_concurrently(&app, vec![token; 10]).await;

    let ok = answers.iter().filter(|a| a.status == 200).count();
    let refused = answers.iter().filter(|a| a.status == 400 && a.error() == Some("invalid_request")).count();
    assert_eq!((ok, refused), (1, 9), "statuses {:?}", statuses(&answers));
    assert_eq!(app.count("devices").await, 1);
}
all_backends!(concurrent_replays_of_one_id_token_let_exactly_one_in);

async fn concurrent_first_sign_ins_of_one_subject_make_one_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let sub = random_sub();
    let tokens: Vec<String> = (0..10).map(|_| app.google.id_token_for(&sub)).collect();

    let answers = exchange_concurrently(&app, tokens).await;

    assert!(
        answers.iter().all(|a| a.status == 200),
        "every sign-in of a valid token must succeed; statuses {:?}; first failure: {}",
        statuses(&answers),
        answers.iter().find(|a| a.status != 200).map(|a| a.text.as_str()).unwrap_or("")
    );
    assert_eq!(app.count("users").await, 1, "one (provider, sub) must be one user");
    assert_eq!(app.count("devices").await, 10);
}
all_backends!(concurrent_first_sign_ins_of_one_subject_make_one_user);

async fn missing_subject_token_is_invalid_request(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app
        .post_form(
            "/oauth/token",
            Auth::Public("app"),
            &[("grant_type", TOKEN_EXCHANGE), ("subject_token_type", ID_TOKEN_TYPE)],
        )
        .await;

    a.assert_oauth_error(400, "invalid_request");
    app.assert_nothing_written().await;
}
all_backends!(missing_subject_token_is_invalid_request);

async fn id_token_presented_as_another_token_type_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({}));

    let a = app.exchange(&token, &[("subject_token_type", "urn:ietf:params:oauth:token-type:jwt")]).await;

    a.assert_oauth_error(400, "invalid_request");
    app.assert_nothing_written().await;
}
all_backends!(id_token_presented_as_another_token_type_is_refused);
