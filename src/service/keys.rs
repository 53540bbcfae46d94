//! Publishing a new signing key now, from the console or the command line: audited, and
//! every replica (this one included) reloads its keys.

use std::sync::Arc;

use crate::audit::AuditAction;
use crate::crypto::signing::{SigningError, SigningKeys};
use crate::db::Db;

use super::Requester;

/// Adds a signing key (published now, signing after `PUBLISH_LEAD_SECS`); returns its kid.
pub async fn rotate_signing(
    db: &Db,
    keys: &Arc<SigningKeys>,
    by: &Requester,
) -> Result<String, SigningError> {
    let (k, by) = (keys.clone(), by.clone());
    let kid = db
        .write(move |conn| {
            let now = crate::clock::now();
            let kid = k.add_key(conn, now)?;
            let detail = format!("kid={kid}");
            by.doing(AuditAction::SigningKeyRotate, None).record(conn, None, None, Some(&detail), now)?;
            Ok::<_, SigningError>(kid)
        })
        .await?;
    let k = keys.clone();
    if let Err(e) = db.run(move |conn| k.reload(conn)).await {
        tracing::warn!(error = %e, "cannot reload signing keys");
    }
    Ok(kid)
}
