//! The browser flow (authorization code with PKCE), driven by the openidconnect crate as the
//! app's relying party and a small cookie-carrying "browser": through the dev provider, a fake
//! Google and a fake Facebook; then every refusal.

use openidconnect::core::{CoreClient, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{
    AccessTokenHash, AuthUrl, AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
};
use std::collections::HashMap;

use serde_json::json;

use crate::support::*;

/// The app's side: an OpenID Connect relying party of idbridge (openidconnect crate).
pub struct RelyingParty {
    client: CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
    >,
    http: reqwest::Client,
}

/// One authorization request in flight.
pub struct Started {
    pub url: String,
    csrf: CsrfToken,
    nonce: Nonce,
    pub verifier: PkceCodeVerifier,
}

impl RelyingParty {
    pub async fn new(app: &TestApp, redirect: &str) -> Self {
        let jwks: CoreJsonWebKeySet =
            app.client.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
        let client =
            CoreClient::new(ClientId::new("app".into()), IssuerUrl::new(PUBLIC_URL.into()).unwrap(), jwks)
                .set_auth_uri(AuthUrl::new(format!("{PUBLIC_URL}/oauth/authorize")).unwrap())
                .set_token_uri(TokenUrl::new(app.url("/oauth/token")).unwrap())
                .set_redirect_uri(RedirectUrl::new(redirect.into()).unwrap());
        RelyingParty { client, http: app.client.clone() }
    }

    pub fn start(&self, extra: &[(&str, &str)]) -> Started {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = self
            .client
            .authorize_url(
                openidconnect::core::CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("api".into()))
            .set_pkce_challenge(challenge);
        for (k, v) in extra {
            request = request.add_extra_param(*k, *v);
        }
        let (url, csrf, nonce) = request.url();
        Started { url: url.to_string(), csrf, nonce, verifier }
    }

    /// Redeems `code` and checks the ID token as any OIDC relying party would; returns the
    /// token answer's access and refresh tokens.
    pub async fn redeem(&self, started: Started, code: &str) -> (String, String, serde_json::Value) {
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code.into()))
            .set_pkce_verifier(started.verifier)
            .request_async(&self.http)
            .await
            .unwrap_or_else(|e| panic!("code exchange: {e:?}"));
        let id_token = response.id_token().expect("an ID token with openid in scope");
        let verifier =
            self.client.id_token_verifier().set_allowed_algs(vec![CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
        let claims =
            id_token.claims(&verifier, &started.nonce).unwrap_or_else(|e| panic!("ID token refused: {e}"));
        let expected = claims.access_token_hash().expect("at_hash");
        let actual = AccessTokenHash::from_token(
            response.access_token(),
            id_token.signing_alg().unwrap(),
            id_token.signing_key(&verifier).unwrap(),
        )
        .unwrap();
        assert_eq!(&actual, expected, "at_hash binds the access token");
        let raw_claims = jwt_claims(&id_token.to_string());
        (
            response.access_token().secret().clone(),
            response.refresh_token().expect("a refresh token").secret().clone(),
            raw_claims,
        )
    }
}

pub fn query_of(location: &str) -> HashMap<String, String> {
    url::Url::parse(location).unwrap().query_pairs().into_owned().collect()
}

/// Signs in through the dev provider's form; returns the redirect back to the app.
async fn through_dev(browser: &mut Browser<'_>, started: &Started, name: &str) -> Visit {
    let form_page = browser.get(&started.url).await;
    assert_eq!(form_page.status, 200, "{}", form_page.body);
    let login = form_page
        .body
        .split("name=\"login\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    browser.post("/oauth/authorize/dev", &[("login", &login), ("name", name)]).await
}

const REDIRECT: &str = "http://127.0.0.1:41234/callback";

async fn the_dev_provider_signs_in_through_the_whole_flow(backend: Backend) {
    let app = spawn_dev_app(backend).await;
    let rp = RelyingParty::new(&app, REDIRECT).await;
    let mut browser = Browser::new(&app);
    let started = rp.start(&[("provider", "dev")]);

    let back = through_dev(&mut browser, &started, "dora").await;

    assert_eq!(back.status, 302);
    let params = query_of(back.location.as_deref().unwrap());
    assert!(back.location.unwrap().starts_with(REDIRECT), "a loopback redirect with any port");
    assert_eq!(params.get("state"), Some(started.csrf.secret()), "state round-trips");
    assert_eq!(params.get("iss").map(String::as_str), Some(PUBLIC_URL));
    let code = params["code"].clone();
    let (access, refresh, id_claims) = rp.redeem(started, &code).await;
    assert_eq!(id_claims["idp"], json!("dev"));
    assert!(id_claims["auth_time"].is_i64());
    let me = app.get_me(&access).await;
    assert_eq!(me.body["identities"][0]["subject"], json!("dora"), "{}", me.text);
    app.refresh(&refresh).await.assert_status(200);
}
both_backends!(the_dev_provider_signs_in_through_the_whole_flow);

async fn google_behind_the_flow_signs_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let rp = RelyingParty::new(&app, "https://app.example/cb").await;
    let mut browser = Browser::new(&app);
    let started = rp.start(&[("provider", "google"), ("login_hint", "g-777")]);

    let first = browser.get(&started.url).await;
    assert_eq!(first.status, 302, "{}", first.body);
    assert!(first.location.as_deref().unwrap().starts_with(app.google.issuer()), "to Google");
    let back = browser.follow(first, "https://app.example/cb").await;

    let params = query_of(back.location.as_deref().expect("back to the app"));
    assert_eq!(params.get("state"), Some(started.csrf.secret()), "{params:?}");
    let (access, _, id_claims) = rp.redeem(started, &params["code"]).await;
    assert_eq!(id_claims["idp"], json!("google"));
    let me = app.get_me(&access).await;
    assert_eq!(me.body["identities"][0]["subject"], json!("g-777"), "login_hint went through: {}", me.text);
}
both_backends!(google_behind_the_flow_signs_in);

/// A `[[providers.oidc]]` entry with a `client_secret` is offered by its `display_name` and
/// signs in through the flow as Google does; its name is the `idp`.
async fn a_generic_provider_behind_the_flow_signs_in(backend: Backend) {
    let entra = FakeGoogle::start().await;
    let entry = format!(
        "\n[[providers.oidc]]\nname = \"entra\"\ndisplay_name = \"Contoso Login\"\nissuer = \"{}\"\nclient_ids = [\"google-client-1\"]\nclient_secret = \"{}\"\n",
        entra.issuer(),
        crate::support::fake_google::CLIENT_SECRET
    );
    let app = spawn_app_with(backend, |c| c.extra = entry).await;
    let rp = RelyingParty::new(&app, "https://app.example/cb").await;
    let mut browser = Browser::new(&app);
    let choice = browser.get(&rp.start(&[]).url).await;
    assert!(
        choice.body.contains("provider=entra") && choice.body.contains("Contoso Login"),
        "{}",
        choice.body
    );
    let started = rp.start(&[("provider", "entra"), ("login_hint", "e-42")]);

    let first = browser.get(&started.url).await;
    assert_eq!(first.status, 302, "{}", first.body);
    assert!(first.location.as_deref().unwrap().starts_with(entra.issuer()), "to the provider");
    let back = browser.follow(first, "https://app.example/cb").await;

    let params = query_of(back.location.as_deref().expect("back to the app"));
    assert!(params.contains_key("code"), "{params:?}");
    let (access, _, id_claims) = rp.redeem(started, &params["code"]).await;
    assert_eq!(id_claims["idp"], json!("entra"));
    let me = app.get_me(&access).await;
    assert_eq!(me.body["identities"][0]["provider"], json!("entra"), "{}", me.text);
    assert_eq!(me.body["identities"][0]["subject"], json!("e-42"));
}
both_backends!(a_generic_provider_behind_the_flow_signs_in);

async fn facebook_behind_the_flow_signs_in(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.facebook = true).await;
    let rp = RelyingParty::new(&app, "https://app.example/cb").await;
    let mut browser = Browser::new(&app);
    let started = rp.start(&[("provider", "facebook"), ("login_as", "fb-555")]);

    let first = browser.get(&started.url).await;
    assert_eq!(first.status, 302, "{}", first.body);
    let dialog = first.location.clone().unwrap();
    assert!(dialog.starts_with(&app.facebook.dialog_url()), "to Facebook: {dialog}");
    // The fake dialog signs in whoever `login_as` names (the real one asks the person).
    let dialog = format!("{dialog}&login_as=fb-555");
    let consented = browser.get(&dialog).await;
    let back = browser.follow(consented, "https://app.example/cb").await;

    let params = query_of(back.location.as_deref().expect("back to the app"));
    let (access, _, id_claims) = rp.redeem(started, &params["code"]).await;
    assert_eq!(id_claims["idp"], json!("facebook"));
    assert_eq!(app.get_me(&access).await.body["identities"][0]["subject"], json!("fb-555"));
}
both_backends!(facebook_behind_the_flow_signs_in);

