//! `/v1/me`: the signed-in person, their devices and sign-out.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::{origin, Caller};
use super::errors::OAuthError;
use super::errors::Problem;
use super::input;
use super::oauth::{redeem_app_code, verify_subject_token, SubjectRefused, SubjectToken};
use super::openapi::answers::ResourceErrors;
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

/// The signed-in person.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Me {
    #[schema(format = Uuid)]
    id: String,
    #[schema(format = DateTime)]
    created_at: String,
    display_name: Option<String>,
    email: Option<String>,
    identities: Vec<Identity>,
}

/// A provider identity of the person.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Identity {
    provider: String,
    /// The provider's stable subject id
    subject: String,
    #[schema(format = DateTime)]
    linked_at: String,
    #[schema(format = DateTime)]
    last_login_at: String,
}

/// A page of devices.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Devices {
    devices: Vec<DeviceView>,
    /// Present when there is another page: the next request's `cursor`
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    next_cursor: Option<String>,
}

/// A live device of the person.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    #[schema(format = Uuid)]
    id: String,
    name: Option<String>,
    platform: Option<String>,
    client_id: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    last_seen_at: String,
    /// The device of the token that asked
    current: bool,
}

/// An identity linked, or already the user's.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Linked {
    provider: String,
    subject: String,
}

/// The signed-in person
///
/// Name and e-mail decrypted.
#[utoipa::path(get, path = "/v1/me", tag = "me", security(("bearer" = []), ("dpop" = [])),
    responses((status = 200, description = "The person", body = Me),
        (status = 404, description = "The user no longer exists", body = super::errors::ProblemBody, content_type = "application/problem+json"),
        ResourceErrors))]
pub async fn me(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, Problem> {
    let profile =
        profile_of(&state, &caller).await?.ok_or_else(|| Problem::not_found("the user no longer exists"))?;
    let identities = profile
        .identities
        .iter()
        .map(|i| Identity {
            provider: i.provider.to_string(),
            subject: i.subject.to_string(),
            linked_at: rfc3339(i.linked_at),
            last_login_at: rfc3339(i.last_login_at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(Me {
        id: profile.user.id.to_string(),
        created_at: rfc3339(profile.user.created_at),
        display_name: profile.display_name,
        email: profile.email,
        identities,
    }))
}

/// `?limit` (1 to 100, default 50) and `?cursor` (from `next_cursor`) of the device list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DevicePage {
    /// How many devices, 1 to 100 (default 50)
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page (empty: the first page)
    #[param(pattern = "^([0-9]{1,18}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?$")]
    cursor: Option<String>,
}

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 100;

/// A page's end: `<created_at>_<device id>`, the list's sort key.
fn encode_cursor(cursor: &DeviceCursor) -> String {
    format!("{}_{}", cursor.created_at, cursor.id)
}

fn decode_cursor(text: &str) -> Option<DeviceCursor> {
    let (created_at, id) = text.split_once('_')?;
    let digits = (1..=18).contains(&created_at.len()) && created_at.bytes().all(|b| b.is_ascii_digit());
    let created_at = created_at.parse().ok().filter(|_| digits)?;
    DeviceId::parse_exact(id).map(|id| DeviceCursor { created_at, id: id.to_string() })
}

/// The person's live devices
///
/// Newest first, paged.
#[utoipa::path(get, path = "/v1/me/devices", tag = "me", security(("bearer" = []), ("dpop" = [])),
    params(DevicePage),
    responses((status = 200, description = "A page of devices", body = Devices),
        (status = 400, description = "A bad `limit` or `cursor`", body = super::errors::ProblemBody, content_type = "application/problem+json"),
        ResourceErrors))]
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
    let devices = devices
        .iter()
        .map(|d| DeviceView {
            id: d.id.to_string(),
            name: d.name.clone(),
            platform: d.platform.clone(),
            client_id: d.client_id.to_string(),
            created_at: rfc3339(d.created_at),
            last_seen_at: rfc3339(d.last_seen_at),
            current: d.id == caller.claims.sid,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Devices { devices, next_cursor: next.as_ref().map(encode_cursor) }))
}

