//! Sign in with Apple, native: token exchange of an Apple ID token (RS256 against Apple's keys
//! from discovery), a nonce always (its hex SHA-256 in the token, as Apple advises, or the
//! nonce itself), and the name the app got from Apple kept for a new user only.

use serde_json::json;

use crate::support::fake_apple::{FakeApple, BUNDLE_ID};
use crate::support::fake_google;
use crate::support::*;

/// An app whose `[providers.apple]` points at a fake Apple on loopback.
pub async fn app_with_apple(backend: Backend) -> (TestApp, FakeApple) {
    let apple = FakeApple::start().await;
    let section = apple.config_section();
    let app = spawn_app_with(backend, |c| c.extra = section).await;
    (app, apple)
}

/// An Apple-shaped ID token: our bundle id as `aud`, no `azp`, plus `claims`.
fn apple_token(apple: &FakeApple, claims: serde_json::Value) -> String {
    apple.id_token(claims)
}

pub fn sha256_hex(text: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn apple_takes_the_hashed_nonce_and_the_plain_one(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;

    let nonce = app.nonce().await;
    let hashed = apple_token(&apple, json!({ "nonce": sha256_hex(&nonce) }));
    let answer = app.exchange(&hashed, &[("provider", "apple"), ("nonce", &nonce)]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(jwt_claims(answer.body["access_token"].as_str().unwrap())["idp"], "apple");

    let nonce = app.nonce().await;
    let plain = apple_token(&apple, json!({ "nonce": nonce }));
    let by_issuer = app.exchange(&plain, &[("nonce", &nonce)]).await;
    assert_eq!(by_issuer.status, 200, "told apart by iss: {}", by_issuer.body);
}
both_backends!(apple_takes_the_hashed_nonce_and_the_plain_one);

async fn apple_always_needs_a_nonce_and_spends_it_once(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;

    let none = app.exchange(&apple_token(&apple, json!({})), &[("provider", "apple")]).await;
    assert_eq!(none.status, 400, "{}", none.body);
    let nonce = app.nonce().await;
    let other = app.nonce().await;
    let wrong = apple_token(&apple, json!({ "nonce": sha256_hex(&other) }));
    assert_eq!(app.exchange(&wrong, &[("nonce", &nonce)]).await.status, 400, "another nonce's hash");
    // The hash itself sent as the nonce is not a nonce idbridge issued.
    let hash_as_nonce = apple_token(&apple, json!({ "nonce": sha256_hex(&nonce) }));
    assert_eq!(app.exchange(&hash_as_nonce, &[("nonce", &sha256_hex(&nonce))]).await.status, 400);
    let first = apple_token(&apple, json!({ "nonce": sha256_hex(&nonce) }));
    assert_eq!(app.exchange(&first, &[("nonce", &nonce)]).await.status, 200);
    let again = apple_token(&apple, json!({ "nonce": sha256_hex(&nonce) }));
    let replay = app.exchange(&again, &[("nonce", &nonce)]).await;
    assert_eq!(replay.status, 400, "a nonce is spent once: {}", replay.body);
    assert_eq!(app.count("devices").await, 1);
}
both_backends!(apple_always_needs_a_nonce_and_spends_it_once);

async fn apple_tokens_of_another_audience_or_issuer_are_refused(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;

    let nonce = app.nonce().await;
    let stranger = apple_token(&apple, json!({ "aud": "com.other.app", "nonce": nonce }));
    assert_eq!(app.exchange(&stranger, &[("provider", "apple"), ("nonce", &nonce)]).await.status, 400);
    let googles = app.google.id_token(json!({ "nonce": nonce }));
    let mismatch = app.exchange(&googles, &[("provider", "apple"), ("nonce", &nonce)]).await;
    assert_eq!(mismatch.status, 400, "{}", mismatch.body);
    let expired = apple_token(&apple, json!({ "nonce": nonce, "exp": fake_google::now() - 3600 }));
    assert_eq!(app.exchange(&expired, &[("provider", "apple"), ("nonce", &nonce)]).await.status, 400);
    assert_eq!(app.count("devices").await, 0);
}
both_backends!(apple_tokens_of_another_audience_or_issuer_are_refused);

async fn apples_string_booleans_and_relay_addresses_are_taken(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;

    let nonce = app.nonce().await;
    let token = apple_token(
        &apple,
        json!({
            "nonce": sha256_hex(&nonce), "email": "x7k2@privaterelay.appleid.com",
            "email_verified": "true", "is_private_email": "true",
        }),
    );
    let answer = app.exchange(&token, &[("provider", "apple"), ("nonce", &nonce)]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let me = app.get_me(answer.body["access_token"].as_str().unwrap()).await;
    assert_eq!(me.body["email"], "x7k2@privaterelay.appleid.com", "{}", me.text);
}
both_backends!(apples_string_booleans_and_relay_addresses_are_taken);

async fn the_name_from_the_app_is_kept_for_a_new_user_only(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;
    let sub = fake_google::random_sub();
    let sign_in = |name: &'static str| {
        let (app, apple, sub) = (&app, &apple, sub.clone());
        async move {
            let nonce = app.nonce().await;
            let token = apple_token(apple, json!({ "sub": sub, "nonce": sha256_hex(&nonce) }));
            let answer = app
                .exchange(&token, &[("provider", "apple"), ("nonce", &nonce), ("display_name", name)])
                .await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            app.get_me(answer.body["access_token"].as_str().unwrap()).await
        }
    };

    assert_eq!(sign_in("Ann Appleseed").await.body["display_name"], "Ann Appleseed");
    assert_eq!(sign_in("Somebody Else").await.body["display_name"], "Ann Appleseed", "not changed later");
}
both_backends!(the_name_from_the_app_is_kept_for_a_new_user_only);

/// Signs `sub` in natively with an `authorization_code` for Apple to redeem; the answer.
async fn sign_in_with_code(app: &TestApp, apple: &FakeApple, sub: &str, code: &str) -> Answer {
    let nonce = app.nonce().await;
    let token = apple_token(apple, json!({ "sub": sub, "nonce": sha256_hex(&nonce) }));
    app.exchange(&token, &[("provider", "apple"), ("nonce", &nonce), ("authorization_code", code)]).await
}

/// Rows of `provider_tokens` whose wrapped bytes contain `text` in the clear.
async fn stored_in_the_clear(app: &TestApp, text: &str) -> i64 {
    let as_text = match app.db.backend {
        Backend::Postgres | Backend::PgBouncer => "encode(wrapped, 'escape')",
        Backend::Sqlite => "CAST(wrapped AS TEXT)",
    };
    app.count(&format!("provider_tokens WHERE {as_text} LIKE '%{text}%'")).await
}

async fn an_apps_code_is_redeemed_and_its_token_revoked_when_the_user_is_deleted(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;
    let sub = fake_google::random_sub();

    let answer = sign_in_with_code(&app, &apple, &sub, &apple.app_code(&sub)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let refresh_tokens = apple.refresh_tokens();
    assert_eq!(refresh_tokens.len(), 1, "the code was redeemed at Apple with a valid client secret");
    assert_eq!(app.count("provider_tokens WHERE user_id IS NOT NULL").await, 1);
    assert_eq!(stored_in_the_clear(&app, &refresh_tokens[0]).await, 0, "kept wrapped only");
    assert!(apple.revokes().is_empty());

    let deleted = app.delete_bearer("/v1/me", answer.str("access_token")).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let revokes = apple.wait_for_revokes(1).await;
    assert_eq!(revokes[0].token, refresh_tokens[0]);
    assert_eq!(revokes[0].client_id, BUNDLE_ID);
    assert_eq!(revokes[0].token_type_hint.as_deref(), Some("refresh_token"));
    eventually("the revoked token is forgotten", || async { app.count("provider_tokens").await == 0 }).await;
}
both_backends!(an_apps_code_is_redeemed_and_its_token_revoked_when_the_user_is_deleted);

async fn a_failed_revoke_at_apple_is_retried_and_never_blocks_the_deletion(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;
    let sub = fake_google::random_sub();
    let answer = sign_in_with_code(&app, &apple, &sub, &apple.app_code(&sub)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    apple.fail_revokes(1);

    let deleted = app.delete_bearer("/v1/me", answer.str("access_token")).await;
    assert_eq!(deleted.status, 204, "Apple failing does not hold the deletion up: {}", deleted.text);
    assert_eq!(app.count("users").await, 0);
    let revokes = apple.wait_for_revokes(2).await;
    assert!(revokes[0].failed && !revokes[1].failed, "{revokes:?}");
    assert_eq!(revokes[0].token, revokes[1].token, "the same token, tried again");
    eventually("the revoked token is forgotten", || async { app.count("provider_tokens").await == 0 }).await;
    let log = captured_log();
    assert!(log.contains("will retry"), "the failure is logged");
    for secret in [revokes[0].token.clone(), apple.client_secrets()[0].clone()] {
        assert!(!log.contains(&secret), "Apple's refresh token or idbridge's client secret is in the log");
    }
}
both_backends!(a_failed_revoke_at_apple_is_retried_and_never_blocks_the_deletion);

async fn a_code_apple_refuses_or_of_another_person_signs_nobody_in(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;
    let sub = fake_google::random_sub();

    let bogus = sign_in_with_code(&app, &apple, &sub, "c-not-a-code").await;
    bogus.assert_oauth_error(400, "invalid_request");
    let someone_else = fake_google::random_sub();
    let theirs = sign_in_with_code(&app, &apple, &sub, &apple.app_code(&someone_else)).await;
    theirs.assert_oauth_error(400, "invalid_request");
    assert!(theirs.body["error_description"].as_str().unwrap().contains("another"), "{}", theirs.body);
    app.assert_nothing_written().await;
    assert_eq!(app.count("provider_tokens").await, 0);
}
both_backends!(a_code_apple_refuses_or_of_another_person_signs_nobody_in);

async fn the_client_secret_is_signed_once_and_reused(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;
    for _ in 0..2 {
        let sub = fake_google::random_sub();
        assert_eq!(sign_in_with_code(&app, &apple, &sub, &apple.app_code(&sub)).await.status, 200);
    }
    let secrets = apple.client_secrets();
    assert_eq!(secrets.len(), 2);
    assert_eq!(secrets[0], secrets[1], "cached, not signed for every request");
    let claims = jwt_claims(&secrets[0]);
    assert_eq!(claims["iss"], "ABCDE12345");
    assert_eq!(claims["sub"], BUNDLE_ID);
    assert_eq!(claims["aud"], apple.issuer());
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 180 * 86_400);
    assert_eq!(jwt_header(&secrets[0])["kid"], "XYZ987ABCD");
}
both_backends!(the_client_secret_is_signed_once_and_reused);

async fn the_command_line_deletion_revokes_at_apple_too(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;
    let sub = fake_google::random_sub();
    let answer = sign_in_with_code(&app, &apple, &sub, &apple.app_code(&sub)).await;
    let user_id = jwt_claims(answer.str("access_token"))["sub"].as_str().unwrap().to_string();

    let out = app.run_cli(&["users", "delete", &user_id]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(app.count("users").await, 0);
    let revokes = apple.wait_for_revokes(1).await;
    assert_eq!(revokes[0].token, apple.refresh_tokens()[0]);
}
both_backends!(the_command_line_deletion_revokes_at_apple_too);

async fn unlinking_apple_revokes_its_token(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;
    let signed_in = app.sign_in().await;
    let sub = fake_google::random_sub();
    let nonce = app.nonce().await;
    let token = apple_token(&apple, json!({ "sub": sub, "nonce": sha256_hex(&nonce) }));
    let code = apple.app_code(&sub);
    let form = [
        ("provider", "apple"),
        ("subject_token", token.as_str()),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
        ("nonce", nonce.as_str()),
        ("authorization_code", code.as_str()),
    ];
    let r = app.client.post(app.url("/v1/me/identities")).bearer_auth(&signed_in.access_token).form(&form);
    let linked = Answer::read(r.send().await.expect("link request")).await;
    assert_eq!(linked.status, 201, "{}", linked.text);
    assert_eq!(app.count("provider_tokens WHERE user_id IS NOT NULL").await, 1);

    let unlinked = app.delete_bearer("/v1/me/identities/apple", &signed_in.access_token).await;
    assert_eq!(unlinked.status, 204, "{}", unlinked.text);
    assert_eq!(apple.wait_for_revokes(1).await[0].token, apple.refresh_tokens()[0]);
}
both_backends!(unlinking_apple_revokes_its_token);