async fn without_a_provider_a_page_offers_the_choice(backend: Backend) {
    let app = spawn_dev_app(backend).await;
    let rp = RelyingParty::new(&app, REDIRECT).await;
    let mut browser = Browser::new(&app);

    let page = browser.get(&rp.start(&[]).url).await;

    assert_eq!(page.status, 200);
    for provider in ["google", "dev"] {
        assert!(page.body.contains(&format!("provider={provider}")), "{}", page.body);
    }
    // An empty `provider=` also shows the choice, and its links still work.
    let with_empty = browser.get(&format!("{}&provider=", rp.start(&[]).url)).await;
    let href = with_empty
        .body
        .split("href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    let followed = browser.get(&href).await;
    assert!(followed.status == 200 || followed.status == 302, "{} {}", followed.status, followed.body);
}
both_backends!(without_a_provider_a_page_offers_the_choice);

/// A code from the dev provider, and the request that got it.
async fn dev_code(app: &TestApp, rp: &RelyingParty) -> (Started, String) {
    let mut browser = Browser::new(app);
    let started = rp.start(&[("provider", "dev")]);
    let back = through_dev(&mut browser, &started, "rita").await;
    let code = query_of(back.location.as_deref().unwrap())["code"].clone();
    (started, code)
}

async fn redeem_raw(app: &TestApp, code: &str, verifier: &str, redirect: &str) -> Answer {
    app.post_form(
        "/oauth/token",
        Auth::Public("app"),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect),
        ],
    )
    .await
}

