//! A resource server: a small actix API that accepts idbridge access tokens and verifies them
//! offline against idbridge's JWKS (RFC 9068 access tokens, RFC 6750 errors).
//!
//! ```sh
//! IDBRIDGE_ISSUER=http://127.0.0.1:8080 IDBRIDGE_AUDIENCE=http://127.0.0.1:8080/api \
//!     cargo run --example resource_server            # listens on 127.0.0.1:9090
//! curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:9090/notes
//! ```
//!
//! Checks: the signature with the key the JWKS names by `kid` (the JWKS is cached and fetched
//! again, at most every 10 s, when a token names a kid it does not have, which is how a
//! rotated key arrives), `typ` `at+jwt`, `iss`, `aud`, `exp` (with 30 s leeway) and the scope
//! the route needs. A bad or expired token is `401` with `WWW-Authenticate: Bearer
//! error="invalid_token"`; a valid token without the scope is `403` with
//! `error="insufficient_scope"`. Offline checking means a revoked device's access token works
//! here until it expires (`tokens.access_ttl`, 10 minutes by default); call idbridge's
//! `/oauth/introspect` where that matters.
//!
//! DPoP (RFC 9449 §7): a token bound to a key (`cnf.jkt`) must come as `Authorization: DPoP
//! <token>` with a `DPoP` proof of this request (`htm`, `htu`, `ath`, `iat` within 5 minutes,
//! a `jti` not seen before) signed by that key; as `Bearer`, or without a proof, it is `401`
//! with a `DPoP` challenge. Unbound tokens keep working as `Bearer`.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;

/// Least time between two JWKS fetches caused by unknown kids.
const REFETCH_AFTER: Duration = Duration::from_secs(10);

/// What the API needs to know about idbridge.
#[derive(Clone)]
pub struct Issuer {
    pub issuer: String,
    pub audience: String,
}

/// idbridge's verification keys by `kid`, parsed once.
pub struct Jwks {
    url: String,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, (Algorithm, DecodingKey)>>,
    fetched_at: RwLock<Option<Instant>>,
}

impl Jwks {
    pub fn new(issuer: &str) -> Self {
        Self {
            url: format!("{issuer}/.well-known/jwks.json"),
            http: reqwest::Client::new(),
            keys: RwLock::new(HashMap::new()),
            fetched_at: RwLock::new(None),
        }
    }

    fn cached(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).get(kid).cloned()
    }

    /// The key for `kid`: from the cache, or after one fetch of the JWKS.
    pub async fn key(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        if let Some(key) = self.cached(kid) {
            return Some(key);
        }
        let recently = self
            .fetched_at
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < REFETCH_AFTER);
        if recently {
            return None;
        }
        *self.fetched_at.write().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let set: JwkSet = self.http.get(&self.url).send().await.ok()?.json().await.ok()?;
        let mut parsed = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Some(alg)) = (jwk.common.key_id.clone(), jwk.common.key_algorithm) else {
                continue;
            };
            let Ok(alg) = alg.to_string().parse::<Algorithm>() else { continue };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                parsed.insert(kid, (alg, key));
            }
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = parsed;
        self.cached(kid)
    }
}

/// The claims the API uses.
#[derive(Debug, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub client_id: String,
    #[serde(default)]
    pub scope: String,
    /// The DPoP key the token is bound to, if it is.
    pub cnf: Option<Confirmation>,
}

#[derive(Debug, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
}

/// A DPoP proof's claims (RFC 9449 §4.2).
#[derive(Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    ath: Option<String>,
}

/// The `jti`s of the proofs accepted in the last minutes: a proof is single use.
#[derive(Default)]
pub struct SeenProofs(Mutex<HashMap<String, i64>>);

pub enum Refusal {
    /// 401: missing, malformed, badly signed, expired, another issuer or audience, not an access token.
    InvalidToken,
    /// 401: a DPoP-bound token without a valid proof of this request by its key.
    InvalidProof,
    /// 403: valid, but without the scope.
    InsufficientScope(&'static str),
}

impl Refusal {
    fn answer(&self) -> HttpResponse {
        match self {
            Refusal::InvalidToken => HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""))
                .json(json!({"error": "invalid_token"})),
            Refusal::InvalidProof => HttpResponse::Unauthorized()
                .insert_header((
                    header::WWW_AUTHENTICATE,
                    "DPoP error=\"invalid_dpop_proof\", algs=\"ES256 EdDSA\"",
                ))
                .json(json!({"error": "invalid_dpop_proof"})),
            Refusal::InsufficientScope(scope) => HttpResponse::Forbidden()
                .insert_header((
                    header::WWW_AUTHENTICATE,
                    format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\""),
                ))
                .json(json!({"error": "insufficient_scope", "scope": scope})),
        }
    }
}

