//! A user's provider identities: linking one proven by a fresh assertion, unlinking one
//! (never the last); and the browser flow's logins (kept server-side while the person is at
//! the provider, taken once) and its authorization code for a verified sign-in.

use std::sync::Arc;

use crate::accounts::profile::{self, Link, Linked, Unlinked};
use crate::accounts::{self, SignInError};
use crate::audit::Origin;
use crate::ids::UserId;
use crate::providers::{ProviderKind, VerifiedAssertion};
use crate::state::AppState;
use crate::tokens::codes::{self, LoginState};

/// Links `assertion`'s identity to `user`, spending its proof (`nonce`, issued to `client_id`).
pub async fn link(
    app: &Arc<AppState>,
    user: &UserId,
    client_id: String,
    assertion: VerifiedAssertion,
    nonce: Option<String>,
    origin: Origin,
) -> Result<Linked, SignInError> {
    let (a, user) = (app.clone(), user.clone());
    app.db
        .write(move |conn| {
            let link = Link {
                user_id: user.as_str(),
                client_id: &client_id,
                assertion: &assertion,
                nonce: nonce.as_deref(),
                origin: &origin,
            };
            profile::link_identity(conn, &a.sign_in_keys(), &link, crate::clock::now())
        })
        .await
}

pub async fn unlink(
    app: &AppState,
    user: &UserId,
    provider: ProviderKind,
    origin: Origin,
) -> Result<Unlinked, crate::db::DbError> {
    let user = user.clone();
    app.db
        .write(move |conn| {
            let by = crate::audit::Actor::User(user.as_str().to_string());
            profile::unlink_identity(
                conn,
                user.as_str(),
                provider.as_str(),
                &by,
                &origin,
                crate::clock::now(),
            )
        })
        .await
}

/// The browser flow's end: the provider proved who the person is; spends the proof and
/// issues the one-time code that the client redeems (`sign_in::redeem`).
pub async fn issue_code(
    app: &Arc<AppState>,
    login: LoginState,
    assertion: VerifiedAssertion,
) -> Result<String, SignInError> {
    let a = app.clone();
    app.db
        .write(move |conn| {
            let now = crate::clock::now();
            accounts::spend_proof(conn, &a.sign_in_keys(), &assertion, None, &login.client_id, now)?;
            Ok(codes::issue_code(conn, a.user_keys.keyring(), &login, &assertion, now)?)
        })
        .await
}

/// Keeps a browser login while the person is at the provider.
pub async fn save_login(app: &AppState, login: LoginState) -> Result<(), crate::db::DbError> {
    app.db.write(move |conn| codes::save_login(conn, &login)).await
}

/// Takes the login `id` bound to this browser (the hash of its cookie), once: a read first,
/// so a made-up id costs no write. `None` when it is unknown, expired or already taken.
pub async fn take_login(
    app: &AppState,
    id: String,
    browser_hash: String,
) -> Result<Option<LoginState>, crate::db::DbError> {
    let (probe_id, probe_hash) = (id.clone(), browser_hash.clone());
    if !app.db.run(move |conn| codes::login_exists(conn, &probe_id, &probe_hash)).await? {
        return Ok(None);
    }
    app.db.write(move |conn| codes::take_login(conn, &id, &browser_hash, crate::clock::now())).await
}
