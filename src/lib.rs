//! idbridge: checks a Google or Facebook sign-in once, then speaks only its own tokens.

pub mod accounts;
pub mod admin;
pub mod app;
pub mod clients;
pub mod config;
pub mod crypto;
pub mod db;
pub mod housekeeping;
pub mod http;
pub mod metrics;
pub mod providers;
pub mod state;
pub mod tokens;
