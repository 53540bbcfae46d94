//! Signing keys, `/admin/keys`: the published keys, and rotating to a new one.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use super::{
    failed, html, requester, see_other, when, AdminForm, AdminPage, ConfirmPage, CsrfForm, DoneQuery, Layout,
};
use crate::crypto::signing::SigningError;
use crate::db::DbError;
use crate::service;
use crate::state::AppState;

struct KeyRow {
    kid: String,
    alg: String,
    state: &'static str,
    created: String,
    activates: String,
}

#[derive(Template)]
#[template(path = "admin/keys.html")]
struct KeysPage {
    layout: Layout,
    keys: Vec<KeyRow>,
}

/// The signing keys and their states (published, signing, retired, withdrawn).
#[utoipa::path(get, path = "/admin/keys", tag = "admin", summary = "Signing keys: kid, algorithm, state, created",
    params(("done" = Option<String>, Query, description = "what was just done, for the notice")), responses(super::super::openapi::answers::AdminPage))]
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<DoneQuery>,
    AdminPage(session): AdminPage,
) -> HttpResponse {
    reload_keys(&state).await;
    let rows = state
        .keys
        .summary(crate::clock::now())
        .into_iter()
        .map(|k| KeyRow {
            kid: k.kid,
            alg: k.alg,
            state: k.state.as_str(),
            created: when(k.created_at),
            activates: when(k.activates_at),
        })
        .collect();
    let page =
        KeysPage { layout: Layout::of(&session, "keys").with_notice(query.done.as_deref()), keys: rows };
    html(StatusCode::OK, page.render())
}

/// Reloads the signing keys, so keys another replica or the CLI added since the last reload
/// are shown too (a failure is logged: the page shows what this replica knows).
async fn reload_keys(state: &AppState) {
    let keys = state.keys.clone();
    if let Err(e) = state.db.run(move |conn| keys.reload(conn)).await {
        tracing::warn!(error = %e, "cannot reload signing keys");
    }
}

/// The confirmation step before rotating, naming a rotation already under way.
#[utoipa::path(
    get,
    path = "/admin/keys/rotate",
    tag = "admin",
    summary = "The confirmation step of publishing a new signing key",
    responses(super::super::openapi::answers::AdminPage)
)]
pub async fn confirm_rotate(state: web::Data<AppState>, AdminPage(session): AdminPage) -> HttpResponse {
    reload_keys(&state).await;
    let now = crate::clock::now();
    let pending =
        state.keys.summary(now).into_iter().filter(|k| k.activates_at > now).max_by_key(|k| k.activates_at);
    let consequence = match pending {
        Some(k) => format!(
            "A rotation is already under way: key {} was published on {} and starts signing on {}. \
             Rotating again publishes another key, which replaces it as the next to sign.",
            k.kid,
            when(k.created_at),
            when(k.activates_at)
        ),
        None => "A new key is published in the JWKS at once and starts signing after the publish lead. \
                 Tokens signed by the current key stay valid until they expire."
            .to_string(),
    };
    let page = ConfirmPage {
        layout: Layout::of(&session, "keys"),
        question: "Publish a new signing key now?",
        consequence: &consequence,
        button: "Rotate now",
        action: "/admin/keys/rotate".into(),
        cancel: "/admin/keys".into(),
    };
    html(StatusCode::OK, page.render())
}

/// Publishes a new signing key now (it signs after the publish lead), audited.
#[utoipa::path(post, path = "/admin/keys/rotate", tag = "admin", summary = "Publishes a new signing key now (audited)",
    request_body(content = super::CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses(super::super::openapi::answers::AdminChange))]
pub async fn rotate(
    state: web::Data<AppState>,
    req: HttpRequest,
    AdminForm { session, .. }: AdminForm<CsrfForm>,
) -> HttpResponse {
    let rotated = service::keys::rotate_signing(&state.db, &state.keys, &requester(&session, &req)).await;
    match rotated {
        Ok(_) => {}
        Err(SigningError::Db(e)) => return failed(e),
        Err(other) => {
            tracing::error!(error = %other, "cannot add a signing key");
            return failed(DbError::Task);
        }
    }
    see_other("/admin/keys?done=key-added")
}