async fn a_wrong_pkce_verifier_is_refused(backend: Backend) {
    let app = spawn_dev_app(backend).await;
    let rp = RelyingParty::new(&app, REDIRECT).await;
    let (_, code) = dev_code(&app, &rp).await;

    let a = redeem_raw(&app, &code, &"x".repeat(43), REDIRECT).await;

    a.assert_oauth_error(400, "invalid_grant");
    assert_eq!(app.count("devices").await, 0);
}
both_backends!(a_wrong_pkce_verifier_is_refused);

async fn a_reused_code_is_refused_and_revokes_what_it_gave(backend: Backend) {
    let app = spawn_dev_app(backend).await;
    let rp = RelyingParty::new(&app, REDIRECT).await;
    let (started, code) = dev_code(&app, &rp).await;
    let verifier = started.verifier.secret().clone();

    let first = redeem_raw(&app, &code, &verifier, REDIRECT).await;
    let second = redeem_raw(&app, &code, &verifier, REDIRECT).await;

    first.assert_status(200);
    second.assert_oauth_error(400, "invalid_grant");
    app.get_me(first.str("access_token")).await.assert_status(401);
}
both_backends!(a_reused_code_is_refused_and_revokes_what_it_gave);

async fn an_expired_code_and_another_redirect_uri_are_refused(backend: Backend) {
    let app = spawn_dev_app(backend).await;
    let rp = RelyingParty::new(&app, REDIRECT).await;
    let (started, code) = dev_code(&app, &rp).await;
    let verifier = started.verifier.secret().clone();

    redeem_raw(&app, &code, &verifier, "http://127.0.0.1:9/callback")
        .await
        .assert_oauth_error(400, "invalid_grant");
    app.execute_sql("UPDATE authorization_codes SET expires_at = 0").await;
    redeem_raw(&app, &code, &verifier, REDIRECT).await.assert_oauth_error(400, "invalid_grant");
    assert_eq!(app.count("devices").await, 0);
}
both_backends!(an_expired_code_and_another_redirect_uri_are_refused);

