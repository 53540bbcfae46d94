//! What a provider's event does (API.md, "Session events"), once its signature is checked
//! (`providers::events`). Every event is acted on in one transaction with its single-use
//! record, so a replay changes nothing and answers the same; each is audited with the actor
//! `provider:<name>`. Ending devices goes through `devices::end_all`, so every replica refuses
//! their tokens within a second and their clients are told (back-channel logout).

use std::sync::Arc;

use diesel::prelude::*;

use crate::accounts::{self, profile};
use crate::audit::{Actor, AuditAction, Origin};
use crate::db::{schema::deletion_requests, DbConnection, DbError};
use crate::providers::events::{FacebookRequest, Verified};
use crate::sessions::devices;
use crate::state::AppState;

use super::Requester;

const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
const TOKENS_REVOKED: &str = "https://schemas.openid.net/secevent/oauth/event-type/tokens-revoked";
/// Google's RISC issuer as subjects name it.
const GOOGLE_RISC_ISSUER: &str = "https://accounts.google.com/";

/// What an event asks of one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// End every device of the identity's user.
    EndDevices,
    /// End every device and refuse the identity's sign-in until it is allowed again.
    EndAndBlock,
    Unblock,
    /// Delete the user when this is their only identity, else unlink it and end the devices.
    Forget,
    EmailDisabled(bool),
    /// Audited only.
    Note,
}

/// One event about one identity, as acted on.
struct Effect {
    provider: &'static str,
    subject: String,
    action: Action,
    /// The audit detail: the event's short name and what it carried.
    detail: String,
}

/// How an event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Acted on now.
    Done,
    /// Seen before: nothing changed.
    Replayed,
}

/// Google Cross-Account Protection: each event of the SET about an `iss-sub` subject.
pub async fn google_risc(app: &Arc<AppState>, set: Verified, origin: Origin) -> Result<Applied, DbError> {
    let risc_issuer =
        app.providers.risc.as_ref().and_then(|r| r.issuer()).unwrap_or(GOOGLE_RISC_ISSUER).to_string();
    let same_issuer = |iss: &str| {
        let iss = iss.trim_end_matches('/');
        iss == risc_issuer.trim_end_matches('/') || iss == GOOGLE_RISC_ISSUER.trim_end_matches('/')
    };
    let mut effects = Vec::new();
    for (kind, body) in &set.events {
        let subject = &body["subject"];
        let iss_sub =
            subject["subject_type"] == "iss-sub" && subject["iss"].as_str().is_some_and(same_issuer);
        let Some(sub) = subject["sub"].as_str().filter(|_| iss_sub) else {
            tracing::info!(event = %kind, "a RISC event about another kind of subject; ignored");
            continue;
        };
        let name =
            kind.strip_prefix(RISC).unwrap_or(if kind == TOKENS_REVOKED { "tokens-revoked" } else { kind });
        let (action, detail) = match (name, kind.as_str()) {
            (_, TOKENS_REVOKED) | ("sessions-revoked", _) => (Action::EndDevices, name.to_string()),
            ("account-disabled", _) => {
                let reason = body["reason"].as_str().unwrap_or("unspecified");
                let action = if reason == "hijacking" { Action::EndAndBlock } else { Action::EndDevices };
                (action, format!("account-disabled; reason={}", short(reason)))
            }
            ("account-enabled", _) => (Action::Unblock, name.to_string()),
            ("account-credential-change-required", _) => (Action::Note, name.to_string()),
            ("verification", _) => {
                (Action::Note, format!("verification; state={}", short(body["state"].as_str().unwrap_or(""))))
            }
            _ => (Action::Note, format!("unhandled event {}", short(name))),
        };
        effects.push(Effect {
            provider: "google",
            subject: sub.to_string(),
            action,
            detail: format!("risc:{detail}"),
        });
    }
    apply(app, "google", &set.replay_key, set.expires_at, effects, origin).await
}

