//! What providers tell idbridge (API.md, "Session events"): Google RISC Security Event
//! Tokens, Facebook's signed requests (deauthorize, data deletion) and Apple's notifications,
//! signed for real by the fakes. Each event's effect; each refusal changing nothing; replays
//! answered the same without a new effect; the data-deletion status page.

use serde_json::{json, Value};

use crate::apple::{app_with_apple, sha256_hex};
use crate::support::fake_apple::BUNDLE_ID;
use crate::support::fake_facebook::APP_SECRET;
use crate::support::fake_google::{self, b64url, now};
use crate::support::*;

const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";

async fn post_set(app: &TestApp, set: &str) -> Answer {
    let r = app.client.post(app.url("/events/google")).header("content-type", "application/secevent+jwt");
    Answer::read(r.body(set.to_string()).send().await.unwrap()).await
}

async fn live(app: &TestApp, signed: &Tokens) -> bool {
    app.get_me(&signed.access_token).await.status == 200
}

async fn provider_events(app: &TestApp, provider: &str) -> i64 {
    app.count(&format!("audit_events WHERE action = 'provider.event' AND actor = 'provider:{provider}'"))
        .await
}

async fn risc_sessions_revoked_ends_the_devices_and_a_replay_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let sub = fake_google::random_sub();
    let signed = app.sign_in_as(&sub).await;
    let other = app.sign_in().await;

    let set = app.google.risc_event(&format!("{RISC}sessions-revoked"), &sub, json!({}), json!({}));
    let answer = post_set(&app, &set).await;

    assert_eq!(answer.status, 202, "{}", answer.text);
    assert!(!live(&app, &signed).await, "the device ended");
    assert_eq!(app.refresh(&signed.refresh_token).await.status, 400);
    assert!(live(&app, &other).await, "another person's device is untouched");
    assert_eq!(provider_events(&app, "google").await, 1);
    let again = post_set(&app, &set).await;
    assert_eq!(again.status, 202, "a replay gets the same answer");
    assert_eq!(provider_events(&app, "google").await, 1, "and no new effect");

    let newer = app.sign_in_as(&sub).await;
    let tokens_revoked = "https://schemas.openid.net/secevent/oauth/event-type/tokens-revoked";
    post_set(&app, &app.google.risc_event(tokens_revoked, &sub, json!({}), json!({})))
        .await
        .assert_status(202);
    assert!(!live(&app, &newer).await, "tokens-revoked ends them too");
}
both_backends!(risc_sessions_revoked_ends_the_devices_and_a_replay_changes_nothing);

async fn risc_hijacking_refuses_sign_in_until_the_account_is_enabled(backend: Backend) {
    let app = spawn_app(backend).await;
    let sub = fake_google::random_sub();
    let signed = app.sign_in_as(&sub).await;

    let disabled = app.google.risc_event(
        &format!("{RISC}account-disabled"),
        &sub,
        json!({"reason": "hijacking"}),
        json!({}),
    );
    post_set(&app, &disabled).await.assert_status(202);

    assert!(!live(&app, &signed).await);
    let refused = app.exchange(&app.google.id_token_for(&sub), &[]).await;
    assert_eq!(refused.status, 400, "sign-in is refused: {}", refused.text);
    let enabled = app.google.risc_event(&format!("{RISC}account-enabled"), &sub, json!({}), json!({}));
    post_set(&app, &enabled).await.assert_status(202);
    assert_eq!(app.exchange(&app.google.id_token_for(&sub), &[]).await.status, 200, "allowed again");

    // Disabled for another reason: the devices end, sign-in stays open.
    let bulk = app.google.risc_event(
        &format!("{RISC}account-disabled"),
        &sub,
        json!({"reason": "bulk-account"}),
        json!({}),
    );
    post_set(&app, &bulk).await.assert_status(202);
    assert_eq!(app.exchange(&app.google.id_token_for(&sub), &[]).await.status, 200);
    let note =
        app.google.risc_event(&format!("{RISC}verification"), &sub, json!({"state": "abc"}), json!({}));
    post_set(&app, &note).await.assert_status(202);
    let verification = app
        .count("audit_events WHERE action = 'provider.event' AND detail LIKE '%verification; state=abc%'")
        .await;
    assert_eq!(verification, 1);
}
both_backends!(risc_hijacking_refuses_sign_in_until_the_account_is_enabled);

