//! `/v1/crypto`: encrypt, decrypt, rewrap and rotate with a user's data key.
//! Callers are the user (their Bearer access token) or a confidential client granted scope
//! `crypto` (HTTP Basic) naming the user in `user_id`; every service call is audited.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;

use super::auth::{origin, CryptoCaller};
use super::errors::Problem;
use super::openapi::answers::CryptoErrors;
use crate::audit::AuditAction;
use crate::crypto::user_keys::UserKeyError;
use crate::ids::UserId;
use crate::service::{self, crypto::Call};
use crate::state::AppState;

/// Longest `context` accepted.
const MAX_CONTEXT: usize = 1024;

/// What to encrypt.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct EncryptBody {
    /// The bytes, in canonical standard base64 with padding (RFC 4648 §4: unused bits are 0)
    #[schema(
        pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$"
    )]
    plaintext: String,
    /// Bound in as associated data: decrypting needs it again (at most 1024 characters, no NUL)
    #[schema(max_length = 1024, pattern = r"^[^\u0000]*$")]
    context: Option<String>,
    /// A service only: the user (a user may name only themselves)
    #[schema(format = Uuid, pattern = "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")]
    user_id: Option<String>,
}

/// A ciphertext of `encrypt` or `rewrap`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct CiphertextBody {
    /// `idb1:v<key version>:<base64url>`, as `encrypt` or `rewrap` gave it
    #[schema(
        min_length = 62,
        pattern = r"^idb1:v[1-9][0-9]{0,8}:(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?$"
    )]
    ciphertext: String,
    /// The context it was made with
    #[schema(max_length = 1024, pattern = r"^[^\u0000]*$")]
    context: Option<String>,
    /// A service only: the user (a user may name only themselves)
    #[schema(format = Uuid, pattern = "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")]
    user_id: Option<String>,
}

/// Whose key to rotate; a user's own call may send no body.
#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct RotateBody {
    /// A service only: the user (a user may name only themselves)
    #[schema(format = Uuid, pattern = "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")]
    user_id: Option<String>,
}

/// A ciphertext and the key version that made it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Sealed {
    /// `idb1:v<key version>:<base64url>`
    ciphertext: String,
    key_version: i32,
}

/// Decrypted bytes.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Opened {
    /// Standard base64 with padding
    plaintext: String,
}

/// The user's newest key version.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct KeyVersion {
    key_version: i32,
}

impl From<UserKeyError> for Problem {
    fn from(e: UserKeyError) -> Self {
        match e {
            UserKeyError::Malformed => Problem::bad_request("the ciphertext is malformed"),
            UserKeyError::Invalid => {
                Problem::bad_request("the ciphertext cannot be decrypted for this user and context")
            }
            UserKeyError::UserGone => {
                Problem::not_found("the user no longer exists; their keys are destroyed")
            }
            UserKeyError::Db(db) => db.into(),
            UserKeyError::Unwrap(e) => {
                tracing::error!(error = %e, "a user key cannot be unwrapped");
                Problem::internal()
            }
        }
    }
}

impl CiphertextBody {
    /// `context` and `user_id` as the handlers check them (the `cargo fuzz` target
    /// `crypto_json` runs the JSON parser and this).
    pub fn check_fields(&self) -> Result<(), Problem> {
        context(self.context.clone())?;
        if let Some(named) = &self.user_id {
            UserId::parse(named).ok_or_else(|| Problem::bad_request("user_id is not a user id"))?;
        }
        Ok(())
    }
}

fn context(value: Option<String>) -> Result<String, Problem> {
    let context = value.unwrap_or_default();
    if context.chars().count() > MAX_CONTEXT || context.contains('\0') {
        return Err(Problem::bad_request(format!(
            "context must be at most {MAX_CONTEXT} characters, without NUL"
        )));
    }
    Ok(context)
}

/// An optional JSON body: none (or `null`), or a well-formed one of `application/json`.
fn optional_json<T: serde::de::DeserializeOwned + Default>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<T, Problem> {
    if body.is_empty() {
        return Ok(T::default());
    }
    let content_type = req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let essence = content_type.and_then(|v| v.split(';').next()).map(str::trim);
    if !essence.is_some_and(|e| e.eq_ignore_ascii_case("application/json")) {
        return Err(Problem::bad_request("the body must be application/json"));
    }
    let parsed: Option<T> = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("the JSON body is malformed: {e}")))?;
    Ok(parsed.unwrap_or_default())
}

/// A service call refused after its client proved its secret (a bad `user_id`, context or
/// ciphertext, another user's data, a deleted user) is audited (`service::crypto`).
async fn audit_refusal<T>(
    state: &web::Data<AppState>,
    caller: &CryptoCaller,
    named: Option<String>,
    req: &HttpRequest,
    action: AuditAction,
    result: Result<T, Problem>,
) -> Result<T, Problem> {
    let (Err(problem), CryptoCaller::Service { .. }) = (&result, caller) else {
        return result;
    };
    if !problem.status_code().is_client_error() {
        return result;
    }
    let user_id = named.and_then(|n| UserId::parse(&n)).map(|id| id.to_string());
    let reason = problem.detail().to_string();
    service::crypto::record_refusal(&state.db, caller.actor(), user_id, action, reason, origin(req)).await;
    result
}

/// The call a request makes, once its user is known.
fn call(caller: &CryptoCaller, req: &HttpRequest, user_id: String) -> Call {
    Call { actor: caller.actor(), user_id, origin: origin(req) }
}

