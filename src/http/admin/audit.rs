//! The audit log, `/admin/audit`: every event, filtered, paged both ways with totals, and
//! exported (`/admin/audit/export`, CSV or JSON lines).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{bad_request, event_rows, failed, html, AdminPage, EventRow, Layout, PAGE_SIZE};
use crate::admin::audit_log::{self, AuditFilter, Page};
use crate::admin::directory::Cursor;
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
    since: String,
    until: String,
    actions: Vec<ActionChoice>,
    events: Vec<EventRow>,
    paging: Paging,
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
    /// The first day, `YYYY-MM-DD` (UTC).
    since: Option<String>,
    /// The last day, `YYYY-MM-DD` (UTC), included.
    until: Option<String>,
    before: Option<String>,
    after: Option<String>,
    /// The export's format: `csv` or `jsonl`.
    format: Option<String>,
}

/// A day (`YYYY-MM-DD`, UTC) as the Unix time it starts.
fn day_start(day: &str) -> Option<i64> {
    if day.len() != 10
        || !day
            .bytes()
            .enumerate()
            .all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() })
    {
        return None;
    }
    let at = humantime::parse_rfc3339(&format!("{day}T00:00:00Z")).ok()?;
    Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64)
}

/// The filter a query names, as given (for the form and the links) and as parsed.
struct Filters {
    user: String,
    actor: String,
    action: String,
    since: String,
    until: String,
    parsed: AuditFilter,
}

impl Filters {
    fn parse(q: &AuditQuery) -> Result<Self, &'static str> {
        let clean = |v: &Option<String>| v.as_deref().map(str::trim).unwrap_or_default().to_string();
        let (user, actor, action, since, until) =
            (clean(&q.user), clean(&q.actor), clean(&q.action), clean(&q.since), clean(&q.until));
        if [&user, &actor, &action, &since, &until]
            .iter()
            .any(|v| v.len() > 200 || v.contains(char::is_control))
        {
            return Err("A filter is too long or contains control characters.");
        }
        let day = |d: &str| match d {
            "" => Ok(None),
            d => day_start(d).map(Some).ok_or("A date must be a day, like 2026-12-03."),
        };
        let parsed = AuditFilter {
            user: Some(user.clone()).filter(|v| !v.is_empty()),
            actor: Some(actor.clone()).filter(|v| !v.is_empty()),
            action: Some(action.clone()).filter(|v| !v.is_empty()),
            since: day(&since)?,
            // The whole last day.
            until: day(&until)?.map(|start| start + crate::admin::chart::DAY_SECS),
        };
        Ok(Filters { user, actor, action, since, until, parsed })
    }

    /// A link to the log (or its export) with these filters and `extra`.
    fn link(&self, path: &str, extra: &[(&str, &str)]) -> String {
        let mut link = url::form_urlencoded::Serializer::new(String::new());
        let given = [
            ("user", &self.user),
            ("actor", &self.actor),
            ("action", &self.action),
            ("since", &self.since),
            ("until", &self.until),
        ];
        for (key, value) in given {
            if !value.is_empty() {
                link.append_pair(key, value);
            }
        }
        for (key, value) in extra {
            link.append_pair(key, value);
        }
        let query = link.finish();
        if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        }
    }
}

/// The page's place in the log and its links.
struct Paging {
    first: i64,
    last: i64,
    total: i64,
    newest: Option<String>,
    newer: Option<String>,
    older: Option<String>,
    csv: String,
    jsonl: String,
}

/// The events, newest first, filtered by user, actor, action and dates, a page at a time.
#[utoipa::path(get, path = "/admin/audit", tag = "admin", summary = "The audit log, newest first, filtered by `user`, `actor` (a prefix), `action`, `since` and `until` (days); paged by `before` or `after`",
    params(("user" = Option<String>, Query, description = "a user id"), ("actor" = Option<String>, Query, description = "who acted, or the start of it"), ("action" = Option<String>, Query, description = "an audit action"),
        ("since" = Option<String>, Query, description = "the first day, YYYY-MM-DD (UTC)"), ("until" = Option<String>, Query, description = "the last day, YYYY-MM-DD (UTC), included"),
        ("before" = Option<String>, Query, description = "older than this event, from a page link"), ("after" = Option<String>, Query, description = "newer than this event, from a page link"),
        ("format" = Option<String>, Query, description = "ignored here; the export's")),
    responses(super::super::openapi::answers::AdminPage))]
pub async fn log(
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
    AdminPage(session): AdminPage,
) -> HttpResponse {
    let filters = match Filters::parse(&query) {
        Ok(filters) => filters,
        Err(text) => return bad_request(&session, text),
    };
    let which = match (query.before.as_deref().map(Cursor::parse), query.after.as_deref().map(Cursor::parse))
    {
        (Some(None), _) | (_, Some(None)) => return bad_request(&session, "That page link is malformed."),
        (Some(Some(before)), _) => Page::Older(before),
        (None, Some(Some(after))) => Page::Newer(after),
        (None, None) => Page::First,
    };
    let (f, app) = (filters.parsed.clone(), state.clone());
    let found = state
        .db
        .run(move |conn| {
            let chain = app.audit_verified.check(conn, &app.audit_key)?;
            let page = audit_log::page(conn, &f, &which, PAGE_SIZE)?;
            let people = audit_log::people(conn, &app.user_keys, &page.events)?;
            Ok::<_, crate::db::DbError>((page, people, chain))
        })
        .await;
    let (page, people, chain) = match found {
        Ok(found) => found,
        Err(e) => return failed(e),
    };
    let chain = ChainStatus::of(chain);
    let paging = Paging {
        first: page.first,
        last: page.first + page.events.len() as i64 - 1,
        total: page.total,
        newest: (page.first > 1).then(|| filters.link("/admin/audit", &[])),
        newer: page.newer().map(|c| filters.link("/admin/audit", &[("after", &c.encode())])),
        older: page.older().map(|c| filters.link("/admin/audit", &[("before", &c.encode())])),
        csv: filters.link("/admin/audit/export", &[("format", "csv")]),
        jsonl: filters.link("/admin/audit/export", &[("format", "jsonl")]),
    };
    let page = AuditPage {
        layout: Layout::of(&session, "audit"),
        actions: AuditAction::ALL
            .iter()
            .map(|a| a.as_str())
            .map(|name| ActionChoice { name, selected: filters.action == name })
            .collect(),
        events: event_rows(page.events, &people),
        paging,
        chain,
        user: filters.user,
        actor: filters.actor,
        since: filters.since,
        until: filters.until,
    };
    html(StatusCode::OK, page.render())
}

