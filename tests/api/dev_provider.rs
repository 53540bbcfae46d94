//! The dev provider (dev mode only).

use serde_json::json;

use crate::support::*;

async fn dev_id_token(app: &TestApp, name: &str) -> String {
    let a = app.post_form("/dev/id-token", Auth::Anonymous, &[("name", name)]).await;
    a.assert_status(200);
    a.str("id_token").to_string()
}

async fn dev_id_token_signs_in_to_dev_app_with_idp_dev(backend: Backend) {
    let app = spawn_dev_app(backend).await;
    let id_token = dev_id_token(&app, "alice").await;

    let a = app.exchange_as(Auth::Public("dev-app"), &id_token, &[]).await;

    let t = Tokens::from_answer(&a, "");
    let claims = jwt_claims(&t.access_token);
    assert_eq!(claims["idp"], json!("dev"), "{claims}");
    assert_eq!(claims["client_id"], json!("dev-app"), "{claims}");
}
both_backends!(dev_id_token_signs_in_to_dev_app_with_idp_dev);

async fn dev_id_token_names_the_dev_issuer_and_dev_app(backend: Backend) {
    let app = spawn_dev_app(backend).await;

    let id_token = dev_id_token(&app, "alice").await;

    let claims = jwt_claims(&id_token);
    assert_eq!(claims["iss"], json!(format!("{PUBLIC_URL}/dev")), "{claims}");
    assert!(claims["aud"] == json!("dev-app") || claims["aud"] == json!(["dev-app"]), "{claims}");
}
both_backends!(dev_id_token_names_the_dev_issuer_and_dev_app);

async fn dev_id_token_with_explicit_provider_is_accepted(backend: Backend) {
    let app = spawn_dev_app(backend).await;
    let id_token = dev_id_token(&app, "bob").await;

    let a = app.exchange_as(Auth::Public("dev-app"), &id_token, &[("provider", "dev")]).await;

    a.assert_status(200);
}
both_backends!(dev_id_token_with_explicit_provider_is_accepted);

async fn dev_provider_is_off_outside_dev_mode(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app.post_form("/dev/id-token", Auth::Anonymous, &[("name", "alice")]).await;

    assert!(
        a.status == 404 || a.status == 403,
        "/dev/id-token outside dev mode answered {} {}",
        a.status,
        a.text
    );
}
both_backends!(dev_provider_is_off_outside_dev_mode);
