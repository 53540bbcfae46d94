//! The browser flow's upstream half: idbridge signs in with the provider on the person's
//! behalf. Google and every `[[providers.oidc]]` entry with a `client_secret` through the
//! openidconnect crate (code flow with PKCE, nonce and state; the returned ID token goes
//! through the same verifier as token exchange), Facebook through the
//! oauth2 crate (code flow with PKCE and state, then `debug_token` and `me` as for an access
//! token), Apple with its own form POST back (`response_mode=form_post`, see `apple`). The
//! redirect back is `{public_url}/oauth/callback/{provider}`.

use openidconnect::core::{CoreAuthenticationFlow, CoreClient};
use openidconnect::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};

use super::jwks::JwksCache;
use super::{AssertionError, ProviderKind, Providers, VerifiedAssertion};

/// An OpenID Connect provider's browser-flow client (Google, `[[providers.oidc]]`): the first
/// of its `client_ids` with its `client_secret`.
pub struct OidcWeb {
    pub kind: ProviderKind,
    pub client_id: String,
    pub client_secret: SecretString,
    pub keys: JwksCache,
}

/// Where to send the person, and what to keep until they come back.
pub struct UpstreamStart {
    pub url: String,
    pub nonce: Option<String>,
    pub verifier: String,
}

fn unavailable<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> AssertionError {
    move |e| {
        tracing::warn!(error = %e, "{what}");
        AssertionError::ProviderUnavailable
    }
}

/// A failed code exchange: the provider refused (its 4xx) or could not be reached.
fn exchange_failed<RE: std::error::Error + 'static, T: oauth2::ErrorResponse + 'static>(
    e: oauth2::RequestTokenError<RE, T>,
) -> AssertionError {
    match e {
        oauth2::RequestTokenError::ServerResponse(_) => {
            AssertionError::Refused("the provider refused the code")
        }
        other => {
            tracing::warn!(cause = %super::jwks::error_chain(&other), "code exchange with the provider failed");
            AssertionError::ProviderUnavailable
        }
    }
}

