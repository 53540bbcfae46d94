//! What the admin console's pages read: counts and per-day figures, users (paged, searched
//! by id, provider subject, e-mail, or name and e-mail prefixes through keyed search terms),
//! one user in full, and the audit log.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use super::audit_log::{self, AuditFilter, AuditRow};
use super::chart::DAY_SECS;
use crate::accounts::profile::{self, Profile};
use crate::audit::AuditAction;
use crate::crypto::blind_index::BlindIndex;
use crate::crypto::user_keys::UserKeys;
use crate::db::schema::{admin_sessions, devices, identities, users};
use crate::db::{DbConnection, DbError};
use crate::sessions::{live, Device};

/// Days the overview's charts cover, today included.
pub const CHART_DAYS: i64 = 30;

pub struct Overview {
    pub users: i64,
    pub live_devices: i64,
    pub sign_ins_today: i64,
    /// The day number of the charts' first day.
    pub first_day: i64,
    pub sign_ins: Vec<i64>,
    pub reuse: Vec<i64>,
}

#[derive(QueryableByName)]
struct DayCount {
    #[diesel(sql_type = BigInt)]
    day: i64,
    #[diesel(sql_type = Text)]
    action: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

pub fn overview(conn: &mut DbConnection, now: i64) -> Result<Overview, DbError> {
    let users: i64 = users::table.count().get_result(conn)?;
    let live_devices: i64 = devices::table.filter(live(now)).count().get_result(conn)?;
    let today = now.div_euclid(DAY_SECS);
    let first_day = today - (CHART_DAYS - 1);
    // Grouped in the database: only 60 rows come back however busy the month was. The bound
    // is a number computed here, never input.
    let (sign_in, reuse_action) = (AuditAction::SignIn.as_str(), AuditAction::RefreshTokenReuse.as_str());
    let query = format!(
        "SELECT at / {DAY_SECS} AS day, action, COUNT(*) AS n FROM audit_events \
         WHERE at >= {} AND action IN ('{sign_in}', '{reuse_action}') \
         GROUP BY at / {DAY_SECS}, action",
        first_day * DAY_SECS
    );
    let rows: Vec<DayCount> = match conn {
        DbConnection::Pg(c) => diesel::sql_query(query).load(c)?,
        DbConnection::Sqlite(c) => diesel::sql_query(query).load(c)?,
    };
    let mut sign_ins = vec![0; CHART_DAYS as usize];
    let mut reuse = vec![0; CHART_DAYS as usize];
    for row in rows {
        let Some(slot) = usize::try_from(row.day - first_day).ok().filter(|i| *i < CHART_DAYS as usize)
        else {
            continue;
        };
        match row.action.as_str() {
            action if action == sign_in => sign_ins[slot] += row.n,
            _ => reuse[slot] += row.n,
        }
    }
    let sign_ins_today = sign_ins[CHART_DAYS as usize - 1];
    Ok(Overview { users, live_devices, sign_ins_today, first_day, sign_ins, reuse })
}

/// A user as the users list shows them.
pub struct UserSummary {
    pub id: String,
    pub created_at: i64,
    pub display_name: Option<String>,
    pub is_admin: bool,
    pub disabled: bool,
    pub providers: Vec<String>,
}

fn summarise(conn: &mut DbConnection, keys: &UserKeys, ids: &[String]) -> Result<Vec<UserSummary>, DbError> {
    let mut list = Vec::with_capacity(ids.len());
    for id in ids {
        // A profile that cannot be decrypted (a damaged key) still lists, without its name.
        let found = match profile::profile(conn, keys, id) {
            Ok(found) => found,
            Err(crate::crypto::user_keys::UserKeyError::Db(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(user_id = %id, error = %e, "cannot decrypt a user's profile");
                None
            }
        };
        let Some(Profile { user, display_name, identities, .. }) = found else {
            // Either gone since the listing, or undecryptable: show the row.
            if let Some(user) =
                users::table.find(id).select(crate::accounts::User::as_select()).first(conn).optional()?
            {
                list.push(UserSummary {
                    id: user.id,
                    created_at: user.created_at,
                    display_name: None,
                    is_admin: user.is_admin,
                    disabled: user.disabled_at.is_some(),
                    providers: Vec::new(),
                });
            }
            continue;
        };
        list.push(UserSummary {
            id: user.id,
            created_at: user.created_at,
            display_name,
            is_admin: user.is_admin,
            disabled: user.disabled_at.is_some(),
            providers: identities.into_iter().map(|i| i.provider).collect(),
        });
    }
    Ok(list)
}

/// Where a page starts: after the row with this time and id (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: i64,
    pub id: String,
}

impl Cursor {
    pub fn parse(text: &str) -> Option<Self> {
        let (at, id) = text.split_once('.')?;
        let at = at.parse().ok()?;
        uuid::Uuid::try_parse(id).ok()?;
        Some(Cursor { at, id: id.to_string() })
    }

