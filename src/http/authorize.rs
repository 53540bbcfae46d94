//! The browser flow (RFC 6749 §4.1 with PKCE, RFC 7636; native apps per RFC 8252):
//! `GET /oauth/authorize` checks the client and its redirect URI, keeps the login server-side
//! bound to the browser's login cookie, and sends the person to the provider (or shows the
//! provider choice, or the dev form). The provider sends them back to
//! `/oauth/callback/{provider}`; idbridge then issues a single-use 60-second code and redirects
//! to the client, which redeems it at `/oauth/token` (see `oauth::code_grant`).
//!
//! Errors before the redirect URI is known to be the client's render a page; after, they go to
//! the client as RFC 6749 §4.1.2.1 parameters.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::input;
use crate::clients::Client;
use crate::crypto::{random_token, sha256_b64};
use crate::providers::{AssertionError, ProviderKind, VerifiedAssertion};
use crate::service;
use crate::state::AppState;
use crate::tokens::codes::{self, LoginState};

/// The browser's login cookie: random, it binds logins in flight to the browser that began them.
pub const LOGIN_COOKIE: &str = "__Host-idbridge-login";
/// The same value for Sign in with Apple's form POST back, which is cross-site: a `Lax` cookie
/// does not come along on it. `SameSite=None`, so it is sent only to that callback's path.
pub const FORM_POST_COOKIE: &str = "__Secure-idbridge-login-apple";
const FORM_POST_PATH: &str = "/oauth/callback/apple";
const MAX_PARAM: usize = 2048;

#[derive(Template)]
#[template(path = "oauth/choose.html")]
struct ChoosePage<'a> {
    client_id: &'a str,
    providers: Vec<ProviderLink>,
}

struct ProviderLink {
    href: String,
    label: String,
}

#[derive(Template)]
#[template(path = "oauth/dev.html")]
struct DevPage<'a> {
    action: &'a str,
    login: &'a str,
}

#[derive(Template)]
#[template(path = "oauth/error.html")]
struct ErrorPage<'a> {
    message: &'a str,
}

/// An HTML page with the headers every page of idbridge carries.
pub(super) fn page(status: StatusCode, html: Result<String, askama::Error>) -> HttpResponse {
    let html = html.unwrap_or_else(|e| {
        tracing::error!(error = %e, "template failed");
        "<!doctype html><title>Error</title><p>An internal error occurred.".to_string()
    });
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html)
}

pub(super) fn error_page(status: StatusCode, message: &str) -> HttpResponse {
    page(status, ErrorPage { message }.render())
}

/// The 429 page, with the `Retry-After` the limiter gave.
fn too_many(limited: &crate::rate_limits::RetryAfter) -> HttpResponse {
    let mut response = error_page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many sign-in attempts from your address. Wait a little and try again.",
    );
    let secs = limited.0;
    if let Ok(value) = header::HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A registered redirect URI, exactly; or, for a loopback one, the same string but for the
/// port (RFC 8252 §7.3, RFC 9700 §2.1). Never one with a fragment.
pub fn redirect_uri_allowed(client: &Client, given: &str) -> bool {
    let Ok(parsed) = url::Url::parse(given) else {
        return false;
    };
    if parsed.fragment().is_some() || given.contains('#') {
        return false;
    }
    client.redirect_uris.iter().any(|r| r == given || same_loopback_uri_but_port(r, given))
}

/// `true` when `registered` is `http://` + a loopback host + an optional port + the rest, and
/// `given` is byte for byte the same with any port or none: no other spelling of the host
/// (`127.1`, `0x7f000001`, a trailing dot, user info), no other case, no path that only
/// normalises to the same one.
fn same_loopback_uri_but_port(registered: &str, given: &str) -> bool {
    let Some((host, rest)) = split_loopback(registered) else {
        return false;
    };
    let Some(after_host) = given.strip_prefix("http://").and_then(|g| g.strip_prefix(host)) else {
        return false;
    };
    let after_port = match after_host.strip_prefix(':') {
        Some(port_and_rest) => {
            let digits = port_and_rest.bytes().take_while(u8::is_ascii_digit).count();
            let port = &port_and_rest[..digits];
            let port_ok = !port.starts_with('0') && port.parse::<u16>().is_ok_and(|p| p > 0);
            if !port_ok {
                return false;
            }
            &port_and_rest[digits..]
        }
        None => after_host,
    };
    after_port == rest
}