/// Apple's server-to-server notification: consent revoked, account deleted, relay e-mail
/// off or on.
pub async fn apple(app: &Arc<AppState>, notification: Verified, origin: Origin) -> Result<Applied, DbError> {
    let mut effects = Vec::new();
    for (kind, body) in &notification.events {
        let sub = body["sub"].as_str().unwrap_or_default().to_string();
        let action = match kind.as_str() {
            "consent-revoked" => Action::EndDevices,
            "account-delete" => Action::Forget,
            "email-disabled" => Action::EmailDisabled(true),
            "email-enabled" => Action::EmailDisabled(false),
            _ => Action::Note,
        };
        effects.push(Effect {
            provider: "apple",
            subject: sub,
            action,
            detail: format!("apple:{}", short(kind)),
        });
    }
    apply(app, "apple", &notification.replay_key, notification.expires_at, effects, origin).await
}

/// Facebook's Deauthorize Callback: the person removed the app; their devices end.
pub async fn facebook_deauthorize(
    app: &Arc<AppState>,
    request: FacebookRequest,
    origin: Origin,
) -> Result<Applied, DbError> {
    let effect = Effect {
        provider: "facebook",
        subject: request.user_id,
        action: Action::EndDevices,
        detail: "facebook:deauthorize".into(),
    };
    apply(app, "facebook", &request.replay_key, request.expires_at, vec![effect], origin).await
}

/// A data-deletion request's status, as the person can look it up.
pub struct DeletionStatus {
    pub code: String,
    pub outcome: String,
    pub created_at: i64,
}

/// Facebook's Data Deletion Request Callback: the user is deleted (Facebook their only
/// identity) or the identity unlinked and the devices ended. Returns the confirmation code;
/// a replay returns the first one's.
pub async fn facebook_data_deletion(
    app: &Arc<AppState>,
    request: FacebookRequest,
    origin: Origin,
) -> Result<String, DbError> {
    let by = Requester::new(Actor::Provider("facebook"), origin);
    let (code, deleted) = app
        .db
        .write(move |conn| {
            let now = crate::clock::now();
            if let Some(code) = deletion_code_for(conn, &request.replay_key)? {
                return Ok::<_, DbError>((code, None));
            }
            accounts::first_time(conn, &request.replay_key, "facebook", request.expires_at)?;
            let effect = Effect {
                provider: "facebook",
                subject: request.user_id.clone(),
                action: Action::Forget,
                detail: "facebook:data-deletion".into(),
            };
            let (outcome, deleted) = act(conn, &effect, &by, now)?;
            let code = crate::crypto::random_token::<16>();
            diesel::insert_into(deletion_requests::table)
                .values((
                    deletion_requests::code.eq(&code),
                    deletion_requests::request_hash.eq(&request.replay_key),
                    deletion_requests::provider.eq("facebook"),
                    deletion_requests::outcome.eq(outcome),
                    deletion_requests::created_at.eq(now),
                ))
                .execute(conn)?;
            Ok((code, deleted))
        })
        .await?;
    if let Some(user) = deleted {
        app.user_keys.forget(&user);
    }
    Ok(code)
}

/// Forgets data-deletion requests made before `before` (kept as long as the audit trail).
pub fn delete_requests_before(conn: &mut DbConnection, before: i64) -> Result<usize, DbError> {
    Ok(diesel::delete(deletion_requests::table.filter(deletion_requests::created_at.lt(before)))
        .execute(conn)?)
}

/// A data-deletion request by its confirmation code.
pub async fn deletion_status(app: &AppState, code: String) -> Result<Option<DeletionStatus>, DbError> {
    app.db
        .run(move |conn| {
            let row: Option<(String, String, i64)> = deletion_requests::table
                .find(&code)
                .select((deletion_requests::code, deletion_requests::outcome, deletion_requests::created_at))
                .first(conn)
                .optional()?;
            Ok(row.map(|(code, outcome, created_at)| DeletionStatus { code, outcome, created_at }))
        })
        .await
}