/// Revoke one of the person's devices
///
/// Its tokens stop working at once; its client is told (back-channel logout).
#[utoipa::path(delete, path = "/v1/me/devices/{id}", tag = "me", security(("bearer" = []), ("dpop" = [])),
    params(("id" = String, Path, format = Uuid, description = "The device id")),
    responses((status = 204, description = "Revoked"),
        (status = 404, description = "Not a live device of the caller", body = super::errors::ProblemBody, content_type = "application/problem+json"),
        ResourceErrors))]
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

/// Sign out everywhere
///
/// Revokes every device of the person, this one too.
#[utoipa::path(post, path = "/v1/me/logout-all", tag = "me", security(("bearer" = []), ("dpop" = [])),
    responses((status = 204, description = "Done"), ResourceErrors))]
pub async fn logout_all(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let (user, by) = caller_as_user(&caller, &req);
    service::devices::end_all(&state.db, &user, &by, AuditAction::UserLogoutAll, None).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Delete the signed-in person
///
/// Identities, devices, tokens and data keys (crypto-shredding).
#[utoipa::path(delete, path = "/v1/me", tag = "me", security(("bearer" = []), ("dpop" = [])),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "The user no longer exists", body = super::errors::ProblemBody, content_type = "application/problem+json"),
        ResourceErrors))]
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
#[derive(Deserialize, utoipa::ToSchema)]
pub struct LinkForm {
    /// The provider's assertion, as at token exchange
    #[schema(
        required = true,
        min_length = 1,
        max_length = 16384,
        pattern = r"^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    subject_token: Option<String>,
    #[schema(required = true, value_type = super::token_form::SubjectTokenType)]
    subject_token_type: Option<String>,
    /// Needed for an access token (`facebook`); else told by the ID token's `iss`
    #[schema(max_length = 32)]
    provider: Option<String>,
    /// The nonce from `/oauth/nonce` the ID token carries
    #[schema(max_length = 256, pattern = r"^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    nonce: Option<String>,
    /// Sign in with Apple: the app's `authorizationCode`, as in token exchange.
    #[schema(max_length = 1024, pattern = r"^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    authorization_code: Option<String>,
}

/// Link another provider's identity
///
/// Proven by a fresh assertion, never by e-mail.
#[utoipa::path(post, path = "/v1/me/identities", tag = "me", security(("bearer" = []), ("dpop" = [])),
    request_body(content = LinkForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 201, description = "Linked", body = Linked),
        (status = 200, description = "Already this user's", body = Linked),
        (status = 400, description = "The assertion is not acceptable", body = super::errors::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The identity belongs to another user, or the user has one of this provider", body = super::errors::ProblemBody, content_type = "application/problem+json"),
        ResourceErrors))]
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
    let body = Linked { provider: provider.to_string(), subject };
    match linked {
        profile::Linked::Created => Ok(HttpResponse::Created().json(body)),
        profile::Linked::AlreadyTheirs => Ok(HttpResponse::Ok().json(body)),
        profile::Linked::Conflict(why) => Err(Problem::new(actix_web::http::StatusCode::CONFLICT, why)),
    }
}

/// Remove an identity
///
/// The signed-in user's identity of a provider; never the last one.
#[utoipa::path(delete, path = "/v1/me/identities/{provider}", tag = "me", security(("bearer" = []), ("dpop" = [])),
    params(("provider" = String, Path, description = "A provider name")),
    responses((status = 204, description = "Removed"),
        (status = 404, description = "No identity of this provider", body = super::errors::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "It is the last identity", body = super::errors::ProblemBody, content_type = "application/problem+json"),
        ResourceErrors))]
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
