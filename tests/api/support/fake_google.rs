//! A fake Google OpenID provider: discovery document, JWKS and RS256-signed ID tokens.
//!
//! Self-contained on purpose: `benches/load.rs` includes this file with `#[path]`, so it uses
//! only crates of the package and nothing from the test support module.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpResponse, HttpServer};
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SecureRandom;
use aws_lc_rs::signature::KeyPair as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Map, Value};

/// The default `aud`/`azp` of minted tokens (first entry of the configured `client_ids`).
pub const DEFAULT_AUDIENCE: &str = "google-client-1";

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock before 1970").as_secs() as i64
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh numeric subject, like Google's (21 digits).
pub fn random_sub() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes).expect("rng");
    let n = u128::from_be_bytes(bytes) % 10u128.pow(20);
    format!("1{n:020}")
}

struct SigningKey {
    kid: String,
    pair: Arc<aws_lc_rs::rsa::KeyPair>,
    jwk: Value,
    spki_pem: String,
    published: bool,
}

impl SigningKey {
    fn generate() -> SigningKey {
        let pair =
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("generate RSA key");
        let public = pair.public_key();
        let n = b64url(public.modulus().big_endian_without_leading_zero());
        let e = b64url(public.exponent().big_endian_without_leading_zero());
        let kid = uuid::Uuid::new_v4().simple().to_string();
        let jwk = json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": n, "e": e});
        let spki: PublicKeyX509Der<'static> = public.as_der().expect("SPKI DER");
        let b64 = STANDARD.encode(spki.as_ref());
        let mut spki_pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            spki_pem.push_str(std::str::from_utf8(chunk).expect("ascii"));
            spki_pem.push('\n');
        }
        spki_pem.push_str("-----END PUBLIC KEY-----\n");
        SigningKey { kid, pair: Arc::new(pair), jwk, spki_pem, published: true }
    }
}

struct State {
    keys: Vec<SigningKey>,
    /// index into `keys` of the key that signs new tokens
    current: usize,
}

struct Shared {
    base_url: String,
    state: Mutex<State>,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    /// While set, the JWKS endpoint answers 500.
    jwks_failing: std::sync::atomic::AtomicBool,
    /// While set, the JWKS endpoint answers `{"keys": []}`.
    jwks_empty: std::sync::atomic::AtomicBool,
    /// Codes the authorization endpoint handed out, until the token endpoint redeems them.
    codes: Mutex<std::collections::HashMap<String, PendingCode>>,
    /// Merged into the discovery document; a value starting with `/` is a path on this fake.
    discovery_extra: Value,
}

/// What an authorization request asked for, kept for its code's redemption.
struct PendingCode {
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    code_challenge: Option<String>,
    sub: String,
}

/// The client secret the fake's token endpoint wants.
pub const CLIENT_SECRET: &str = "google-secret";

