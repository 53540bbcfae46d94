//! The audit log, `/admin/audit`: every event, filtered and paged.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{bad_request, event_rows, failed, html, AdminPage, EventRow, Layout, PAGE_SIZE};
use crate::admin::directory::{self, AuditFilter, Cursor};
use crate::audit::AuditAction;
use crate::audit_chain::Verdict;
use crate::state::AppState;

struct ActionChoice {
    name: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    layout: Layout,
    user: String,
    actor: String,
    actions: Vec<ActionChoice>,
    events: Vec<EventRow>,
    next: Option<String>,
    chain: ChainStatus,
}

/// Whether the hash chain verifies, as the page says it.
struct ChainStatus {
    intact: bool,
    text: String,
}

impl ChainStatus {
    fn of(verdict: Verdict) -> Self {
        let (intact, text) = match verdict {
            Verdict::Intact { head_seq: 0, unsealed, .. } => {
                (true, format!("No event is sealed yet ({unsealed} waiting)."))
            }
            Verdict::Intact { head_seq, unsealed, .. } => (
                true,
                format!("The hash chain verifies up to event {head_seq}, the newest sealed ({unsealed} newer waiting to be sealed)."),
            ),
            Verdict::Altered { id, seq } => (
                false,
                format!("The hash chain is broken: event {id} (number {seq}) was altered or inserted. Run idbridge audit verify on the server for details."),
            ),
            Verdict::Removed { before, expected } => (
                false,
                match before {
                    Some(id) => format!("The hash chain is broken: events were removed before event {id} (number {expected} is missing)."),
                    None => format!("The hash chain is broken: the newest events, from number {expected}, were removed."),
                },
            ),
        };
        Self { intact, text }
    }
}

#[derive(Deserialize)]
pub struct AuditQuery {
    user: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    before: Option<String>,
}

/// The events, newest first, filtered by user, actor and action, a page at a time.
#[utoipa::path(get, path = "/admin/audit", tag = "admin", summary = "The audit log, newest first, filtered by `user`, `actor`, `action`; paged by `before`",
    params(("user" = Option<String>, Query, description = "a user id"), ("actor" = Option<String>, Query, description = "who acted"), ("action" = Option<String>, Query, description = "an audit action"), ("before" = Option<String>, Query, description = "the page's end, from the previous page")),
    responses(super::super::openapi::answers::AdminPage))]
pub async fn log(
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
    AdminPage(session): AdminPage,
) -> HttpResponse {
    let q = query.into_inner();
    let clean = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let filter = AuditFilter { user: clean(q.user), actor: clean(q.actor), action: clean(q.action) };
    let too_long = [&filter.user, &filter.actor, &filter.action]
        .iter()
        .any(|f| f.as_ref().is_some_and(|v| v.len() > 200 || v.contains(char::is_control)));
    if too_long {
        return bad_request(&session, "A filter is too long or contains control characters.");
    }
    let before = match q.before.as_deref().map(Cursor::parse) {
        Some(None) => return bad_request(&session, "That page link is malformed."),
        other => other.flatten(),
    };
    let (f, app) = (filter.clone(), state.clone());
    let found = state
        .db
        .run(move |conn| {
            let chain = app.audit_verified.check(conn, &app.audit_key)?;
            Ok::<_, crate::db::DbError>((directory::audit_page(conn, &f, before.as_ref(), PAGE_SIZE)?, chain))
        })
        .await;
    let ((events, next), chain) = match found {
        Ok(found) => found,
        Err(e) => return failed(e),
    };
    let chain = ChainStatus::of(chain);
    let next = next.map(|cursor| {
        let mut link = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [("user", &filter.user), ("actor", &filter.actor), ("action", &filter.action)] {
            if let Some(value) = value {
                link.append_pair(key, value);
            }
        }
        link.append_pair("before", &cursor.encode());
        format!("/admin/audit?{}", link.finish())
    });
    let page = AuditPage {
        layout: Layout::of(&session, "audit"),
        actions: AuditAction::ALL
            .iter()
            .map(|a| a.as_str())
            .map(|name| ActionChoice { name, selected: filter.action.as_deref() == Some(name) })
            .collect(),
        user: filter.user.unwrap_or_default(),
        actor: filter.actor.unwrap_or_default(),
        events: event_rows(events),
        next,
        chain,
    };
    html(StatusCode::OK, page.render())
}