async fn forged_stale_or_foreign_sets_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let sub = fake_google::random_sub();
    let signed = app.sign_in_as(&sub).await;
    let stranger = FakeGoogle::start().await;
    let kind = format!("{RISC}sessions-revoked");
    let own_iss = json!({ "iss": format!("{}/", app.google.issuer()) });

    for (set, err) in [
        (stranger.risc_event(&kind, &sub, json!({}), own_iss.clone()), "invalid_key"),
        (app.google.risc_event(&kind, &sub, json!({}), json!({ "aud": "someone-else" })), "invalid_audience"),
        (
            app.google.risc_event(&kind, &sub, json!({}), json!({ "iss": "https://evil.example/" })),
            "invalid_issuer",
        ),
        (app.google.risc_event(&kind, &sub, json!({}), json!({ "iat": now() - 7200 })), "invalid_request"),
        ("not a jwt".to_string(), "invalid_request"),
    ] {
        let answer = post_set(&app, &set).await;
        assert_eq!(answer.status, 400, "{}", answer.text);
        assert_eq!(answer.body["err"], err, "{}", answer.text);
    }
    assert!(live(&app, &signed).await, "nothing changed");
    assert_eq!(provider_events(&app, "google").await, 0);
}
both_backends!(forged_stale_or_foreign_sets_change_nothing);

/// Facebook's `signed_request` for `payload`, signed with `secret`.
fn signed_request(payload: Value, secret: &str) -> String {
    let payload = b64url(payload.to_string().as_bytes());
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    format!("{}.{payload}", b64url(aws_lc_rs::hmac::sign(&key, payload.as_bytes()).as_ref()))
}

fn facebook_payload(user_id: &str) -> Value {
    json!({ "algorithm": "HMAC-SHA256", "issued_at": now(), "user_id": user_id })
}

async fn post_signed(app: &TestApp, path: &str, signed: &str) -> Answer {
    Answer::read(app.client.post(app.url(path)).form(&[("signed_request", signed)]).send().await.unwrap())
        .await
}

async fn sign_in_with_facebook(app: &TestApp, user_id: &str) -> Tokens {
    let token = app.facebook.user_token(user_id);
    let answer = app
        .exchange(
            &token,
            &[
                ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
                ("provider", "facebook"),
            ],
        )
        .await;
    answer.assert_status(200);
    Tokens::from_answer(&answer, "")
}

async fn facebook_deauthorize_ends_the_devices_and_refuses_forgeries(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.facebook = true).await;
    let signed = sign_in_with_facebook(&app, "fb-deauth").await;

    let forged = signed_request(facebook_payload("fb-deauth"), "not-the-app-secret");
    post_signed(&app, "/events/facebook/deauthorize", &forged).await.assert_status(400);
    let stale = signed_request(
        json!({ "algorithm": "HMAC-SHA256", "issued_at": now() - 7200, "user_id": "fb-deauth" }),
        APP_SECRET,
    );
    post_signed(&app, "/events/facebook/deauthorize", &stale).await.assert_status(400);
    let other_alg = signed_request(
        json!({ "algorithm": "HMAC-SHA1", "issued_at": now(), "user_id": "fb-deauth" }),
        APP_SECRET,
    );
    post_signed(&app, "/events/facebook/deauthorize", &other_alg).await.assert_status(400);
    assert!(live(&app, &signed).await, "refusals change nothing");

    let genuine = signed_request(facebook_payload("fb-deauth"), APP_SECRET);
    post_signed(&app, "/events/facebook/deauthorize", &genuine).await.assert_status(200);
    assert!(!live(&app, &signed).await);
    post_signed(&app, "/events/facebook/deauthorize", &genuine).await.assert_status(200);
    assert_eq!(provider_events(&app, "facebook").await, 1, "a replay has no new effect");
    let again = sign_in_with_facebook(&app, "fb-deauth").await;
    assert!(live(&app, &again).await, "the person may sign in with Facebook again");
}
both_backends!(facebook_deauthorize_ends_the_devices_and_refuses_forgeries);

