//! Validation of Google ID tokens: every refused token is `400 invalid_request` and writes
//! nothing.

use serde_json::json;

use crate::support::fake_google::{now, FakeGoogle};
use crate::support::*;

/// Exchanges `token` and asserts the refusal and that nothing was written.
async fn assert_refused(app: &TestApp, token: &str, extra: &[(&str, &str)]) {
    let a = app.exchange(token, extra).await;
    a.assert_oauth_error(400, "invalid_request");
    app.assert_nothing_written().await;
}

async fn wrong_audience_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({"aud": "someone-elses-client"}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(wrong_audience_is_refused);

async fn issuer_with_a_host_suffix_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let iss = format!("{}.evil.example", app.google.issuer());
    let token = app.google.id_token(json!({ "iss": iss }));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(issuer_with_a_host_suffix_is_refused);

async fn issuer_with_a_trailing_slash_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let iss = format!("{}/", app.google.issuer());
    let token = app.google.id_token(json!({ "iss": iss }));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(issuer_with_a_trailing_slash_is_refused);

async fn google_lookalike_issuer_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({"iss": "https://accounts.google.com.evil"}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(google_lookalike_issuer_is_refused);

async fn expired_token_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = now();
    let token = app.google.id_token(json!({"iat": t - 3 * 3600, "exp": t - 2 * 3600}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(expired_token_is_refused);

async fn token_without_exp_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({"exp": null}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(token_without_exp_is_refused);

async fn token_issued_in_the_future_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = now();
    let token = app.google.id_token(json!({"iat": t + 3600, "exp": t + 7200}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(token_issued_in_the_future_is_refused);

async fn token_not_yet_valid_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({"nbf": now() + 3600}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(token_not_yet_valid_is_refused);

async fn alg_none_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.alg_none_token(json!({}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(alg_none_is_refused);

async fn hs256_signed_with_the_rsa_public_key_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.hs256_with_public_key_token(json!({}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(hs256_signed_with_the_rsa_public_key_is_refused);

async fn altered_claims_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let good = app.google.id_token(json!({"sub": "111111111111111111111"}));
    let forged_claims = app.google.claims(json!({"sub": "999999999999999999999"}));
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[1] = fake_google::b64url(forged_claims.to_string().as_bytes());
    let forged = parts.join(".");
    assert_refused(&app, &forged, &[]).await;
}
both_backends!(altered_claims_are_refused);

async fn key_embedded_in_the_header_is_not_trusted(backend: Backend) {
    let app = spawn_app(backend).await;
    let attacker = FakeGoogle::start().await;
    let header = json!({
        "alg": "RS256",
        "typ": "JWT",
        "kid": app.google.current_kid(),
        "jwk": attacker.current_jwk(),
    });
    let token = attacker.sign_rs256(&header, &app.google.claims(json!({})));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(key_embedded_in_the_header_is_not_trusted);

async fn unknown_crit_header_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let header = json!({
        "alg": "RS256",
        "typ": "JWT",
        "kid": app.google.current_kid(),
        "crit": ["urn:example:must-understand"],
        "urn:example:must-understand": true,
    });
    let token = app.google.sign_rs256(&header, &app.google.claims(json!({})));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(unknown_crit_header_is_refused);

async fn azp_outside_the_allowlist_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({"azp": "someone-elses-client"}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(azp_outside_the_allowlist_is_refused);

async fn wrong_nonce_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let in_token = app.nonce().await;
    let in_form = app.nonce().await;
    let token = app.google.id_token(json!({ "nonce": in_token }));
    assert_refused(&app, &token, &[("nonce", &in_form)]).await;
}
both_backends!(wrong_nonce_is_refused);

// ---- hosted domain -------------------------------------------------------------------------

async fn missing_hd_is_refused_when_a_hosted_domain_is_set(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.hosted_domain = "example.com".into()).await;
    let token = app.google.id_token(json!({}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(missing_hd_is_refused_when_a_hosted_domain_is_set);

async fn other_hd_is_refused_when_a_hosted_domain_is_set(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.hosted_domain = "example.com".into()).await;
    let token = app.google.id_token(json!({"hd": "other.example"}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(other_hd_is_refused_when_a_hosted_domain_is_set);

async fn matching_hd_is_accepted_when_a_hosted_domain_is_set(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.hosted_domain = "example.com".into()).await;
    let token = app.google.id_token(json!({"hd": "example.com"}));

    let a = app.exchange(&token, &[]).await;

    a.assert_status(200);
}
both_backends!(matching_hd_is_accepted_when_a_hosted_domain_is_set);

// ---- nonce ---------------------------------------------------------------------------------

async fn token_without_nonce_is_refused_when_nonce_is_required(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.require_nonce = true).await;
    let token = app.google.id_token(json!({}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(token_without_nonce_is_refused_when_nonce_is_required);

async fn issued_nonce_in_token_and_form_is_accepted(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.require_nonce = true).await;
    let nonce = app.nonce().await;
    let token = app.google.id_token(json!({ "nonce": nonce }));

    let a = app.exchange(&token, &[("nonce", &nonce)]).await;

    a.assert_status(200);
}
both_backends!(issued_nonce_in_token_and_form_is_accepted);

async fn nonce_is_single_use(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.require_nonce = true).await;
    let nonce = app.nonce().await;
    let first = app.google.id_token(json!({ "nonce": nonce }));
    app.exchange(&first, &[("nonce", &nonce)]).await.assert_status(200);
    let second = app.google.id_token(json!({ "nonce": nonce }));

    let a = app.exchange(&second, &[("nonce", &nonce)]).await;

    a.assert_oauth_error(400, "invalid_request");
    assert_eq!(app.count("devices").await, 1);
}
both_backends!(nonce_is_single_use);

async fn nonce_never_issued_is_refused(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.require_nonce = true).await;
    let nonce = "made-up-by-the-client-0123456789";
    let token = app.google.id_token(json!({ "nonce": nonce }));
    assert_refused(&app, &token, &[("nonce", nonce)]).await;
}
both_backends!(nonce_never_issued_is_refused);

async fn nonce_endpoint_answers_nonce_and_expiry(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app.post_form("/oauth/nonce", Auth::Public("app"), &[]).await;

    a.assert_status(200);
    assert!(a.str("nonce").len() >= 16, "{}", a.text);
    assert_eq!(a.body["expires_in"], json!(600), "{}", a.text);
}
both_backends!(nonce_endpoint_answers_nonce_and_expiry);

// ---- keys ----------------------------------------------------------------------------------

async fn first_sign_in_fetches_the_jwks_once(backend: Backend) {
    let app = spawn_app(backend).await;

    app.sign_in().await;

    assert_eq!(app.google.jwks_fetches(), 1, "JWKS downloads for the first sign-in");
}
both_backends!(first_sign_in_fetches_the_jwks_once);

async fn unknown_kid_is_refused_after_at_most_one_refetch(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_in().await;
    let fetches_after_sign_in = app.google.jwks_fetches();
    let token = app.google.token_with_kid("no-such-kid", json!({}));

    let a = app.exchange(&token, &[]).await;

    a.assert_oauth_error(400, "invalid_request");
    assert!(
        app.google.jwks_fetches() <= fetches_after_sign_in + 1,
        "unknown kid caused {} JWKS fetches",
        app.google.jwks_fetches() - fetches_after_sign_in
    );
    assert_eq!(app.count("devices").await, 1);
}
both_backends!(unknown_kid_is_refused_after_at_most_one_refetch);

/// Together with `first_sign_in_fetches_the_jwks_once` this is "exactly two fetches in total".
async fn rotated_google_key_is_picked_up_by_one_refetch(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_in().await;
    let before = app.google.jwks_fetches();
    app.google.rotate_key(false);

    let a = app.exchange(&app.google.id_token(json!({})), &[]).await;

    a.assert_status(200);
    assert_eq!(app.google.jwks_fetches() - before, 1, "JWKS fetches caused by the rotation");
}
both_backends!(rotated_google_key_is_picked_up_by_one_refetch);

async fn rotated_google_key_is_accepted_with_two_jwks_fetches_in_total(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_in().await;
    app.google.rotate_key(true);

    let a = app.exchange(&app.google.id_token(json!({})), &[]).await;

    a.assert_status(200);
    assert_eq!(app.google.jwks_fetches(), 2, "JWKS fetches in total");
}
both_backends!(rotated_google_key_is_accepted_with_two_jwks_fetches_in_total);

async fn unknown_kid_right_after_a_refetch_does_not_fetch_again(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_in().await;
    app.google.rotate_key(false);
    app.exchange(&app.google.id_token(json!({})), &[]).await.assert_status(200);
    let fetches = app.google.jwks_fetches();

    let a = app.exchange(&app.google.token_with_kid("still-unknown", json!({})), &[]).await;

    a.assert_oauth_error(400, "invalid_request");
    assert_eq!(app.google.jwks_fetches(), fetches, "refetch on an unknown kid is limited to once a minute");
}
both_backends!(unknown_kid_right_after_a_refetch_does_not_fetch_again);

// ---- more claim checks ---------------------------------------------------------------------

async fn untrusted_extra_audience_is_refused(backend: Backend) {
    // OpenID Connect Core 3.1.3.7 (2): reject an ID token with audiences the client does not trust
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({"aud": ["google-client-1", "someone-elses-client"]}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(untrusted_extra_audience_is_refused);

async fn token_expired_beyond_the_leeway_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = now();
    let token = app.google.id_token(json!({"iat": t - 3690, "exp": t - 90}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(token_expired_beyond_the_leeway_is_refused);

async fn token_issued_beyond_the_leeway_in_the_future_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = now();
    let token = app.google.id_token(json!({"iat": t + 90, "exp": t + 3690}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(token_issued_beyond_the_leeway_in_the_future_is_refused);

async fn token_without_sub_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({"sub": null}));
    assert_refused(&app, &token, &[]).await;
}
both_backends!(token_without_sub_is_refused);

async fn token_without_azp_is_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({"azp": null}));

    let a = app.exchange(&token, &[]).await;

    a.assert_status(200);
}
both_backends!(token_without_azp_is_accepted);

async fn google_token_sent_as_facebook_is_refused(backend: Backend) {
    // no [providers.facebook] section: the provider is disabled
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({}));
    assert_refused(&app, &token, &[("provider", "facebook")]).await;
}
both_backends!(google_token_sent_as_facebook_is_refused);

async fn nonce_for_an_unknown_client_is_invalid_client(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app.post_form("/oauth/nonce", Auth::Public("no-such-app"), &[]).await;

    a.assert_oauth_error(401, "invalid_client");
}
both_backends!(nonce_for_an_unknown_client_is_invalid_client);

/// A provider that briefly serves `{"keys": []}` does not wipe the cached keys: a token naming
/// an unknown key then forces a fetch that fails, valid sign-ins go on working, and a token
/// whose key could not be fetched while the provider fails is 503, not the client's 400.
async fn an_empty_key_set_keeps_the_cached_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_in().await; // a warm cache
    app.google.set_jwks_empty(true);

    let unknown = app.exchange(&app.google.token_with_kid("not-published", json!({})), &[]).await;

    unknown.assert_oauth_error(503, "temporarily_unavailable");
    app.google.set_jwks_empty(false);
    app.sign_in().await;
    let again = app.exchange(&app.google.token_with_kid("still-not-published", json!({})), &[]).await;
    again.assert_oauth_error(503, "temporarily_unavailable");
}
both_backends!(an_empty_key_set_keeps_the_cached_keys);
