//! The answers many operations share (error sets, HTML pages), as utoipa `IntoResponses`.
//! Each names the statuses the server really gives and the body each one carries.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use utoipa::openapi::response::Response;
use utoipa::openapi::RefOr;
use utoipa::IntoResponses;

pub const OAUTH_ERROR: &str = "#/components/schemas/OAuthErrorBody";
pub const PROBLEM: &str = "#/components/schemas/ProblemBody";
pub const HTML: &str = "text/html";
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One response: a description, and a body of `content_type` with `schema` when there is one.
pub fn answer(description: &str, body: Option<(&str, Value)>, headers: &[&str]) -> RefOr<Response> {
    let mut response = json!({ "description": description });
    if let Some((content_type, schema)) = body {
        response["content"] = json!({ content_type: { "schema": schema } });
    }
    for name in headers {
        let (schema, about) = match *name {
            "Retry-After" => (json!({"type": "integer"}), "seconds to wait"),
            "WWW-Authenticate" => (json!({"type": "string"}), "the challenge (RFC 6750 §3, RFC 9449 §7.1)"),
            "Location" => (json!({"type": "string"}), "where the browser goes next"),
            "DPoP-Nonce" => (json!({"type": "string"}), "a fresh DPoP server nonce (RFC 9449 §8)"),
            _ => (json!({"type": "string"}), ""),
        };
        response["headers"][*name] = json!({ "schema": schema, "description": about });
    }
    // Built from literals above: it always has the shape of a Response.
    serde_json::from_value(response).unwrap_or_else(|_| Response::new(description).into())
}

fn schema_ref(path: &str) -> Value {
    json!({ "$ref": path })
}

pub fn html_page() -> Value {
    json!({ "type": "string" })
}

fn set(entries: Vec<(u16, RefOr<Response>)>) -> BTreeMap<String, RefOr<Response>> {
    entries.into_iter().map(|(status, r)| (status.to_string(), r)).collect()
}

fn oauth(description: &str, headers: &[&str]) -> RefOr<Response> {
    answer(description, Some(("application/json", schema_ref(OAUTH_ERROR))), headers)
}

fn problem(description: &str, headers: &[&str]) -> RefOr<Response> {
    answer(description, Some((PROBLEM_JSON, schema_ref(PROBLEM))), headers)
}

fn page(description: &str) -> RefOr<Response> {
    answer(description, Some((HTML, html_page())), &[])
}

/// The errors of `/oauth` endpoints that authenticate a client (RFC 6749 §5.2).
pub struct OAuthErrors;

impl IntoResponses for OAuthErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set(vec![
            (400, oauth("A missing, malformed or unacceptable parameter (`invalid_request`, `invalid_grant`, `invalid_scope`, `unsupported_grant_type`, `invalid_dpop_proof`, `use_dpop_nonce`)", &["DPoP-Nonce"])),
            (401, oauth("Client authentication failed (`invalid_client`)", &["WWW-Authenticate"])),
            (405, oauth("Method not allowed (see `Allow`)", &[])),
            (413, oauth("Body over 64 KiB", &[])),
            (429, oauth("Too many requests from this address or client (`temporarily_unavailable`)", &["Retry-After"])),
            (503, oauth("The database or the provider cannot be reached (`temporarily_unavailable`)", &["Retry-After"])),
        ])
    }
}

/// The errors of endpoints that take an access token (`/v1`, `/oauth/userinfo`).
pub struct ResourceErrors;

impl IntoResponses for ResourceErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set(vec![
            (
                401,
                problem(
                    "No, a bad, expired or revoked access token, or a bad DPoP proof",
                    &["WWW-Authenticate", "DPoP-Nonce"],
                ),
            ),
            (405, problem("Method not allowed (see `Allow`)", &[])),
            (413, problem("Body over 64 KiB", &[])),
            (429, problem("Too many requests", &["Retry-After"])),
            (503, problem("The database cannot be reached", &["Retry-After"])),
        ])
    }
}

/// The errors of `/v1/crypto`, which a user or a confidential client calls.
pub struct CryptoErrors;

impl IntoResponses for CryptoErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut answers = ResourceErrors::responses();
        answers.extend(set(vec![
            (400, problem("A malformed body, `user_id` or ciphertext; a ciphertext of another user or context, or altered", &[])),
            (401, problem("No or a bad access token, or failed HTTP Basic client authentication", &["WWW-Authenticate", "DPoP-Nonce"])),
            (403, problem("A token without scope `api`, a client without scope `crypto`, or a user naming another user", &["WWW-Authenticate"])),
            (404, problem("The user was deleted: their keys are destroyed", &[])),
        ]));
        answers
    }
}

