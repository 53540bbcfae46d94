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
use crate::accounts::audit::{self, AuditEvent, Origin};
use crate::crypto::user_keys::{KeyVersion, UserKeyError, UserKeys};
use crate::db::{DbConnection, DbError};
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
            uuid::Uuid::try_parse(named).map_err(|_| Problem::bad_request("user_id is not a user id"))?;
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

/// Who a call acts as and for whom, for its audit event.
struct CallAudit {
    actor: String,
    user_id: Option<String>,
    origin: Origin,
}

impl CallAudit {
    fn record(&self, conn: &mut DbConnection, action: &str, detail: Option<&str>) -> Result<(), DbError> {
        let user_id = self.user_id.as_deref();
        let event = AuditEvent { actor: &self.actor, action, user_id, device_id: None, detail };
        audit::record(conn, event, &self.origin, crate::db::now())
    }
}

/// A service call refused after its client proved its secret (a bad `user_id`, context or
/// ciphertext, another user's data, a deleted user) is audited as `crypto.refused`, with the
/// reason; nothing else of it was committed. A failure to write that event is logged and the
/// refusal still answered.
async fn audit_refusal<T>(
    state: &web::Data<AppState>,
    caller: &CryptoCaller,
    named: Option<String>,
    req: &HttpRequest,
    action: &'static str,
    result: Result<T, Problem>,
) -> Result<T, Problem> {
    let (Err(problem), CryptoCaller::Service { .. }) = (&result, caller) else {
        return result;
    };
    if !problem.status_code().is_client_error() {
        return result;
    }
    let user_id = named.and_then(|n| uuid::Uuid::try_parse(&n).ok()).map(|id| id.hyphenated().to_string());
    let audit = CallAudit { actor: caller.actor(), user_id, origin: origin(req) };
    let detail = format!("{action}: {}", problem.detail());
    if let Err(e) = state.db.write(move |conn| audit.record(conn, "crypto.refused", Some(&detail))).await {
        tracing::warn!(error = %e, "cannot audit a refused crypto call");
    }
    result
}

/// Runs `op` with the user's keys: a read for the user themself; for a service, a write that
/// also records the audit event, so no service call goes unaudited. (A refused one is undone
/// and audited by [`audit_refusal`].)
async fn with_user_keys<T: Send + 'static>(
    state: &web::Data<AppState>,
    caller: &CryptoCaller,
    user_id: String,
    action: &'static str,
    origin: Origin,
    op: impl FnOnce(&mut DbConnection, &UserKeys, &str) -> Result<T, UserKeyError> + Send + 'static,
) -> Result<T, Problem> {
    let app = state.clone();
    match caller {
        CryptoCaller::User { .. } => Ok(state.db.run(move |conn| op(conn, &app.user_keys, &user_id)).await?),
        CryptoCaller::Service { .. } => {
            let audit = CallAudit { actor: caller.actor(), user_id: Some(user_id), origin };
            Ok(state
                .db
                .write(move |conn| {
                    let user_id = audit.user_id.as_deref().unwrap_or_default();
                    let result = op(conn, &app.user_keys, user_id)?;
                    audit.record(conn, action, None)?;
                    Ok::<_, UserKeyError>(result)
                })
                .await?)
        }
    }
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
    audit_refusal(&state, &caller, named, &req, "crypto.encrypt", result).await
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
        with_user_keys(state, caller, user_id, "crypto.encrypt", origin(req), move |conn, keys, user| {
            keys.encrypt(conn, user, &context, &plaintext)
        })
        .await?;
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
    audit_refusal(&state, &caller, named, &req, "crypto.decrypt", result).await
}

async fn decrypt_for(
    state: &web::Data<AppState>,
    caller: &CryptoCaller,
    req: &HttpRequest,
    body: CiphertextBody,
) -> Result<HttpResponse, Problem> {
    let user_id = caller.user_id(body.user_id.as_deref())?;
    let context = context(body.context)?;
    let ciphertext = body.ciphertext;
    // The user's own token was just checked live, so a cached key needs no database read.
    let cached = match caller {
        CryptoCaller::User { .. } => state.user_keys.decrypt_cached(&user_id, &context, &ciphertext),
        CryptoCaller::Service { .. } => None,
    };
    let plaintext = match cached {
        Some(result) => result?,
        None => {
            with_user_keys(state, caller, user_id, "crypto.decrypt", origin(req), move |conn, keys, user| {
                keys.decrypt(conn, user, &context, &ciphertext)
            })
            .await?
        }
    };
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
    audit_refusal(&state, &caller, named, &req, "crypto.rewrap", result).await
}

async fn rewrap_for(
    state: &web::Data<AppState>,
    caller: &CryptoCaller,
    req: &HttpRequest,
    body: CiphertextBody,
) -> Result<HttpResponse, Problem> {
    let user_id = caller.user_id(body.user_id.as_deref())?;
    let context = context(body.context)?;
    let ciphertext = body.ciphertext;
    let (ciphertext, version) =
        with_user_keys(state, caller, user_id, "crypto.rewrap", origin(req), move |conn, keys, user| {
            keys.rewrap(conn, user, &context, &ciphertext)
        })
        .await?;
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
    audit_refusal(&state, &caller, named, &req, "crypto.rotate", result).await
}

async fn rotate_for(
    state: &web::Data<AppState>,
    caller: &CryptoCaller,
    req: &HttpRequest,
    body: RotateBody,
) -> Result<HttpResponse, Problem> {
    let user_id = caller.user_id(body.user_id.as_deref())?;
    let audit = CallAudit { actor: caller.actor(), user_id: Some(user_id.clone()), origin: origin(req) };
    let app = state.clone();
    let evict = user_id.clone();
    let version: KeyVersion = state
        .db
        .write(move |conn| {
            // Concurrent rotations of one user queue here instead of racing for the same version.
            if !crate::accounts::lock_user(conn, &user_id)? {
                return Err(UserKeyError::UserGone);
            }
            let version = app.user_keys.rotate(conn, &user_id, crate::db::now())?;
            audit.record(conn, "crypto.rotate", Some(&format!("key_version={version}")))?;
            Ok::<_, UserKeyError>(version)
        })
        .await?;
    state.user_keys.forget(&evict);
    Ok(HttpResponse::Ok().json(json!({ "key_version": version })))
}