impl Providers {
    /// An OpenID Connect provider's client, from its discovery document.
    async fn oidc_client(
        &self,
        kind: ProviderKind,
        redirect: RedirectUrl,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        AssertionError,
    > {
        let web = self.web(kind).ok_or(AssertionError::NotConfigured(kind.as_str()))?;
        let metadata = web.keys.metadata().await?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(web.client_id.clone()),
            Some(ClientSecret::new(web.client_secret.expose_secret().to_string())),
        )
        .set_redirect_uri(redirect))
    }

    /// Starts the upstream sign-in: the provider's authorization URL with our `state`.
    pub async fn start_browser_sign_in(
        &self,
        provider: ProviderKind,
        callback: &str,
        state: &str,
        login_hint: Option<&str>,
    ) -> Result<UpstreamStart, AssertionError> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let redirect = RedirectUrl::new(callback.to_string()).map_err(unavailable("bad callback URL"))?;
        let state = state.to_string();
        match provider {
            ProviderKind::Google | ProviderKind::Oidc(_) => {
                let client = self.oidc_client(provider, redirect).await?;
                let mut request = client
                    .authorize_url(
                        CoreAuthenticationFlow::AuthorizationCode,
                        move || CsrfToken::new(state),
                        Nonce::new_random,
                    )
                    .add_scope(Scope::new("email".into()))
                    .add_scope(Scope::new("profile".into()))
                    .set_pkce_challenge(challenge);
                if let Some(hint) = login_hint {
                    request = request.add_extra_param("login_hint", hint.to_string());
                }
                let (url, _, nonce) = request.url();
                Ok(UpstreamStart {
                    url: url.to_string(),
                    nonce: Some(nonce.secret().clone()),
                    verifier: verifier.secret().clone(),
                })
            }
            ProviderKind::Facebook => {
                let facebook = self.facebook.as_ref().ok_or(AssertionError::NotConfigured("facebook"))?;
                let client = oauth2::basic::BasicClient::new(ClientId::new(facebook.app_id().to_string()))
                    .set_auth_uri(
                        AuthUrl::new(facebook.dialog_url().to_string())
                            .map_err(unavailable("bad dialog_url"))?,
                    )
                    .set_redirect_uri(redirect);
                let mut request = client
                    .authorize_url(move || CsrfToken::new(state))
                    .add_scope(Scope::new("public_profile".into()))
                    .add_scope(Scope::new("email".into()))
                    .set_pkce_challenge(challenge);
                if let Some(hint) = login_hint {
                    request = request.add_extra_param("login_hint", hint.to_string());
                }
                let (url, _) = request.url();
                Ok(UpstreamStart { url: url.to_string(), nonce: None, verifier: verifier.secret().clone() })
            }
            ProviderKind::Dev => Err(AssertionError::NotConfigured("dev")),
            // Apple does not take PKCE: its code is bound by the client secret and the
            // redirect URI, and the sign-in by the nonce in the ID token.
            ProviderKind::Apple => {
                let apple = self.apple.as_ref().ok_or(AssertionError::NotConfigured("apple"))?;
                let nonce = crate::crypto::random_token::<32>();
                let url = apple.authorization_url(callback, &state, &nonce).await?;
                Ok(UpstreamStart { url, nonce: Some(nonce), verifier: String::new() })
            }
        }
    }

    /// Finishes Sign in with Apple in the browser, from the form Apple posted back: its ID
    /// token (the nonce must be this sign-in's), then its code redeemed for the refresh token
    /// idbridge keeps.
    pub async fn finish_apple_sign_in(
        &self,
        callback: &str,
        code: &str,
        id_token: &str,
        nonce: Option<&str>,
    ) -> Result<VerifiedAssertion, AssertionError> {
        let mut assertion = self.verify_id_token(id_token, Some(ProviderKind::Apple)).await?;
        if nonce.is_none() || assertion.nonce.as_deref() != nonce {
            return Err(AssertionError::Refused("the ID token's nonce is not this sign-in's"));
        }
        assertion.upstream = self.redeem_apple_code(&assertion, code, Some(callback)).await?;
        Ok(assertion)
    }

    /// Finishes the upstream sign-in with the code the provider sent back.
    pub async fn finish_browser_sign_in(
        &self,
        provider: ProviderKind,
        callback: &str,
        code: &str,
        verifier: &str,
        nonce: Option<&str>,
    ) -> Result<VerifiedAssertion, AssertionError> {
        let redirect = RedirectUrl::new(callback.to_string()).map_err(unavailable("bad callback URL"))?;
        let code = AuthorizationCode::new(code.to_string());
        let verifier = PkceCodeVerifier::new(verifier.to_string());
        match provider {
            ProviderKind::Google | ProviderKind::Oidc(_) => {
                let client = self.oidc_client(provider, redirect).await?;
                let http = self.http.clone();
                let as_post = move |request: oauth2::HttpRequest| send(http.clone(), request, Method::AsIs);
                let response = client
                    .exchange_code(code)
                    .map_err(unavailable("the provider has no token endpoint"))?
                    .set_pkce_verifier(verifier)
                    .request_async(&as_post)
                    .await
                    .map_err(exchange_failed)?;
                let id_token = openidconnect::TokenResponse::id_token(&response)
                    .ok_or(AssertionError::Refused("the provider sent no ID token"))?
                    .to_string();
                let assertion = self.verify_id_token(&id_token, Some(provider)).await?;
                if assertion.nonce.as_deref() != nonce || nonce.is_none() {
                    return Err(AssertionError::Refused("the ID token's nonce is not this sign-in's"));
                }
                Ok(assertion)
            }
            ProviderKind::Facebook => {
                let facebook = self.facebook.as_ref().ok_or(AssertionError::NotConfigured("facebook"))?;
                let token_url = format!("{}/oauth/access_token", facebook.graph_url());
                let client = oauth2::basic::BasicClient::new(ClientId::new(facebook.app_id().to_string()))
                    .set_client_secret(ClientSecret::new(facebook.app_secret().expose_secret().to_string()))
                    .set_token_uri(TokenUrl::new(token_url).map_err(unavailable("bad graph_url"))?)
                    .set_auth_type(oauth2::AuthType::RequestBody)
                    .set_redirect_uri(redirect);
                let http = self.http.clone();
                let as_get =
                    move |request: oauth2::HttpRequest| send(http.clone(), request, Method::GetWithQuery);
                let response = client
                    .exchange_code(code)
                    .set_pkce_verifier(verifier)
                    .request_async(&as_get)
                    .await
                    .map_err(exchange_failed)?;
                facebook.verify_access_token(response.access_token().secret()).await
            }
            // Apple answers with a form POST (`finish_apple_sign_in`).
            ProviderKind::Dev | ProviderKind::Apple => Err(AssertionError::NotConfigured(provider.as_str())),
        }
    }
}

/// How a token request goes out.
#[derive(Clone, Copy)]
enum Method {
    /// As the crate built it (a POST with a form body).
    AsIs,
    /// The way Facebook documents its code exchange: `GET /oauth/access_token` with the
    /// parameters in the query string, not a POST body.
    GetWithQuery,
}

/// Sends a token request of the oauth2 / openidconnect crates through reqwest. Every error
/// leaves without its URL: a token request's URL can carry the client secret, the person's
/// code and the PKCE verifier, and errors end up in the log.
async fn send(
    http: reqwest::Client,
    request: oauth2::HttpRequest,
    method: Method,
) -> Result<oauth2::HttpResponse, oauth2::HttpClientError<reqwest::Error>> {
    let scrubbed = |e: reqwest::Error| oauth2::HttpClientError::Reqwest(Box::new(e.without_url()));
    let (parts, body) = request.into_parts();
    let mut url = url::Url::parse(&parts.uri.to_string())
        .map_err(|_| oauth2::HttpClientError::Other("the token URL is not a URL".into()))?;
    let builder = match method {
        Method::AsIs => http.request(parts.method, url).headers(parts.headers).body(body),
        Method::GetWithQuery => {
            url.query_pairs_mut().extend_pairs(url::form_urlencoded::parse(&body));
            http.get(url).header(reqwest::header::ACCEPT, "application/json")
        }
    };
    let response = builder.send().await.map_err(scrubbed)?;
    let mut answer = oauth2::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        answer = answer.header(name, value);
    }
    Ok(answer.body(response.bytes().await.map_err(scrubbed)?.to_vec())?)
}
