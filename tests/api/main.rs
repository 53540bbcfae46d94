//! Black-box tests of idbridge over HTTP. Each behaviour runs on SQLite and on Postgres
//! (`<test>::sqlite`, `<test>::postgres`); Postgres is at IDBRIDGE_TEST_PG_URL
//! (default postgres://postgres@127.0.0.1:5432), one fresh database per test.

#[macro_use]
mod support;

mod abuse;
mod access_token;
mod admin;
mod admin_browser;
mod admin_daily;
mod apple;
mod apple_web;
mod audit_chain;
mod backchannel;
mod browser_flow;
mod config;
mod crypto;
mod dev_provider;
mod discovery_ops;
mod dpop;
mod facebook;
mod faults;
mod google_validation;
mod group_commit;
mod input_output;
mod linking;
mod me;
mod oidc_providers;
mod operations;
mod outage;
mod refresh;
mod replicas;
mod resource_servers;
mod revoke_introspect;
mod secrets_in_logs;
mod session_events;
mod session_rules;
mod token_exchange;
mod userinfo;