/// A registered `http://` loopback URI as its host (as written) and what follows the port.
fn split_loopback(registered: &str) -> Option<(&str, &str)> {
    let after_scheme = registered.strip_prefix("http://")?;
    let host_len = if after_scheme.starts_with('[') {
        after_scheme.find(']')? + 1
    } else {
        after_scheme.find([':', '/', '?']).unwrap_or(after_scheme.len())
    };
    let host = &after_scheme[..host_len];
    let literal_loopback = match url::Host::parse(host) {
        Ok(url::Host::Ipv4(ip)) => ip.to_string() == host && ip.is_loopback(),
        Ok(url::Host::Ipv6(ip)) => format!("[{ip}]") == host && ip.is_loopback(),
        Ok(url::Host::Domain(_)) | Err(_) => host == "localhost",
    };
    if !literal_loopback {
        return None;
    }
    let mut rest = &after_scheme[host_len..];
    if let Some(port_and_rest) = rest.strip_prefix(':') {
        let digits = port_and_rest.bytes().take_while(u8::is_ascii_digit).count();
        rest = &port_and_rest[digits..];
    }
    Some((host, rest))
}

/// A redirect to the client with `params`, `state` and `iss` (RFC 9207) added.
fn to_client(redirect_uri: &str, params: &[(&str, &str)], state: Option<&str>, issuer: &str) -> HttpResponse {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return error_page(StatusCode::BAD_REQUEST, "the redirect URI is not valid");
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", issuer);
    }
    HttpResponse::Found()
        .insert_header((header::LOCATION, url.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

pub(super) fn client_error(login: &LoginState, error: &str, description: &str, issuer: &str) -> HttpResponse {
    to_client(
        &login.redirect_uri,
        &[("error", error), ("error_description", description)],
        login.client_state.as_deref(),
        issuer,
    )
}

/// An authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3). Once the client and its
/// redirect URI are known, every other fault goes back to the client as `error`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeQuery {
    /// `code`
    #[param(required = true, pattern = "^code$")]
    response_type: Option<String>,
    /// A registered client
    #[param(required = true, min_length = 1)]
    client_id: Option<String>,
    /// One of the client's redirect URIs, exactly; a loopback one may use any port (RFC 8252)
    #[param(required = true, min_length = 1, max_length = 2048)]
    redirect_uri: Option<String>,
    /// The PKCE S256 challenge: 43 characters of base64url
    #[param(required = true, pattern = "^[A-Za-z0-9_-]{43}$")]
    code_challenge: Option<String>,
    /// `S256`
    #[param(required = true, pattern = "^S256$")]
    code_challenge_method: Option<String>,
    /// Returned unchanged
    #[param(max_length = 2048)]
    state: Option<String>,
    /// A subset of the client's scopes; `openid` adds an ID token
    #[param(max_length = 1024, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    scope: Option<String>,
    /// A provider configured for browser sign-in; without it, a page lets the person choose
    #[param(max_length = 32)]
    provider: Option<String>,
    /// Copied into the ID token
    #[param(max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    nonce: Option<String>,
    /// Passed on to the provider
    #[param(max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    login_hint: Option<String>,
    /// RFC 9449 §10: the thumbprint of the DPoP key the code's redemption must prove.
    #[param(pattern = "^[A-Za-z0-9_-]{43}$")]
    dpop_jkt: Option<String>,
}

/// The browser's login cookie value: the form-post cookie on Apple's callback (which a
/// cross-site POST carries alone), the login cookie everywhere else.
fn browser_cookie(req: &HttpRequest) -> Option<String> {
    let name = if req.path() == FORM_POST_PATH { FORM_POST_COOKIE } else { LOGIN_COOKIE };
    let cookie = req.cookie(name).or_else(|| req.cookie(LOGIN_COOKIE));
    cookie.map(|c| c.value().to_string()).filter(|v| v.len() == 43)
}

fn form_post_cookie(value: &str) -> Cookie<'static> {
    Cookie::build(FORM_POST_COOKIE, value.to_string())
        .path(FORM_POST_PATH)
        .secure(true)
        .http_only(true)
        .same_site(SameSite::None)
        .max_age(actix_web::cookie::time::Duration::seconds(codes::LOGIN_TTL_SECS))
        .finish()
}

