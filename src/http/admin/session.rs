//! Admin sign-in and sign-out: the browser flow as client `idbridge-admin`, and the cookies.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{
    current_session, failed, forbidden, html, local_page, message, see_other, session_policy, Purpose,
};
use super::{AdminForm, CsrfForm, Layout, MessagePage, Refusal};
use crate::admin::sessions;
use crate::clients::{ADMIN_CALLBACK_PATH, ADMIN_CLIENT};
use crate::crypto::random_token;
use crate::http::auth::origin;
use crate::http::input;
use crate::service::console::{self, AdminSignIn};
use crate::service::sign_in::CodeRedemption;
use crate::state::AppState;

fn callback_uri(state: &AppState) -> String {
    format!("{}{ADMIN_CALLBACK_PATH}", state.settings.issuer())
}

fn cookie(name: &'static str, value: String, same_site: SameSite, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(same_site)
        .max_age(actix_web::cookie::time::Duration::seconds(max_age_secs))
        .finish()
}

fn removal(name: &'static str, same_site: SameSite) -> Cookie<'static> {
    cookie(name, String::new(), same_site, 0)
}

/// Starts a sign-in: `state` and the PKCE verifier go into a short-lived cookie (Lax: it must
/// come back on the provider's top-level redirect), and the browser goes to `/oauth/authorize`.
#[utoipa::path(get, path = "/admin/login", tag = "admin", summary = "Starts an admin sign-in through the browser flow (client `idbridge-admin`)",
    params(("next" = Option<String>, Query, description = "a console page (`/admin…`) to land on after sign-in; anything else lands on `/admin`")),
    responses((status = 303, description = "To `/oauth/authorize`, with a short-lived sign-in cookie", headers(("Location" = String))),
        (status = 503, description = "The database cannot be reached", content_type = "text/html", body = String)))]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<LoginQuery>,
) -> HttpResponse {
    let next = query.next.as_deref().and_then(local_page).unwrap_or("/admin").to_string();
    if let Ok(Some(_)) = current_session(&state, &req, Purpose::Read).await {
        return see_other(&next);
    }
    let (flow_state, verifier) = (random_token::<16>(), random_token::<32>());
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
    };
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", ADMIN_CLIENT)
        .append_pair("redirect_uri", &callback_uri(&state))
        .append_pair("scope", "openid")
        .append_pair("state", &flow_state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let mut response = see_other(&format!("/oauth/authorize?{}", query.finish()));
    let next = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, next.as_bytes());
    let value = format!("{flow_state}.{verifier}.{next}");
    let _ = response.add_cookie(&cookie(sessions::LOGIN_COOKIE, value, SameSite::Lax, 600));
    response
}

/// Where to land after sign-in.
#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/signed_in.html")]
struct SignedInPage {
    /// The console page asked for before sign-in (checked again: a local `/admin` path).
    next: String,
}

/// The browser flow's return: redeem the code (in-process, as client `idbridge-admin`), and
/// open a session when the person is an admin. Anyone else gets a 403 page naming their user
/// id (for `idbridge admins grant`); the device the sign-in made is deleted at once.
#[utoipa::path(get, path = "/admin/callback", tag = "admin", summary = "The browser flow's return: opens a session for an admin",
    params(("code" = Option<String>, Query, description = "the code"), ("state" = Option<String>, Query, description = "the sign-in's state"), ("error" = Option<String>, Query, description = "set when the sign-in failed")),
    responses((status = 200, description = "Signed in: sets `__Host-idbridge-admin` (Secure, HttpOnly, SameSite=Strict)", content_type = "text/html", body = String),
        (status = 303, description = "Already signed in: to `/admin`", headers(("Location" = String))),
        (status = 400, description = "An unknown, expired or other browser's sign-in", content_type = "text/html", body = String),
        (status = 403, description = "Not an admin: nothing is kept", content_type = "text/html", body = String),
        (status = 503, description = "The database cannot be reached", content_type = "text/html", body = String)))]
