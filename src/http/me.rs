//! `/v1/me`: the signed-in person, their devices and sign-out.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::auth::{origin, Caller};
use super::errors::Problem;
use crate::accounts::{self, Revocation};
use crate::app::AppState;

fn rfc3339(unix: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

pub async fn me(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, Problem> {
    let user_id = caller.claims.sub.clone();
    let profile = state
        .db
        .run(move |conn| accounts::profile(conn, &user_id))
        .await?
        .ok_or_else(|| Problem::not_found("the user no longer exists"))?;
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
        "display_name": profile.user.display_name,
        "email": profile.user.email,
        "identities": identities,
    })))
}

pub async fn devices(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, Problem> {
    let user_id = caller.claims.sub.clone();
    let devices = state.db.run(move |conn| accounts::list_devices(conn, &user_id, crate::db::now())).await?;
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
    Ok(HttpResponse::Ok().json(json!({ "devices": devices })))
}

pub async fn revoke_device(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let device_id = path.into_inner();
    let user_id = caller.claims.sub.clone();
    let origin = origin(&req);
    let revoked = state
        .db
        .write(move |conn| {
            let now = crate::db::now();
            let owned =
                accounts::find_device(conn, &device_id)?.filter(|d| d.user_id == user_id && d.is_live(now));
            let Some(device) = owned else {
                return Ok(false);
            };
            let by = Revocation {
                actor: &format!("user:{user_id}"),
                action: "device.revoke",
                detail: None,
                origin: &origin,
            };
            accounts::end_device(conn, &device, &by, now)?;
            Ok::<_, crate::db::DbError>(true)
        })
        .await?;
    if revoked {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(Problem::not_found("no such device"))
    }
}

pub async fn logout_all(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let user_id = caller.claims.sub.clone();
    let origin = origin(&req);
    state
        .db
        .write(move |conn| {
            let now = crate::db::now();
            let by = Revocation {
                actor: &format!("user:{user_id}"),
                action: "user.logout_all",
                detail: None,
                origin: &origin,
            };
            accounts::end_all_devices(conn, &user_id, &by, now)
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
