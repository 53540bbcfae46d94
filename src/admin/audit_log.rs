//! The audit log as the console reads it: filtered (user, actor prefix, action, date range),
//! paged both ways with totals, exported (CSV, JSON lines), and the people its ids name.

use std::collections::HashMap;

use diesel::prelude::*;

use super::directory::Cursor;
use crate::accounts::profile;
use crate::db::schema::audit_events;
use crate::db::{DbConnection, DbError};

/// An audit event as the console shows it: every column.
pub type AuditRow = crate::audit_chain::Event;

type Backend = <DbConnection as diesel::Connection>::Backend;

/// What the audit page and its export select. `since` and `until` are Unix seconds, `since`
/// included and `until` not.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl AuditFilter {
    fn query(&self) -> audit_events::BoxedQuery<'static, Backend> {
        let mut query = audit_events::table.into_boxed();
        if let Some(user) = &self.user {
            // User ids are stored lower case, as idbridge writes them.
            query = query.filter(audit_events::user_id.eq(user.to_ascii_lowercase()));
        }
        if let Some(actor) = &self.actor {
            // A prefix: `admin` finds every admin, `user:0190…` one user.
            let escaped = actor.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            query = query.filter(audit_events::actor.like(format!("{escaped}%")).escape('\\'));
        }
        if let Some(action) = &self.action {
            query = query.filter(audit_events::action.eq(action.clone()));
        }
        if let Some(since) = self.since {
            query = query.filter(audit_events::at.ge(since));
        }
        if let Some(until) = self.until {
            query = query.filter(audit_events::at.lt(until));
        }
        query
    }
}

/// Which page: the newest, the one before (older than) a row, or the one after (newer than) it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    First,
    Older(Cursor),
    Newer(Cursor),
}

/// A page of events, newest first, with where it sits among all the filter selects.
pub struct EventsPage {
    pub events: Vec<AuditRow>,
    /// How many events the filter selects.
    pub total: i64,
    /// The place of the page's first event among them, from 1 (0 when there is none).
    pub first: i64,
}

impl EventsPage {
    pub fn newer(&self) -> Option<Cursor> {
        (self.first > 1).then(|| self.events.first().map(cursor)).flatten()
    }

    pub fn older(&self) -> Option<Cursor> {
        let last = self.first + self.events.len() as i64 - 1;
        (last < self.total).then(|| self.events.last().map(cursor)).flatten()
    }
}

fn cursor(e: &AuditRow) -> Cursor {
    Cursor { at: e.at, id: e.id.clone() }
}

fn newer_than(
    c: &Cursor,
) -> Box<dyn BoxableExpression<audit_events::table, Backend, SqlType = diesel::sql_types::Bool>> {
    Box::new(audit_events::at.gt(c.at).or(audit_events::at.eq(c.at).and(audit_events::id.gt(c.id.clone()))))
}

fn older_than(
    c: &Cursor,
) -> Box<dyn BoxableExpression<audit_events::table, Backend, SqlType = diesel::sql_types::Bool>> {
    Box::new(audit_events::at.lt(c.at).or(audit_events::at.eq(c.at).and(audit_events::id.lt(c.id.clone()))))
}

/// One page of the audit log, newest first, filtered.
pub fn page(
    conn: &mut DbConnection,
    filter: &AuditFilter,
    which: &Page,
    limit: i64,
) -> Result<EventsPage, DbError> {
    let newest_first = (audit_events::at.desc(), audit_events::id.desc());
    let mut events: Vec<AuditRow> = match which {
        Page::First => {
            filter.query().order(newest_first).limit(limit).select(AuditRow::as_select()).load(conn)?
        }
        Page::Older(c) => filter
            .query()
            .filter(older_than(c))
            .order(newest_first)
            .limit(limit)
            .select(AuditRow::as_select())
            .load(conn)?,
        Page::Newer(c) => {
            let mut rows: Vec<AuditRow> = filter
                .query()
                .filter(newer_than(c))
                .order((audit_events::at.asc(), audit_events::id.asc()))
                .limit(limit)
                .select(AuditRow::as_select())
                .load(conn)?;
            rows.reverse();
            rows
        }
    };
    // Fewer than a page newer than the cursor: that is the first page. Nothing older than it
    // (an old link, events removed by retention): the first page too.
    let short_newer = matches!(which, Page::Newer(_)) && (events.len() as i64) < limit;
    if short_newer || (matches!(which, Page::Older(_)) && events.is_empty()) {
        events = filter.query().order(newest_first).limit(limit).select(AuditRow::as_select()).load(conn)?;
    }
    let total: i64 = filter.query().count().get_result(conn)?;
    let first = match events.first() {
        Some(top) => filter.query().filter(newer_than(&cursor(top))).count().get_result::<i64>(conn)? + 1,
        None => 0,
    };
    Ok(EventsPage { events, total, first })
}