fn deletion_code_for(conn: &mut DbConnection, request_hash: &str) -> Result<Option<String>, DbError> {
    Ok(deletion_requests::table
        .filter(deletion_requests::request_hash.eq(request_hash))
        .select(deletion_requests::code)
        .first(conn)
        .optional()?)
}

/// Short, log-safe text from a provider's field.
fn short(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Acts on `effects` in one transaction with the event's single-use record.
async fn apply(
    app: &Arc<AppState>,
    provider: &'static str,
    replay_key: &str,
    expires_at: i64,
    effects: Vec<Effect>,
    origin: Origin,
) -> Result<Applied, DbError> {
    let (key, by) = (replay_key.to_string(), Requester::new(Actor::Provider(provider), origin));
    let (applied, deleted) = app
        .db
        .write(move |conn| {
            let now = crate::clock::now();
            if !accounts::first_time(conn, &key, provider, expires_at)? {
                return Ok::<_, DbError>((Applied::Replayed, Vec::new()));
            }
            let mut deleted = Vec::new();
            for effect in &effects {
                if let (_, Some(user)) = act(conn, effect, &by, now)? {
                    deleted.push(user);
                }
            }
            Ok((Applied::Done, deleted))
        })
        .await?;
    for user in deleted {
        app.user_keys.forget(&user);
    }
    Ok(applied)
}

/// One effect on one identity, audited. Returns what it came to (for a deletion request's
/// status) and the user it deleted, if any.
fn act(
    conn: &mut DbConnection,
    effect: &Effect,
    by: &Requester,
    now: i64,
) -> Result<(&'static str, Option<String>), DbError> {
    let Some((user_id, identities)) = accounts::owner_of(conn, effect.provider, &effect.subject)? else {
        let detail = format!("{}; no such identity", effect.detail);
        by.doing(AuditAction::ProviderEvent, None).record(conn, None, None, Some(&detail), now)?;
        return Ok(("no account", None));
    };
    let audit = |conn: &mut DbConnection, detail: &str| {
        by.doing(AuditAction::ProviderEvent, None).record(conn, Some(&user_id), None, Some(detail), now)
    };
    let end_all = |conn: &mut DbConnection| {
        devices::end_all(conn, &user_id, &by.doing(AuditAction::ProviderEvent, Some(&effect.detail)), now)
    };
    match &effect.action {
        Action::EndDevices => {
            end_all(conn)?;
            Ok(("devices ended", None))
        }
        Action::EndAndBlock => {
            accounts::set_sign_in_blocked(conn, effect.provider, &effect.subject, true, now)?;
            end_all(conn)?;
            Ok(("devices ended, sign-in refused", None))
        }
        Action::Unblock => {
            accounts::set_sign_in_blocked(conn, effect.provider, &effect.subject, false, now)?;
            audit(conn, &effect.detail)?;
            Ok(("sign-in allowed", None))
        }
        Action::EmailDisabled(disabled) => {
            accounts::set_email_disabled(conn, effect.provider, &effect.subject, *disabled, now)?;
            audit(conn, &effect.detail)?;
            Ok(("recorded", None))
        }
        Action::Note => {
            audit(conn, &effect.detail)?;
            Ok(("recorded", None))
        }
        Action::Forget if identities <= 1 => {
            let deleting = Requester::new(by.actor.clone(), by.origin.clone());
            super::users::delete_in(conn, &user_id, &deleting, now)?;
            audit(conn, &effect.detail)?;
            Ok(("deleted", Some(user_id.clone())))
        }
        Action::Forget => {
            profile::unlink_identity(conn, &user_id, effect.provider, &by.actor, &by.origin, now)?;
            end_all(conn)?;
            Ok(("unlinked, devices ended", None))
        }
    }
}
