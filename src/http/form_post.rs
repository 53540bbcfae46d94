//! `POST /oauth/callback/apple`: Sign in with Apple's answer in the browser flow
//! (`response_mode=form_post`), a cross-site form POST of `code`, `state`, `id_token` and,
//! on the person's first authorization only, `user` (JSON with their name). The login it
//! finishes is bound to the browser by the form-post cookie (see `authorize`); the rest is
//! the browser flow's, as strict as for every provider.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::authorize::{callback_url, client_error, error_page, finish, provider_failed, take_login};
use crate::providers::ProviderKind;
use crate::state::AppState;

/// Longer than any code, state or ID token Apple sends.
const MAX_FIELD: usize = 16 * 1024;

/// Apple's form post.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct FormPost {
    /// Apple's authorization code
    #[schema(max_length = 16384)]
    code: Option<String>,
    /// The login in flight
    #[schema(required = true, min_length = 1, max_length = 16384)]
    state: Option<String>,
    /// Apple's ID token, with this sign-in's nonce
    #[schema(max_length = 16384)]
    id_token: Option<String>,
    /// First authorization only: JSON with the person's name
    #[schema(max_length = 16384)]
    user: Option<String>,
    /// Set when the person declined
    #[schema(max_length = 16384)]
    error: Option<String>,
}

/// The `user` field: `{"name": {"firstName": "…", "lastName": "…"}, "email": "…"}`.
#[derive(Deserialize)]
struct AppleUser {
    name: Option<AppleName>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppleName {
    first_name: Option<String>,
    last_name: Option<String>,
}

/// The person's name from Apple's `user` field, when it is a plain one of at most 100
/// characters; anything else is ignored (it is only a profile name for a new user).
fn name_of(user: &str) -> Option<String> {
    let name = serde_json::from_str::<AppleUser>(user).ok()?.name?;
    let parts = [name.first_name, name.last_name];
    let full =
        parts.iter().flatten().map(|p| p.trim()).filter(|p| !p.is_empty()).collect::<Vec<_>>().join(" ");
    let plain = !full.is_empty() && full.chars().count() <= 100 && !full.contains(char::is_control);
    plain.then_some(full)
}

/// Sign in with Apple's answer
///
/// `response_mode=form_post`, provider `apple` only: a cross-site form POST, bound to the
/// browser by the `__Secure-idbridge-login-apple` cookie.
#[utoipa::path(post, path = "/oauth/callback/{provider}", tag = "oauth",
    params(("provider" = String, Path, description = "`apple`; any other is 404")),
    request_body(content = FormPost, content_type = "application/x-www-form-urlencoded"),
    responses(super::openapi::answers::BrowserAnswers))]
pub async fn apple_callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<FormPost>,
) -> HttpResponse {
    if state.providers.kind(&path.into_inner()) != Some(ProviderKind::Apple)
        || state.providers.apple.is_none()
    {
        return error_page(StatusCode::NOT_FOUND, "There is no such provider.");
    }
    let form = form.into_inner();
    let too_long = [&form.code, &form.state, &form.id_token, &form.user, &form.error]
        .iter()
        .any(|f| f.as_ref().is_some_and(|v| v.len() > MAX_FIELD));
    if too_long {
        return error_page(StatusCode::BAD_REQUEST, "The answer from Apple is malformed.");
    }
    let login = match take_login(&state, &req, form.state.as_deref()).await {
        Ok(login) if login.provider == ProviderKind::Apple.as_str() => login,
        Ok(_) => return error_page(StatusCode::BAD_REQUEST, "This sign-in was begun with another provider."),
        Err(page) => return page,
    };
    let issuer = state.settings.issuer().to_string();
    if form.error.is_some() {
        return client_error(&login, "access_denied", "the sign-in with Apple was declined", &issuer);
    }
    let (Some(code), Some(id_token)) = (form.code.as_deref(), form.id_token.as_deref()) else {
        return client_error(&login, "access_denied", "Apple sent no code or no ID token", &issuer);
    };
    let callback = callback_url(&state, ProviderKind::Apple);
    let finished = state
        .providers
        .finish_apple_sign_in(&callback, code, id_token, login.upstream_nonce.as_deref())
        .await;
    match finished {
        Ok(mut assertion) => {
            // Apple puts no name in its ID tokens; the first authorization's form carries it.
            if let Some(name) = form.user.as_deref().and_then(name_of) {
                assertion.name = Some(name);
            }
            finish(&state, login, assertion).await
        }
        Err(e) => provider_failed(&login, e, &issuer),
    }
}

#[cfg(test)]
mod tests {
    use super::name_of;

    #[test]
    fn apples_user_field_gives_the_name() {
        let user =
            r#"{"name":{"firstName":"Ann","lastName":"Appleseed"},"email":"a@privaterelay.appleid.com"}"#;
        assert_eq!(name_of(user).as_deref(), Some("Ann Appleseed"));
        assert_eq!(name_of(r#"{"name":{"firstName":"Ann"}}"#).as_deref(), Some("Ann"));
        assert_eq!(name_of(r#"{"email":"a@b"}"#), None);
        assert_eq!(name_of("not json"), None);
        assert_eq!(name_of(r#"{"name":{"firstName":"A\u0000B"}}"#), None);
    }
}