async fn a_foreign_redirect_uri_gets_a_page_not_a_redirect(backend: Backend) {
    let app = spawn_dev_app(backend).await;
    let mut browser = Browser::new(&app);

    for redirect in [
        "https://evil.example/cb",
        "https://app.example/cb/other",
        "com.evil.app:/cb",
        "https://app.example/cb#x",
    ] {
        let rp = RelyingParty::new(&app, redirect).await;
        let visit = browser.get(&rp.start(&[("provider", "dev")]).url).await;
        assert_eq!(visit.status, 400, "{redirect}");
        assert!(visit.location.is_none(), "never redirected to {redirect}");
    }
}
both_backends!(a_foreign_redirect_uri_gets_a_page_not_a_redirect);

/// With `http://127.0.0.1/callback` registered, only that exact string with some port (or none)
/// is accepted: every other spelling that a URL parser would take for the same place is refused.
async fn a_loopback_redirect_uri_matches_exactly_but_for_the_port(backend: Backend) {
    let app = spawn_dev_app(backend).await;
    let mut browser = Browser::new(&app);
    let authorize = |redirect: &str| {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("response_type", "code"),
                ("client_id", "app"),
                ("redirect_uri", redirect),
                ("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
                ("code_challenge_method", "S256"),
                ("state", "s"),
                ("provider", "dev"),
            ])
            .finish();
        format!("/oauth/authorize?{query}")
    };

    for look_alike in [
        "http://evil@127.0.0.1:45678/callback",
        "http://127.0.0.1:45678/x/../callback",
        "http://127.0.0.1:45678/x/%2e%2e/callback",
        "http://127.1:45678/callback",
        "http://0x7f000001:45678/callback",
        "http://2130706433:45678/callback",
        "http:127.0.0.1/callback",
        "http:/127.0.0.1/callback",
        "HTTP://127.0.0.1/callback",
        "http://127.0.0.1./callback",
        "http://127.0.0.1:045678/callback",
        "http://127.0.0.1:0/callback",
        "http://127.0.0.1:45678/callback/",
        "http://127.0.0.1:45678/CALLBACK",
    ] {
        let visit = browser.get(&authorize(look_alike)).await;
        assert_eq!(visit.status, 400, "{look_alike}: {}", visit.body);
        assert!(visit.location.is_none(), "never redirected to {look_alike}");
    }
    for exact in
        ["http://127.0.0.1/callback", "http://127.0.0.1:45678/callback", "http://127.0.0.1:80/callback"]
    {
        let visit = browser.get(&authorize(exact)).await;
        assert_eq!(visit.status, 200, "{exact} is the registered URI: {}", visit.body);
    }
}
both_backends!(a_loopback_redirect_uri_matches_exactly_but_for_the_port);

async fn requests_without_pkce_or_for_another_response_type_go_back_with_an_error(backend: Backend) {
    let app = spawn_dev_app(backend).await;
    let mut browser = Browser::new(&app);
    let base = format!(
        "/oauth/authorize?client_id=app&redirect_uri={}&state=s1&provider=dev",
        "https%3A%2F%2Fapp.example%2Fcb"
    );

    let no_pkce = browser.get(&format!("{base}&response_type=code")).await;
    let implicit = browser
        .get(&format!(
            "{base}&response_type=token&code_challenge={}&code_challenge_method=S256",
            "a".repeat(43)
        ))
        .await;
    let plain = browser
        .get(&format!(
            "{base}&response_type=code&code_challenge={}&code_challenge_method=plain",
            "a".repeat(43)
        ))
        .await;

    let error = |v: &Visit| query_of(v.location.as_deref().unwrap()).get("error").cloned();
    assert_eq!(error(&no_pkce).as_deref(), Some("invalid_request"));
    assert_eq!(error(&implicit).as_deref(), Some("unsupported_response_type"));
    assert_eq!(error(&plain).as_deref(), Some("invalid_request"));
    assert_eq!(query_of(no_pkce.location.as_deref().unwrap()).get("state").map(String::as_str), Some("s1"));
}
both_backends!(requests_without_pkce_or_for_another_response_type_go_back_with_an_error);

