//! Sign in with Apple in the browser: Apple answers with a cross-site form POST
//! (`response_mode=form_post`) to `/oauth/callback/apple`, which a `SameSite=Lax` login cookie
//! does not come along on. The form-post cookie binds the login instead; a stranger's browser
//! cannot finish it; the name Apple sends on the first authorization only is kept for a new user.

use serde_json::json;

use crate::apple::app_with_apple;
use crate::browser_flow::{query_of, RelyingParty};
use crate::support::browser::{Browser, Visit};
use crate::support::fake_apple::{form_post_fields, FakeApple, SERVICES_ID};
use crate::support::*;

const APP_CB: &str = "https://app.example/cb";

/// Starts a sign-in with Apple and follows it to Apple's form-post page: (its action, its fields).
async fn to_apples_form(
    browser: &mut Browser<'_>,
    url: &str,
    apple: &FakeApple,
) -> (Visit, String, Vec<(String, String)>) {
    let first = browser.get(url).await;
    assert_eq!(first.status, 302, "{}", first.body);
    let to_apple = first.location.clone().expect("to Apple");
    assert!(to_apple.starts_with(apple.issuer()), "{to_apple}");
    let page = browser.get(&to_apple).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let (action, fields) = form_post_fields(&page.body);
    (first, action, fields)
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn apple_in_the_browser_answers_by_a_cross_site_form_post(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;
    let rp = RelyingParty::new(&app, APP_CB).await;
    let mut browser = Browser::new(&app);
    let started = rp.start(&[("provider", "apple")]);

    let (first, action, fields) = to_apples_form(&mut browser, &started.url.clone(), &apple).await;
    let to_apple = url::Url::parse(first.location.as_deref().unwrap()).unwrap();
    let asked: std::collections::HashMap<_, _> = to_apple.query_pairs().into_owned().collect();
    assert_eq!(asked["response_mode"], "form_post");
    assert_eq!(asked["client_id"], SERVICES_ID);
    assert_eq!(asked["redirect_uri"], format!("{PUBLIC_URL}/oauth/callback/apple"));
    let form_post_cookie = first.set_cookies.iter().find(|c| c.starts_with("__Secure-idbridge-login-apple="));
    let form_post_cookie = form_post_cookie.expect("a cookie for the form post").to_ascii_lowercase();
    for attribute in ["samesite=none", "secure", "httponly", "path=/oauth/callback/apple"] {
        assert!(form_post_cookie.contains(attribute), "{form_post_cookie}");
    }
    let login_cookie = first.set_cookies.iter().find(|c| c.starts_with("__Host-idbridge-login=")).unwrap();
    assert!(login_cookie.contains("SameSite=Lax"), "the login cookie stays Lax: {login_cookie}");
    assert_eq!(action, format!("{PUBLIC_URL}/oauth/callback/apple"));
    assert!(field(&fields, "user").is_some(), "the first authorization carries the name");

    let back = browser.cross_site_post(&action, &fields).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let params = query_of(back.location.as_deref().expect("back to the app"));
    assert!(params.contains_key("code"), "{params:?}");
    let (access, _, id_claims) = rp.redeem(started, &params["code"]).await;
    assert_eq!(id_claims["idp"], json!("apple"));
    let me = app.get_me(&access).await;
    assert_eq!(me.body["display_name"], "Ann Appleseed", "{}", me.text);
    assert_eq!(me.body["identities"][0]["provider"], "apple");
    assert_eq!(apple.refresh_tokens().len(), 1, "the code was redeemed with the Services ID's secret");
    assert_eq!(jwt_claims(&apple.client_secrets()[0])["sub"], SERVICES_ID);
    assert_eq!(app.count("provider_tokens WHERE user_id IS NOT NULL").await, 1, "kept for the revoke");

    // The second time Apple sends no `user`: the same person, the name unchanged.
    let again = rp.start(&[("provider", "apple")]);
    let (_, action, fields) = to_apples_form(&mut browser, &again.url.clone(), &apple).await;
    assert!(field(&fields, "user").is_none());
    let back = browser.cross_site_post(&action, &fields).await;
    let params = query_of(back.location.as_deref().expect("back to the app"));
    let (access_again, _, _) = rp.redeem(again, &params["code"]).await;
    let me_again = app.get_me(&access_again).await;
    assert_eq!(me_again.body["id"], me.body["id"]);
    assert_eq!(me_again.body["display_name"], "Ann Appleseed");
}
both_backends!(apple_in_the_browser_answers_by_a_cross_site_form_post);

async fn a_new_person_without_apples_user_field_signs_in_without_a_name(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;
    apple.set_next_user("000777.nameless");
    let rp = RelyingParty::new(&app, APP_CB).await;
    let mut browser = Browser::new(&app);
    let started = rp.start(&[("provider", "apple")]);
    let (_, action, fields) = to_apples_form(&mut browser, &started.url.clone(), &apple).await;
    let without_user: Vec<_> = fields.into_iter().filter(|(k, _)| k != "user").collect();

    let back = browser.cross_site_post(&action, &without_user).await;
    let params = query_of(back.location.as_deref().expect("back to the app"));
    let (access, _, _) = rp.redeem(started, &params["code"]).await;
    let me = app.get_me(&access).await;
    assert_eq!(me.body["display_name"], serde_json::Value::Null, "{}", me.text);
    assert_eq!(me.body["identities"][0]["subject"], "000777.nameless");
}
both_backends!(a_new_person_without_apples_user_field_signs_in_without_a_name);

async fn a_form_post_is_finished_only_by_the_browser_that_began_it(backend: Backend) {
    let (app, apple) = app_with_apple(backend).await;
    let rp = RelyingParty::new(&app, APP_CB).await;
    let mut browser = Browser::new(&app);
    let started = rp.start(&[("provider", "apple")]);
    let (_, action, fields) = to_apples_form(&mut browser, &started.url.clone(), &apple).await;

    let mut stranger = Browser::new(&app);
    let refused = stranger.cross_site_post(&action, &fields).await;
    assert_eq!(refused.status, 400, "another browser cannot finish it: {}", refused.body);
    let mut tampered = fields.clone();
    for (k, v) in tampered.iter_mut() {
        if k == "id_token" {
            *v = apple.id_token(json!({ "aud": SERVICES_ID, "nonce": "not-this-sign-ins" }));
        }
    }
    let wrong_nonce = browser.cross_site_post(&action, &tampered).await;
    let params = query_of(wrong_nonce.location.as_deref().expect("to the app, with an error"));
    assert_eq!(params.get("error").map(String::as_str), Some("access_denied"), "{params:?}");
    assert_eq!(app.count("users").await, 0);
    assert!(apple.refresh_tokens().is_empty(), "no code is redeemed for a refused ID token");
}
both_backends!(a_form_post_is_finished_only_by_the_browser_that_began_it);
