//! Refresh: a presented refresh token becomes its successor (`sessions::refresh`). On
//! PostgreSQL the common case is one statement committed on return; everything else (a
//! narrower scope, the grace, reuse, refusal) runs in a write transaction.

use std::sync::Arc;

use crate::audit::Origin;
use crate::clients::Client;
use crate::db::DbError;
use crate::sessions::refresh::{self, RefreshRequest, Rotation};
use crate::state::AppState;

/// A refresh request as the token endpoint received it.
pub struct Refresh {
    pub token: String,
    /// A narrower scope for the new access token; absent means the device's whole scope.
    pub scope: Option<String>,
    pub origin: Origin,
    /// The thumbprint of the DPoP key the request proved.
    pub dpop_jkt: Option<String>,
}

pub async fn refresh(
    app: &Arc<AppState>,
    client: Arc<Client>,
    presented: Refresh,
) -> Result<Rotation, DbError> {
    let presented = Arc::new(presented);
    if app.db.target().backend == crate::db::Backend::Postgres && presented.scope.is_none() {
        let (a, c, p) = (app.clone(), client.clone(), presented.clone());
        let common = app
            .db
            .run(move |conn| {
                refresh::rotate_common_case(
                    conn,
                    &a.successor_key,
                    &request(&c, &p),
                    &a.session_policy,
                    crate::clock::now(),
                )
            })
            .await?;
        if let Some(rotated) = common {
            return Ok(rotated);
        }
    }
    let a = app.clone();
    app.db
        .write(move |conn| {
            refresh::rotate(
                conn,
                &a.successor_key,
                &request(&client, &presented),
                &a.session_policy,
                crate::clock::now(),
            )
        })
        .await
}

fn request<'a>(client: &'a Client, presented: &'a Refresh) -> RefreshRequest<'a> {
    RefreshRequest {
        token: &presented.token,
        client_id: &client.id,
        client_scopes: &client.scopes,
        scope: presented.scope.as_deref(),
        origin: &presented.origin,
        dpop_jkt: presented.dpop_jkt.as_deref(),
    }
}
