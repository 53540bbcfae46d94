//! `[[providers.oidc]]`: any OpenID Connect provider, found through discovery, whose ID tokens
//! are checked as Google's are, and whose name is `provider=` and `idp`.

use serde_json::json;

use crate::support::fake_google::{self, FakeGoogle};
use crate::support::*;

/// An app with a second OIDC issuer on loopback configured as provider `entra`.
async fn app_with_entra(backend: Backend, require_nonce: bool) -> (TestApp, FakeGoogle) {
    let entra = FakeGoogle::start().await;
    let entry = format!(
        "\n[[providers.oidc]]\nname = \"entra\"\ndisplay_name = \"Microsoft\"\nissuer = \"{}\"\nclient_ids = [\"google-client-1\"]\nrequire_nonce = {require_nonce}\n",
        entra.issuer()
    );
    let app = spawn_app_with(backend, |c| c.extra = entry).await;
    (app, entra)
}

async fn a_generic_provider_signs_in_and_names_the_idp(backend: Backend) {
    let (app, entra) = app_with_entra(backend, false).await;
    let sub = fake_google::random_sub();

    let named = app.exchange(&entra.id_token_for(&sub), &[("provider", "entra")]).await;
    assert_eq!(named.status, 200, "{}", named.body);
    let claims = jwt_claims(named.body["access_token"].as_str().unwrap());
    assert_eq!(claims["idp"], "entra");
    // Told by `iss` alone, the same subject is the same user.
    let by_issuer = app.exchange(&entra.id_token_for(&sub), &[]).await;
    assert_eq!(by_issuer.status, 200, "{}", by_issuer.body);
    assert_eq!(jwt_claims(by_issuer.body["access_token"].as_str().unwrap())["sub"], claims["sub"]);
    let me = app.get_me(named.body["access_token"].as_str().unwrap()).await;
    assert_eq!(me.body["identities"][0]["provider"], "entra", "{}", me.body);
    // Google's subject of the same string is another person.
    let google = app.exchange(&app.google.id_token_for(&sub), &[]).await;
    assert_ne!(jwt_claims(google.body["access_token"].as_str().unwrap())["sub"], claims["sub"]);
}
both_backends!(a_generic_provider_signs_in_and_names_the_idp);

async fn a_generic_providers_tokens_are_checked_like_googles(backend: Backend) {
    let (app, entra) = app_with_entra(backend, false).await;

    let wrong_aud = app.exchange(&entra.id_token(json!({ "aud": "someone-else", "azp": null })), &[]).await;
    assert_eq!(wrong_aud.status, 400, "{}", wrong_aud.body);
    let expired = app.exchange(&entra.id_token(json!({ "exp": fake_google::now() - 3600 })), &[]).await;
    assert_eq!(expired.status, 400, "{}", expired.body);
    let mismatch = app.exchange(&entra.id_token(json!({})), &[("provider", "google")]).await;
    assert_eq!(mismatch.status, 400, "{}", mismatch.body);
    let unknown = app.exchange(&entra.id_token(json!({})), &[("provider", "gitlab")]).await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    let token = entra.id_token(json!({}));
    assert_eq!(app.exchange(&token, &[]).await.status, 200);
    let replayed = app.exchange(&token, &[]).await;
    assert_eq!(replayed.status, 400, "an ID token is accepted once: {}", replayed.body);
    assert_eq!(app.count("devices").await, 1, "nothing was written for the refused ones");
}
both_backends!(a_generic_providers_tokens_are_checked_like_googles);

async fn a_generic_provider_that_asks_for_a_nonce_gets_one(backend: Backend) {
    let (app, entra) = app_with_entra(backend, true).await;

    let without = app.exchange(&entra.id_token(json!({})), &[]).await;
    assert_eq!(without.status, 400, "{}", without.body);
    let nonce = app.nonce().await;
    let with = app.exchange(&entra.id_token(json!({ "nonce": nonce })), &[("nonce", &nonce)]).await;
    assert_eq!(with.status, 200, "{}", with.body);
}
both_backends!(a_generic_provider_that_asks_for_a_nonce_gets_one);

/// A provider whose discovery cannot be fetched does not stop the service; its sign-ins are
/// 503 until it answers, and the other providers work meanwhile.
async fn an_unreachable_generic_provider_answers_503_and_stops_nothing(backend: Backend) {
    // A port nothing listens on: discovery is refused.
    let issuer = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://127.0.0.1:{}", listener.local_addr().expect("addr").port())
    };
    let signer = FakeGoogle::start().await;
    let token = signer.id_token(json!({ "iss": issuer }));
    let entry = format!(
        "\n[[providers.oidc]]\nname = \"entra\"\nissuer = \"{issuer}\"\nclient_ids = [\"google-client-1\"]\n"
    );
    let app = spawn_app_with(backend, |c| c.extra = entry).await;

    let refused = app.exchange(&token, &[("provider", "entra")]).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(app.exchange(&app.google.id_token(json!({})), &[]).await.status, 200);
}
both_backends!(an_unreachable_generic_provider_answers_503_and_stops_nothing);

/// Linking and unlinking treat a configured provider as a built-in one: the link needs a
/// fresh token of it, signs in to the same user afterwards, and is removed by its name.
async fn a_generic_provider_links_signs_in_and_unlinks_like_the_others(backend: Backend) {
    let (app, entra) = app_with_entra(backend, false).await;
    let google_user = app.sign_in().await;
    let sub = fake_google::random_sub();
    let form = [
        ("subject_token", entra.id_token_for(&sub)),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token".to_string()),
        ("provider", "entra".to_string()),
    ];

    let linked = app
        .client
        .post(app.url("/v1/me/identities"))
        .bearer_auth(&google_user.access_token)
        .form(&form)
        .send()
        .await
        .expect("link");
    assert_eq!(linked.status(), 201);
    let via_entra = app.exchange(&entra.id_token_for(&sub), &[("provider", "entra")]).await;
    assert_eq!(
        jwt_claims(via_entra.body["access_token"].as_str().unwrap())["sub"],
        json!(google_user.user_id)
    );
    let unlinked = app
        .client
        .delete(app.url("/v1/me/identities/entra"))
        .bearer_auth(&google_user.access_token)
        .send()
        .await
        .expect("unlink");
    assert_eq!(unlinked.status(), 204);
    assert_eq!(app.count("audit_events WHERE action IN ('identity.link', 'identity.unlink')").await, 2);
    let after = app.exchange(&entra.id_token_for(&sub), &[("provider", "entra")]).await;
    assert_ne!(jwt_claims(after.body["access_token"].as_str().unwrap())["sub"], json!(google_user.user_id));
}
both_backends!(a_generic_provider_links_signs_in_and_unlinks_like_the_others);
