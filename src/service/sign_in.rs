//! Sign-in: a verified provider assertion (token exchange) or a redeemed authorization code
//! (the browser flow, the console's own sign-in) becomes a session.
//!
//! On PostgreSQL, a request without a nonce first tries the one-statement paths
//! (`sessions::returning`): a returning user's sign-in, then a new user's, each committed on
//! return. Anything they do not cover takes the general path in a write transaction:
//! `accounts::admit` (the proof spent, the user found or made, a disabled one refused) and
//! `sessions::devices::open` (the device, its first refresh token, the audit, the cap).

use crate::accounts::{self, SignInError};
use crate::audit::{Actor, AuditAction, Origin};
use crate::clients::Client;
use crate::db::{Backend, DbConnection, DbError};
use crate::sessions::{self, devices, returning, SignIn, SignedIn};
use crate::state::AppState;
use crate::tokens::codes;

/// Records a sign-in and opens its session.
pub async fn sign_in(app: &std::sync::Arc<AppState>, request: SignIn) -> Result<SignedIn, SignInError> {
    let on_postgres = app.db.target().backend == Backend::Postgres;
    // The one-statement paths cover neither a nonce to spend nor a provider token to keep.
    let quick_path = request.nonce.is_none() && request.assertion.upstream.is_none();
    let request = if on_postgres && quick_path {
        let a = app.clone();
        let (request, quick) = app.db.run(move |conn| one_statement(conn, &a, request)).await?;
        if let Some((signed_in, over_cap)) = quick {
            if over_cap {
                let (user_id, origin, policy) =
                    (signed_in.user_id.clone(), request.origin.clone(), app.session_policy.clone());
                app.db
                    .write(move |conn| {
                        devices::enforce_cap(conn, &user_id, &policy, &origin, crate::clock::now())
                    })
                    .await?;
            }
            return Ok(signed_in);
        }
        request
    } else {
        request
    };
    let a = app.clone();
    app.db.write(move |conn| sign_in_in(conn, &a, &request, crate::clock::now())).await
}

/// PostgreSQL's one-statement sign-in: a returning user's, else a new user's. Hands the
/// request back with what it came to (`None`: take the general path).
fn one_statement(
    conn: &mut DbConnection,
    app: &AppState,
    request: SignIn,
) -> Result<(SignIn, Option<(SignedIn, bool)>), DbError> {
    let now = crate::clock::now();
    let mut quick = returning::sign_in_returning(conn, &request, &app.session_policy, now)?;
    if quick.is_none() {
        quick = returning::sign_in_new_user(conn, &request, &app.session_policy, &app.sign_in_keys(), now)?
            .map(|signed_in| (signed_in, false));
    }
    Ok((request, quick))
}

/// The general sign-in, in the caller's write transaction.
pub fn sign_in_in(
    conn: &mut DbConnection,
    app: &AppState,
    request: &SignIn,
    now: i64,
) -> Result<SignedIn, SignInError> {
    let user_id = accounts::admit(
        conn,
        &app.sign_in_keys(),
        &request.assertion,
        request.nonce.as_deref(),
        &request.client_id,
        now,
    )?;
    Ok(devices::open(conn, &user_id, request, &app.session_policy, now)?)
}

