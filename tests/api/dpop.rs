//! DPoP (RFC 9449): proofs made by hand, the binding of a device and its tokens to the key,
//! and every attack the contract names (replay, wrong key, wrong request, stale or future
//! proofs, Bearer downgrade, forged keys and algorithms).

use serde_json::{json, Value};

use crate::support::dpop::DpopKey;
use crate::support::fake_google::{now, random_sub};
use crate::support::*;

const TOKEN_URL: &str = "http://idbridge.test/oauth/token";
const ME_URL: &str = "http://idbridge.test/v1/me";

/// A token exchange of a new Google user by `app`, with `proof` as its `DPoP` header.
async fn exchange_with_proof(app: &TestApp, proof: &str) -> Answer {
    let token = app.google.id_token_for(&random_sub());
    let form =
        [("grant_type", TOKEN_EXCHANGE), ("subject_token", &token), ("subject_token_type", ID_TOKEN_TYPE)];
    app.post_form_with("/oauth/token", Auth::Public("app"), &form, &[("DPoP", proof)]).await
}

/// A bound sign-in: the tokens and the key.
async fn bound_sign_in(app: &TestApp) -> (Tokens, DpopKey) {
    let key = DpopKey::es256();
    let a = exchange_with_proof(app, &key.proof("POST", TOKEN_URL, None)).await;
    (Tokens::from_answer(&a, ""), key)
}

async fn refresh_with(app: &TestApp, refresh_token: &str, proof: Option<&str>) -> Answer {
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
    let headers: Vec<(&str, &str)> = proof.map(|p| ("DPoP", p)).into_iter().collect();
    app.post_form_with("/oauth/token", Auth::Public("app"), &form, &headers).await
}

/// `GET /v1/me` with `Authorization: <scheme> <token>` and, when given, a proof.
async fn me_with(app: &TestApp, scheme: &str, token: &str, proof: Option<&str>) -> Answer {
    let mut req = app.client.get(app.url("/v1/me")).header("Authorization", format!("{scheme} {token}"));
    if let Some(proof) = proof {
        req = req.header("DPoP", proof);
    }
    Answer::read(req.send().await.expect("GET /v1/me")).await
}

#[track_caller]
fn assert_dpop_challenge(a: &Answer, error: &str) {
    a.assert_status(401);
    let challenge = a.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("DPoP ") && challenge.contains(&format!("error=\"{error}\"")),
        "expected a DPoP {error} challenge, got {challenge:?}: {}",
        a.text
    );
}

async fn a_proof_at_sign_in_binds_the_device_and_its_access_tokens(backend: Backend) {
    let app = spawn_app(backend).await;

    let (tokens, key) = bound_sign_in(&app).await;

    assert_eq!(tokens.body["token_type"], json!("DPoP"), "{}", tokens.body);
    assert_eq!(jwt_claims(&tokens.access_token)["cnf"], json!({ "jkt": key.jkt }));
    let stored = app.count(&format!("devices WHERE dpop_jkt = '{}'", key.jkt)).await;
    assert_eq!(stored, 1, "the device remembers the key's thumbprint");
    let proof = key.proof("GET", ME_URL, Some(&tokens.access_token));
    me_with(&app, "DPoP", &tokens.access_token, Some(&proof)).await.assert_status(200);
    let introspected = app.introspect(&tokens.access_token).await;
    assert_eq!(introspected.body["cnf"], json!({ "jkt": key.jkt }), "{}", introspected.text);
    assert_eq!(introspected.body["token_type"], json!("DPoP"));
    let refresh = app.introspect(&tokens.refresh_token).await;
    assert_eq!(refresh.body["cnf"], json!({ "jkt": key.jkt }), "{}", refresh.text);
}
both_backends!(a_proof_at_sign_in_binds_the_device_and_its_access_tokens);

async fn a_bound_devices_refresh_needs_a_proof_by_its_key_and_spends_nothing_without(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tokens, key) = bound_sign_in(&app).await;
    let thief = DpopKey::es256();

    let without = refresh_with(&app, &tokens.refresh_token, None).await;
    let other_key =
        refresh_with(&app, &tokens.refresh_token, Some(&thief.proof("POST", TOKEN_URL, None))).await;
    let right = refresh_with(&app, &tokens.refresh_token, Some(&key.proof("POST", TOKEN_URL, None))).await;

    without.assert_oauth_error(400, "invalid_dpop_proof");
    other_key.assert_oauth_error(400, "invalid_dpop_proof");
    right.assert_status(200);
    assert_eq!(right.body["token_type"], json!("DPoP"));
    assert_eq!(jwt_claims(right.str("access_token"))["cnf"]["jkt"], json!(key.jkt));
    let count = app.count(&format!("refresh_tokens WHERE device_id = '{}'", tokens.device_id)).await;
    assert_eq!(count, 2, "the refused attempts spent nothing: one rotation only");
}
both_backends!(a_bound_devices_refresh_needs_a_proof_by_its_key_and_spends_nothing_without);