fn login_cookie(value: &str) -> Cookie<'static> {
    Cookie::build(LOGIN_COOKIE, value.to_string())
        .path("/")
        .secure(true)
        .http_only(true)
        // Lax: it must come along on the provider's redirect back (a top-level GET).
        .same_site(SameSite::Lax)
        .max_age(actix_web::cookie::time::Duration::seconds(codes::LOGIN_TTL_SECS))
        .finish()
}

pub(super) fn callback_url(state: &AppState, provider: ProviderKind) -> String {
    format!("{}/oauth/callback/{}", state.settings.issuer(), provider.as_str())
}

/// Browser sign-in: authorization code with PKCE
///
/// RFC 6749 §4.1, RFC 7636, RFC 8252. Without `provider`, a page lets the person choose.
#[utoipa::path(
    get,
    path = "/oauth/authorize",
    tag = "oauth",
    params(AuthorizeQuery),
    responses(super::openapi::answers::BrowserAnswers)
)]
pub async fn authorize(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<AuthorizeQuery>,
) -> HttpResponse {
    let q = query.into_inner();
    let issuer = state.settings.issuer().to_string();
    // Each request keeps a login server-side: an address gets only so many.
    if let Err(e) = state.rate_limits.check_ip(req.peer_addr().map(|a| a.ip()), &state.metrics) {
        return too_many(&e);
    }
    // Until the redirect URI is known to be the client's, errors are shown here, not sent there.
    let Some(client) = q.client_id.as_deref().and_then(|id| state.clients.get(id)) else {
        return error_page(StatusCode::BAD_REQUEST, "The app that sent you here is not known to idbridge.");
    };
    let Some(redirect_uri) =
        q.redirect_uri.clone().filter(|r| r.len() <= MAX_PARAM && redirect_uri_allowed(&client, r))
    else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The app asked to return to an address it has not registered.",
        );
    };
    let client_state = q.state.clone().filter(|s| !s.is_empty());
    let fail = |error: &str, description: &str| {
        to_client(
            &redirect_uri,
            &[("error", error), ("error_description", description)],
            client_state.as_deref(),
            &issuer,
        )
    };
    if client_state.as_ref().is_some_and(|s| s.len() > MAX_PARAM) {
        return fail("invalid_request", "state is too long");
    }
    if q.response_type.as_deref() != Some("code") {
        return fail("unsupported_response_type", "only response_type=code is supported");
    }
    let Some(challenge) = q.code_challenge.clone().filter(|c| codes::is_s256_challenge(c)) else {
        return fail("invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256");
    };
    if q.code_challenge_method.as_deref() != Some("S256") {
        return fail("invalid_request", "code_challenge_method must be S256");
    }
    let scope = match input::text("scope", q.scope.as_deref(), 1024).map(|s| client.resolve_scope(s)) {
        Ok(Ok(scope)) => scope,
        Ok(Err(_)) => return fail("invalid_scope", "the scope is not allowed for this client"),
        Err(_) => return fail("invalid_request", "scope is malformed"),
    };
    let (Ok(nonce), Ok(login_hint)) = (
        input::text("nonce", q.nonce.as_deref(), 256),
        input::text("login_hint", q.login_hint.as_deref(), 256),
    ) else {
        return fail("invalid_request", "nonce or login_hint is malformed");
    };
    let dpop_jkt = match q.dpop_jkt.as_deref() {
        None => None,
        Some(jkt) if crate::tokens::dpop::is_thumbprint(jkt) => Some(jkt.to_string()),
        Some(_) => return fail("invalid_dpop_proof", "dpop_jkt must be a SHA-256 JWK thumbprint"),
    };
    let available = state.providers.browser_providers();
    let provider = match q.provider.as_deref().filter(|p| !p.is_empty()) {
        None => return choose_page(&state, &req, &client, &available),
        Some(name) => match state.providers.kind(name).filter(|k| available.contains(k)) {
            Some(kind) => kind,
            None => {
                let name: String = name.chars().filter(char::is_ascii_alphanumeric).take(32).collect();
                return fail(
                    "invalid_request",
                    &format!("the provider `{name}` is not configured for browser sign-in"),
                );
            }
        },
    };

    let browser = browser_cookie(&req).unwrap_or_else(random_token::<32>);
    let mut login = LoginState {
        id: random_token::<32>(),
        browser_hash: sha256_b64(browser.as_bytes()),
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.clone(),
        code_challenge: challenge,
        client_state: client_state.clone(),
        scope,
        nonce: nonce.map(str::to_string),
        provider: provider.as_str().to_string(),
        upstream_nonce: None,
        upstream_verifier: None,
        expires_at: crate::clock::now() + codes::LOGIN_TTL_SECS,
        dpop_jkt,
    };
    let next = if provider == ProviderKind::Dev {
        None
    } else {
        let start = state
            .providers
            .start_browser_sign_in(provider, &callback_url(&state, provider), &login.id, login_hint)
            .await;
        match start {
            Ok(start) => {
                login.upstream_nonce = start.nonce;
                login.upstream_verifier = Some(start.verifier);
                Some(start.url)
            }
            Err(AssertionError::ProviderUnavailable) => {
                return fail("temporarily_unavailable", "the provider cannot be reached; try again shortly")
            }
            Err(e) => return fail("server_error", &e.to_string()),
        }
    };
    if let Err(e) = service::identities::save_login(&state, login.clone()).await {
        tracing::warn!(error = %e, "cannot save a login");
        return fail("temporarily_unavailable", "idbridge cannot save the sign-in right now");
    }
    let mut response = match next {
        Some(url) => HttpResponse::Found()
            .insert_header((header::LOCATION, url))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        None => page(StatusCode::OK, DevPage { action: "/oauth/authorize/dev", login: &login.id }.render()),
    };
    if let Err(e) = response.add_cookie(&login_cookie(&browser)) {
        tracing::error!(error = %e, "cannot set the login cookie");
    }
    if provider == ProviderKind::Apple {
        if let Err(e) = response.add_cookie(&form_post_cookie(&browser)) {
            tracing::error!(error = %e, "cannot set the form-post login cookie");
        }
    }
    response
}

