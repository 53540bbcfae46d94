//! Linking providers to one account: only with the signed-in user's token and a fresh
//! assertion, never by e-mail; conflicts are 409.

use serde_json::json;

use crate::support::*;

async fn spawn_fb_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |c| c.facebook = true).await
}

async fn link(app: &TestApp, access_token: &str, form: &[(&str, &str)]) -> Answer {
    let r = app.client.post(app.url("/v1/me/identities")).bearer_auth(access_token).form(form).send().await;
    Answer::read(r.expect("link request")).await
}

async fn link_facebook(app: &TestApp, access_token: &str, fb_token: &str) -> Answer {
    link(
        app,
        access_token,
        &[("subject_token", fb_token), ("subject_token_type", ACCESS_TOKEN_TYPE), ("provider", "facebook")],
    )
    .await
}

async fn a_linked_provider_signs_in_to_the_same_user(backend: Backend) {
    let app = spawn_fb_app(backend).await;
    let google_user = app.sign_in().await;
    let fb_token = app.facebook.user_token("90009");

    let linked = link_facebook(&app, &google_user.access_token, &fb_token).await;

    linked.assert_status(201);
    assert_eq!(linked.body, json!({"provider": "facebook", "subject": "90009"}));
    let via_fb =
        app.exchange(&fb_token, &[("subject_token_type", ACCESS_TOKEN_TYPE), ("provider", "facebook")]).await;
    assert_eq!(jwt_claims(via_fb.str("access_token"))["sub"], json!(google_user.user_id));
    let me = app.get_me(&google_user.access_token).await;
    let providers: Vec<&str> =
        me.body["identities"].as_array().unwrap().iter().map(|i| i["provider"].as_str().unwrap()).collect();
    assert_eq!(providers, ["google", "facebook"], "{}", me.text);
    assert_eq!(app.count("audit_events WHERE action = 'identity.link'").await, 1);
}
both_backends!(a_linked_provider_signs_in_to_the_same_user);

async fn an_identity_of_another_user_is_a_conflict(backend: Backend) {
    let app = spawn_fb_app(backend).await;
    let fb_token = app.facebook.user_token("91919");
    let fb_user = Tokens::from_answer(
        &app.exchange(&fb_token, &[("subject_token_type", ACCESS_TOKEN_TYPE), ("provider", "facebook")])
            .await,
        "",
    );
    let google_user = app.sign_in().await;

    let a = link_facebook(&app, &google_user.access_token, &fb_token).await;

    a.assert_status(409);
    assert_eq!(app.count(&format!("identities WHERE user_id = '{}'", fb_user.user_id)).await, 1);
    assert_eq!(app.count(&format!("identities WHERE user_id = '{}'", google_user.user_id)).await, 1);
}
both_backends!(an_identity_of_another_user_is_a_conflict);

async fn a_second_identity_of_the_same_provider_is_a_conflict(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.sign_in().await;
    let other_google = app.google.id_token_for(&fake_google::random_sub());

    let a = link(
        &app,
        &user.access_token,
        &[("subject_token", &other_google), ("subject_token_type", ID_TOKEN_TYPE)],
    )
    .await;

    a.assert_status(409);
}
both_backends!(a_second_identity_of_the_same_provider_is_a_conflict);

async fn linking_needs_a_token_and_a_fresh_assertion(backend: Backend) {
    let app = spawn_fb_app(backend).await;
    let user = app.sign_in().await;
    let nonce = app.nonce().await;
    let ll = app
        .limited_login
        .id_token(json!({"aud": fake_facebook::APP_ID, "azp": null, "sub": "92", "nonce": nonce}));
    let form =
        [("subject_token", ll.as_str()), ("subject_token_type", ID_TOKEN_TYPE), ("nonce", nonce.as_str())];

    let anonymous =
        Answer::read(app.client.post(app.url("/v1/me/identities")).form(&form).send().await.unwrap()).await;
    let first = link(&app, &user.access_token, &form).await;
    let replayed = link(&app, &user.access_token, &form).await;
    let garbage =
        link(&app, &user.access_token, &[("subject_token", "x.y.z"), ("subject_token_type", ID_TOKEN_TYPE)])
            .await;

    anonymous.assert_status(401);
    first.assert_status(201);
    replayed.assert_status(400);
    garbage.assert_status(400);
}
both_backends!(linking_needs_a_token_and_a_fresh_assertion);

async fn the_last_identity_cannot_be_removed_and_others_can(backend: Backend) {
    let app = spawn_fb_app(backend).await;
    let user = app.sign_in().await;

    app.delete_bearer("/v1/me/identities/google", &user.access_token).await.assert_status(409);
    app.delete_bearer("/v1/me/identities/facebook", &user.access_token).await.assert_status(404);
    let fb_token = app.facebook.user_token("93939");
    link_facebook(&app, &user.access_token, &fb_token).await.assert_status(201);
    app.delete_bearer("/v1/me/identities/google", &user.access_token).await.assert_status(204);

    let me = app.get_me(&user.access_token).await;
    assert_eq!(me.body["identities"].as_array().map(Vec::len), Some(1), "{}", me.text);
    app.delete_bearer("/v1/me/identities/facebook", &user.access_token).await.assert_status(409);
    let google_again = app.sign_in_as(&user.google_sub).await;
    assert_ne!(google_again.user_id, user.user_id, "an unlinked identity signs in as a new user");
}
both_backends!(the_last_identity_cannot_be_removed_and_others_can);

async fn nothing_links_by_email(backend: Backend) {
    let app = spawn_fb_app(backend).await;
    let google = app.google.id_token(json!({"sub": "94", "email": "same@example.com"}));
    let google_user = Tokens::from_answer(&app.exchange(&google, &[]).await, "94");
    let fb_token = app.facebook.token_with(fake_facebook::FbToken {
        app_id: fake_facebook::APP_ID.into(),
        kind: "USER".into(),
        is_valid: true,
        expires_at: fake_google::now() + 3600,
        user_id: "95".into(),
        name: "Same".into(),
        email: Some("same@example.com".into()),
    });

    let fb_user =
        app.exchange(&fb_token, &[("subject_token_type", ACCESS_TOKEN_TYPE), ("provider", "facebook")]).await;

    assert_ne!(
        jwt_claims(fb_user.str("access_token"))["sub"],
        json!(google_user.user_id),
        "an e-mail never links"
    );
}
both_backends!(nothing_links_by_email);

async fn a_refused_link_leaves_the_owners_assertion_usable(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner_sub = fake_google::random_sub();
    app.sign_in_as(&owner_sub).await;
    let other = app.sign_in().await;
    let owners_token = app.google.id_token_for(&owner_sub);

    let a = link(
        &app,
        &other.access_token,
        &[("subject_token", &owners_token), ("subject_token_type", ID_TOKEN_TYPE)],
    )
    .await;

    a.assert_status(409);
    app.exchange(&owners_token, &[]).await.assert_status(200);
}
both_backends!(a_refused_link_leaves_the_owners_assertion_usable);

async fn a_link_without_a_form_is_a_problem_json_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.sign_in().await;

    let a = app.post_bearer("/v1/me/identities", &user.access_token).await;

    a.assert_status(400);
    assert_eq!(a.header("content-type").as_deref(), Some("application/problem+json"), "{}", a.text);
}
both_backends!(a_link_without_a_form_is_a_problem_json_400);