async fn an_unbound_device_keeps_working_with_bearer_and_may_get_a_bound_access_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let tokens = app.sign_in().await;
    assert_eq!(tokens.body["token_type"], json!("Bearer"));
    assert!(jwt_claims(&tokens.access_token).get("cnf").is_none());
    app.get_me(&tokens.access_token).await.assert_status(200);
    let key = DpopKey::es256();

    let bound = refresh_with(&app, &tokens.refresh_token, Some(&key.proof("POST", TOKEN_URL, None))).await;

    bound.assert_status(200);
    assert_eq!(bound.body["token_type"], json!("DPoP"));
    assert_eq!(jwt_claims(bound.str("access_token"))["cnf"]["jkt"], json!(key.jkt));
    // The device itself stays unbound: its next refresh may come without a proof.
    refresh_with(&app, bound.str("refresh_token"), None).await.assert_status(200);
}
both_backends!(an_unbound_device_keeps_working_with_bearer_and_may_get_a_bound_access_token);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_is_refused_as_bearer_and_without_or_with_a_wrong_proof() {
    let app = spawn_app(Backend::Sqlite).await;
    let (tokens, key) = bound_sign_in(&app).await;
    let at = tokens.access_token.as_str();
    let thief = DpopKey::es256();

    assert_dpop_challenge(&me_with(&app, "Bearer", at, None).await, "invalid_token");
    let with_proof_as_bearer = me_with(&app, "Bearer", at, Some(&key.proof("GET", ME_URL, Some(at)))).await;
    assert_dpop_challenge(&with_proof_as_bearer, "invalid_token");
    assert_dpop_challenge(&me_with(&app, "DPoP", at, None).await, "invalid_dpop_proof");
    let by_thief = thief.proof("GET", ME_URL, Some(at));
    assert_dpop_challenge(&me_with(&app, "DPoP", at, Some(&by_thief)).await, "invalid_dpop_proof");
    // An unbound token is not a DPoP token.
    let plain = app.sign_in().await;
    let plain_proof = key.proof("GET", ME_URL, Some(&plain.access_token));
    assert_dpop_challenge(
        &me_with(&app, "DPoP", &plain.access_token, Some(&plain_proof)).await,
        "invalid_token",
    );
    // And the right proof still works: none of the above spent anything of the holder's.
    me_with(&app, "DPoP", at, Some(&key.proof("GET", ME_URL, Some(at)))).await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_misdirected_stale_and_future_proofs_are_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let (tokens, key) = bound_sign_in(&app).await;
    let at = tokens.access_token.as_str();
    let attempt = |proof: String| {
        let app = &app;
        async move { me_with(app, "DPoP", at, Some(&proof)).await }
    };

    let once = key.proof("GET", ME_URL, Some(at));
    attempt(once.clone()).await.assert_status(200);
    assert_dpop_challenge(&attempt(once).await, "invalid_dpop_proof");

    let cases: Vec<(&str, String)> = vec![
        ("another method", key.proof("POST", ME_URL, Some(at))),
        ("another URL", key.proof("GET", "http://idbridge.test/v1/me/devices", Some(at))),
        ("another host", key.proof("GET", "https://evil.example/v1/me", Some(at))),
        ("another token's ath", key.proof("GET", ME_URL, Some("some-other-token"))),
        ("no ath", key.proof("GET", ME_URL, None)),
        (
            "older than 5 minutes",
            key.proof_with("GET", ME_URL, Some(at), |_, c| {
                c.insert("iat".into(), json!(now() - 301));
            }),
        ),
        (
            "from the future",
            key.proof_with("GET", ME_URL, Some(at), |_, c| {
                c.insert("iat".into(), json!(now() + 120));
            }),
        ),
        (
            "no jti",
            key.proof_with("GET", ME_URL, Some(at), |_, c| {
                c.remove("jti");
            }),
        ),
    ];
    for (what, proof) in cases {
        let a = attempt(proof).await;
        assert_eq!(a.status.as_u16(), 401, "{what}: {}", a.text);
        assert_dpop_challenge(&a, "invalid_dpop_proof");
    }
    // The query and fragment are not part of htu; case and default port are normalised.
    let normalised = key.proof("GET", "HTTP://IDBRIDGE.TEST:80/v1/me?x=1#top", Some(at));
    attempt(normalised).await.assert_status(200);
    // The request's own address is accepted too (what a client library puts in htu).
    attempt(key.proof("GET", &app.url("/v1/me"), Some(at))).await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_headers_keys_and_algorithms_are_refused_at_the_token_endpoint() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = DpopKey::es256();
    let other = DpopKey::es256();
    let forged = |tamper: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        key.proof_with("POST", TOKEN_URL, None, |h, _| tamper(h))
    };
    let unsigned = {
        let header = json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk});
        let claims = json!({"jti": "x", "htm": "POST", "htu": TOKEN_URL, "iat": now()});
        let b64 = |v: &Value| {
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v.to_string())
        };
        format!("{}.{}.", b64(&header), b64(&claims))
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "typ JWT",
            forged(&|h| {
                h.insert("typ".into(), json!("JWT"));
            }),
        ),
        (
            "alg HS256",
            forged(&|h| {
                h.insert("alg".into(), json!("HS256"));
            }),
        ),
        ("alg none", unsigned),
        (
            "no jwk",
            forged(&|h| {
                h.remove("jwk");
            }),
        ),
        (
            "a private key in jwk",
            forged(&|h| {
                h["jwk"]["d"] = json!("AAAA");
            }),
        ),
        (
            "another key's jwk",
            forged(&|h| {
                h.insert("jwk".into(), other.jwk.clone());
            }),
        ),
        (
            "an Ed25519 jwk under ES256",
            forged(&|h| {
                h.insert("jwk".into(), DpopKey::ed25519().jwk.clone());
            }),
        ),
        ("not a JWS", "garbage".to_string()),
    ];
    for (what, proof) in cases {
        let a = exchange_with_proof(&app, &proof).await;
        assert_eq!((a.status.as_u16(), a.error()), (400, Some("invalid_dpop_proof")), "{what}: {}", a.text);
    }
    let two = app
        .client
        .post(app.url("/oauth/token"))
        .header("DPoP", key.proof("POST", TOKEN_URL, None))
        .header("DPoP", key.proof("POST", TOKEN_URL, None))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x"), ("client_id", "app")])
        .send()
        .await
        .unwrap();
    Answer::read(two).await.assert_oauth_error(400, "invalid_dpop_proof");
    app.assert_nothing_written().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ed25519_key_binds_as_well() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = DpopKey::ed25519();

    let a = exchange_with_proof(&app, &key.proof("POST", TOKEN_URL, None)).await;

    let tokens = Tokens::from_answer(&a, "");
    assert_eq!(jwt_claims(&tokens.access_token)["cnf"]["jkt"], json!(key.jkt));
    let proof = key.proof("GET", ME_URL, Some(&tokens.access_token));
    me_with(&app, "DPoP", &tokens.access_token, Some(&proof)).await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_requires_dpop_refuses_token_requests_without_a_proof() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.extra = "\n[[clients]]\nclient_id = \"strict\"\nkind = \"public\"\nredirect_uris = [\"https://strict.example/cb\"]\nscopes = [\"openid\", \"api\"]\ndpop_required = true\n".into();
    })
    .await;
    let token = app.google.id_token_for(&random_sub());

    let without = app.exchange_as(Auth::Public("strict"), &token, &[]).await;
    let key = DpopKey::es256();
    let form =
        [("grant_type", TOKEN_EXCHANGE), ("subject_token", &token), ("subject_token_type", ID_TOKEN_TYPE)];
    let proof = key.proof("POST", TOKEN_URL, None);
    let with = app.post_form_with("/oauth/token", Auth::Public("strict"), &form, &[("DPoP", &proof)]).await;

    without.assert_oauth_error(400, "invalid_dpop_proof");
    with.assert_status(200);
    assert_eq!(with.body["token_type"], json!("DPoP"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_server_nonces_a_proof_must_carry_the_current_one() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.dpop_nonce = true).await;
    let key = DpopKey::es256();

    let first = exchange_with_proof(&app, &key.proof("POST", TOKEN_URL, None)).await;
    first.assert_oauth_error(400, "use_dpop_nonce");
    let nonce = first.header("dpop-nonce").expect("a DPoP-Nonce header");
    let forged = key.proof_with("POST", TOKEN_URL, None, |_, c| {
        c.insert("nonce".into(), json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    });
    exchange_with_proof(&app, &forged).await.assert_oauth_error(400, "use_dpop_nonce");
    let with_nonce = key.proof_with("POST", TOKEN_URL, None, |_, c| {
        c.insert("nonce".into(), json!(nonce));
    });
    let signed_in = exchange_with_proof(&app, &with_nonce).await;

    let tokens = Tokens::from_answer(&signed_in, "");
    let at = tokens.access_token.as_str();
    let next = signed_in.header("dpop-nonce").expect("a fresh nonce with the tokens");
    let no_nonce = me_with(&app, "DPoP", at, Some(&key.proof("GET", ME_URL, Some(at)))).await;
    assert_dpop_challenge(&no_nonce, "use_dpop_nonce");
    assert!(no_nonce.header("dpop-nonce").is_some());
    let proof = key.proof_with("GET", ME_URL, Some(at), |_, c| {
        c.insert("nonce".into(), json!(next));
    });
    me_with(&app, "DPoP", at, Some(&proof)).await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_the_proof_algorithms() {
    let app = spawn_app(Backend::Sqlite).await;

    let d = app.get("/.well-known/openid-configuration").await;

    assert_eq!(d.body["dpop_signing_alg_values_supported"], json!(["ES256", "EdDSA"]));
}
