//! Facebook sign-in: classic access tokens through `debug_token` and `me`, and Limited Login
//! ID tokens with idbridge's nonces.

use serde_json::json;

use crate::support::fake_facebook::{FbToken, APP_ID, OTHER_APP_ID};
use crate::support::*;

async fn spawn_fb_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |c| c.facebook = true).await
}

async fn exchange_fb(app: &TestApp, access_token: &str) -> Answer {
    app.exchange(access_token, &[("subject_token_type", ACCESS_TOKEN_TYPE), ("provider", "facebook")]).await
}

fn token_of(app: &TestApp, change: impl FnOnce(&mut FbToken)) -> String {
    let mut t = FbToken {
        app_id: APP_ID.into(),
        kind: "USER".into(),
        is_valid: true,
        expires_at: fake_google::now() + 3600,
        user_id: "10001".into(),
        name: "Fiona".into(),
        email: Some("fiona@fb.example".into()),
    };
    change(&mut t);
    app.facebook.token_with(t)
}

async fn a_facebook_access_token_signs_in_and_may_come_again(backend: Backend) {
    let app = spawn_fb_app(backend).await;
    let token = app.facebook.user_token("20002");

    let first = exchange_fb(&app, &token).await;
    let again = exchange_fb(&app, &token).await;

    first.assert_status(200);
    again.assert_status(200);
    let claims = jwt_claims(first.str("access_token"));
    assert_eq!(claims["idp"], json!("facebook"));
    assert_eq!(
        jwt_claims(again.str("access_token"))["sub"],
        claims["sub"],
        "the same Facebook user is the same user"
    );
    let me = app.get_me(first.str("access_token")).await;
    assert_eq!(me.body["identities"][0]["provider"], json!("facebook"));
    assert_eq!(me.body["identities"][0]["subject"], json!("20002"));
    assert_eq!(me.body["email"], json!("20002@fb.example"), "{}", me.text);
}
both_backends!(a_facebook_access_token_signs_in_and_may_come_again);

async fn a_token_issued_to_another_app_is_refused(backend: Backend) {
    let app = spawn_fb_app(backend).await;
    let substituted = token_of(&app, |t| t.app_id = OTHER_APP_ID.into());

    let a = exchange_fb(&app, &substituted).await;

    a.assert_oauth_error(400, "invalid_request");
    assert!(a.text.contains("another app"), "{}", a.text);
    app.assert_nothing_written().await;
}
both_backends!(a_token_issued_to_another_app_is_refused);

async fn invalid_expired_and_non_user_tokens_are_refused(backend: Backend) {
    let app = spawn_fb_app(backend).await;
    let invalid = token_of(&app, |t| t.is_valid = false);
    let expired = token_of(&app, |t| t.expires_at = fake_google::now() - 10);
    let page = token_of(&app, |t| t.kind = "PAGE".into());

    for token in [invalid, expired, page, "EAAunknown".to_string()] {
        exchange_fb(&app, &token).await.assert_oauth_error(400, "invalid_request");
    }
    app.assert_nothing_written().await;
}
both_backends!(invalid_expired_and_non_user_tokens_are_refused);

async fn a_wrong_app_secret_means_no_valid_appsecret_proof_and_no_sign_in(backend: Backend) {
    let app = spawn_fb_app(backend).await;
    let token = app.facebook.user_token("30003");
    let wrong = app.restart_with(|_| {}).await;
    // The same fakes, but idbridge configured with another app secret: debug_token's app
    // token and me's appsecret_proof are both wrong.
    let toml = wrong.config_text().replace(fake_facebook::APP_SECRET, "not-the-app-secret");
    let misconfigured = wrong.start_with_toml(&toml).await;

    let a = exchange_fb(&misconfigured, &token).await;

    a.assert_oauth_error(400, "invalid_request");
    app.assert_nothing_written().await;
}
both_backends!(a_wrong_app_secret_means_no_valid_appsecret_proof_and_no_sign_in);

async fn an_access_token_without_provider_facebook_is_refused(backend: Backend) {
    let app = spawn_fb_app(backend).await;
    let token = app.facebook.user_token("40004");

    let a = app.exchange(&token, &[("subject_token_type", ACCESS_TOKEN_TYPE)]).await;

    a.assert_oauth_error(400, "invalid_request");
}
both_backends!(an_access_token_without_provider_facebook_is_refused);