/// Verifies the request's Bearer token and that it carries `scope`.
pub async fn authorize(req: &HttpRequest, scope: &'static str) -> Result<Claims, Refusal> {
    let issuer = req.app_data::<web::Data<Issuer>>().ok_or(Refusal::InvalidToken)?;
    let jwks = req.app_data::<web::Data<Jwks>>().ok_or(Refusal::InvalidToken)?;
    let (scheme, token) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("dpop"))
        .map(|(scheme, token)| (scheme, token.trim()))
        .ok_or(Refusal::InvalidToken)?;
    let head = jsonwebtoken::decode_header(token).map_err(|_| Refusal::InvalidToken)?;
    // RFC 9068 §2.1: an access token says so; an ID token (typ JWT) is refused.
    if head.typ.as_deref() != Some("at+jwt") {
        return Err(Refusal::InvalidToken);
    }
    let kid = head.kid.ok_or(Refusal::InvalidToken)?;
    let (alg, key) = jwks.key(&kid).await.ok_or(Refusal::InvalidToken)?;
    if alg != head.alg {
        return Err(Refusal::InvalidToken);
    }
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[&issuer.issuer]);
    validation.set_audience(&[&issuer.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 30;
    let claims =
        jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|_| Refusal::InvalidToken)?.claims;
    match &claims.cnf {
        Some(cnf) if scheme.eq_ignore_ascii_case("dpop") => check_proof(req, token, &cnf.jkt)?,
        Some(_) => return Err(Refusal::InvalidProof),
        None if scheme.eq_ignore_ascii_case("dpop") => return Err(Refusal::InvalidToken),
        None => {}
    }
    if !claims.scope.split(' ').any(|s| s == scope) {
        return Err(Refusal::InsufficientScope(scope));
    }
    Ok(claims)
}

/// RFC 9449 §7.1: one `DPoP` proof, by the token's key (`jkt`), for this request and token,
/// recent, and never seen before.
fn check_proof(req: &HttpRequest, token: &str, jkt: &str) -> Result<(), Refusal> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut proofs = req.headers().get_all("dpop");
    let (Some(proof), None) = (proofs.next(), proofs.next()) else {
        return Err(Refusal::InvalidProof);
    };
    let proof = proof.to_str().map_err(|_| Refusal::InvalidProof)?;
    let head = jsonwebtoken::decode_header(proof).map_err(|_| Refusal::InvalidProof)?;
    let jwk = head.jwk.as_ref().ok_or(Refusal::InvalidProof)?;
    let allowed = matches!(head.alg, Algorithm::ES256 | Algorithm::EdDSA);
    let thumbprint = jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256).ok();
    if head.typ.as_deref() != Some("dpop+jwt") || !allowed || thumbprint.as_deref() != Some(jkt) {
        return Err(Refusal::InvalidProof);
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| Refusal::InvalidProof)?;
    let mut validation = Validation::new(head.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let p = jsonwebtoken::decode::<ProofClaims>(proof, &key, &validation)
        .map_err(|_| Refusal::InvalidProof)?
        .claims;
    // This request's URL as the client addressed it (behind a proxy: its public URL).
    let info = req.connection_info();
    let url = format!("{}://{}{}", info.scheme(), info.host(), req.path());
    let target = |u: &str| {
        reqwest::Url::parse(u).ok().map(|mut u| {
            u.set_query(None);
            u.set_fragment(None);
            u
        })
    };
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let ath = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes()));
    if p.htm != req.method().as_str()
        || target(&p.htu).is_none()
        || target(&p.htu) != target(&url)
        || p.iat < now - 300
        || p.iat > now + 5
        || p.ath.as_deref() != Some(ath.as_str())
    {
        return Err(Refusal::InvalidProof);
    }
    let seen = req.app_data::<web::Data<SeenProofs>>().ok_or(Refusal::InvalidProof)?;
    let mut seen = seen.0.lock().unwrap_or_else(|p| p.into_inner());
    seen.retain(|_, until| *until > now);
    if seen.insert(format!("{jkt} {}", p.jti), now + 305).is_some() {
        return Err(Refusal::InvalidProof);
    }
    Ok(())
}

/// `GET /notes`: needs scope `api`.
async fn notes(req: HttpRequest) -> HttpResponse {
    match authorize(&req, "api").await {
        Ok(claims) => {
            HttpResponse::Ok().json(json!({"owner": claims.sub, "client": claims.client_id, "notes": []}))
        }
        Err(refusal) => refusal.answer(),
    }
}

/// `GET /admin/reports`: needs scope `reports` (which idbridge's dev clients do not grant).
async fn reports(req: HttpRequest) -> HttpResponse {
    match authorize(&req, "reports").await {
        Ok(claims) => HttpResponse::Ok().json(json!({"for": claims.sub})),
        Err(refusal) => refusal.answer(),
    }
}

/// The API's routes, for `main` and for tests.
pub fn configure(issuer: Issuer) -> impl Fn(&mut web::ServiceConfig) + Clone {
    let jwks = web::Data::new(Jwks::new(&issuer.issuer));
    let issuer = web::Data::new(issuer);
    let seen = web::Data::new(SeenProofs::default());
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(issuer.clone())
            .app_data(jwks.clone())
            .app_data(seen.clone())
            .route("/notes", web::get().to(notes))
            .route("/admin/reports", web::get().to(reports));
    }
}

#[allow(dead_code)]
#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let issuer = Issuer {
        issuer: var("IDBRIDGE_ISSUER", "http://127.0.0.1:8080"),
        audience: var("IDBRIDGE_AUDIENCE", "http://127.0.0.1:8080/api"),
    };
    let bind = var("BIND", "127.0.0.1:9090");
    let routes = configure(issuer);
    println!("resource server on http://{bind}");
    HttpServer::new(move || App::new().configure(routes.clone())).bind(bind)?.run().await
}
