//! Per-user data keys at work (`/v1/crypto`): encrypt, decrypt, rewrap and rotate. A user's
//! own call only reads (a decrypt may even be served from the key cache); a service's call is
//! a write that records its audit event with it, so no service call goes unaudited; a service
//! call refused for bad input is audited as `crypto.refused`. Rotation is always audited.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::audit::{Actor, AuditAction, AuditEvent, Origin};
use crate::crypto::user_keys::{KeyVersion, Plaintext, UserKeyError, UserKeys};
use crate::db::{Db, DbConnection, DbError};
use crate::state::AppState;

/// One call: who makes it, for which user, from where.
pub struct Call {
    pub actor: Actor,
    pub user_id: String,
    pub origin: Origin,
}

impl Call {
    /// A confidential client acting for a user (rather than the user themself).
    fn for_service(&self) -> bool {
        matches!(self.actor, Actor::Client(_))
    }

    fn record(
        &self,
        conn: &mut DbConnection,
        action: AuditAction,
        detail: Option<&str>,
    ) -> Result<(), DbError> {
        record(conn, &self.actor, Some(&self.user_id), action, detail, &self.origin)
    }
}

fn record(
    conn: &mut DbConnection,
    actor: &Actor,
    user_id: Option<&str>,
    action: AuditAction,
    detail: Option<&str>,
    origin: &Origin,
) -> Result<(), DbError> {
    let event = AuditEvent { actor, action, user_id, device_id: None, detail };
    crate::audit::record(conn, event, origin, crate::clock::now())
}

/// Runs `op` with the user's keys: a read for the user themself; for a service, a write that
/// also records the audit event `action`.
async fn with_user_keys<T: Send + 'static>(
    app: &Arc<AppState>,
    call: Call,
    action: AuditAction,
    op: impl FnOnce(&mut DbConnection, &UserKeys, &str) -> Result<T, UserKeyError> + Send + 'static,
) -> Result<T, UserKeyError> {
    let a = app.clone();
    if !call.for_service() {
        return app.db.run(move |conn| op(conn, &a.user_keys, &call.user_id)).await;
    }
    app.db
        .write(move |conn| {
            let result = op(conn, &a.user_keys, &call.user_id)?;
            call.record(conn, action, None)?;
            Ok(result)
        })
        .await
}

pub async fn encrypt(
    app: &Arc<AppState>,
    call: Call,
    context: String,
    plaintext: Zeroizing<Vec<u8>>,
) -> Result<(String, KeyVersion), UserKeyError> {
    with_user_keys(app, call, AuditAction::CryptoEncrypt, move |conn, keys, user| {
        keys.encrypt(conn, user, &context, &plaintext)
    })
    .await
}

pub async fn decrypt(
    app: &Arc<AppState>,
    call: Call,
    context: String,
    ciphertext: String,
) -> Result<Plaintext, UserKeyError> {
    // The user's own token was just checked live, so a cached key needs no database read.
    if !call.for_service() {
        if let Some(result) = app.user_keys.decrypt_cached(&call.user_id, &context, &ciphertext) {
            return result;
        }
    }
    with_user_keys(app, call, AuditAction::CryptoDecrypt, move |conn, keys, user| {
        keys.decrypt(conn, user, &context, &ciphertext)
    })
    .await
}

pub async fn rewrap(
    app: &Arc<AppState>,
    call: Call,
    context: String,
    ciphertext: String,
) -> Result<(String, KeyVersion), UserKeyError> {
    with_user_keys(app, call, AuditAction::CryptoRewrap, move |conn, keys, user| {
        keys.rewrap(conn, user, &context, &ciphertext)
    })
    .await
}

/// A new key version for new encryptions; audited for every caller (it changes state).
pub async fn rotate(app: &Arc<AppState>, call: Call) -> Result<KeyVersion, UserKeyError> {
    let (a, user_id) = (app.clone(), call.user_id.clone());
    let version = app
        .db
        .write(move |conn| {
            // Concurrent rotations of one user queue here instead of racing for the same version.
            if !crate::accounts::lock_user(conn, &call.user_id)? {
                return Err(UserKeyError::UserGone);
            }
            let version = a.user_keys.rotate(conn, &call.user_id, crate::clock::now())?;
            call.record(conn, AuditAction::CryptoRotate, Some(&format!("key_version={version}")))?;
            Ok(version)
        })
        .await?;
    app.user_keys.forget(&user_id);
    Ok(version)
}

/// Audits a service call refused after its client proved its secret: `crypto.refused`, with
/// the operation and the reason; nothing else of it was committed. A failure to write the
/// event is logged (the refusal is answered anyway).
pub async fn record_refusal(
    db: &Db,
    actor: Actor,
    user_id: Option<String>,
    action: AuditAction,
    reason: String,
    origin: Origin,
) {
    let detail = format!("{}: {reason}", action.as_str());
    let written = db
        .write(move |conn| {
            record(conn, &actor, user_id.as_deref(), AuditAction::CryptoRefused, Some(&detail), &origin)
        })
        .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot audit a refused crypto call");
    }
}
