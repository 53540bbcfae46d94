//! `/oauth`: token (token exchange, refresh), nonce, revocation and introspection.
//! Handlers parse and answer; each request is one use case of `service`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::{authenticate_client, origin};
use super::dpop::{self, ProofHeaders};
use super::errors::OAuthError;
use super::errors::DPOP_NONCE_HEADER;
use super::input;
use crate::accounts::SignInError;
use crate::clients::Client;
use crate::providers::{AssertionError, ProviderKind, VerifiedAssertion};
use crate::service;
use crate::service::sign_in::{CodeOutcome, CodeRedemption};
use crate::sessions::{Device, Rotation, SignIn};
use crate::state::AppState;
use crate::tokens::access::{self, Grant};
use crate::tokens::id_token;
use crate::tokens::nonce::NONCE_TTL_SECS;

pub use super::token_form::TokenForm;
use super::token_form::{
    TokenResponse, GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN, GRANT_TOKEN_EXCHANGE, MAX_TOKEN_LEN,
    PLATFORMS, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN,
};

/// The token endpoint
///
/// Token exchange (RFC 8693) of a provider's assertion, refresh-token rotation, or an
/// authorization code (with an `id_token` when `openid` is in scope). A `DPoP` proof header
/// binds the tokens to its key (RFC 9449).
#[utoipa::path(post, path = "/oauth/token", tag = "oauth",
    request_body(content = super::token_form::TokenRequest, content_type = "application/x-www-form-urlencoded"),
    params(("DPoP" = Option<String>, Header, description = "a DPoP proof (RFC 9449 §4)")),
    security((), ("basic" = [])),
    responses((status = 200, description = "Tokens (`Cache-Control: no-store`); a sign-in makes a new device", body = TokenResponse,
        headers(("DPoP-Nonce" = String, description = "a fresh DPoP server nonce, when `tokens.dpop_nonce` is on"))),
        super::openapi::answers::OAuthErrors))]