async fn a_tampered_replayed_or_foreign_callback_fails(backend: Backend) {
    let app = spawn_app(backend).await;
    let rp = RelyingParty::new(&app, "https://app.example/cb").await;
    let mut browser = Browser::new(&app);
    let started = rp.start(&[("provider", "google")]);
    let to_google = browser.get(&started.url).await;
    let callback = browser.get(to_google.location.as_deref().unwrap()).await.location.unwrap();
    let state = query_of(&callback)["state"].clone();

    let tampered = browser.get(&callback.replace(&state, &format!("{state}x"))).await;
    let mut stranger = Browser::new(&app);
    let foreign = stranger.get(&callback).await;
    let genuine = browser.get(&callback).await;
    let replayed = browser.get(&callback).await;

    assert_eq!(tampered.status, 400, "a tampered state");
    assert_eq!(foreign.status, 400, "another browser's callback");
    assert_eq!(genuine.status, 302, "{}", genuine.body);
    assert!(genuine.location.unwrap().starts_with("https://app.example/cb?code="));
    assert_eq!(replayed.status, 400, "a replayed callback");
}
both_backends!(a_tampered_replayed_or_foreign_callback_fails);

async fn an_id_token_is_never_an_access_token(backend: Backend) {
    let app = spawn_dev_app(backend).await;
    let rp = RelyingParty::new(&app, REDIRECT).await;
    let (started, code) = dev_code(&app, &rp).await;
    let tokens = redeem_raw(&app, &code, started.verifier.secret(), REDIRECT).await;
    let id_token = tokens.str("id_token").to_string();

    app.get_me(&id_token).await.assert_status(401);
    assert_eq!(app.introspect(&id_token).await.body, json!({"active": false}));
    assert_eq!(jwt_header(&id_token)["typ"], json!("JWT"));
}
both_backends!(an_id_token_is_never_an_access_token);

async fn discovery_advertises_the_browser_flow(backend: Backend) {
    let app = spawn_app(backend).await;

    let d = app.get("/.well-known/openid-configuration").await;

    assert_eq!(d.body["authorization_endpoint"], json!(format!("{PUBLIC_URL}/oauth/authorize")));
    assert_eq!(d.body["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d.body["response_types_supported"], json!(["code"]));
    assert!(d.body["grant_types_supported"].as_array().unwrap().contains(&json!("authorization_code")));
}
both_backends!(discovery_advertises_the_browser_flow);

async fn an_address_starting_too_many_logins_is_refused(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.dev = true;
        c.per_ip_per_second = 2;
    })
    .await;
    let rp = RelyingParty::new(&app, REDIRECT).await;
    let mut browser = Browser::new(&app);

    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(browser.get(&rp.start(&[("provider", "dev")]).url).await.status);
    }

    assert!(statuses.contains(&429), "{statuses:?}");
    let limited = browser.get(&rp.start(&[("provider", "dev")]).url).await;
    assert_eq!(limited.status, 429);
    assert!(app.count("login_states").await <= 5, "logins kept: {}", app.count("login_states").await);
}
both_backends!(an_address_starting_too_many_logins_is_refused);