async fn facebook_data_deletion_deletes_or_unlinks_and_shows_its_status(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.facebook = true).await;
    sign_in_with_facebook(&app, "fb-only").await;

    let request = signed_request(facebook_payload("fb-only"), APP_SECRET);
    let answer = post_signed(&app, "/events/facebook/data-deletion", &request).await;
    answer.assert_status(200);
    let code = answer.str("confirmation_code").to_string();
    assert_eq!(answer.str("url"), format!("{PUBLIC_URL}/events/facebook/data-deletion/{code}"));
    assert_eq!(app.count("users").await, 0, "Facebook was their only identity: deleted");
    let replay = post_signed(&app, "/events/facebook/data-deletion", &request).await;
    assert_eq!(replay.str("confirmation_code"), code, "a replay answers the same code");

    let page = app.get(&format!("/events/facebook/data-deletion/{code}")).await;
    page.assert_status(200);
    assert!(page.text.contains(&code) && page.text.contains("completed"), "{}", page.text);
    let r = app
        .client
        .get(app.url(&format!("/events/facebook/data-deletion/{code}")))
        .header("accept", "application/json");
    let json_status = Answer::read(r.send().await.unwrap()).await;
    assert_eq!(json_status.body["confirmation_code"], code.as_str());
    assert_eq!(json_status.body["status"], "completed");
    app.get("/events/facebook/data-deletion/no-such-code").await.assert_status(404);

    // Someone who also signs in with Google keeps their account, without Facebook.
    let google = app.sign_in().await;
    let fb = app.facebook.user_token("fb-linked");
    let link = [
        ("subject_token", fb.as_str()),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
        ("provider", "facebook"),
    ];
    let r = app.client.post(app.url("/v1/me/identities")).bearer_auth(&google.access_token).form(&link);
    Answer::read(r.send().await.unwrap()).await.assert_status(201);
    let request = signed_request(facebook_payload("fb-linked"), APP_SECRET);
    post_signed(&app, "/events/facebook/data-deletion", &request).await.assert_status(200);
    assert_eq!(app.count("users").await, 1);
    assert_eq!(app.count("identities WHERE provider = 'facebook'").await, 0);
    assert!(!live(&app, &google).await, "their devices ended");
}
both_backends!(facebook_data_deletion_deletes_or_unlinks_and_shows_its_status);

/// Apple's notification about `sub`, signed by the fake Apple; `overrides` replace claims.
fn apple_notification(
    apple: &crate::support::fake_apple::FakeApple,
    kind: &str,
    sub: &str,
    overrides: Value,
) -> Value {
    let event = json!({ "type": kind, "sub": sub, "event_time": now() * 1000 });
    let mut claims = json!({
        "iss": apple.issuer(), "aud": BUNDLE_ID, "iat": now(), "jti": uuid::Uuid::new_v4().simple().to_string(),
        "events": event.to_string(),
    });
    if let (Value::Object(c), Value::Object(o)) = (&mut claims, overrides) {
        c.extend(o);
    }
    let header = json!({"alg": "RS256", "kid": apple.idp.current_kid()});
    json!({ "payload": apple.idp.sign_rs256(&header, &claims) })
}

async fn post_apple(app: &TestApp, body: &Value) -> Answer {
    Answer::read(app.client.post(app.url("/events/apple")).json(body).send().await.unwrap()).await
}

async fn apple_sign_in(app: &TestApp, apple: &crate::support::fake_apple::FakeApple, sub: &str) -> Tokens {
    let nonce = app.nonce().await;
    let token = apple.id_token(json!({ "sub": sub, "nonce": sha256_hex(&nonce) }));
    let answer = app.exchange(&token, &[("provider", "apple"), ("nonce", &nonce)]).await;
    answer.assert_status(200);
    Tokens::from_answer(&answer, "")
}

async fn apple_notifications_end_delete_and_record(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;
    let signed = apple_sign_in(&app, &apple, "001.apple-events").await;

    let foreign =
        apple_notification(&apple, "consent-revoked", "001.apple-events", json!({ "aud": "com.other.app" }));
    post_apple(&app, &foreign).await.assert_status(400);
    assert!(live(&app, &signed).await);

    post_apple(&app, &apple_notification(&apple, "email-disabled", "001.apple-events", json!({})))
        .await
        .assert_status(200);
    assert_eq!(app.count("identities WHERE provider = 'apple' AND email_disabled_at IS NOT NULL").await, 1);
    post_apple(&app, &apple_notification(&apple, "email-enabled", "001.apple-events", json!({})))
        .await
        .assert_status(200);
    assert_eq!(app.count("identities WHERE provider = 'apple' AND email_disabled_at IS NOT NULL").await, 0);

    let revoked = apple_notification(&apple, "consent-revoked", "001.apple-events", json!({}));
    post_apple(&app, &revoked).await.assert_status(200);
    assert!(!live(&app, &signed).await, "consent revoked: the devices end");
    post_apple(&app, &revoked).await.assert_status(200);

    apple_sign_in(&app, &apple, "001.apple-events").await;
    post_apple(&app, &apple_notification(&apple, "account-delete", "001.apple-events", json!({})))
        .await
        .assert_status(200);
    assert_eq!(app.count("users").await, 0, "Apple was their only identity: deleted");
    assert_eq!(app.count("audit_events WHERE action = 'user.delete' AND actor = 'provider:apple'").await, 1);
}
both_backends!(apple_notifications_end_delete_and_record);
