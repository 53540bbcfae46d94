//! No secret reaches the log when a provider fails. Facebook's Graph API refuses connections,
//! hangs past the client's timeout, answers 500, or answers something that is not JSON, while
//! people sign in with a Facebook access token and through the browser flow (whose code
//! exchange carries the app secret, the code and the PKCE verifier in its URL); Google's keys
//! cannot be fetched. Then the log is read for every configured secret.

use crate::support::broken_graph::{BrokenGraph, Misbehaviour};
use crate::support::*;

/// A Facebook sign-in through the browser flow up to idbridge's code exchange; returns what
/// the callback answered, and the code Facebook gave.
async fn browser_sign_in_with_facebook(app: &TestApp) -> (u16, String) {
    let mut browser = Browser::new(app);
    let query = [
        ("response_type", "code"),
        ("client_id", "app"),
        ("redirect_uri", "https://app.example/cb"),
        ("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
        ("code_challenge_method", "S256"),
        ("state", "some-state"),
        ("scope", "api"),
        ("provider", "facebook"),
    ];
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish();
    let to_facebook = browser.get(&format!("/oauth/authorize?{query}")).await;
    assert_eq!(to_facebook.status, 302, "{}", to_facebook.body);
    let dialog = format!("{}&login_as=fb-logs", to_facebook.location.unwrap());
    let consented = browser.get(&dialog).await;
    let callback = consented.location.expect("the dialog sends the person back to idbridge");
    assert!(callback.contains("/oauth/callback/facebook?"), "{callback}");
    let code =
        url::Url::parse(&callback).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    (browser.get(&callback).await.status, code)
}

/// Asserts the log holds none of `secrets`, and does hold `evidence` (so the failures were
/// indeed logged, and the check is not vacuous).
#[track_caller]
fn assert_log_clean(secrets: &[&str], evidence: &[&str]) {
    let log = captured_log();
    for line in evidence {
        assert!(log.contains(line), "the log never says {line:?}");
    }
    for secret in secrets {
        if let Some(at) = log.find(secret) {
            let line = log[..at].rsplit('\n').next().unwrap_or_default();
            panic!("a secret is in the log: {line}{secret}…");
        }
    }
}

async fn no_secret_reaches_the_log_when_a_provider_fails(backend: Backend) {
    let graph = BrokenGraph::start().await;
    let app = spawn_app_with(backend, |c| {
        c.facebook = true;
        c.graph_url = Some(graph.base_url.clone());
    })
    .await;
    let unreachable = app
        .restart_with(|c| {
            c.facebook = true;
            c.graph_url = Some("http://127.0.0.1:1/v21.0".into());
        })
        .await;
    let master_key = std::fs::read_to_string(app.dir().join("master.key")).unwrap();
    let mut user_secrets = Vec::new();

    for (server, mode) in [
        (&unreachable, None),
        (&app, Some(Misbehaviour::Hang)),
        (&app, Some(Misbehaviour::ServerError)),
        (&app, Some(Misbehaviour::NotJson)),
    ] {
        if let Some(mode) = mode {
            graph.set(mode);
        }
        let user_token = app.facebook.user_token("fb-logs");
        let exchange = server
            .exchange(&user_token, &[("subject_token_type", ACCESS_TOKEN_TYPE), ("provider", "facebook")]);
        let (exchanged, (callback, code)) = tokio::join!(exchange, browser_sign_in_with_facebook(server));
        exchanged.assert_oauth_error(503, "temporarily_unavailable");
        assert_ne!(callback, 200, "{mode:?}: the callback cannot have signed anyone in");
        user_secrets.push(user_token);
        user_secrets.push(code);
    }
    app.google.set_jwks_failing(true);
    app.exchange(&app.google.id_token_for("g-logs"), &[]).await.assert_status(503);

    let mut secrets = vec![fake_facebook::APP_SECRET, "google-secret", SVC_SECRET, master_key.trim()];
    secrets.extend(user_secrets.iter().map(String::as_str));
    assert_log_clean(
        &secrets,
        &["code exchange with the provider failed", "Facebook Graph call failed", "JWKS fetch failed"],
    );
}
both_backends!(no_secret_reaches_the_log_when_a_provider_fails);
