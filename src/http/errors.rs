//! Error answers: RFC 6749 JSON under `/oauth`, problem+json (RFC 9457) everywhere else.
//! Every error a client sees is mapped here on purpose; anything unexpected is a logged 500.

use std::borrow::Cow;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::db::DbError;

const RETRY_AFTER_SECS: u64 = 5;
/// RFC 9449 §8's header (lower case, as `HeaderName::from_static` needs it).
pub const DPOP_NONCE_HEADER: &str = "dpop-nonce";
/// The DPoP challenge's `algs` (RFC 9449 §7.1).
const DPOP_ALGS: &str = "algs=\"ES256 EdDSA\"";

/// An error of an `/oauth` endpoint (RFC 6749 §5.2).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OAuthErrorBody<'a> {
    /// An RFC 6749, 7009, 8693 or 9449 error code
    #[schema(value_type = String)]
    pub error: &'a str,
    /// What was wrong, for the developer
    #[schema(value_type = String)]
    pub error_description: &'a str,
}

/// An error under `/v1`, `/oauth/userinfo` and `/admin` JSON (RFC 9457 problem details).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ProblemBody<'a> {
    /// Always `about:blank`
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'a str,
    /// The status's reason phrase
    #[schema(value_type = String)]
    pub title: &'a str,
    pub status: u16,
    /// What was wrong
    #[schema(value_type = String)]
    pub detail: &'a str,
}

#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: Cow<'static, str>,
    /// `Retry-After` seconds, for 429 and 503.
    retry_after: Option<u64>,
    /// A fresh DPoP server nonce for the `DPoP-Nonce` header (RFC 9449 §8).
    dpop_nonce: Option<String>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        let retry_after = (status == StatusCode::SERVICE_UNAVAILABLE).then_some(RETRY_AFTER_SECS);
        Self { status, error, description: description.into(), retry_after, dpop_nonce: None }
    }
    /// RFC 9449 §5: a token request's DPoP proof is missing (where required), malformed, or
    /// not by the key the device or code is bound to.
    pub fn invalid_dpop_proof(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_dpop_proof", description)
    }
    /// RFC 9449 §8: the proof must carry this server nonce.
    pub fn use_dpop_nonce(nonce: String) -> Self {
        Self {
            dpop_nonce: Some(nonce),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "use_dpop_nonce",
                "the DPoP proof must carry the nonce in DPoP-Nonce",
            )
        }
    }
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
    pub fn invalid_client() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed")
    }
    pub fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }
    pub fn unsupported_grant_type() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", "this grant_type is not supported")
    }
    pub fn invalid_scope() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", "the scope is not allowed for this client")
    }
    pub fn payload_too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "the request body is larger than 64 KiB")
    }
    pub fn temporarily_unavailable(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", description)
    }
    pub fn server_error() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "an internal error occurred")
    }
    /// 429 in RFC 6749's shape (`temporarily_unavailable`), with `Retry-After`.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            "too many requests from this client or address; retry later",
        );
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "this method is not allowed here")
    }
}

impl OAuthError {
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The `Retry-After` seconds of a 429 or 503.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.description)
    }
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"idbridge\""));
        }
        if let Some(secs) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if let Some(nonce) = &self.dpop_nonce {
            response.insert_header((DPOP_NONCE_HEADER, nonce.as_str()));
        }
        response.json(OAuthErrorBody { error: self.error, error_description: &self.description })
    }
}

impl From<DbError> for OAuthError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable => {
                Self::temporarily_unavailable("the database is unavailable; retry shortly")
            }
            other => {
                tracing::error!(error = %other, "storage failure");
                Self::server_error()
            }
        }
    }
}