pub async fn token(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, OAuthError> {
    let form = form.into_inner();
    form.check_fields()?;
    let grant_type =
        form.grant_type.clone().ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    let client =
        authenticate_client(&state, &req, form.client_id.as_deref(), form.client_secret.as_deref()).await?;
    // RFC 9449 §5: a proof binds what this request gets to the proof's key.
    let proof = dpop::check(&state, &ProofHeaders::of(&req), None)?;
    if client.dpop_required && proof.is_none() {
        return Err(OAuthError::invalid_dpop_proof("this client must send a DPoP proof"));
    }
    let jkt = proof.map(|p| p.jkt);
    let mut answer = match grant_type.as_str() {
        GRANT_TOKEN_EXCHANGE => token_exchange(state.clone(), req, client, form, jkt).await,
        GRANT_REFRESH_TOKEN => refresh_grant(state.clone(), req, client, form, jkt).await,
        GRANT_AUTHORIZATION_CODE => code_grant(state.clone(), req, client, form, jkt).await,
        _ => Err(OAuthError::unsupported_grant_type()),
    }?;
    if let Some(nonce) = dpop::next_nonce(&state) {
        if let Ok(value) = header::HeaderValue::from_str(&nonce) {
            answer.headers_mut().insert(header::HeaderName::from_static(DPOP_NONCE_HEADER), value);
        }
    }
    Ok(answer)
}

async fn token_exchange(
    state: web::Data<AppState>,
    req: HttpRequest,
    client: std::sync::Arc<Client>,
    form: TokenForm,
    dpop_jkt: Option<String>,
) -> Result<HttpResponse, OAuthError> {
    let subject_token = input::text("subject_token", form.subject_token.as_deref(), MAX_TOKEN_LEN)?
        .ok_or_else(|| OAuthError::invalid_request("subject_token is required"))?
        .to_string();
    let device_name = input::text("device_name", form.device_name.as_deref(), 400)?.map(str::to_string);
    let nonce = input::text("nonce", form.nonce.as_deref(), 256)?.map(str::to_string);
    input::text("scope", form.scope.as_deref(), 1024)?;
    input::text("provider", form.provider.as_deref(), 32)?;
    let requested_provider = match form.provider.as_deref() {
        None | Some("") => None,
        Some(name) => {
            Some(state.providers.kind(name).ok_or_else(|| OAuthError::invalid_request("unknown provider"))?)
        }
    };
    if let Some(platform) = form.device_platform.as_deref() {
        if !PLATFORMS.contains(&platform) {
            return Err(OAuthError::invalid_request(
                "device_platform must be ios, android, web, desktop or other",
            ));
        }
    }
    if device_name.as_ref().is_some_and(|n| n.chars().count() > 100) {
        return Err(OAuthError::invalid_request("device_name is longer than 100 characters"));
    }
    let scope = client.resolve_scope(form.scope.as_deref()).map_err(|_| OAuthError::invalid_scope())?;

    let provider_label = requested_provider.map_or("unknown", ProviderKind::as_str);
    let count =
        |provider: &str, outcome: &str| state.metrics.sign_ins.with_label_values(&[provider, outcome]).inc();
    let subject = SubjectToken {
        token: &subject_token,
        token_type: form.subject_token_type.as_deref(),
        provider: requested_provider,
        nonce: nonce.as_deref(),
    };
    let refused = |provider: &str, subject: Option<String>, reason: String| service::sign_in::Refusal {
        provider: provider.to_string(),
        subject,
        client_id: client.id.clone(),
        reason,
    };
    let assertion = match verify_subject_token(&state, &subject).await {
        Ok(assertion) => assertion,
        Err(SubjectRefused::Refused(reason)) => {
            count(provider_label, "refused");
            let refusal = refused(provider_label, None, reason.clone());
            service::sign_in::record_refusal(&state.db, refusal, origin(&req)).await;
            return Err(SubjectRefused::Refused(reason).into());
        }
        Err(e) => {
            count(provider_label, "unavailable");
            return Err(e.into());
        }
    };
    let provider_label = assertion.provider.as_str();
    // Apple puts no name in its ID tokens: the app sends the one it got, kept for a new user
    // only (a returning user's profile is not changed by a sign-in).
    let mut assertion = assertion;
    if assertion.provider == ProviderKind::Apple {
        if let Some(name) = form.display_name.as_deref().filter(|n| !n.trim().is_empty()) {
            if name.chars().count() > 100 {
                return Err(OAuthError::invalid_request("display_name is longer than 100 characters"));
            }
            assertion.name = Some(name.trim().to_string());
        }
    }
    if let Err(e) = redeem_app_code(&state, &mut assertion, form.authorization_code.as_deref()).await {
        count(provider_label, if e.is_unavailable() { "unavailable" } else { "refused" });
        return Err(e.into());
    }

    let sign_in = SignIn {
        assertion,
        nonce,
        client_id: client.id.clone(),
        scope,
        device_name,
        device_platform: form.device_platform,
        origin: origin(&req),
        dpop_jkt,
    };
    let subject_id = sign_in.assertion.subject.clone();
    let signed_in = match service::sign_in::sign_in(&state, sign_in).await {
        Ok(signed_in) => signed_in,
        Err(SignInError::Db(db)) => {
            count(provider_label, "error");
            return Err(OAuthError::from(db));
        }
        Err(other) => {
            count(provider_label, "refused");
            let refusal = refused(provider_label, Some(subject_id), other.to_string());
            service::sign_in::record_refusal(&state.db, refusal, origin(&req)).await;
            return Err(OAuthError::invalid_request(other.to_string()));
        }
    };
    count(provider_label, "ok");
    tracing::info!(user_id = %signed_in.user_id, device_id = %signed_in.device.id, "signed in");
    let device = &signed_in.device;
    token_response(&state, device, &device.scope, &signed_in.refresh_token, device.dpop_jkt.as_deref())
}

/// A provider assertion as a request presents it (token exchange, or linking at `/v1`).
pub struct SubjectToken<'a> {
    pub token: &'a str,
    pub token_type: Option<&'a str>,
    pub provider: Option<ProviderKind>,
    /// The nonce the request carried.
    pub nonce: Option<&'a str>,
}