pub async fn callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<CallbackQuery>,
) -> HttpResponse {
    let restart = || {
        message(
            StatusCode::BAD_REQUEST,
            Layout::signed_out(),
            "Sign-in expired",
            "This sign-in is unknown or expired. Start again.",
        )
    };
    let Some((expected_state, verifier, next)) = req.cookie(sessions::LOGIN_COOKIE).and_then(|c| {
        let mut parts = c.value().splitn(3, '.').map(str::to_string);
        Some((parts.next()?, parts.next()?, parts.next().unwrap_or_default()))
    }) else {
        return restart();
    };
    let next = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, next)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|page| local_page(page).is_some())
        .unwrap_or_else(|| "/admin".to_string());
    let state_ok = query.state.as_deref().is_some_and(|s| {
        use subtle::ConstantTimeEq;
        bool::from(s.as_bytes().ct_eq(expected_state.as_bytes()))
    });
    if !state_ok {
        return restart();
    }
    if query.error.is_some() {
        let mut page = forbidden("Sign-in cancelled", "The sign-in was declined or failed. Start again.");
        let _ = page.add_cookie(&removal(sessions::LOGIN_COOKIE, SameSite::Lax));
        return page;
    }
    let Ok(Some(code)) = input::text("code", query.code.as_deref(), 256).map(|c| c.map(str::to_string))
    else {
        return restart();
    };
    let Some(client) = state.clients.get(ADMIN_CLIENT) else {
        return restart();
    };
    let request = CodeRedemption {
        code,
        redirect_uri: callback_uri(&state),
        verifier,
        device_name: Some("Admin console".into()),
        device_platform: Some("web".into()),
        origin: origin(&req),
        dpop_jkt: None,
        known_users_only: true,
    };
    let policy = session_policy(&state);
    let outcome = console::sign_in(&state, client, request, policy).await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => return failed(e),
    };
    match outcome {
        AdminSignIn::Started(token) => {
            // A page, not a redirect: the Strict cookie is then sent on the same-site
            // navigation it starts, even when the sign-in came back from another site.
            let mut response = html(StatusCode::OK, SignedInPage { next }.render());
            let max = policy.max_secs;
            let _ = response.add_cookie(&cookie(sessions::READ_COOKIE, token.clone(), SameSite::Lax, max));
            let _ = response.add_cookie(&cookie(sessions::COOKIE, token, SameSite::Strict, max));
            let _ = response.add_cookie(&removal(sessions::LOGIN_COOKIE, SameSite::Lax));
            response
        }
        AdminSignIn::NotAdmin { user_id } => {
            let text = match user_id {
                Some(_) => {
                    "You signed in, but your account does not have the admin role. An admin can grant \
                            it on the server with the command idbridge admins grant and this user id:"
                }
                None => {
                    "You signed in, but this account has never signed in to an app through idbridge, so \
                         it has no user here, and none was made. Sign in to an app with it first; an admin \
                         can then grant it the admin role with the command idbridge admins grant."
                }
            };
            let page = MessagePage {
                layout: Layout::signed_out(),
                heading: "Not an admin",
                message: text,
                detail: user_id.as_deref(),
                link: Some(("/admin/login", "Sign in as someone else")),
            };
            let mut response = html(StatusCode::FORBIDDEN, page.render());
            let _ = response.add_cookie(&removal(sessions::LOGIN_COOKIE, SameSite::Lax));
            response
        }
        AdminSignIn::Refused(why) => {
            let mut page = forbidden("Sign-in refused", why);
            let _ = page.add_cookie(&removal(sessions::LOGIN_COOKIE, SameSite::Lax));
            page
        }
    }
}

/// Ends this session (and revokes the device it rode on).
#[utoipa::path(post, path = "/admin/logout", tag = "admin", summary = "Ends the session and revokes its device",
    request_body(content = super::CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Signed out", content_type = "text/html", body = String), super::super::openapi::answers::AdminChange))]
pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    change: Result<AdminForm<CsrfForm>, actix_web::Error>,
) -> actix_web::Result<HttpResponse> {
    let session = match change {
        Ok(AdminForm { session, .. }) => session,
        Err(refused) if refused.as_error::<Refusal>().is_some_and(Refusal::is_signed_out) => {
            // A session that already ended: the browser may drop its cookie too.
            let mut page = refused.error_response();
            let _ = page.add_cookie(&removal(sessions::COOKIE, SameSite::Strict));
            let _ = page.add_cookie(&removal(sessions::READ_COOKIE, SameSite::Lax));
            return Ok(page);
        }
        Err(refused) => return Err(refused),
    };
    let ended = console::sign_out(&state.db, &session, &super::requester(&session, &req)).await;
    if let Err(e) = ended {
        return Ok(failed(e));
    }
    let mut response = message(
        StatusCode::OK,
        Layout::signed_out(),
        "Signed out",
        "You are signed out of the admin console.",
    );
    let _ = response.add_cookie(&removal(sessions::COOKIE, SameSite::Strict));
    let _ = response.add_cookie(&removal(sessions::READ_COOKIE, SameSite::Lax));
    Ok(response)
}