#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    detail: Cow<'static, str>,
    /// A 401 for a request that carried no credentials at all: no `error` in the challenge
    /// (RFC 6750 §3.1).
    no_credentials: bool,
    /// A 401 for HTTP Basic client credentials: a Basic challenge.
    basic_challenge: bool,
    /// A 403 for a token without the scope it needs (RFC 6750 §3.1 `insufficient_scope`).
    required_scope: Option<&'static str>,
    /// A 401 for a request with the DPoP scheme or a DPoP-bound token: a DPoP challenge with
    /// this error (RFC 9449 §7.1).
    dpop_error: Option<&'static str>,
    /// A fresh server nonce for `DPoP-Nonce`.
    dpop_nonce: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            detail: detail.into(),
            no_credentials: false,
            basic_challenge: false,
            required_scope: None,
            dpop_error: None,
            dpop_nonce: None,
        }
    }
    /// A 401 with a DPoP challenge: `error` is `invalid_token` or `invalid_dpop_proof`.
    pub fn dpop_refused(error: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self { dpop_error: Some(error), ..Self::new(StatusCode::UNAUTHORIZED, detail) }
    }
    /// A 401 asking for a proof with this server nonce.
    pub fn use_dpop_nonce(nonce: String) -> Self {
        Self {
            dpop_nonce: Some(nonce),
            ..Self::dpop_refused("use_dpop_nonce", "the DPoP proof must carry the nonce in DPoP-Nonce")
        }
    }
    /// What the answer says went wrong.
    pub fn detail(&self) -> &str {
        &self.detail
    }
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "the access token is invalid, expired or revoked")
    }
    pub fn unauthenticated() -> Self {
        Self {
            no_credentials: true,
            ..Self::new(StatusCode::UNAUTHORIZED, "an access token is required (Bearer or DPoP)")
        }
    }
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "this method is not allowed here")
    }
    pub fn forbidden(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }
    /// A valid access token without `scope`, which this endpoint needs.
    pub fn insufficient_scope(scope: &'static str) -> Self {
        Self {
            required_scope: Some(scope),
            ..Self::new(StatusCode::FORBIDDEN, format!("the access token lacks scope {scope}"))
        }
    }
    /// A client that failed HTTP Basic authentication at `/v1`.
    pub fn unauthorized_client() -> Self {
        Self { basic_challenge: true, ..Self::new(StatusCode::UNAUTHORIZED, "client authentication failed") }
    }
    pub fn too_many_requests() -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too many requests; retry later")
    }
    pub fn payload_too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "the request body is larger than 64 KiB")
    }
    pub fn not_found(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    pub fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "the database is unavailable; retry shortly")
    }
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "an internal error occurred")
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.content_type("application/problem+json");
        match self.status {
            StatusCode::UNAUTHORIZED if self.basic_challenge => {
                response.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"idbridge\""));
            }
            StatusCode::UNAUTHORIZED if self.dpop_error.is_some() => {
                let challenge =
                    format!("DPoP error=\"{}\", {DPOP_ALGS}", self.dpop_error.unwrap_or_default());
                if let Ok(value) = header::HeaderValue::from_str(&challenge) {
                    response.insert_header((header::WWW_AUTHENTICATE, value));
                }
                if let Some(nonce) = &self.dpop_nonce {
                    response.insert_header((DPOP_NONCE_HEADER, nonce.as_str()));
                }
            }
            StatusCode::UNAUTHORIZED if self.no_credentials => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"idbridge\""));
                response.append_header((header::WWW_AUTHENTICATE, format!("DPoP {DPOP_ALGS}")));
            }
            StatusCode::UNAUTHORIZED => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    "Bearer realm=\"idbridge\", error=\"invalid_token\"",
                ));
            }
            StatusCode::FORBIDDEN if self.required_scope.is_some() => {
                let challenge = format!(
                    "Bearer realm=\"idbridge\", error=\"insufficient_scope\", scope=\"{}\"",
                    self.required_scope.unwrap_or_default()
                );
                if let Ok(value) = header::HeaderValue::from_str(&challenge) {
                    response.insert_header((header::WWW_AUTHENTICATE, value));
                }
            }
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
            }
            _ => {}
        }
        let body = ProblemBody {
            kind: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        response.body(serde_json::to_string(&body).unwrap_or_default())
    }
}

impl From<DbError> for Problem {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable => Self::unavailable(),
            other => {
                tracing::error!(error = %other, "storage failure");
                Self::internal()
            }
        }
    }
}

impl From<crate::rate_limits::RetryAfter> for OAuthError {
    fn from(limited: crate::rate_limits::RetryAfter) -> Self {
        OAuthError::too_many_requests(limited.0)
    }
}
