//! The console's clients: create, disable, enable, delete; each audited, and every replica's
//! registry (this one's before the answer) reloaded.

use secrecy::SecretString;

use crate::audit::AuditAction;
use crate::clients::{self, ClientRegistry, NewClient, NewClientError};
use crate::db::{Db, DbError};
use crate::sessions::devices;

use super::{Requester, StateChange};

/// Stores a new client; a confidential one's secret is returned once (only a hash is kept).
pub async fn create(
    db: &Db,
    registry: &std::sync::Arc<ClientRegistry>,
    new: NewClient,
    by: &Requester,
) -> Result<Result<Option<SecretString>, NewClientError>, DbError> {
    if registry.is_configured(&new.client_id) {
        return Ok(Err(NewClientError::Taken));
    }
    if let Err(e) = clients::check_new_client(&new) {
        return Ok(Err(e));
    }
    let by = by.clone();
    let made = db
        .write(move |conn| {
            let now = crate::clock::now();
            let made = clients::insert_stored(conn, &new, now)?;
            if made.is_ok() {
                let detail = format!("client={} kind={}", new.client_id, new.kind.as_str());
                by.doing(AuditAction::ClientCreate, None).record(conn, None, None, Some(&detail), now)?;
            }
            Ok::<_, DbError>(made)
        })
        .await?;
    if made.is_ok() {
        reload(db, registry).await;
    }
    Ok(made)
}

/// A change to a stored client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Disable,
    Enable,
    /// Its devices end with it, so a client made later under this id inherits none.
    Delete,
}

/// Applies `change` to a client made in the console.
/// (Clients of the configuration file are changed only there: the caller refuses them.)
pub async fn change(
    db: &Db,
    registry: &std::sync::Arc<ClientRegistry>,
    client_id: &str,
    change: Change,
    by: &Requester,
) -> Result<StateChange<()>, DbError> {
    let (id, by) = (client_id.to_string(), by.clone());
    let changed = db
        .write(move |conn| {
            let now = crate::clock::now();
            let (found, action) = match change {
                Change::Disable => {
                    (clients::set_stored_disabled(conn, &id, true, now)?, AuditAction::ClientDisable)
                }
                Change::Enable => {
                    (clients::set_stored_disabled(conn, &id, false, now)?, AuditAction::ClientEnable)
                }
                Change::Delete => (clients::delete_stored(conn, &id)?, AuditAction::ClientDelete),
            };
            if !found {
                let exists = clients::find_stored(conn, &id)?.is_some();
                return Ok(if exists { StateChange::AlreadySo } else { StateChange::Missing });
            }
            if change == Change::Delete {
                let ended =
                    by.doing(AuditAction::DeviceRevoke, Some("its client was deleted in the admin console"));
                for device in devices::unrevoked_of_client(conn, &id)? {
                    devices::end(conn, &device, &ended, now)?;
                }
            }
            let detail = format!("client={id}");
            by.doing(action, None).record(conn, None, None, Some(&detail), now)?;
            Ok::<_, DbError>(StateChange::Done(()))
        })
        .await?;
    if changed == StateChange::Done(()) {
        reload(db, registry).await;
    }
    Ok(changed)
}

/// Reloads this replica's stored clients (the others hear of it through `db::notify`).
pub async fn reload(db: &Db, registry: &std::sync::Arc<ClientRegistry>) {
    let registry = registry.clone();
    if let Err(e) = db.run(move |conn| registry.reload_stored(conn)).await {
        tracing::warn!(error = %e, "cannot reload stored clients");
    }
}