/// What redeeming a code came to, inside its transaction.
pub enum CodeOutcome {
    Signed(Box<SignedIn>, Box<codes::Redeemed>),
    Refused(&'static str),
    /// `known_users_only` was asked and the code proves an identity no user has: nothing was
    /// made (the code is spent).
    NoUser {
        provider: String,
    },
}

/// A code to redeem, as the token endpoint (or the admin console) received it.
pub struct CodeRedemption {
    pub code: String,
    pub redirect_uri: String,
    pub verifier: String,
    pub device_name: Option<String>,
    pub device_platform: Option<String>,
    pub origin: Origin,
    /// The thumbprint of the DPoP key the request proved: a code bound to a key needs it, and
    /// the device is bound to it.
    pub dpop_jkt: Option<String>,
    /// Sign in only a user who exists already (the admin console): an unknown identity makes
    /// no user and comes back as [`CodeOutcome::NoUser`].
    pub known_users_only: bool,
}

/// Redeems an authorization code and records the sign-in it proves.
pub async fn redeem(
    app: &std::sync::Arc<AppState>,
    client: std::sync::Arc<Client>,
    request: CodeRedemption,
) -> Result<CodeOutcome, SignInError> {
    let a = app.clone();
    app.db.write(move |conn| redeem_in(conn, &a, &client, &request, crate::clock::now())).await
}

/// Redeems a code in the caller's write transaction and records the sign-in it proves, as
/// token exchange records one. A code used twice revokes the device it made (RFC 6749 §4.1.2).
pub fn redeem_in(
    conn: &mut DbConnection,
    app: &AppState,
    client: &Client,
    request: &CodeRedemption,
    now: i64,
) -> Result<CodeOutcome, SignInError> {
    let presented = codes::PresentedCode {
        code: &request.code,
        client_id: &client.id,
        redirect_uri: &request.redirect_uri,
        verifier: &request.verifier,
        dpop_jkt: request.dpop_jkt.as_deref(),
    };
    let redeemed = match codes::redeem(conn, app.user_keys.keyring(), &presented, now)? {
        Ok(redeemed) => redeemed,
        Err(codes::CodeRefused::Reused { device_id }) => {
            if let Some(device) = device_id.map(|id| sessions::find(conn, &id)).transpose()?.flatten() {
                let by = crate::audit::Attribution {
                    actor: &Actor::Client(client.id.clone()),
                    action: AuditAction::AuthorizationCodeReuse,
                    detail: Some("an authorization code was redeemed twice; its device is revoked"),
                    origin: &request.origin,
                };
                devices::end(conn, &device, &by, now)?;
            }
            return Ok(CodeOutcome::Refused("the code was already used; the tokens it gave are revoked"));
        }
        Err(codes::CodeRefused::PkceMismatch) => {
            return Ok(CodeOutcome::Refused("the code_verifier does not match"))
        }
        Err(codes::CodeRefused::DpopMismatch) => {
            return Ok(CodeOutcome::Refused("the code is bound to a DPoP key this request did not prove"))
        }
        Err(codes::CodeRefused::RedirectMismatch) => {
            return Ok(CodeOutcome::Refused("redirect_uri is not the one the code was issued for"))
        }
        Err(_) => return Ok(CodeOutcome::Refused("the code is invalid or expired")),
    };
    if request.known_users_only
        && accounts::find_identity(conn, redeemed.assertion.provider.as_str(), &redeemed.assertion.subject)?
            .is_none()
    {
        return Ok(CodeOutcome::NoUser { provider: redeemed.assertion.provider.as_str().to_string() });
    }
    let sign_in = SignIn {
        assertion: redeemed.assertion.clone(),
        nonce: None,
        client_id: client.id.clone(),
        // What the client may still grant now, of what was asked at /authorize.
        scope: client.current_scope(&redeemed.scope),
        device_name: request.device_name.clone(),
        device_platform: request.device_platform.clone(),
        origin: request.origin.clone(),
        dpop_jkt: request.dpop_jkt.clone(),
    };
    let signed_in = match sign_in_in(conn, app, &sign_in, now) {
        Ok(signed_in) => signed_in,
        Err(SignInError::Db(e)) => return Err(SignInError::Db(e)),
        Err(_) => return Ok(CodeOutcome::Refused("the account cannot sign in")),
    };
    codes::attach_device(conn, &redeemed.code_hash, &signed_in.device.id)?;
    Ok(CodeOutcome::Signed(Box::new(signed_in), Box::new(redeemed)))
}

/// A refused sign-in, as the audit log records it: never the assertion.
pub struct Refusal {
    pub provider: String,
    /// The provider's subject, when the assertion was verified (then its user is named).
    pub subject: Option<String>,
    pub client_id: String,
    pub reason: String,
}

/// Audits a refused sign-in (`sign_in.refused`), naming the user when the identity is known.
/// A failure to write it is logged, and does not change the refusal.
pub async fn record_refusal(db: &crate::db::Db, refusal: Refusal, origin: Origin) {
    let written = db
        .write(move |conn| {
            let owner = match &refusal.subject {
                Some(subject) => accounts::owner_of(conn, &refusal.provider, subject)?.map(|(user, _)| user),
                None => None,
            };
            let actor = match &owner {
                Some(user) => Actor::User(user.clone()),
                None => Actor::Client(refusal.client_id.clone()),
            };
            let detail =
                format!("provider={} client={}: {}", refusal.provider, refusal.client_id, refusal.reason);
            let event = crate::audit::AuditEvent {
                actor: &actor,
                action: AuditAction::SignInRefused,
                user_id: owner.as_deref(),
                device_id: None,
                detail: Some(&detail),
            };
            crate::audit::record(conn, event, &origin, crate::clock::now())
        })
        .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot audit a refused sign-in");
    }
}
