//! idbridge: checks a Google or Facebook sign-in once, then speaks only its own tokens.

pub mod accounts;
pub mod admin;
pub mod app;
pub mod audit;
pub mod audit_chain;
pub mod backchannel;
pub mod clients;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod housekeeping;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod proof_replay;
pub mod providers;
pub mod rate_limits;
pub mod service;
pub mod sessions;
pub mod state;
pub mod tokens;