/// Why a subject token was not accepted.
pub enum SubjectRefused {
    /// The provider cannot be reached: 503.
    Unavailable(String),
    /// Anything about the token or the request: 400.
    Refused(String),
}

impl SubjectRefused {
    fn is_unavailable(&self) -> bool {
        matches!(self, SubjectRefused::Unavailable(_))
    }
}

impl From<SubjectRefused> for OAuthError {
    fn from(e: SubjectRefused) -> Self {
        match e {
            SubjectRefused::Unavailable(m) => OAuthError::temporarily_unavailable(m),
            SubjectRefused::Refused(m) => OAuthError::invalid_request(m),
        }
    }
}

/// Verifies a subject token with its provider: an ID token (Google, Facebook Limited Login,
/// dev, told apart by `iss`) or a Facebook access token; then matches the request's nonce to
/// the token's (a Facebook ID token always needs one, Google when `require_nonce`). The nonce
/// is spent later, in the transaction that uses the assertion.
pub async fn verify_subject_token(
    state: &AppState,
    subject: &SubjectToken<'_>,
) -> Result<VerifiedAssertion, SubjectRefused> {
    let refused = |e: AssertionError| match e {
        AssertionError::ProviderUnavailable => SubjectRefused::Unavailable(e.to_string()),
        other => SubjectRefused::Refused(other.to_string()),
    };
    let assertion = match subject.token_type {
        Some(TOKEN_TYPE_ID_TOKEN) => {
            state.providers.verify_id_token(subject.token, subject.provider).await.map_err(refused)?
        }
        Some(TOKEN_TYPE_ACCESS_TOKEN) => {
            if subject.provider != Some(ProviderKind::Facebook) {
                return Err(SubjectRefused::Refused(
                    "an access_token subject needs provider=facebook".into(),
                ));
            }
            let assertion =
                state.providers.verify_facebook_access_token(subject.token).await.map_err(refused)?;
            if subject.nonce.is_some() {
                return Err(SubjectRefused::Refused("a Facebook access token carries no nonce".into()));
            }
            return Ok(assertion);
        }
        _ => {
            return Err(SubjectRefused::Refused(
                "subject_token_type must be an id_token or access_token type".into(),
            ))
        }
    };
    let nonce_required = match assertion.provider {
        ProviderKind::Google => state.google_requires_nonce(),
        ProviderKind::Facebook | ProviderKind::Apple => true,
        ProviderKind::Dev => false,
        ProviderKind::Oidc(_) => state.providers.generic(assertion.provider).is_some_and(|p| p.require_nonce),
    };
    // Apple advises apps to put the SHA-256 of the nonce (hex) into its request.
    let hashed = |sent: &str| {
        use sha2::Digest;
        sha2::Sha256::digest(sent.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    match (assertion.nonce.as_deref(), subject.nonce) {
        (Some(claim), Some(sent)) if claim == sent => Ok(assertion),
        (Some(claim), Some(sent)) if assertion.provider == ProviderKind::Apple && claim == hashed(sent) => {
            Ok(assertion)
        }
        (None, None) if !nonce_required => Ok(assertion),
        (None, None) => Err(SubjectRefused::Refused("a nonce is required".into())),
        _ => Err(SubjectRefused::Refused("the nonce does not match the subject_token".into())),
    }
}

/// Sign in with Apple's `authorization_code` sent with its ID token: redeemed at Apple, the
/// refresh token it gives goes with the assertion, to be kept for the user.
pub async fn redeem_app_code(
    state: &AppState,
    assertion: &mut VerifiedAssertion,
    code: Option<&str>,
) -> Result<(), SubjectRefused> {
    let Some(code) = code.filter(|c| !c.is_empty()) else {
        return Ok(());
    };
    if assertion.provider != ProviderKind::Apple {
        return Err(SubjectRefused::Refused("authorization_code is taken with provider=apple only".into()));
    }
    match state.providers.redeem_apple_code(assertion, code, None).await {
        Ok(grant) => {
            assertion.upstream = grant;
            Ok(())
        }
        Err(e @ AssertionError::ProviderUnavailable) => Err(SubjectRefused::Unavailable(e.to_string())),
        Err(e) => Err(SubjectRefused::Refused(e.to_string())),
    }
}

async fn refresh_grant(
    state: web::Data<AppState>,
    req: HttpRequest,
    client: std::sync::Arc<Client>,
    form: TokenForm,
    dpop_jkt: Option<String>,
) -> Result<HttpResponse, OAuthError> {
    let presented = input::text("refresh_token", form.refresh_token.as_deref(), 512)?
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?
        .to_string();
    input::text("scope", form.scope.as_deref(), 1024)?;
    let presented = service::refresh::Refresh {
        token: presented,
        scope: form.scope,
        origin: origin(&req),
        dpop_jkt: dpop_jkt.clone(),
    };
    let rotation = service::refresh::refresh(&state, client, presented)
        .await
        .inspect_err(|_| state.metrics.refreshes.with_label_values(&["error"]).inc())?;
    let outcome = |label: &str| state.metrics.refreshes.with_label_values(&[label]).inc();
    match rotation {
        Rotation::Rotated { device, refresh_token, scope } => {
            outcome("ok");
            // A bound device's token is bound to its key (the proof was checked to be by it); an
            // unbound device's, to the key this request proved, if any (RFC 9449 §5).
            token_response(&state, &device, &scope, &refresh_token, dpop_jkt.as_deref())
        }
        Rotation::WrongKey => {
            outcome("refused");
            Err(OAuthError::invalid_dpop_proof("this device's tokens are bound to another DPoP key"))
        }
        Rotation::InvalidScope => {
            outcome("invalid_scope");
            Err(OAuthError::invalid_scope())
        }
        Rotation::Refused => {
            outcome("refused");
            Err(OAuthError::invalid_grant("the refresh token is invalid, expired or revoked"))
        }
        Rotation::Reused => {
            outcome("reused");
            state.metrics.refresh_reuse.inc();
            tracing::warn!("refresh token reuse detected; device revoked");
            Err(OAuthError::invalid_grant("the refresh token was already used; the device is revoked"))
        }
    }
}

/// The answer to a successful sign-in or refresh, built only after the transaction committed.
fn token_response(
    state: &AppState,
    device: &Device,
    scope: &str,
    refresh_token: &str,
    dpop_jkt: Option<&str>,
) -> Result<HttpResponse, OAuthError> {
    let (body, _) = token_body(state, device, scope, refresh_token, dpop_jkt)?;
    Ok(no_store().json(body))
}

/// The token answer's JSON, and the access token in it: `token_type` `DPoP` and `cnf.jkt` in
/// the token when it is bound to a key.
fn token_body(
    state: &AppState,
    device: &Device,
    scope: &str,
    refresh_token: &str,
    dpop_jkt: Option<&str>,
) -> Result<(TokenResponse, String), OAuthError> {
    let grant = Grant {
        user_id: &device.user_id,
        device_id: &device.id,
        client_id: &device.client_id,
        scope,
        idp: &device.idp,
        session_expires_at: device.session_expires_at,
        dpop_jkt,
    };
    let access_token = access::issue(&state.keys, &state.access_policy, &grant, crate::clock::now())
        .map_err(|e| {
            tracing::error!(error = %e, "cannot sign an access token");
            OAuthError::server_error()
        })?;
    let body = TokenResponse {
        access_token: access_token.clone(),
        issued_token_type: TOKEN_TYPE_ACCESS_TOKEN,
        token_type: access::token_type(dpop_jkt.is_some()),
        expires_in: state.access_policy.ttl_secs,
        refresh_token: refresh_token.to_string(),
        scope: scope.to_string(),
        device_id: device.id.to_string(),
        id_token: None,
    };
    Ok((body, access_token))
}

/// `grant_type=authorization_code` (RFC 6749 §4.1.3, PKCE per RFC 7636): the code is redeemed
/// once (`service::sign_in::redeem`), so a device made in the browser is like any other. With `openid` in
/// scope the answer carries an ID token.
async fn code_grant(
    state: web::Data<AppState>,
    req: HttpRequest,
    client: std::sync::Arc<Client>,
    form: TokenForm,
    dpop_jkt: Option<String>,
) -> Result<HttpResponse, OAuthError> {
    let required = |name: &'static str, value: Option<&str>, max: usize| {
        input::text(name, value, max)?
            .map(str::to_string)
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
    };
    let request = CodeRedemption {
        code: required("code", form.code.as_deref(), 256)?,
        redirect_uri: required("redirect_uri", form.redirect_uri.as_deref(), 2048)?,
        verifier: required("code_verifier", form.code_verifier.as_deref(), 128)?,
        device_name: None,
        device_platform: None,
        origin: origin(&req),
        dpop_jkt,
        known_users_only: false,
    };
    let outcome = service::sign_in::redeem(&state, client, request).await.map_err(|e| match e {
        SignInError::Db(db) => OAuthError::from(db),
        other => OAuthError::invalid_grant(other.to_string()),
    })?;
    let (signed_in, redeemed) = match outcome {
        CodeOutcome::Signed(signed_in, redeemed) => (signed_in, redeemed),
        CodeOutcome::Refused(why) => return Err(OAuthError::invalid_grant(why)),
        CodeOutcome::NoUser { .. } => return Err(OAuthError::invalid_grant("the account cannot sign in")),
    };
    state.metrics.sign_ins.with_label_values(&[signed_in.device.idp.as_str(), "ok"]).inc();
    let device = &signed_in.device;
    let (mut body, access_token) =
        token_body(&state, device, &device.scope, &signed_in.refresh_token, device.dpop_jkt.as_deref())?;
    if device.scope.split(' ').any(|s| s == "openid") {
        let grant = id_token::IdTokenGrant {
            issuer: state.settings.issuer(),
            user_id: &device.user_id,
            client_id: &device.client_id,
            auth_time: redeemed.auth_time,
            nonce: redeemed.nonce.as_deref(),
            idp: &device.idp,
            access_token: &access_token,
            ttl_secs: state.access_policy.ttl_secs,
            device_id: &device.id,
        };
        let token = id_token::issue(&state.keys, &grant, crate::clock::now()).map_err(|e| {
            tracing::error!(error = %e, "cannot sign an ID token");
            OAuthError::server_error()
        })?;
        body.id_token = Some(token);
    }
    Ok(no_store().json(body))
}

pub(super) fn no_store() -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response.insert_header((header::CACHE_CONTROL, "no-store")).insert_header((header::PRAGMA, "no-cache"));
    response
}

/// A sign-in nonce and its lifetime in seconds.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct NonceAnswer {
    nonce: String,
    expires_in: i64,
}

/// The form of `POST /oauth/nonce`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct NonceForm {
    /// The public client
    #[schema(required = true, min_length = 1, max_length = 128)]
    client_id: Option<String>,
}

/// A sign-in nonce
///
/// A single-use nonce for the client's next ID token (valid 600 s).
#[utoipa::path(post, path = "/oauth/nonce", tag = "oauth",
    request_body(content = NonceForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The nonce (`Cache-Control: no-store`)", body = NonceAnswer),
        super::openapi::answers::OAuthErrors))]
pub async fn nonce(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<NonceForm>,
) -> Result<HttpResponse, OAuthError> {
    let client = authenticate_client(&state, &req, form.client_id.as_deref(), None).await?;
    let nonce = state.nonce_key.issue(&client.id, crate::clock::now());
    Ok(no_store().json(NonceAnswer { nonce, expires_in: NONCE_TTL_SECS }))
}
