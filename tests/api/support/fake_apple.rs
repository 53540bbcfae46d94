//! A fake Sign in with Apple on loopback: a fake provider (discovery, keys, RS256 ID tokens)
//! with Apple's endpoints: `/auth/authorize` answering with an auto-submitting form POST
//! (`response_mode=form_post`), `/auth/token` that checks idbridge's ES256 client secret
//! against the public half of the key it configured idbridge with, and `/auth/revoke` that
//! records what it got.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, HttpResponse};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};

use super::fake_google::{now, FakeGoogle, Minter};

pub const TEAM_ID: &str = "ABCDE12345";
pub const KEY_ID: &str = "XYZ987ABCD";
/// The app's bundle id (native sign-in) and the Services ID (the browser flow), in this order.
pub const BUNDLE_ID: &str = "com.example.app";
pub const SERVICES_ID: &str = "com.example.web";
/// Apple's limit on a client secret's lifetime: 180 days.
pub const MAX_SECRET_LIFETIME: i64 = 15_777_000;

/// A revoke request as Apple got it.
#[derive(Debug, Clone)]
pub struct Revoked {
    pub client_id: String,
    pub token: String,
    pub token_type_hint: Option<String>,
    /// Whether this attempt was answered with a failure (see `fail_revokes`).
    pub failed: bool,
}

struct Code {
    client_id: String,
    redirect_uri: Option<String>,
    sub: String,
}

#[derive(Default)]
struct AppleState {
    public_key: Vec<u8>,
    codes: Mutex<HashMap<String, Code>>,
    /// Every client secret the token and revoke endpoints accepted, in order.
    secrets: Mutex<Vec<String>>,
    refresh_tokens: Mutex<Vec<String>>,
    revokes: Mutex<Vec<Revoked>>,
    revoke_seen: tokio::sync::Notify,
    /// The next this many revokes answer 503.
    failing_revokes: AtomicUsize,
    /// The person `/auth/authorize` signs in next.
    next_user: Mutex<String>,
    /// People who have authorized before: Apple sends `user` only the first time.
    authorized: Mutex<HashSet<String>>,
}

pub struct FakeApple {
    pub idp: FakeGoogle,
    state: Arc<AppleState>,
    key_file: tempfile::NamedTempFile,
}

impl FakeApple {
    pub async fn start() -> FakeApple {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .expect("generate P-256 key");
        let pair =
            EcdsaKeyPair::from_pkcs8(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .expect("P-256 key");
        let state = Arc::new(AppleState {
            public_key: pair.public_key().as_ref().to_vec(),
            next_user: Mutex::new("000123.apple-browser-user".into()),
            ..AppleState::default()
        });
        let mut key_file = tempfile::NamedTempFile::new().expect("key file");
        key_file.write_all(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).expect("write key");
        let data = web::Data::from(state.clone());
        let routes = move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(data.clone())
                .route("/auth/authorize", web::get().to(authorize))
                .route("/auth/token", web::post().to(token))
                .route("/auth/revoke", web::post().to(revoke));
        };
        let discovery = json!({
            "authorization_endpoint": "/auth/authorize",
            "token_endpoint": "/auth/token",
            "revocation_endpoint": "/auth/revoke",
            "response_modes_supported": ["query", "fragment", "form_post"],
        });
        let idp = FakeGoogle::start_with(discovery, routes).await;
        FakeApple { idp, state, key_file }
    }

    pub fn issuer(&self) -> &str {
        self.idp.issuer()
    }

    /// `[providers.apple]` for this fake, with the key it checks client secrets against.
    pub fn config_section(&self) -> String {
        format!(
            "\n[providers.apple]\nclient_ids = [\"{BUNDLE_ID}\", \"{SERVICES_ID}\"]\nteam_id = \"{TEAM_ID}\"\nkey_id = \"{KEY_ID}\"\nprivate_key = \"file:{}\"\nissuer = \"{}\"\n",
            self.key_file.path().display(),
            self.issuer()
        )
    }

    /// An Apple-shaped ID token for the app: the bundle id as `aud`, no `azp`, no name.
    pub fn id_token(&self, claims: Value) -> String {
        let mut all = json!({ "aud": BUNDLE_ID, "azp": null, "name": null });
        all.as_object_mut().unwrap().extend(claims.as_object().unwrap().clone());
        self.idp.id_token(all)
    }