/// Handle to a running fake Google. Dropping it stops the server.
pub struct FakeGoogle {
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeGoogle {
    /// Starts the fake on 127.0.0.1 with a free port. Needs a Tokio runtime.
    pub async fn start() -> FakeGoogle {
        Self::start_with(json!({}), |_| {}).await
    }

    /// Starts a fake provider whose discovery document has `discovery_extra` merged in (a value
    /// starting with `/` is a path on this fake) and that also serves `routes`; they find a
    /// [`Minter`] of this fake's ID tokens in the app data.
    pub async fn start_with(
        discovery_extra: Value,
        routes: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    ) -> FakeGoogle {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake google");
        let port = listener.local_addr().expect("local addr").port();
        let base_url = format!("http://127.0.0.1:{port}");
        let shared = Arc::new(Shared {
            base_url,
            state: Mutex::new(State { keys: vec![SigningKey::generate()], current: 0 }),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
            jwks_failing: std::sync::atomic::AtomicBool::new(false),
            jwks_empty: std::sync::atomic::AtomicBool::new(false),
            codes: Mutex::new(std::collections::HashMap::new()),
            discovery_extra,
        });
        let data = web::Data::from(shared.clone());
        let minter = web::Data::new(Minter(shared.clone()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(minter.clone())
                .configure(routes.clone())
                .route("/.well-known/openid-configuration", web::get().to(discovery))
                .route("/.well-known/risc-configuration", web::get().to(risc_configuration))
                .route("/oauth2/v3/certs", web::get().to(jwks))
                .route("/o/oauth2/v2/auth", web::get().to(authorize))
                .route("/token", web::post().to(token))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)
        .expect("listen fake google")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        FakeGoogle { shared, handle }
    }

    /// The issuer, exactly as the discovery document says: `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> &str {
        &self.shared.base_url
    }

    pub fn port(&self) -> u16 {
        self.shared.base_url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
    }

    /// Makes the JWKS endpoint answer 500 (an outage at Google) or work again.
    pub fn set_jwks_failing(&self, failing: bool) {
        self.shared.jwks_failing.store(failing, Ordering::SeqCst);
    }

    /// Makes the JWKS endpoint answer an empty key set (a provider's bad deploy), or not.
    pub fn set_jwks_empty(&self, empty: bool) {
        self.shared.jwks_empty.store(empty, Ordering::SeqCst);
    }

    /// Number of JWKS downloads so far.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Number of discovery-document downloads so far.
    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// `kid` of the key that signs new tokens.
    pub fn current_kid(&self) -> String {
        let st = self.shared.state.lock().unwrap();
        st.keys[st.current].kid.clone()
    }

    /// Public JWK of the key that signs new tokens.
    pub fn current_jwk(&self) -> Value {
        let st = self.shared.state.lock().unwrap();
        st.keys[st.current].jwk.clone()
    }

    /// Adds a new key, makes it the signing key and publishes it. With `drop_old`, earlier keys
    /// are no longer published. Returns the new `kid`.
    pub fn rotate_key(&self, drop_old: bool) -> String {
        let key = SigningKey::generate();
        let kid = key.kid.clone();
        let mut st = self.shared.state.lock().unwrap();
        if drop_old {
            for k in st.keys.iter_mut() {
                k.published = false;
            }
        }
        st.keys.push(key);
        st.current = st.keys.len() - 1;
        kid
    }

    /// Google-like default claims with a fresh random `sub`.
    pub fn default_claims(&self) -> Map<String, Value> {
        let sub = random_sub();
        let now = now();
        let mut m = Map::new();
        m.insert("iss".into(), json!(self.shared.base_url));
        m.insert("aud".into(), json!(DEFAULT_AUDIENCE));
        m.insert("azp".into(), json!(DEFAULT_AUDIENCE));
        m.insert("sub".into(), json!(sub));
        m.insert("email".into(), json!(format!("user{}@example.com", &sub[..8])));
        m.insert("email_verified".into(), json!(true));
        m.insert("name".into(), json!("Test User"));
        m.insert("iat".into(), json!(now));
        m.insert("exp".into(), json!(now + 3600));
        m.insert("jti".into(), json!(uuid::Uuid::new_v4().simple().to_string()));
        m
    }

    /// Default claims with `overrides` (a JSON object) merged in; an override of `null` removes
    /// the claim.
    pub fn claims(&self, overrides: Value) -> Value {
        let mut claims = self.default_claims();
        if let Value::Object(o) = overrides {
            for (k, v) in o {
                if v.is_null() {
                    claims.remove(&k);
                } else {
                    claims.insert(k, v);
                }
            }
        }
        Value::Object(claims)
    }

    /// An RS256 ID token signed with the current key, default claims plus `overrides`.
    pub fn id_token(&self, overrides: Value) -> String {
        let kid = self.current_kid();
        self.token_with_kid(&kid, overrides)
    }

    /// An ID token for a given subject (a fresh token each call).
    pub fn id_token_for(&self, sub: &str) -> String {
        self.id_token(json!({ "sub": sub }))
    }

    /// Signed with the current key, but the header names `kid`.
    pub fn token_with_kid(&self, kid: &str, overrides: Value) -> String {
        let header = json!({"alg": "RS256", "kid": kid, "typ": "JWT"});
        self.sign_rs256(&header, &self.claims(overrides))
    }

    /// Signs exactly `header` and `claims` with the current key (RS256).
    pub fn sign_rs256(&self, header: &Value, claims: &Value) -> String {
        sign_with(&self.shared, header, claims)
    }
}

/// Signs ID tokens with a running fake's current key, for the routes added by `start_with`.
pub struct Minter(Arc<Shared>);

impl Minter {
    pub fn issuer(&self) -> &str {
        &self.0.base_url
    }

