//! `/v1/me`: the signed-in person, their devices and sign-out.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::auth::{origin, Caller};
use super::errors::OAuthError;
use super::errors::Problem;
use super::input;
use super::oauth::{redeem_app_code, verify_subject_token, SubjectRefused, SubjectToken};
use crate::accounts::{profile, SignInError};
use crate::audit::{Actor, AuditAction};
use crate::ids::{DeviceId, UserId};
use crate::service::devices::Owner;
use crate::service::{self, Requester};
use crate::sessions::{devices, DeviceCursor};
use crate::state::AppState;

fn rfc3339(unix: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The caller's profile, decrypted; `None` when the user was deleted since the token was checked.
pub async fn profile_of(
    state: &web::Data<AppState>,
    caller: &Caller,
) -> Result<Option<profile::Profile>, Problem> {
    let user_id = caller.claims.sub.clone();
    let app = state.clone();
    Ok(state.db.run(move |conn| profile::profile(conn, &app.user_keys, &user_id)).await?)
}

pub async fn me(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, Problem> {
    let profile =
        profile_of(&state, &caller).await?.ok_or_else(|| Problem::not_found("the user no longer exists"))?;
    let identities: Vec<_> = profile
        .identities
        .iter()
        .map(|i| {
            json!({
                "provider": i.provider, "subject": i.subject,
                "linked_at": rfc3339(i.linked_at), "last_login_at": rfc3339(i.last_login_at),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "id": profile.user.id,
        "created_at": rfc3339(profile.user.created_at),
        "display_name": profile.display_name,
        "email": profile.email,
        "identities": identities,
    })))
}

/// `?limit` (1 to 100, default 50) and `?cursor` (from `next_cursor`) of the device list.
#[derive(Deserialize)]
pub struct DevicePage {
    limit: Option<String>,
    cursor: Option<String>,
}

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 100;

fn encode_cursor(cursor: &DeviceCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", cursor.created_at, cursor.id))
}

fn decode_cursor(text: &str) -> Option<DeviceCursor> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
    let (created_at, id) = raw.split_once(':')?;
    let created_at = created_at.parse().ok()?;
    DeviceId::parse(id).map(|id| DeviceCursor { created_at, id: id.to_string() })
}

pub async fn devices(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<DevicePage>,
) -> Result<HttpResponse, Problem> {
    let limit = match page.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(text) => text.parse::<i64>().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
            Problem::bad_request(format!("limit must be a whole number from 1 to {MAX_PAGE}"))
        })?,
    };
    let after = match page.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(text) => {
            Some(decode_cursor(text).ok_or_else(|| Problem::bad_request("cursor is not one this API gave"))?)
        }
    };
    let user_id = caller.claims.sub.clone();
    let (devices, next) = state
        .db
        .run(move |conn| devices::list(conn, &user_id, crate::clock::now(), after.as_ref(), limit))
        .await?;
    let devices: Vec<_> = devices
        .iter()
        .map(|d| {
            json!({
                "id": d.id, "name": d.name, "platform": d.platform, "client_id": d.client_id,
                "created_at": rfc3339(d.created_at), "last_seen_at": rfc3339(d.last_seen_at),
                "current": d.id == caller.claims.sid,
            })
        })
        .collect();
    let mut body = json!({ "devices": devices });
    if let Some(next) = next {
        body["next_cursor"] = json!(encode_cursor(&next));
    }
    Ok(HttpResponse::Ok().json(body))
}

pub async fn revoke_device(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    // Only the id as idbridge wrote it names the device (another spelling never did).
    let device =
        DeviceId::parse_exact(&path.into_inner()).ok_or_else(|| Problem::not_found("no such device"))?;
    let (user, by) = caller_as_user(&caller, &req);
    let owner = Owner::LiveOfUser(user);
    if service::devices::end(&state.db, &device, &owner, &by, AuditAction::DeviceRevoke, None)
        .await?
        .is_some()
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(Problem::not_found("no such device"))
    }
}

/// The user an access token names, acting for themselves.
fn caller_as_user(caller: &Caller, req: &HttpRequest) -> (UserId, Requester) {
    let user = UserId::trusted(caller.claims.sub.clone());
    let by = Requester::new(Actor::User(user.to_string()), origin(req));
    (user, by)
}