/// The person's profile an unredeemed code carries is wrapped by the master key: `keys status`
/// counts it, and `keys rotate-master` rewraps it, so the code still carries the name after the
/// old master key is gone.
async fn a_pending_codes_profile_is_rewrapped_by_rotate_master(backend: Backend) {
    let app = spawn_dev_app(backend).await;
    let rp = RelyingParty::new(&app, REDIRECT).await;
    let (started, code) = dev_code(&app, &rp).await;
    let old = app.dir().join("master.key").display().to_string();
    let new = write_master_key_named(app.dir(), "new.key");
    let both = app.restart_with(|c| c.master_keys = vec![new.clone(), old.clone()]).await;

    let out = both.run_cli(&["keys", "rotate-master"]).await;

    assert!(out.status.success(), "rotate-master: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("authorization codes: 1 of 1"), "{said}");
    let only_new = app.restart_with(|c| c.master_keys = vec![new.clone()]).await;
    let rp = RelyingParty::new(&only_new, REDIRECT).await;
    let (access, _, _) = rp.redeem(started, &code).await;
    assert_eq!(only_new.get_me(&access).await.body["display_name"], serde_json::json!("rita"));
}
both_backends!(a_pending_codes_profile_is_rewrapped_by_rotate_master);

async fn rp_initiated_logout_ends_the_device_and_returns_to_the_app(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.dev = true;
        c.app_post_logout_redirect_uris = vec!["https://app.example/signed-out".into()];
    })
    .await;
    let rp = RelyingParty::new(&app, REDIRECT).await;
    let mut browser = Browser::new(&app);
    let started = rp.start(&[("provider", "dev")]);
    let back = through_dev(&mut browser, &started, "logan").await;
    let code = query_of(back.location.as_deref().unwrap())["code"].clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", "app"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", started.verifier.secret().as_str()),
    ];
    let tokens = app.post_form("/oauth/token", Auth::Anonymous, &form).await;
    tokens.assert_status(200);
    let (access, id_token) = (tokens.str("access_token").to_string(), tokens.str("id_token").to_string());
    assert_eq!(jwt_claims(&id_token)["sid"], tokens.body["device_id"], "the ID token names its device");
    let discovery = app.get("/.well-known/openid-configuration").await;
    assert_eq!(discovery.body["end_session_endpoint"], format!("{PUBLIC_URL}/oauth/logout"));

    let logout = |redirect: &str| {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("id_token_hint", &id_token)
            .append_pair("post_logout_redirect_uri", redirect)
            .append_pair("state", "bye")
            .finish();
        format!("/oauth/logout?{query}")
    };
    let elsewhere = browser.get(&logout("https://evil.example/")).await;
    assert_eq!(elsewhere.status, 400, "a return address that is not the client's");
    app.get_me(&access).await.assert_status(200);

    let out = browser.get(&logout("https://app.example/signed-out")).await;
    assert_eq!(out.status, 302, "{}", out.body);
    assert_eq!(out.location.as_deref(), Some("https://app.example/signed-out?state=bye"));
    app.get_me(&access).await.assert_status(401);
    let forged = browser.get("/oauth/logout?id_token_hint=not.a.token").await;
    assert_eq!(forged.status, 400);
    assert_eq!(browser.get("/oauth/logout").await.status, 200, "without a hint: a page");
}
both_backends!(rp_initiated_logout_ends_the_device_and_returns_to_the_app);

/// RFC 9449 §10: `dpop_jkt` at `/oauth/authorize` binds the code to that key.
async fn a_code_bound_to_a_dpop_key_is_redeemed_only_with_that_key(backend: Backend) {
    let app = spawn_dev_app(backend).await;
    let rp = RelyingParty::new(&app, REDIRECT).await;
    let key = crate::support::dpop::DpopKey::es256();
    let thief = crate::support::dpop::DpopKey::es256();
    let mut browser = Browser::new(&app);
    let started = rp.start(&[("provider", "dev"), ("dpop_jkt", &key.jkt)]);
    let back = through_dev(&mut browser, &started, "rita").await;
    let code = query_of(back.location.as_deref().unwrap())["code"].clone();
    let verifier = started.verifier.secret().clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let token_url = format!("{PUBLIC_URL}/oauth/token");
    let redeem = |proof: Option<String>| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> = proof.as_deref().map(|p| ("DPoP", p)).into_iter().collect();
            app.post_form_with("/oauth/token", Auth::Public("app"), &form, &headers).await
        }
    };

    let without = redeem(None).await;
    let by_thief = redeem(Some(thief.proof("POST", &token_url, None))).await;
    let by_key = redeem(Some(key.proof("POST", &token_url, None))).await;

    without.assert_oauth_error(400, "invalid_grant");
    by_thief.assert_oauth_error(400, "invalid_grant");
    by_key.assert_status(200);
    assert_eq!(by_key.body["token_type"], json!("DPoP"));
    assert_eq!(jwt_claims(by_key.str("access_token"))["cnf"]["jkt"], json!(key.jkt));
}
both_backends!(a_code_bound_to_a_dpop_key_is_redeemed_only_with_that_key);