    /// Exactly `claims`, signed RS256 with the current key.
    pub fn sign(&self, claims: &Value) -> String {
        let kid = {
            let st = self.0.state.lock().unwrap();
            st.keys[st.current].kid.clone()
        };
        sign_with(&self.0, &json!({"alg": "RS256", "kid": kid}), claims)
    }
}

fn sign_with(shared: &Shared, header: &Value, claims: &Value) -> String {
    {
        let pair = {
            let st = shared.state.lock().unwrap();
            st.keys[st.current].pair.clone()
        };
        let signing_input =
            format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let mut sig = vec![0u8; pair.public_modulus_len()];
        pair.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )
        .expect("RSA sign");
        format!("{signing_input}.{}", b64url(&sig))
    }
}

impl FakeGoogle {
    /// A RISC Security Event Token about Google subject `sub`: one event of `event_type` (with
    /// `extra` members), for our first client id, issued now; `overrides` replace claims.
    pub fn risc_event(&self, event_type: &str, sub: &str, extra: Value, overrides: Value) -> String {
        let mut body = json!({ "subject": { "subject_type": "iss-sub", "iss": format!("{}/", self.shared.base_url), "sub": sub } });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let mut claims = json!({
            "iss": format!("{}/", self.shared.base_url), "aud": DEFAULT_AUDIENCE, "iat": now(),
            "jti": uuid::Uuid::new_v4().simple().to_string(), "events": { event_type: body },
        });
        if let (Value::Object(c), Value::Object(o)) = (&mut claims, overrides) {
            c.extend(o);
        }
        let header = json!({"alg": "RS256", "kid": self.current_kid(), "typ": "secevent+jwt"});
        self.sign_rs256(&header, &claims)
    }

    /// `{"alg":"none"}` with an empty signature.
    pub fn alg_none_token(&self, overrides: Value) -> String {
        let header = json!({"alg": "none", "kid": self.current_kid(), "typ": "JWT"});
        format!(
            "{}.{}.",
            b64url(header.to_string().as_bytes()),
            b64url(self.claims(overrides).to_string().as_bytes())
        )
    }

    /// HS256 whose HMAC key is the current RSA public key (SPKI PEM text): the RS/HS algorithm
    /// confusion attack.
    pub fn hs256_with_public_key_token(&self, overrides: Value) -> String {
        let (kid, pem) = {
            let st = self.shared.state.lock().unwrap();
            let k = &st.keys[st.current];
            (k.kid.clone(), k.spki_pem.clone())
        };
        let header = json!({"alg": "HS256", "kid": kid, "typ": "JWT"});
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(self.claims(overrides).to_string().as_bytes())
        );
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, pem.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
        format!("{signing_input}.{}", b64url(tag.as_ref()))
    }

    /// The JWKS as served now.
    pub fn jwks_document(&self) -> Value {
        jwks_value(&self.shared)
    }
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        // The stop command is sent eagerly; the returned future only waits for completion.
        drop(self.handle.stop(false));
    }
}

fn jwks_value(shared: &Shared) -> Value {
    let st = shared.state.lock().unwrap();
    let keys: Vec<Value> = st.keys.iter().filter(|k| k.published).map(|k| k.jwk.clone()).collect();
    json!({ "keys": keys })
}

async fn discovery(shared: web::Data<Shared>) -> HttpResponse {
    shared.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    let base = &shared.base_url;
    let mut document = json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/o/oauth2/v2/auth"),
            "token_endpoint": format!("{base}/token"),
            "userinfo_endpoint": format!("{base}/v1/userinfo"),
            "revocation_endpoint": format!("{base}/revoke"),
            "jwks_uri": format!("{base}/oauth2/v3/certs"),
            "response_types_supported": ["code", "id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": ["aud", "email", "email_verified", "exp", "family_name", "given_name", "iat", "iss", "name", "picture", "sub"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "grant_types_supported": ["authorization_code", "refresh_token"]
    });
    if let Value::Object(extra) = &shared.discovery_extra {
        for (k, v) in extra {
            let v = match v.as_str() {
                Some(path) if path.starts_with('/') => json!(format!("{base}{path}")),
                _ => v.clone(),
            };
            document[k] = v;
        }
    }
    HttpResponse::Ok().insert_header(("Cache-Control", "public, max-age=3600")).json(document)
}

