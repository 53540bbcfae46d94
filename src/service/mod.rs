//! The use cases: one async function per thing a caller can do. The API (`http`), the admin
//! console (`http::admin`) and the command line (`main.rs`) parse what they were given, call
//! one of these, and answer; so a rule (an audit event, the cache to evict, the PostgreSQL
//! one-statement path) is applied the same way whoever asks.
//!
//! Each use case owns its transaction (`Db::write`, or `Db::run` for a one-statement path)
//! and what must follow the commit (evicting a cached key, reloading the client registry).
//! The rules themselves live in the domain modules below: `accounts`, `sessions`, `tokens`,
//! `clients`, `crypto`, `admin`.
//!
//! - `sign_in`: token exchange and authorization codes become a session.
//! - `refresh`: a refresh token becomes its successor.
//! - `devices`: ending one device, or all of a user's.
//! - `users`: disabling, enabling, deleting, the admin role.
//! - `identities`: linking and unlinking, and the browser flow's code.
//! - `keys`: publishing a new signing key.
//! - `crypto`: encrypting and decrypting with a user's data key.
//! - `clients`: the console's clients; `console`: signing in to the console and out.

pub mod clients;
pub mod console;
pub mod crypto;
pub mod devices;
pub mod events;
pub mod identities;
pub mod keys;
pub mod refresh;
pub mod sign_in;
pub mod users;

use crate::audit::{Actor, Attribution, AuditAction, Origin};

/// Who asks for a change and from where; it names them in the audit log.
#[derive(Debug, Clone)]
pub struct Requester {
    pub actor: Actor,
    pub origin: Origin,
}

impl Requester {
    pub fn new(actor: Actor, origin: Origin) -> Self {
        Requester { actor, origin }
    }

    /// The command line on the server.
    pub fn cli() -> Self {
        Requester { actor: Actor::Cli, origin: Origin::default() }
    }

    /// This requester making an audited change `action`.
    pub fn doing<'a>(&'a self, action: AuditAction, detail: Option<&'a str>) -> Attribution<'a> {
        Attribution { actor: &self.actor, action, detail, origin: &self.origin }
    }
}

/// What a change of state (disable, enable) came to.
#[derive(Debug, PartialEq, Eq)]
pub enum StateChange<T> {
    Done(T),
    /// It already was so: nothing was written or audited.
    AlreadySo,
    /// There is no such user or client.
    Missing,
}

/// What the console adds to the audit detail of a change made there.
pub const BY_CONSOLE: &str = "by the admin console";

#[cfg(test)]
mod tests;
