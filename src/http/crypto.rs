//! `/v1/crypto`: encrypt, decrypt, rewrap and rotate with a user's data key.
//! Callers are the user (their Bearer access token) or a confidential client granted scope
//! `crypto` (HTTP Basic) naming the user in `user_id`; every service call is audited.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::auth::{origin, CryptoCaller};
use super::errors::Problem;
use crate::audit::AuditAction;
use crate::crypto::user_keys::UserKeyError;
use crate::ids::UserId;
use crate::service::{self, crypto::Call};
use crate::state::AppState;

/// Longest `context` accepted.
const MAX_CONTEXT: usize = 1024;

#[derive(Deserialize)]
pub struct EncryptBody {
    plaintext: String,
    context: Option<String>,
    user_id: Option<String>,
}

#[derive(Deserialize)]
pub struct CiphertextBody {
    ciphertext: String,
    context: Option<String>,
    user_id: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct RotateBody {
    user_id: Option<String>,
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
    if context.len() > MAX_CONTEXT || context.contains('\0') {
        return Err(Problem::bad_request(format!(
            "context must be at most {MAX_CONTEXT} bytes, without NUL"
        )));
    }
    Ok(context)
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
    Ok(HttpResponse::Ok().json(json!({ "ciphertext": ciphertext, "key_version": version })))
}

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
    Ok(HttpResponse::Ok().json(json!({ "plaintext": STANDARD.encode(&*plaintext) })))
}

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
    Ok(HttpResponse::Ok().json(json!({ "ciphertext": ciphertext, "key_version": version })))
}

/// A new key version for new encryptions; audited for every caller (it changes state).
pub async fn rotate(
    state: web::Data<AppState>,
    caller: CryptoCaller,
    req: HttpRequest,
    body: Option<web::Json<RotateBody>>,
) -> Result<HttpResponse, Problem> {
    let body = body.map(web::Json::into_inner).unwrap_or_default();
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
    Ok(HttpResponse::Ok().json(json!({ "key_version": version })))
}