/// Events the export writes at most: more is narrowed by the filters, or read with
/// `idbridge audit export` on the server.
pub const EXPORT_MAX: i64 = 100_000;

/// Up to `limit` events the filter selects, oldest first, after `after`.
pub fn export_page(
    conn: &mut DbConnection,
    filter: &AuditFilter,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<AuditRow>, DbError> {
    let mut query = filter.query();
    if let Some(after) = after {
        query = query.filter(newer_than(after));
    }
    Ok(query
        .order((audit_events::at.asc(), audit_events::id.asc()))
        .limit(limit)
        .select(AuditRow::as_select())
        .load(conn)?)
}

/// Who a user id is, as the log shows it beside the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Person {
    Known {
        name: Option<String>,
        email: Option<String>,
    },
    /// No such user any more (deleted; their personal data is gone with their keys).
    Deleted,
}

/// The people behind the user ids of some events (the user column and `user:`/`admin:`
/// actors), decrypted.
pub fn people(
    conn: &mut DbConnection,
    keys: &crate::crypto::user_keys::UserKeys,
    events: &[AuditRow],
) -> Result<HashMap<String, Person>, DbError> {
    let mut people = HashMap::new();
    let ids = events.iter().flat_map(|e| {
        let actor =
            e.actor.split_once(':').filter(|(kind, _)| matches!(*kind, "user" | "admin")).map(|(_, id)| id);
        e.user_id.as_deref().into_iter().chain(actor)
    });
    for id in ids {
        if people.contains_key(id) || uuid::Uuid::try_parse(id).is_err() {
            continue;
        }
        let person = match profile::profile(conn, keys, id) {
            Ok(Some(p)) => Person::Known { name: p.display_name, email: p.email },
            Ok(None) => Person::Deleted,
            Err(crate::crypto::user_keys::UserKeyError::Db(e)) => return Err(e),
            Err(_) => Person::Known { name: None, email: None },
        };
        people.insert(id.to_string(), person);
    }
    Ok(people)
}

/// Actions that end every device of a user at once, audited once with no device.
const ENDS_ALL: [&str; 4] = ["user.logout_all", "user.revoke_all", "user.disable", "provider.event"];

/// The audit event that ended each revoked device of `devices` (all the user's): the one
/// naming the device at its `revoked_at`, else a user-wide ending at that moment. A device
/// whose event retention has removed has none.
pub fn device_endings(
    conn: &mut DbConnection,
    user_id: &str,
    devices: &[crate::sessions::Device],
) -> Result<HashMap<String, AuditRow>, DbError> {
    let ended: Vec<(&str, i64)> =
        devices.iter().filter_map(|d| d.revoked_at.map(|at| (d.id.as_str(), at))).collect();
    if ended.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = ended.iter().map(|(id, _)| *id).collect();
    let mut moments: Vec<i64> = ended.iter().map(|(_, at)| *at).collect();
    moments.sort_unstable();
    moments.dedup();
    // Only the moments devices ended: a busy user's other events are never read.
    let events: Vec<AuditRow> = audit_events::table
        .filter(audit_events::user_id.eq(user_id))
        .filter(audit_events::at.eq_any(&moments))
        .filter(audit_events::device_id.eq_any(&ids).or(audit_events::device_id.is_null()))
        .order((audit_events::at.asc(), audit_events::id.asc()))
        .select(AuditRow::as_select())
        .load(conn)?;
    let mut endings = HashMap::new();
    for (id, at) in ended {
        let own = events.iter().rev().find(|e| e.at == at && e.device_id.as_deref() == Some(id));
        let shared = || {
            events
                .iter()
                .find(|e| e.at == at && e.device_id.is_none() && ENDS_ALL.contains(&e.action.as_str()))
        };
        if let Some(event) = own.or_else(shared) {
            endings.insert(id.to_string(), event.clone());
        }
    }
    Ok(endings)
}
