//! `/oauth/userinfo` (OpenID Connect Core §5.3): claims by scope, RFC 6750 errors, DPoP-bound
//! tokens, and an OpenID Connect library reading it.

use openidconnect::core::{CoreClient, CoreJsonWebKeySet, CoreUserInfoClaims};
use openidconnect::{AccessToken, ClientId, IssuerUrl, SubjectIdentifier, UserInfoUrl};
use serde_json::json;

use crate::support::dpop::DpopKey;
use crate::support::fake_google::random_sub;
use crate::support::*;

fn with_email_scope(c: &mut TestConfig) {
    c.app_scopes = vec!["openid".into(), "profile".into(), "email".into(), "api".into()];
}

async fn sign_in_asking(app: &TestApp, scope: &str, claims: serde_json::Value) -> Tokens {
    let token = app.google.id_token(claims);
    let a = app.exchange(&token, &[("scope", scope)]).await;
    Tokens::from_answer(&a, "")
}

async fn userinfo_gives_the_claims_the_scope_allows(backend: Backend) {
    let app = spawn_app_with(backend, with_email_scope).await;
    let sub = random_sub();
    let claims = json!({"sub": sub, "email": "Ada@Example.com", "email_verified": true, "name": "Ada L"});
    let everything = sign_in_asking(&app, "openid profile email", claims).await;
    let only_openid = sign_in_asking(&app, "openid", json!({"sub": sub})).await;

    let full = app.get_bearer("/oauth/userinfo", &everything.access_token).await;
    let minimal = app.post_bearer("/oauth/userinfo", &only_openid.access_token).await;

    full.assert_status(200);
    assert_eq!(
        full.body,
        json!({"sub": everything.user_id, "name": "Ada L", "email": "Ada@Example.com", "email_verified": true})
    );
    assert_eq!(full.header("cache-control").as_deref(), Some("no-store"));
    minimal.assert_status(200);
    assert_eq!(minimal.body, json!({ "sub": everything.user_id }), "POST works, and only sub without scopes");
}
both_backends!(userinfo_gives_the_claims_the_scope_allows);

async fn an_unverified_email_says_so(backend: Backend) {
    let app = spawn_app_with(backend, with_email_scope).await;
    let claims = json!({"sub": random_sub(), "email": "x@example.com", "email_verified": false});

    let tokens = sign_in_asking(&app, "openid email", claims).await;

    let info = app.get_bearer("/oauth/userinfo", &tokens.access_token).await;
    assert_eq!(info.body["email_verified"], json!(false), "{}", info.text);
}
both_backends!(an_unverified_email_says_so);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_errors_follow_rfc_6750() {
    let app = spawn_app(Backend::Sqlite).await;
    let api_only = sign_in_asking(&app, "api", json!({"sub": random_sub()})).await;

    let no_token = app.get("/oauth/userinfo").await;
    let bad_token = app.get_bearer("/oauth/userinfo", "not-a-token").await;
    let no_openid = app.get_bearer("/oauth/userinfo", &api_only.access_token).await;

    no_token.assert_status(401);
    assert!(no_token.header("www-authenticate").unwrap_or_default().starts_with("Bearer"));
    bad_token.assert_status(401);
    assert!(bad_token.header("www-authenticate").unwrap_or_default().contains("error=\"invalid_token\""));
    no_openid.assert_status(403);
    assert!(no_openid.header("www-authenticate").unwrap_or_default().contains("insufficient_scope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_bound_token_reads_userinfo_with_a_proof() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = DpopKey::es256();
    let id_token = app.google.id_token_for(&random_sub());
    let form =
        [("grant_type", TOKEN_EXCHANGE), ("subject_token", &id_token), ("subject_token_type", ID_TOKEN_TYPE)];
    let proof = key.proof("POST", "http://idbridge.test/oauth/token", None);
    let a = app.post_form_with("/oauth/token", Auth::Public("app"), &form, &[("DPoP", &proof)]).await;
    let tokens = Tokens::from_answer(&a, "");
    let at = &tokens.access_token;

    let proof = key.proof("GET", "http://idbridge.test/oauth/userinfo", Some(at));
    let r = app
        .client
        .get(app.url("/oauth/userinfo"))
        .header("Authorization", format!("DPoP {at}"))
        .header("DPoP", proof)
        .send()
        .await
        .unwrap();

    let info = Answer::read(r).await;
    info.assert_status(200);
    assert_eq!(info.body["sub"], json!(tokens.user_id));
    app.get_bearer("/oauth/userinfo", at).await.assert_status(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openid_connect_library_reads_userinfo_from_discovery() {
    let app = spawn_app(Backend::Sqlite).await;
    let tokens =
        sign_in_asking(&app, "openid profile", json!({"sub": random_sub(), "name": "Grace H"})).await;
    let discovery = app.get("/.well-known/openid-configuration").await;
    let endpoint = discovery.str("userinfo_endpoint").to_string();
    assert_eq!(endpoint, format!("{PUBLIC_URL}/oauth/userinfo"));
    let jwks: CoreJsonWebKeySet =
        app.client.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    // The library is pointed at the test server's address for the advertised path.
    let client =
        CoreClient::new(ClientId::new("app".into()), IssuerUrl::new(PUBLIC_URL.into()).unwrap(), jwks)
            .set_user_info_url(UserInfoUrl::new(app.url("/oauth/userinfo")).unwrap());

    let claims: CoreUserInfoClaims = client
        .user_info(
            AccessToken::new(tokens.access_token.clone()),
            Some(SubjectIdentifier::new(tokens.user_id.clone())),
        )
        .request_async(&app.client)
        .await
        .unwrap_or_else(|e| panic!("UserInfo: {e:?}"));

    assert_eq!(claims.subject().as_str(), tokens.user_id);
    let name = claims.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_string());
    assert_eq!(name.as_deref(), Some("Grace H"));
}
