//! The admin console's domain: sessions (`sessions`), what its pages read (`directory`,
//! `audit_log`) and the overview chart (`chart`). The pages themselves are `http::admin`; the changes they make
//! (revoking, disabling, deleting, clients, keys) go through `accounts`, `clients` and
//! `crypto::signing`, like the API and the CLI.

pub mod audit_log;
pub mod chart;
pub mod directory;
pub mod sessions;