/// The provider choice: one link per provider, the same request with `provider` added.
fn choose_page(
    state: &AppState,
    req: &HttpRequest,
    client: &Client,
    available: &[ProviderKind],
) -> HttpResponse {
    // The request as it came, less any `provider`, plus the chosen one.
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .filter(|(k, _)| k != "provider")
        .collect();
    let providers = available
        .iter()
        .map(|kind| ProviderLink {
            href: {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                query.extend_pairs(&kept).append_pair("provider", kind.as_str());
                format!("/oauth/authorize?{}", query.finish())
            },
            label: state.providers.display_name(*kind).to_string(),
        })
        .collect();
    page(StatusCode::OK, ChoosePage { client_id: &client.id, providers }.render())
}

/// Takes the login of this browser named by `id` (single use).
pub(super) async fn take_login(
    state: &AppState,
    req: &HttpRequest,
    id: Option<&str>,
) -> Result<LoginState, HttpResponse> {
    let unknown = || {
        error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in is unknown, expired or already finished. Start again from the app.",
        )
    };
    let (Some(id), Some(browser)) = (id.filter(|i| i.len() <= 64), browser_cookie(req)) else {
        return Err(unknown());
    };
    if let Err(e) = state.rate_limits.check_ip(req.peer_addr().map(|a| a.ip()), &state.metrics) {
        return Err(too_many(&e));
    }
    let hash = sha256_b64(browser.as_bytes());
    match service::identities::take_login(state, id.to_string(), hash).await {
        Ok(Some(login)) => Ok(login),
        Ok(None) => Err(unknown()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a login");
            Err(error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "idbridge cannot finish the sign-in right now. Try again shortly.",
            ))
        }
    }
}

/// The provider proved who the person is: issue the code and send them back to the client.
pub(super) async fn finish(
    state: &web::Data<AppState>,
    login: LoginState,
    assertion: VerifiedAssertion,
) -> HttpResponse {
    let issuer = state.settings.issuer().to_string();
    let issued = crate::service::identities::issue_code(state, login.clone(), assertion).await;
    match issued {
        Ok(code) => {
            to_client(&login.redirect_uri, &[("code", &code)], login.client_state.as_deref(), &issuer)
        }
        Err(crate::accounts::SignInError::Db(e)) => {
            tracing::warn!(error = %e, "cannot issue an authorization code");
            client_error(
                &login,
                "temporarily_unavailable",
                "idbridge cannot finish the sign-in right now",
                &issuer,
            )
        }
        Err(e) => client_error(&login, "access_denied", &e.to_string(), &issuer),
    }
}

/// The provider's answer on its redirect back.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The provider's authorization code
    code: Option<String>,
    /// The login in flight, as idbridge sent it
    state: Option<String>,
    /// Set when the person declined
    error: Option<String>,
}

