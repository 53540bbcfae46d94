//! Input and output: bad text is a 4xx on both backends, huge `exp` is refused, and the HTTP
//! details (no-store, case-insensitive schemes, bare challenges, 405 with Allow).

use serde_json::json;

use crate::support::*;

async fn nul_bytes_are_refused_with_4xx_never_500(backend: Backend) {
    let app = spawn_dev_app(backend).await;
    let signed = app.sign_in().await;

    let token = app.google.id_token_for("5");
    app.exchange(&token, &[("device_name", "a\0b")]).await.assert_oauth_error(400, "invalid_request");
    app.exchange(&token, &[("nonce", "n\0")]).await.assert_oauth_error(400, "invalid_request");
    app.exchange(&token, &[("scope", "api\0")]).await.assert_oauth_error(400, "invalid_request");
    app.refresh("abc\0def").await.assert_oauth_error(400, "invalid_request");
    app.post_form("/oauth/nonce", Auth::Public("app\0"), &[]).await.assert_oauth_error(401, "invalid_client");
    app.delete_bearer("/v1/me/devices/%00", &signed.access_token).await.assert_status(404);
    app.delete_bearer("/v1/me/devices/x%00y", &signed.access_token).await.assert_status(404);
    app.post_form("/dev/id-token", Auth::Anonymous, &[("name", "al\0ice")])
        .await
        .assert_oauth_error(400, "invalid_request");
    app.revoke("abc\0", Auth::Public("app")).await.assert_status(200);
    let nul_subject = app.google.id_token(json!({"sub": "12\u{0}34"}));
    app.exchange(&nul_subject, &[]).await.assert_oauth_error(400, "invalid_request");
    let nul_name = app.google.id_token(json!({"name": "Ev\u{0}e"}));
    app.exchange(&nul_name, &[]).await.assert_oauth_error(400, "invalid_request");
    assert_eq!(app.count("users").await, 1, "only the first sign-in wrote a user");
}
both_backends!(nul_bytes_are_refused_with_4xx_never_500);

async fn an_id_token_with_a_huge_exp_is_refused_every_time(backend: Backend) {
    let app = spawn_app(backend).await;

    let huge = app.google.id_token(json!({"exp": i64::MAX - 10}));
    let far = app.google.id_token(json!({"exp": fake_google::now() + 2 * 86_400}));

    app.exchange(&huge, &[]).await.assert_oauth_error(400, "invalid_request");
    app.exchange(&huge, &[]).await.assert_oauth_error(400, "invalid_request");
    app.exchange(&far, &[]).await.assert_oauth_error(400, "invalid_request");
    app.assert_nothing_written().await;
}
both_backends!(an_id_token_with_a_huge_exp_is_refused_every_time);

async fn every_v1_answer_carries_no_store(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    for a in [
        app.get_me(&signed.access_token).await,
        app.get_bearer("/v1/me/devices", &signed.access_token).await,
        app.get_me("not-a-token").await,
        app.get("/v1/me").await,
    ] {
        assert_eq!(a.header("cache-control").as_deref(), Some("no-store"), "{} {}", a.status, a.text);
    }
}
both_backends!(every_v1_answer_carries_no_store);

async fn bearer_and_basic_are_case_insensitive(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;
    let basic =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("svc:{SVC_SECRET}"));

    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let r = app
            .client
            .get(app.url("/v1/me"))
            .header("Authorization", format!("{scheme} {}", signed.access_token));
        Answer::read(r.send().await.unwrap()).await.assert_status(200);
    }
    for scheme in ["basic", "BASIC"] {
        let r = app
            .client
            .post(app.url("/oauth/introspect"))
            .header("Authorization", format!("{scheme} {basic}"))
            .form(&[("token", signed.access_token.as_str())]);
        let a = Answer::read(r.send().await.unwrap()).await;
        assert_eq!(a.body["active"], json!(true), "{scheme}: {}", a.text);
    }
}
both_backends!(bearer_and_basic_are_case_insensitive);

async fn a_request_without_a_token_gets_a_bare_bearer_challenge(backend: Backend) {
    let app = spawn_app(backend).await;

    let none = app.get("/v1/me").await;
    let bad = app.get_me("garbage").await;

    none.assert_status(401);
    let challenge = none.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(!challenge.contains("error="), "no credentials: no error code (RFC 6750 §3.1): {challenge}");
    assert!(bad.header("www-authenticate").unwrap_or_default().contains("error=\"invalid_token\""));
}
both_backends!(a_request_without_a_token_gets_a_bare_bearer_challenge);

async fn a_known_path_with_a_wrong_method_is_405_with_allow(backend: Backend) {
    let app = spawn_app(backend).await;

    let token = app.get("/oauth/token").await;
    let me = app.client.delete(app.url("/v1/me/logout-all")).send().await.unwrap();
    let me = Answer::read(me).await;
    let jwks = app.client.post(app.url("/.well-known/jwks.json")).send().await.unwrap();
    let jwks = Answer::read(jwks).await;

    token.assert_oauth_error(405, "invalid_request");
    assert_eq!(token.header("allow").as_deref(), Some("POST"));
    me.assert_status(405);
    assert_eq!(me.header("allow").as_deref(), Some("POST"));
    jwks.assert_status(405);
    assert_eq!(jwks.header("allow").as_deref(), Some("GET"));
    app.get("/no/such/path").await.assert_status(404);
}
both_backends!(a_known_path_with_a_wrong_method_is_405_with_allow);
