//! A fake Facebook on loopback: the Graph API's `debug_token` and `me` (which checks
//! `appsecret_proof`), `oauth/access_token` and a login dialog that consents at once; tokens are
//! registered by the test. Limited Login tokens come from a second `FakeGoogle`, which serves
//! a JWKS and signs RS256 tokens like Facebook's.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpResponse, HttpServer};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

pub const APP_ID: &str = "1234567890";
pub const APP_SECRET: &str = "fb-app-secret";
pub const OTHER_APP_ID: &str = "999999";

/// What `debug_token` says of a user access token.
#[derive(Clone, Debug)]
pub struct FbToken {
    pub app_id: String,
    pub kind: String,
    pub is_valid: bool,
    pub expires_at: i64,
    pub user_id: String,
    pub name: String,
    pub email: Option<String>,
}

struct Shared {
    tokens: Mutex<HashMap<String, FbToken>>,
    /// Codes the dialog handed out, and the access token each is exchanged for.
    codes: Mutex<HashMap<String, String>>,
    failing: AtomicBool,
    graph_calls: AtomicUsize,
}

pub struct FakeFacebook {
    shared: Arc<Shared>,
    base_url: String,
    handle: actix_web::dev::ServerHandle,
}

impl FakeFacebook {
    pub async fn start() -> FakeFacebook {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake facebook");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            tokens: Mutex::new(HashMap::new()),
            codes: Mutex::new(HashMap::new()),
            failing: AtomicBool::new(false),
            graph_calls: AtomicUsize::new(0),
        });
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/v21.0/debug_token", web::get().to(debug_token))
                .route("/v21.0/me", web::get().to(me))
                .route("/v21.0/oauth/access_token", web::get().to(access_token))
                .route("/dialog/oauth", web::get().to(dialog))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)
        .expect("listen fake facebook")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        FakeFacebook { shared, base_url: format!("http://127.0.0.1:{port}"), handle }
    }

    pub fn graph_url(&self) -> String {
        format!("{}/v21.0", self.base_url)
    }

    pub fn dialog_url(&self) -> String {
        format!("{}/dialog/oauth", self.base_url)
    }

    /// A new valid user token of our app for `user_id`.
    pub fn user_token(&self, user_id: &str) -> String {
        self.token_with(FbToken {
            app_id: APP_ID.into(),
            kind: "USER".into(),
            is_valid: true,
            expires_at: super::fake_google::now() + 3600,
            user_id: user_id.into(),
            name: format!("FB {user_id}"),
            email: Some(format!("{user_id}@fb.example")),
        })
    }

    /// Registers a token as `debug_token` will describe it.
    pub fn token_with(&self, token: FbToken) -> String {
        let value = format!("EAA{}", uuid::Uuid::new_v4().simple());
        self.shared.tokens.lock().unwrap().insert(value.clone(), token);
        value
    }

    /// Makes the Graph API answer 500 (an outage) or work again.
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    pub fn graph_calls(&self) -> usize {
        self.shared.graph_calls.load(Ordering::SeqCst)
    }
}

impl Drop for FakeFacebook {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn proof(token: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(APP_SECRET.as_bytes()).unwrap();
    mac.update(token.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn graph_error(message: &str) -> HttpResponse {
    HttpResponse::BadRequest()
        .json(json!({"error": {"message": message, "type": "OAuthException", "code": 190}}))
}

#[derive(Deserialize)]
struct DebugQuery {
    input_token: String,
    access_token: String,
}

async fn debug_token(shared: web::Data<Shared>, q: web::Query<DebugQuery>) -> HttpResponse {
    shared.graph_calls.fetch_add(1, Ordering::SeqCst);
    if shared.failing.load(Ordering::SeqCst) {
        return HttpResponse::InternalServerError().body("graph is down");
    }
    if q.access_token != format!("{APP_ID}|{APP_SECRET}") {
        return graph_error("Invalid OAuth access token signature.");
    }
    let tokens = shared.tokens.lock().unwrap();
    let Some(t) = tokens.get(&q.input_token) else {
        return graph_error("Invalid OAuth access token - Cannot parse access token");
    };
    HttpResponse::Ok().json(json!({"data": {
        "app_id": t.app_id, "type": t.kind, "application": "Test", "expires_at": t.expires_at,
        "is_valid": t.is_valid, "scopes": ["public_profile", "email"], "user_id": t.user_id,
    }}))
}

#[derive(Deserialize)]
struct MeQuery {
    access_token: String,
    appsecret_proof: Option<String>,
}

async fn me(shared: web::Data<Shared>, q: web::Query<MeQuery>) -> HttpResponse {
    shared.graph_calls.fetch_add(1, Ordering::SeqCst);
    if shared.failing.load(Ordering::SeqCst) {
        return HttpResponse::InternalServerError().body("graph is down");
    }
    if q.appsecret_proof.as_deref() != Some(proof(&q.access_token).as_str()) {
        return graph_error("Invalid appsecret_proof provided in the API argument");
    }
    let tokens = shared.tokens.lock().unwrap();
    match tokens.get(&q.access_token) {
        Some(t) if t.is_valid => {
            HttpResponse::Ok().json(json!({"id": t.user_id, "name": t.name, "email": t.email}))
        }
        _ => graph_error("Error validating access token"),
    }
}

#[derive(Deserialize)]
struct DialogQuery {
    client_id: String,
    redirect_uri: String,
    state: String,
    /// The Facebook user who "logs in" (a test knob; Facebook's own dialog asks the person).
    login_as: Option<String>,
}

/// Consents at once and sends the browser back with a code.
async fn dialog(shared: web::Data<Shared>, q: web::Query<DialogQuery>) -> HttpResponse {
    if q.client_id != APP_ID {
        return HttpResponse::BadRequest().body("unknown app");
    }
    let user = q.login_as.clone().unwrap_or_else(|| "fb-browser-user".into());
    let token = FbToken {
        app_id: APP_ID.into(),
        kind: "USER".into(),
        is_valid: true,
        expires_at: super::fake_google::now() + 3600,
        user_id: user.clone(),
        name: format!("FB {user}"),
        email: None,
    };
    let access = format!("EAA{}", uuid::Uuid::new_v4().simple());
    shared.tokens.lock().unwrap().insert(access.clone(), token);
    let code = uuid::Uuid::new_v4().simple().to_string();
    shared.codes.lock().unwrap().insert(code.clone(), access);
    let mut location = url::Url::parse(&q.redirect_uri).expect("redirect_uri");
    location.query_pairs_mut().append_pair("code", &code).append_pair("state", &q.state);
    HttpResponse::Found().insert_header(("Location", location.to_string())).finish()
}

#[derive(Deserialize)]
struct CodeQuery {
    code: String,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// `GET /oauth/access_token?client_id&client_secret&redirect_uri&code`, as Facebook documents it.
fn exchange(shared: &Shared, q: &CodeQuery) -> HttpResponse {
    let (id, secret) = (q.client_id.clone(), q.client_secret.clone());
    if id.as_deref() != Some(APP_ID) || secret.as_deref() != Some(APP_SECRET) {
        return graph_error("Error validating client secret.");
    }
    match shared.codes.lock().unwrap().remove(&q.code) {
        Some(access) => HttpResponse::Ok()
            .json(json!({"access_token": access, "token_type": "bearer", "expires_in": 3600})),
        None => graph_error("This authorization code has been used."),
    }
}

async fn access_token(shared: web::Data<Shared>, q: web::Query<CodeQuery>) -> HttpResponse {
    exchange(&shared, &q)
}