/// Encrypt
///
/// Under the user's newest data key (XChaCha20-Poly1305), the context bound in.
#[utoipa::path(post, path = "/v1/crypto/encrypt", tag = "crypto",
    request_body(content = EncryptBody, content_type = "application/json"),
    security(("bearer" = []), ("dpop" = []), ("basic" = [])),
    responses((status = 200, description = "The ciphertext", body = Sealed), CryptoErrors))]
pub async fn encrypt(
    state: web::Data<AppState>,
    caller: CryptoCaller,
    req: HttpRequest,
    body: web::Json<EncryptBody>,
) -> Result<HttpResponse, Problem> {
    let body = body.into_inner();
    let named = body.user_id.clone();
    let result = encrypt_for(&state, &caller, &req, body).await;
    audit_refusal(&state, &caller, named, &req, AuditAction::CryptoEncrypt, result).await
}

async fn encrypt_for(
    state: &web::Data<AppState>,
    caller: &CryptoCaller,
    req: &HttpRequest,
    body: EncryptBody,
) -> Result<HttpResponse, Problem> {
    let user_id = caller.user_id(body.user_id.as_deref())?;
    let context = context(body.context)?;
    let plaintext = zeroize::Zeroizing::new(
        STANDARD
            .decode(body.plaintext.as_bytes())
            .map_err(|_| Problem::bad_request("plaintext must be base64"))?,
    );
    let (ciphertext, version) =
        service::crypto::encrypt(state, call(caller, req, user_id), context, plaintext).await?;
    Ok(HttpResponse::Ok().json(Sealed { ciphertext, key_version: version }))
}

/// Decrypt
///
/// One of the user's ciphertexts, with the context it was made with.
#[utoipa::path(post, path = "/v1/crypto/decrypt", tag = "crypto",
    request_body(content = CiphertextBody, content_type = "application/json"),
    security(("bearer" = []), ("dpop" = []), ("basic" = [])),
    responses((status = 200, description = "The plaintext", body = Opened), CryptoErrors))]
pub async fn decrypt(
    state: web::Data<AppState>,
    caller: CryptoCaller,
    req: HttpRequest,
    body: web::Json<CiphertextBody>,
) -> Result<HttpResponse, Problem> {
    let body = body.into_inner();
    let named = body.user_id.clone();
    let result = decrypt_for(&state, &caller, &req, body).await;
    audit_refusal(&state, &caller, named, &req, AuditAction::CryptoDecrypt, result).await
}

async fn decrypt_for(
    state: &web::Data<AppState>,
    caller: &CryptoCaller,
    req: &HttpRequest,
    body: CiphertextBody,
) -> Result<HttpResponse, Problem> {
    let user_id = caller.user_id(body.user_id.as_deref())?;
    let context = context(body.context)?;
    let plaintext =
        service::crypto::decrypt(state, call(caller, req, user_id), context, body.ciphertext).await?;
    Ok(HttpResponse::Ok().json(Opened { plaintext: STANDARD.encode(&*plaintext) }))
}

/// Rewrap
///
/// Moves a ciphertext to the user's newest key version, never returning plaintext.
#[utoipa::path(post, path = "/v1/crypto/rewrap", tag = "crypto",
    request_body(content = CiphertextBody, content_type = "application/json"),
    security(("bearer" = []), ("dpop" = []), ("basic" = [])),
    responses((status = 200, description = "The new ciphertext", body = Sealed), CryptoErrors))]
pub async fn rewrap(
    state: web::Data<AppState>,
    caller: CryptoCaller,
    req: HttpRequest,
    body: web::Json<CiphertextBody>,
) -> Result<HttpResponse, Problem> {
    let body = body.into_inner();
    let named = body.user_id.clone();
    let result = rewrap_for(&state, &caller, &req, body).await;
    audit_refusal(&state, &caller, named, &req, AuditAction::CryptoRewrap, result).await
}

async fn rewrap_for(
    state: &web::Data<AppState>,
    caller: &CryptoCaller,
    req: &HttpRequest,
    body: CiphertextBody,
) -> Result<HttpResponse, Problem> {
    let user_id = caller.user_id(body.user_id.as_deref())?;
    let context = context(body.context)?;
    let (ciphertext, version) =
        service::crypto::rewrap(state, call(caller, req, user_id), context, body.ciphertext).await?;
    Ok(HttpResponse::Ok().json(Sealed { ciphertext, key_version: version }))
}

/// Rotate the user's key
///
/// A new key version for new encryptions; older versions keep decrypting. Audited for every
/// caller (it changes state).
#[utoipa::path(post, path = "/v1/crypto/rotate", tag = "crypto",
    request_body(content = Option<RotateBody>, description = "May be absent for a user's own call", content_type = "application/json"),
    security(("bearer" = []), ("dpop" = []), ("basic" = [])),
    responses((status = 200, description = "The new version", body = KeyVersion), CryptoErrors))]
pub async fn rotate(
    state: web::Data<AppState>,
    caller: CryptoCaller,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let body: RotateBody = optional_json(&req, &body)?;
    let named = body.user_id.clone();
    let result = rotate_for(&state, &caller, &req, body).await;
    audit_refusal(&state, &caller, named, &req, AuditAction::CryptoRotate, result).await
}

async fn rotate_for(
    state: &web::Data<AppState>,
    caller: &CryptoCaller,
    req: &HttpRequest,
    body: RotateBody,
) -> Result<HttpResponse, Problem> {
    let user_id = caller.user_id(body.user_id.as_deref())?;
    let version = service::crypto::rotate(state, call(caller, req, user_id)).await?;
    Ok(HttpResponse::Ok().json(KeyVersion { key_version: version }))
}