    /// The `authorizationCode` the app got from Apple with an ID token of `sub`.
    pub fn app_code(&self, sub: &str) -> String {
        let code = format!("c{}", uuid::Uuid::new_v4().simple());
        let pending = Code { client_id: BUNDLE_ID.into(), redirect_uri: None, sub: sub.into() };
        self.state.codes.lock().unwrap().insert(code.clone(), pending);
        code
    }

    /// Who `/auth/authorize` signs in next.
    pub fn set_next_user(&self, sub: &str) {
        *self.state.next_user.lock().unwrap() = sub.to_string();
    }

    /// Client secrets the token and revoke endpoints accepted, in order.
    pub fn client_secrets(&self) -> Vec<String> {
        self.state.secrets.lock().unwrap().clone()
    }

    /// Refresh tokens the token endpoint issued, in order.
    pub fn refresh_tokens(&self) -> Vec<String> {
        self.state.refresh_tokens.lock().unwrap().clone()
    }

    /// Every revoke request so far.
    pub fn revokes(&self) -> Vec<Revoked> {
        self.state.revokes.lock().unwrap().clone()
    }

    /// The next `n` revokes answer 503.
    pub fn fail_revokes(&self, n: usize) {
        self.state.failing_revokes.store(n, Ordering::SeqCst);
    }

    /// Waits until Apple has got `count` revoke requests in all (10 s at most), and returns them.
    pub async fn wait_for_revokes(&self, count: usize) -> Vec<Revoked> {
        let wait = async {
            loop {
                let seen = self.state.revoke_seen.notified();
                if self.state.revokes.lock().unwrap().len() >= count {
                    return self.revokes();
                }
                seen.await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("Apple got {:?}, not {count} revokes", self.revokes()))
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

fn form_of(body: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;")
}

/// The hidden fields of the fake's form-post page, as a browser would submit them.
pub fn form_post_fields(html: &str) -> (String, Vec<(String, String)>) {
    let action = html.split("action=\"").nth(1).and_then(|r| r.split('"').next()).expect("form action");
    let unescape = |t: &str| t.replace("&quot;", "\"").replace("&lt;", "<").replace("&amp;", "&");
    let fields = html
        .split("<input type=\"hidden\" name=\"")
        .skip(1)
        .map(|rest| {
            let (name, rest) = rest.split_once("\" value=\"").expect("field");
            (name.to_string(), unescape(rest.split('"').next().expect("value")))
        })
        .collect();
    (unescape(action), fields)
}

/// Checks a client secret: ES256 with the configured key, from the team, about `client_id`,
/// for this issuer, not expired and living at most 180 days.
fn check_client_secret(
    state: &AppleState,
    issuer: &str,
    client_id: &str,
    secret: &str,
) -> Result<(), String> {
    let parts: Vec<&str> = secret.split('.').collect();
    let [header, claims, signature] = parts[..] else { return Err("not a JWT".into()) };
    let decode = |part: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| "not base64url")?;
        serde_json::from_slice(&bytes).map_err(|_| "not JSON".to_string())
    };
    let (header, claims) = (decode(header)?, decode(claims)?);
    if header["alg"] != "ES256" || header["kid"] != KEY_ID {
        return Err(format!("header {header}"));
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| "signature not base64url")?;
    let input = secret.rsplit_once('.').unwrap().0;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &state.public_key)
        .verify(input.as_bytes(), &signature)
        .map_err(|_| "bad signature".to_string())?;
    let (iat, exp) = (claims["iat"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0));
    let fine = claims["iss"] == TEAM_ID
        && claims["sub"] == client_id
        && claims["aud"] == issuer
        && iat <= now() + 60
        && exp > now()
        && exp - iat <= MAX_SECRET_LIFETIME;
    if !fine {
        return Err(format!("claims {claims}"));
    }
    state.secrets.lock().unwrap().push(secret.to_string());
    Ok(())
}

fn invalid_client(why: String) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": "invalid_client", "why": why }))
}