/// An export's format.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
}

/// What the filters select, oldest first, as CSV or JSON lines (the fields of `idbridge audit
/// export`), at most [`audit_log::EXPORT_MAX`] events.
#[utoipa::path(get, path = "/admin/audit/export", tag = "admin", summary = "The events the audit log's filters select, oldest first, as CSV or JSON lines",
    params(("format" = Option<String>, Query, description = "csv or jsonl (anything else, or none, is 400 for a signed-in admin)"), ("user" = Option<String>, Query, description = "a user id"), ("actor" = Option<String>, Query, description = "who acted, or the start of it"), ("action" = Option<String>, Query, description = "an audit action"),
        ("since" = Option<String>, Query, description = "the first day, YYYY-MM-DD (UTC)"), ("until" = Option<String>, Query, description = "the last day, YYYY-MM-DD (UTC), included"),
        ("before" = Option<String>, Query, description = "ignored"), ("after" = Option<String>, Query, description = "ignored")),
    responses((status = 200, description = "The events: `text/csv` or `application/jsonl`, as an attachment", content_type = "text/csv", body = String), super::super::openapi::answers::AdminPage))]
pub async fn export(
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
    AdminPage(session): AdminPage,
) -> HttpResponse {
    let format = match query.format.as_deref() {
        Some("csv") => Format::Csv,
        Some("jsonl") => Format::JsonLines,
        _ => return bad_request(&session, "The export's format must be csv or jsonl."),
    };
    let filters = match Filters::parse(&query) {
        Ok(filters) => filters,
        Err(text) => return bad_request(&session, text),
    };
    let f = filters.parsed.clone();
    let found = state
        .db
        .run(move |conn| {
            let mut events = Vec::new();
            let mut after: Option<Cursor> = None;
            loop {
                let page = audit_log::export_page(conn, &f, after.as_ref(), 1000)?;
                let full = page.len() == 1000;
                after = page.last().map(|e| Cursor { at: e.at, id: e.id.clone() });
                events.extend(page);
                if !full || events.len() as i64 > audit_log::EXPORT_MAX {
                    return Ok::<_, crate::db::DbError>(events);
                }
            }
        })
        .await;
    let events = match found {
        Ok(events) => events,
        Err(e) => return failed(e),
    };
    if events.len() as i64 > audit_log::EXPORT_MAX {
        return bad_request(
            &session,
            "The filters select more than 100,000 events. Narrow them (a shorter date range), or run idbridge audit export on the server.",
        );
    }
    let (body, content_type, extension) = match format {
        Format::Csv => match csv_of(&events) {
            Ok(body) => (body, "text/csv; charset=utf-8", "csv"),
            Err(e) => {
                tracing::error!(error = %e, "cannot write the audit export");
                return failed(crate::db::DbError::Task);
            }
        },
        Format::JsonLines => {
            let lines: String = events.iter().map(|e| format!("{}\n", e.json_line())).collect();
            (lines.into_bytes(), "application/jsonl; charset=utf-8", "jsonl")
        }
    };
    let name = format!("idbridge-audit-{}.{extension}", crate::clock::now());
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("content-disposition", format!("attachment; filename=\"{name}\"")))
        .body(body)
}

/// The events as CSV (RFC 4180), a header first. A cell a spreadsheet would read as a
/// formula (starting `=`, `+`, `-`, `@`, tab or carriage return) gets a leading `'`
/// (OWASP's CSV injection advice): details and user agents come from outside.
fn csv_of(events: &[audit_log::AuditRow]) -> Result<Vec<u8>, csv::Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record([
        "id",
        "at",
        "action",
        "actor",
        "user_id",
        "device_id",
        "ip",
        "user_agent",
        "detail",
        "hash",
    ])?;
    let safe = |cell: Option<&str>| -> String {
        let cell = cell.unwrap_or_default();
        if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{cell}")
        } else {
            cell.to_string()
        }
    };
    for e in events {
        out.write_record([
            safe(Some(&e.id)),
            crate::audit_chain::rfc3339(e.at),
            safe(Some(&e.action)),
            safe(Some(&e.actor)),
            safe(e.user_id.as_deref()),
            safe(e.device_id.as_deref()),
            safe(e.ip.as_deref()),
            safe(e.user_agent.as_deref()),
            safe(e.detail.as_deref()),
            safe(e.hash.as_deref()),
        ])?;
    }
    out.into_inner().map_err(|e| e.into_error().into())
}