async fn a_graph_outage_is_503_and_writes_nothing(backend: Backend) {
    let app = spawn_fb_app(backend).await;
    let token = app.facebook.user_token("50005");
    app.facebook.set_failing(true);

    let a = exchange_fb(&app, &token).await;

    a.assert_oauth_error(503, "temporarily_unavailable");
    assert!(a.header("retry-after").is_some());
    app.assert_nothing_written().await;
}
both_backends!(a_graph_outage_is_503_and_writes_nothing);

async fn an_unreachable_graph_is_503(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.facebook = true;
        c.graph_url = Some("http://127.0.0.1:1/v21.0".into());
    })
    .await;
    let token = app.facebook.user_token("60006");

    exchange_fb(&app, &token).await.assert_oauth_error(503, "temporarily_unavailable");
    app.assert_nothing_written().await;
}
both_backends!(an_unreachable_graph_is_503);

async fn facebook_grants_without_a_facebook_section_name_the_provider(backend: Backend) {
    let app = spawn_app(backend).await; // no [providers.facebook]

    let a = exchange_fb(&app, "EAAanything").await;

    a.assert_oauth_error(400, "invalid_request");
    assert!(a.text.contains("facebook"), "{}", a.text);
}
both_backends!(facebook_grants_without_a_facebook_section_name_the_provider);

/// A Limited Login token for `sub` carrying `nonce`, as Facebook's iOS SDK gets it.
fn limited_login_token(app: &TestApp, sub: &str, nonce: &str) -> String {
    app.limited_login.id_token(json!({"aud": APP_ID, "sub": sub, "nonce": nonce, "email": null, "azp": null}))
}

async fn limited_login_with_our_nonce_signs_in_once(backend: Backend) {
    let app = spawn_fb_app(backend).await;
    let nonce = app.nonce().await;
    let token = limited_login_token(&app, "70007", &nonce);

    let a = app.exchange(&token, &[("nonce", &nonce)]).await;
    let reused = app.exchange(&limited_login_token(&app, "70007", &nonce), &[("nonce", &nonce)]).await;

    a.assert_status(200);
    assert_eq!(jwt_claims(a.str("access_token"))["idp"], json!("facebook"));
    reused.assert_oauth_error(400, "invalid_request");
}
both_backends!(limited_login_with_our_nonce_signs_in_once);

async fn limited_login_without_a_nonce_or_with_a_foreign_one_is_refused(backend: Backend) {
    let app = spawn_fb_app(backend).await;
    let foreign =
        app.post_form("/oauth/nonce", Auth::Basic("svc", SVC_SECRET), &[]).await.str("nonce").to_string();
    let made_up = "bm90LWEtbm9uY2UtZnJvbS1pZGJyaWRnZS1hdC1hbGwtYXQtYWxs";

    let without =
        app.exchange(&app.limited_login.id_token(json!({"aud": APP_ID, "azp": null, "sub": "8"})), &[]).await;
    let with_foreign = app.exchange(&limited_login_token(&app, "8", &foreign), &[("nonce", &foreign)]).await;
    let with_made_up = app.exchange(&limited_login_token(&app, "8", made_up), &[("nonce", made_up)]).await;
    let other_app = app.limited_login.id_token(json!({"aud": OTHER_APP_ID, "sub": "8"}));

    without.assert_oauth_error(400, "invalid_request");
    with_foreign.assert_oauth_error(400, "invalid_request");
    with_made_up.assert_oauth_error(400, "invalid_request");
    app.exchange(&other_app, &[]).await.assert_oauth_error(400, "invalid_request");
    app.assert_nothing_written().await;
}
both_backends!(limited_login_without_a_nonce_or_with_a_foreign_one_is_refused);

/// A Graph API that hangs costs one sign-in its timeout; during the back-off that follows,
/// Facebook sign-ins are refused (503) at once without calling it again.
async fn a_hanging_graph_is_called_once_then_backed_off(backend: Backend) {
    use crate::support::broken_graph::{BrokenGraph, Misbehaviour};
    let graph = BrokenGraph::start().await;
    graph.set(Misbehaviour::Hang);
    let app = spawn_app_with(backend, |c| {
        c.facebook = true;
        c.graph_url = Some(graph.base_url.clone());
    })
    .await;
    let token = app.facebook.user_token("70007");

    exchange_fb(&app, &token).await.assert_oauth_error(503, "temporarily_unavailable");
    for _ in 0..5 {
        let a = exchange_fb(&app, &token).await;
        a.assert_oauth_error(503, "temporarily_unavailable");
        assert!(a.text.contains("cannot be reached"), "{}", a.text);
    }

    assert_eq!(graph.connections(), 1, "the Graph API is not called again during the back-off");
    app.assert_nothing_written().await;
}
both_backends!(a_hanging_graph_is_called_once_then_backed_off);