/// Google's RISC configuration: its issuer (with the trailing slash, like Google's) and keys.
async fn risc_configuration(shared: web::Data<Shared>) -> HttpResponse {
    let base = &shared.base_url;
    HttpResponse::Ok().json(json!({
        "issuer": format!("{base}/"),
        "jwks_uri": format!("{base}/oauth2/v3/certs"),
        "delivery_methods_supported": ["https://schemas.openid.net/secevent/risc/delivery-method/push"],
    }))
}

async fn jwks(shared: web::Data<Shared>) -> HttpResponse {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if shared.jwks_failing.load(Ordering::SeqCst) {
        return HttpResponse::InternalServerError().body("backend error");
    }
    if shared.jwks_empty.load(Ordering::SeqCst) {
        return HttpResponse::Ok()
            .insert_header(("Cache-Control", "public, max-age=3600"))
            .json(json!({"keys": []}));
    }
    HttpResponse::Ok().insert_header(("Cache-Control", "public, max-age=3600")).json(jwks_value(&shared))
}

fn query_map(query: &str) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

/// Google's authorization endpoint, consenting at once: back to `redirect_uri` with a code.
/// The signed-in person is `login_hint` when given.
async fn authorize(shared: web::Data<Shared>, req: actix_web::HttpRequest) -> HttpResponse {
    let q = query_map(req.query_string());
    let (Some(client_id), Some(redirect_uri), Some(state)) =
        (q.get("client_id"), q.get("redirect_uri"), q.get("state"))
    else {
        return HttpResponse::BadRequest().body("client_id, redirect_uri and state are required");
    };
    let code = uuid::Uuid::new_v4().simple().to_string();
    shared.codes.lock().unwrap().insert(
        code.clone(),
        PendingCode {
            client_id: client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            nonce: q.get("nonce").cloned(),
            code_challenge: q.get("code_challenge").cloned(),
            sub: q.get("login_hint").cloned().unwrap_or_else(|| "browser-user".into()),
        },
    );
    let mut location = url::Url::parse(redirect_uri).expect("redirect_uri");
    location.query_pairs_mut().append_pair("code", &code).append_pair("state", state);
    HttpResponse::Found().insert_header(("Location", location.to_string())).finish()
}

/// Google's token endpoint: the code, its redirect URI, the client's secret and PKCE.
async fn token(shared: web::Data<Shared>, req: actix_web::HttpRequest, body: String) -> HttpResponse {
    let form = query_map(&body);
    let basic = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_string(), b.to_string())));
    let (client_id, secret) = match basic {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (form.get("client_id").cloned(), form.get("client_secret").cloned()),
    };
    let bad = |e: &str| HttpResponse::BadRequest().json(json!({"error": e}));
    let Some(pending) = form.get("code").and_then(|c| shared.codes.lock().unwrap().remove(c)) else {
        return bad("invalid_grant");
    };
    if client_id.as_deref() != Some(pending.client_id.as_str()) || secret.as_deref() != Some(CLIENT_SECRET) {
        return HttpResponse::Unauthorized().json(json!({"error": "invalid_client"}));
    }
    if form.get("redirect_uri") != Some(&pending.redirect_uri) {
        return bad("invalid_grant");
    }
    if let Some(challenge) = &pending.code_challenge {
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        let computed =
            b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref());
        if &computed != challenge {
            return bad("invalid_grant");
        }
    }
    let now = now();
    let mut claims = json!({
        "iss": shared.base_url, "aud": pending.client_id, "azp": pending.client_id, "sub": pending.sub,
        "email": format!("{}@gmail.example", pending.sub), "name": "Browser User", "iat": now, "exp": now + 3600,
    });
    if let Some(nonce) = pending.nonce {
        claims["nonce"] = json!(nonce);
    }
    let kid = {
        let st = shared.state.lock().unwrap();
        st.keys[st.current].kid.clone()
    };
    let id_token = sign_with(&shared, &json!({"alg": "RS256", "kid": kid, "typ": "JWT"}), &claims);
    HttpResponse::Ok().json(json!({
        "access_token": format!("ya29.{}", uuid::Uuid::new_v4().simple()),
        "id_token": id_token, "token_type": "Bearer", "expires_in": 3599, "scope": "openid email profile",
    }))
}
