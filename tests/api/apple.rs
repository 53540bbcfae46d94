//! Sign in with Apple, native: token exchange of an Apple ID token (RS256 against Apple's keys
//! from discovery), a nonce always (its hex SHA-256 in the token, as Apple advises, or the
//! nonce itself), and the name the app got from Apple kept for a new user only.

use serde_json::json;

use crate::support::fake_google::{self, FakeGoogle};
use crate::support::*;

const BUNDLE_ID: &str = "com.example.app";

/// An app whose `[providers.apple]` points at a fake Apple on loopback.
async fn app_with_apple(backend: Backend) -> (TestApp, FakeGoogle) {
    let apple = FakeGoogle::start().await;
    let section = format!(
        "\n[providers.apple]\nclient_ids = [\"{BUNDLE_ID}\", \"com.example.web\"]\nteam_id = \"ABCDE12345\"\nkey_id = \"XYZ987ABCD\"\nprivate_key = \"file:/dev/null\"\nissuer = \"{}\"\n",
        apple.issuer()
    );
    let app = spawn_app_with(backend, |c| c.extra = section).await;
    (app, apple)
}

/// An Apple-shaped ID token: our bundle id as `aud`, no `azp`, plus `claims`.
fn apple_token(apple: &FakeGoogle, claims: serde_json::Value) -> String {
    let mut all = json!({ "aud": BUNDLE_ID, "azp": null, "name": null });
    all.as_object_mut().unwrap().extend(claims.as_object().unwrap().clone());
    apple.id_token(all)
}

fn sha256_hex(text: &str) -> String {
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