/// A console page: HTML for an admin, else to the sign-in.
pub struct AdminPage;

impl IntoResponses for AdminPage {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set(vec![
            (200, page("The page")),
            (303, answer("Not signed in as an admin: to `/admin/login`", None, &["Location"])),
            (400, page("A malformed filter or page")),
            (404, page("No such user or client")),
            (503, page("The database cannot be reached")),
        ])
    }
}

/// A console change: a form POST with the session's anti-CSRF token, audited.
pub struct AdminChange;

impl IntoResponses for AdminChange {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set(vec![
            (303, answer("Done: back to the page", None, &["Location"])),
            (400, page("A change the console does not make (for example on the admin's own account)")),
            (403, page("No admin session, or a missing or wrong anti-CSRF token: nothing changes")),
            (404, page("No such user, device or client")),
            (413, page("Body over 64 KiB")),
            (503, page("The database cannot be reached: nothing changes")),
        ])
    }
}

/// The answers of the browser flow's pages and redirects.
pub struct BrowserAnswers;

impl IntoResponses for BrowserAnswers {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let page = |about: &str| answer(about, Some((HTML, html_page())), &[]);
        [
            (200, page("The provider choice, or the dev provider's form")),
            (302, answer("To the provider; or back to the client with `code`, `state` and `iss`, or with `error` (RFC 6749 §4.1.2.1)", None, &["Location"])),
            (400, page("An unknown client, a redirect URI it has not registered, or an unknown, expired, replayed or other browser's sign-in: a page, never a redirect")),
            (404, page("No such provider")),
            (413, answer("Body over 64 KiB", Some(("application/problem+json", html_page())), &[])),
            (429, page("Too many sign-ins from this address")),
            (503, page("The database cannot be reached")),
        ]
        .into_iter()
        .map(|(status, r)| (status.to_string(), r))
        .collect()
    }
}

/// The answers of a logout request.
pub struct LogoutAnswers;

impl IntoResponses for LogoutAnswers {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [
            (200, answer("Signed out: a page", Some((HTML, html_page())), &[])),
            (302, answer("Back to `post_logout_redirect_uri`, with `state`", None, &["Location"])),
            (
                400,
                answer(
                    "A hint idbridge cannot check, or a return address that is not the client's",
                    Some((HTML, html_page())),
                    &[],
                ),
            ),
            (413, answer("Body over 64 KiB", Some(("application/problem+json", html_page())), &[])),
            (503, answer("The database cannot be reached", Some((HTML, html_page())), &[])),
        ]
        .into_iter()
        .map(|(status, r)| (status.to_string(), r))
        .collect()
    }
}

/// A provider's event refused (RFC 8935 §2.3), or not acted on.
pub struct EventAnswers;

impl IntoResponses for EventAnswers {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let both = |description: &str| {
            let mut r = json!({ "description": description, "content": {
                "application/json": { "schema": schema_ref("#/components/schemas/EventError") },
                PROBLEM_JSON: { "schema": schema_ref(PROBLEM) },
            }});
            r["headers"] = json!({});
            serde_json::from_value(r).unwrap_or_else(|_| Response::new(description).into())
        };
        set(vec![
            (400, both("Refused, nothing changed: a forged, stale, replayed-elsewhere or foreign event (`err`), or a malformed body (problem+json)")),
            (413, both("Body over 64 KiB")),
            (503, both("The provider's keys or the database cannot be reached; try again")),
        ])
    }
}

/// A data-deletion request's status, for a person (HTML) or a program (JSON).
pub struct DeletionStatusAnswers;

impl IntoResponses for DeletionStatusAnswers {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let both = |description: &str, schema: &str| {
            let r = json!({ "description": description, "content": {
                HTML: { "schema": html_page() },
                "application/json": { "schema": schema_ref(schema) },
            }});
            serde_json::from_value(r).unwrap_or_else(|_| Response::new(description).into())
        };
        set(vec![
            (200, both("The status", "#/components/schemas/DeletionStatus")),
            (404, both("No such request", "#/components/schemas/EventError")),
            (503, both("The database cannot be reached", "#/components/schemas/EventError")),
        ])
    }
}