/// Where the provider sends the person back
///
/// Register `{public_url}/oauth/callback/{provider}` with each provider.
#[utoipa::path(get, path = "/oauth/callback/{provider}", tag = "oauth",
    params(("provider" = String, Path, description = "`google`, `facebook`, `apple` or a `[[providers.oidc]]` name"), CallbackQuery),
    responses(super::openapi::answers::BrowserAnswers))]
pub async fn callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<CallbackQuery>,
) -> HttpResponse {
    let Some(kind) = state.providers.kind(&path.into_inner()).filter(|k| *k != ProviderKind::Dev) else {
        return error_page(StatusCode::NOT_FOUND, "There is no such provider.");
    };
    let login = match take_login(&state, &req, query.state.as_deref()).await {
        Ok(login) if login.provider == kind.as_str() => login,
        Ok(_) => return error_page(StatusCode::BAD_REQUEST, "This sign-in was begun with another provider."),
        Err(page) => return page,
    };
    let issuer = state.settings.issuer().to_string();
    if query.error.is_some() {
        return client_error(&login, "access_denied", "the sign-in with the provider was declined", &issuer);
    }
    let (Some(code), Some(verifier)) =
        (query.code.as_deref().filter(|c| c.len() <= MAX_PARAM), login.upstream_verifier.as_deref())
    else {
        return client_error(&login, "access_denied", "the provider sent no code", &issuer);
    };
    let finished = state
        .providers
        .finish_browser_sign_in(
            kind,
            &callback_url(&state, kind),
            code,
            verifier,
            login.upstream_nonce.as_deref(),
        )
        .await;
    match finished {
        Ok(assertion) => finish(&state, login, assertion).await,
        Err(e) => provider_failed(&login, e, &issuer),
    }
}

/// The provider refused the sign-in, or could not be reached: told to the client.
pub(super) fn provider_failed(login: &LoginState, e: AssertionError, issuer: &str) -> HttpResponse {
    match e {
        AssertionError::ProviderUnavailable => client_error(
            login,
            "temporarily_unavailable",
            "the provider cannot be reached; try again shortly",
            issuer,
        ),
        e => client_error(login, "access_denied", &e.to_string(), issuer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientKind;

    fn client(uris: &[&str]) -> Client {
        Client::for_tests("c", ClientKind::Public, uris.iter().map(|u| u.to_string()).collect())
    }

    #[test]
    fn redirect_uris_match_exactly_except_a_loopback_port() {
        let c = client(&["https://app.example/cb", "http://127.0.0.1/cb", "com.example.app:/oauth2redirect"]);
        assert!(redirect_uri_allowed(&c, "https://app.example/cb"));
        assert!(!redirect_uri_allowed(&c, "https://app.example/cb/"));
        assert!(!redirect_uri_allowed(&c, "https://app.example/cb?x=1"));
        assert!(!redirect_uri_allowed(&c, "https://app.example:444/cb"));
        assert!(redirect_uri_allowed(&c, "http://127.0.0.1:53017/cb"));
        assert!(!redirect_uri_allowed(&c, "http://127.0.0.1:53017/other"));
        assert!(!redirect_uri_allowed(&c, "http://127.0.0.2.evil.example/cb"));
        assert!(redirect_uri_allowed(&c, "com.example.app:/oauth2redirect"));
        assert!(!redirect_uri_allowed(&c, "com.example.app:/oauth2redirect#x"));
        assert!(!redirect_uri_allowed(&c, "com.evil.app:/oauth2redirect"));
        for look_alike in [
            "http://evil@127.0.0.1:45678/cb",
            "http://127.0.0.1:45678/x/../cb",
            "http://127.1:45678/cb",
            "http://0x7f000001:45678/cb",
            "http://2130706433/cb",
            "http:127.0.0.1/cb",
            "HTTP://127.0.0.1/cb",
            "http://127.0.0.1./cb",
            "http://127.0.0.1:080/cb",
            "http://127.0.0.1:65536/cb",
            "http://127.0.0.1:/cb",
        ] {
            assert!(!redirect_uri_allowed(&c, look_alike), "{look_alike}");
        }
        let v6 = client(&["http://[::1]/cb", "http://localhost:8080/cb"]);
        assert!(redirect_uri_allowed(&v6, "http://[::1]:9000/cb"));
        assert!(redirect_uri_allowed(&v6, "http://localhost:9000/cb"));
        assert!(!redirect_uri_allowed(&v6, "http://[0:0:0:0:0:0:0:1]:9000/cb"));
    }
}