/// Apple's authorization page, consenting at once: a form POST back to `redirect_uri`.
async fn authorize(
    state: web::Data<AppleState>,
    minter: web::Data<Minter>,
    req: actix_web::HttpRequest,
) -> HttpResponse {
    let q = form_of(req.query_string());
    let field = |k: &str| q.get(k).cloned().unwrap_or_default();
    if field("response_mode") != "form_post" || !field("response_type").split(' ').any(|t| t == "code") {
        return HttpResponse::BadRequest().body("response_mode=form_post and a code are required");
    }
    let (client_id, redirect_uri) = (field("client_id"), field("redirect_uri"));
    let sub = state.next_user.lock().unwrap().clone();
    let code = format!("c{}", uuid::Uuid::new_v4().simple());
    let pending =
        Code { client_id: client_id.clone(), redirect_uri: Some(redirect_uri.clone()), sub: sub.clone() };
    state.codes.lock().unwrap().insert(code.clone(), pending);
    let now = now();
    let id_token = minter.sign(&json!({
        "iss": minter.issuer(), "aud": client_id, "sub": sub, "iat": now, "exp": now + 600,
        "nonce": field("nonce"), "email": "relay@privaterelay.appleid.com",
        "email_verified": "true", "is_private_email": "true",
    }));
    let mut fields = vec![("code", code), ("state", field("state")), ("id_token", id_token)];
    if state.authorized.lock().unwrap().insert(sub) {
        let user = json!({ "name": { "firstName": "Ann", "lastName": "Appleseed" }, "email": "relay@privaterelay.appleid.com" });
        fields.push(("user", user.to_string()));
    }
    let inputs: String = fields
        .iter()
        .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", escape(v)))
        .collect();
    HttpResponse::Ok().content_type("text/html").body(format!(
        "<!doctype html><body onload=\"document.forms[0].submit()\"><form method=\"post\" action=\"{}\">{inputs}</form></body>",
        escape(&redirect_uri)
    ))
}

/// Apple's token endpoint: the client secret, then the code, its client and redirect URI.
async fn token(state: web::Data<AppleState>, minter: web::Data<Minter>, body: String) -> HttpResponse {
    let form = form_of(&body);
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let client_id = field("client_id");
    if let Err(why) = check_client_secret(&state, minter.issuer(), &client_id, &field("client_secret")) {
        return invalid_client(why);
    }
    let grant = || HttpResponse::BadRequest().json(json!({ "error": "invalid_grant" }));
    if field("grant_type") != "authorization_code" {
        return HttpResponse::BadRequest().json(json!({ "error": "unsupported_grant_type" }));
    }
    let Some(code) = state.codes.lock().unwrap().remove(&field("code")) else { return grant() };
    if code.client_id != client_id || code.redirect_uri != form.get("redirect_uri").cloned() {
        return grant();
    }
    let refresh_token =
        format!("r{}.0.abcd.{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    state.refresh_tokens.lock().unwrap().push(refresh_token.clone());
    let now = now();
    let id_token = minter.sign(&json!({
        "iss": minter.issuer(), "aud": client_id, "sub": code.sub, "iat": now, "exp": now + 600,
        "email_verified": "true",
    }));
    HttpResponse::Ok().json(json!({
        "access_token": format!("a{}", uuid::Uuid::new_v4().simple()), "token_type": "Bearer",
        "expires_in": 3600, "refresh_token": refresh_token, "id_token": id_token,
    }))
}

/// Apple's revocation endpoint: records every request; answers 503 while told to fail.
async fn revoke(state: web::Data<AppleState>, minter: web::Data<Minter>, body: String) -> HttpResponse {
    let form = form_of(&body);
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    if let Err(why) =
        check_client_secret(&state, minter.issuer(), &client_id, form.get("client_secret").map_or("", |s| s))
    {
        return invalid_client(why);
    }
    let failed =
        state.failing_revokes.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    state.revokes.lock().unwrap().push(Revoked {
        client_id,
        token: form.get("token").cloned().unwrap_or_default(),
        token_type_hint: form.get("token_type_hint").cloned(),
        failed,
    });
    state.revoke_seen.notify_waiters();
    if failed {
        HttpResponse::ServiceUnavailable().finish()
    } else {
        HttpResponse::Ok().finish()
    }
}