pub async fn logout_all(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let (user, by) = caller_as_user(&caller, &req);
    service::devices::end_all(&state.db, &user, &by, AuditAction::UserLogoutAll, None).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Deletes the signed-in user: identities, devices, tokens and data keys (crypto-shredding).
pub async fn delete_me(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let (user, by) = caller_as_user(&caller, &req);
    if !service::users::delete(&state.db, &state.user_keys, &user, &by).await? {
        return Err(Problem::not_found("the user no longer exists"));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// The form of `POST /v1/me/identities`, as token exchange's.
#[derive(Deserialize)]
pub struct LinkForm {
    subject_token: Option<String>,
    subject_token_type: Option<String>,
    provider: Option<String>,
    nonce: Option<String>,
    /// Sign in with Apple: the app's `authorizationCode`, as in token exchange.
    authorization_code: Option<String>,
}

/// Links another provider's identity, proven by a fresh assertion, to the signed-in user.
pub async fn link_identity(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    form: web::Form<LinkForm>,
) -> Result<HttpResponse, Problem> {
    let form = form.into_inner();
    let bad = |e: OAuthError| Problem::bad_request(e.description().to_string());
    let token = input::text("subject_token", form.subject_token.as_deref(), 16 * 1024)
        .map_err(bad)?
        .ok_or_else(|| Problem::bad_request("subject_token is required"))?
        .to_string();
    let nonce = input::text("nonce", form.nonce.as_deref(), 256).map_err(bad)?.map(str::to_string);
    let provider = match input::text("provider", form.provider.as_deref(), 32).map_err(bad)? {
        None => None,
        Some(name) => {
            Some(state.providers.kind(name).ok_or_else(|| Problem::bad_request("unknown provider"))?)
        }
    };
    let subject = SubjectToken {
        token: &token,
        token_type: form.subject_token_type.as_deref(),
        provider,
        nonce: nonce.as_deref(),
    };
    let refused = |e: SubjectRefused| match e {
        SubjectRefused::Unavailable(m) => Problem::new(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, m),
        SubjectRefused::Refused(m) => Problem::bad_request(m),
    };
    let code = input::text("authorization_code", form.authorization_code.as_deref(), 1024).map_err(bad)?;
    let mut assertion = verify_subject_token(&state, &subject).await.map_err(refused)?;
    redeem_app_code(&state, &mut assertion, code).await.map_err(refused)?;
    let (provider, subject) = (assertion.provider.as_str(), assertion.subject.clone());
    let (user, by) = caller_as_user(&caller, &req);
    let linked = service::identities::link(
        &state,
        &user,
        caller.claims.client_id.clone(),
        assertion,
        nonce,
        by.origin,
    )
    .await
    .map_err(|e| match e {
        SignInError::Db(db) => Problem::from(db),
        other => Problem::bad_request(other.to_string()),
    })?;
    let body = json!({ "provider": provider, "subject": subject });
    match linked {
        profile::Linked::Created => Ok(HttpResponse::Created().json(body)),
        profile::Linked::AlreadyTheirs => Ok(HttpResponse::Ok().json(body)),
        profile::Linked::Conflict(why) => Err(Problem::new(actix_web::http::StatusCode::CONFLICT, why)),
    }
}

/// Removes the signed-in user's identity of a provider; never the last one.
pub async fn unlink_identity(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let provider =
        state.providers.kind(&path.into_inner()).ok_or_else(|| Problem::not_found("no such identity"))?;
    let (user, by) = caller_as_user(&caller, &req);
    let outcome = service::identities::unlink(&state, &user, provider, by.origin).await?;
    match outcome {
        profile::Unlinked::Removed => Ok(HttpResponse::NoContent().finish()),
        profile::Unlinked::NotLinked => Err(Problem::not_found("the user has no identity of this provider")),
        profile::Unlinked::LastIdentity => Err(Problem::new(
            actix_web::http::StatusCode::CONFLICT,
            "this is the user's last identity; link another first",
        )),
    }
}
