//! The console's search by name and e-mail prefix, with names and e-mails encrypted at rest.
//!
//! Each user has search terms (`user_search_terms`): keyed HMACs (`crypto::blind_index`) of
//! the prefixes of their name's words and of their e-mails' local parts, padded with random
//! terms. A new user, a link and an unlink mark the user's terms stale (`search_indexed`); the
//! indexer writes them again from the decrypted profile, in housekeeping (50 users every 2 seconds) and
//! (up to 500, best effort) before every search, so a search finds who signed in a moment ago.
//! A search looks its terms up, then confirms each candidate against the decrypted profile.
//!
//! What the terms tell someone who holds only the database (not the server secret): which users
//! share a name-word or e-mail prefix, and so how common each one is (frequency analysis can
//! guess the commonest, such as a frequent first name), and roughly how long a user's name and
//! e-mails are (to the nearest 16 terms). Never a name or an e-mail itself.

use diesel::prelude::*;

use super::profile::{self, Profile};
use crate::crypto::blind_index::{BlindIndex, SearchQuery};
use crate::crypto::user_keys::{UserKeyError, UserKeys};
use crate::db::schema::{user_search_terms, users};
use crate::db::{DbConnection, DbError};

/// Candidates a search looks at, at most: a search that finds more asks to be narrowed.
pub const CANDIDATES_MAX: i64 = 200;

/// Marks a user's terms stale (their e-mails changed); the indexer writes them again.
pub fn mark_stale(conn: &mut DbConnection, user_id: &str) -> Result<(), DbError> {
    diesel::update(users::table.find(user_id)).set(users::search_indexed.eq(false)).execute(conn)?;
    Ok(())
}

/// A user's name and every e-mail of theirs (the user's and their identities'), decrypted.
fn names_and_emails(
    conn: &mut DbConnection,
    keys: &UserKeys,
    found: &Profile,
) -> Result<(Option<String>, Vec<String>), UserKeyError> {
    let mut emails: Vec<String> = found.email.iter().cloned().collect();
    for identity in &found.identities {
        if let Some(email) = profile::identity_email(conn, keys, identity)? {
            if !emails.contains(&email) {
                emails.push(email);
            }
        }
    }
    Ok((found.display_name.clone(), emails))
}

/// Writes the terms of up to `batch` users whose terms are stale, each in its own transaction
/// under the user's row lock (as linking takes it). Returns how many; run until it returns
/// less than `batch`. A profile that cannot be decrypted is indexed with no terms, and logged.
pub fn index_pending(
    conn: &mut DbConnection,
    keys: &UserKeys,
    index: &BlindIndex,
    batch: i64,
) -> Result<usize, DbError> {
    let pending: Vec<String> =
        users::table.filter(users::search_indexed.eq(false)).select(users::id).limit(batch).load(conn)?;
    for user_id in &pending {
        conn.transaction(|c| {
            if !super::lock_user(c, user_id)? {
                return Ok::<_, DbError>(());
            }
            let found = profile::profile(c, keys, user_id).and_then(|found| match found {
                Some(found) => names_and_emails(c, keys, &found).map(Some),
                None => Ok(None),
            });
            let terms = match found {
                Ok(Some((name, emails))) => index.terms_of(name.as_deref(), &emails),
                Ok(None) => return Ok(()),
                Err(UserKeyError::Db(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(user_id = %user_id, error = %e, "cannot decrypt a profile to index it for search");
                    Vec::new()
                }
            };
            diesel::delete(user_search_terms::table.filter(user_search_terms::user_id.eq(user_id))).execute(c)?;
            let rows: Vec<_> = terms
                .iter()
                .map(|t| (user_search_terms::term.eq(t), user_search_terms::user_id.eq(user_id)))
                .collect();
            // A batch insert is per backend (MultiConnection has none).
            let insert = diesel::insert_into(user_search_terms::table).values(rows);
            match c {
                DbConnection::Pg(pg) => insert.execute(pg)?,
                DbConnection::Sqlite(lite) => insert.execute(lite)?,
            };
            diesel::update(users::table.find(user_id)).set(users::search_indexed.eq(true)).execute(c)?;
            Ok(())
        })?;
    }
    Ok(pending.len())
}

#[derive(QueryableByName)]
struct Candidate {
    #[diesel(sql_type = diesel::sql_types::Text)]
    user_id: String,
}

/// Up to `limit` users who have every one of `terms` (at least one): the first term's users,
/// read in index order, each kept only when the primary key also holds the others, so the
/// query stops after `limit` matches however common the terms are.
fn having_every(conn: &mut DbConnection, terms: &[String], limit: i64) -> Result<Vec<String>, DbError> {
    let placeholder = |n: usize| match conn {
        DbConnection::Pg(_) => format!("${n}"),
        DbConnection::Sqlite(_) => "?".to_string(),
    };
    let mut sql = String::from("SELECT t0.user_id FROM user_search_terms t0");
    for i in 1..terms.len() {
        sql.push_str(&format!(
            " JOIN user_search_terms t{i} ON t{i}.user_id = t0.user_id AND t{i}.term = {}",
            placeholder(i)
        ));
    }
    sql.push_str(&format!(" WHERE t0.term = {} LIMIT {limit}", placeholder(terms.len())));
    // Bound in the order the placeholders appear: the joined terms, then the driving one.
    let (first, rest) = terms.split_first().expect("at least one term");
    macro_rules! load {
        ($c:expr, $backend:ty) => {{
            let mut query = diesel::sql_query(sql).into_boxed::<$backend>();
            for term in rest {
                query = query.bind::<diesel::sql_types::Text, _>(term.clone());
            }
            query = query.bind::<diesel::sql_types::Text, _>(first.clone());
            query.load::<Candidate>($c)?
        }};
    }
    let found = match conn {
        DbConnection::Pg(c) => load!(c, diesel::pg::Pg),
        DbConnection::Sqlite(c) => load!(c, diesel::sqlite::Sqlite),
    };
    Ok(found.into_iter().map(|c| c.user_id).collect())
}

/// The users a search finds (at most `limit`), and whether more matched than were looked at.
pub fn find(
    conn: &mut DbConnection,
    keys: &UserKeys,
    query: &SearchQuery,
    limit: usize,
) -> Result<(Vec<String>, bool), DbError> {
    let mut candidates: Vec<String> = if query.name_terms.is_empty() {
        Vec::new()
    } else {
        having_every(conn, &query.name_terms, CANDIDATES_MAX)?
    };
    if let Some(term) = &query.email_term {
        let by_email: Vec<String> = user_search_terms::table
            .filter(user_search_terms::term.eq(term))
            .select(user_search_terms::user_id)
            .limit(CANDIDATES_MAX)
            .load(conn)?;
        for id in by_email {
            if !candidates.contains(&id) {
                candidates.push(id);
            }
        }
    }
    let more = candidates.len() as i64 >= CANDIDATES_MAX;
    let mut found = Vec::new();
    for user_id in candidates {
        let confirmed = match profile::profile(conn, keys, &user_id) {
            Ok(Some(p)) => match names_and_emails(conn, keys, &p) {
                Ok((name, emails)) => query.matches(name.as_deref(), &emails),
                Err(UserKeyError::Db(e)) => return Err(e),
                Err(_) => false,
            },
            Ok(None) => false,
            Err(UserKeyError::Db(e)) => return Err(e),
            Err(_) => false,
        };
        if confirmed {
            found.push(user_id);
            if found.len() == limit {
                return Ok((found, true));
            }
        }
    }
    Ok((found, more))
}