    pub fn encode(&self) -> String {
        format!("{}.{}", self.at, self.id)
    }
}

/// One page of users, newest first, and where the next one starts.
pub fn list_users(
    conn: &mut DbConnection,
    keys: &UserKeys,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<(Vec<UserSummary>, Option<Cursor>), DbError> {
    let mut query = users::table.into_boxed();
    if let Some(after) = after {
        query = query.filter(
            users::created_at
                .lt(after.at)
                .or(users::created_at.eq(after.at).and(users::id.lt(after.id.clone()))),
        );
    }
    let mut page: Vec<(String, i64)> = query
        .order((users::created_at.desc(), users::id.desc()))
        .limit(limit + 1)
        .select((users::id, users::created_at))
        .load(conn)?;
    let next = if page.len() as i64 > limit {
        page.truncate(limit as usize);
        page.last().map(|(id, at)| Cursor { at: *at, id: id.clone() })
    } else {
        None
    };
    let ids: Vec<String> = page.into_iter().map(|(id, _)| id).collect();
    Ok((summarise(conn, keys, &ids)?, next))
}

/// What a search found: at most [`SEARCH_MAX`] users, and whether more matched.
pub struct Found {
    pub users: Vec<UserSummary>,
    pub more: bool,
}

/// Users a search shows, at most.
pub const SEARCH_MAX: usize = 50;

/// Users matching `q`: a user id, a provider subject (any provider), an exact e-mail (through
/// the keyed blind index), or the start of name words or of an e-mail (through the search
/// terms, `accounts::search`; the caller brings them up to date first). No plaintext is scanned.
pub fn search_users(
    conn: &mut DbConnection,
    keys: &UserKeys,
    index: &BlindIndex,
    q: &str,
) -> Result<Found, DbError> {
    let q = q.trim();
    let mut ids: Vec<String> = Vec::new();
    if let Ok(id) = uuid::Uuid::try_parse(q) {
        ids.extend(
            users::table
                .filter(users::id.eq(id.hyphenated().to_string()))
                .select(users::id)
                .load::<String>(conn)?,
        );
    }
    if q.contains('@') {
        ids.extend(profile::find_by_email(conn, index, q)?);
    }
    ids.extend(
        identities::table
            .filter(identities::subject.eq(q))
            .select(identities::user_id)
            .limit(50)
            .load::<String>(conn)?,
    );
    let mut more = false;
    if let Some(query) = index.query(q) {
        let (by_prefix, cut) = crate::accounts::search::find(conn, keys, &query, SEARCH_MAX)?;
        ids.extend(by_prefix);
        more = cut;
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    more |= ids.len() > SEARCH_MAX;
    ids.truncate(SEARCH_MAX);
    let mut users = summarise(conn, keys, &ids)?;
    users.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
    Ok(Found { users, more })
}

/// A user in full: profile, every device they still have a record of, recent events.
pub struct UserDetail {
    pub profile: Profile,
    pub devices: Vec<Device>,
    pub events: Vec<AuditRow>,
    /// The event that ended each revoked device, by device id.
    pub endings: std::collections::HashMap<String, AuditRow>,
    /// Who the ids of `events` and `endings` are.
    pub people: std::collections::HashMap<String, audit_log::Person>,
    pub admin_sessions: i64,
}

/// `None` when there is no such user.
pub fn user_detail(
    conn: &mut DbConnection,
    keys: &UserKeys,
    user_id: &str,
) -> Result<Option<UserDetail>, crate::crypto::user_keys::UserKeyError> {
    let found = match profile::profile(conn, keys, user_id) {
        Err(crate::crypto::user_keys::UserKeyError::Db(e)) => return Err(e.into()),
        // A damaged key must not lock the admin out of the user: shown without name or e-mail.
        Err(e) => {
            tracing::warn!(%user_id, error = %e, "cannot decrypt a user's profile");
            undecrypted_profile(conn, user_id)?
        }
        Ok(found) => found,
    };
    let Some(profile) = found else {
        return Ok(None);
    };
    let devices = devices::table
        .filter(devices::user_id.eq(user_id))
        .order((devices::revoked_at.is_not_null(), devices::last_seen_at.desc(), devices::id.desc()))
        .limit(500)
        .select(Device::as_select())
        .load(conn)?;
    let filter = AuditFilter { user: Some(user_id.to_string()), ..Default::default() };
    let events = audit_log::page(conn, &filter, &audit_log::Page::First, 20)?.events;
    let endings = audit_log::device_endings(conn, user_id, &devices)?;
    let named: Vec<AuditRow> = events.iter().chain(endings.values()).cloned().collect();
    let people = audit_log::people(conn, keys, &named)?;
    let admin_sessions: i64 =
        admin_sessions::table.filter(admin_sessions::user_id.eq(user_id)).count().get_result(conn)?;
    Ok(Some(UserDetail { profile, devices, events, endings, people, admin_sessions }))
}

fn undecrypted_profile(conn: &mut DbConnection, user_id: &str) -> Result<Option<Profile>, DbError> {
    let Some(user) =
        users::table.find(user_id).select(crate::accounts::User::as_select()).first(conn).optional()?
    else {
        return Ok(None);
    };
    let identities = identities::table
        .filter(identities::user_id.eq(user_id))
        .order(identities::linked_at.asc())
        .select(crate::accounts::Identity::as_select())
        .load(conn)?;
    Ok(Some(Profile { user, display_name: None, email: None, identities }))
}
