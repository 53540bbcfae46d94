//! What `POST /oauth/token` reads and answers. The form is parsed flat (one struct for every
//! grant, so a wrong field is named in the error); the OpenAPI document describes it as one
//! shape per grant (`TokenRequest`), whose fields a unit test keeps to the form's.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::errors::OAuthError;
use super::input;

pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const PLATFORMS: [&str; 5] = ["ios", "android", "web", "desktop", "other"];
/// Longer than any real assertion or token; bounds the work spent on garbage.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

#[derive(Deserialize)]
pub struct TokenForm {
    pub(super) grant_type: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<String>,
    pub(super) scope: Option<String>,
    // token exchange
    pub(super) subject_token: Option<String>,
    pub(super) subject_token_type: Option<String>,
    pub(super) provider: Option<String>,
    pub(super) nonce: Option<String>,
    pub(super) device_name: Option<String>,
    pub(super) device_platform: Option<String>,
    /// Sign in with Apple: the person's name as the app got it (Apple gives it only once).
    pub(super) display_name: Option<String>,
    /// Sign in with Apple: the app's `authorizationCode`, redeemed for a refresh token that is
    /// revoked when the account is deleted.
    pub(super) authorization_code: Option<String>,
    // refresh
    pub(super) refresh_token: Option<String>,
    // authorization code
    pub(super) code: Option<String>,
    pub(super) redirect_uri: Option<String>,
    pub(super) code_verifier: Option<String>,
}

impl TokenForm {
    /// Every field's length and characters, before anything else looks at the request (the
    /// client secret is left to client authentication). The `cargo fuzz` target `token_form`
    /// runs the form parser and this.
    pub fn check_fields(&self) -> Result<(), OAuthError> {
        let fields: [(&'static str, &Option<String>, usize); 15] = [
            ("grant_type", &self.grant_type, 128),
            ("client_id", &self.client_id, 128),
            ("scope", &self.scope, 1024),
            ("subject_token", &self.subject_token, MAX_TOKEN_LEN),
            ("subject_token_type", &self.subject_token_type, 128),
            ("provider", &self.provider, 32),
            ("nonce", &self.nonce, 256),
            ("device_name", &self.device_name, 100),
            ("device_platform", &self.device_platform, 32),
            ("display_name", &self.display_name, 100),
            ("authorization_code", &self.authorization_code, 1024),
            ("refresh_token", &self.refresh_token, 512),
            ("code", &self.code, 256),
            ("redirect_uri", &self.redirect_uri, 2048),
            ("code_verifier", &self.code_verifier, 128),
        ];
        for (name, value, max) in fields {
            input::text(name, value.as_deref(), max)?;
        }
        Ok(())
    }
}

/// A token request: one shape per grant. A confidential client authenticates with HTTP Basic
/// or `client_id` and `client_secret` in the form; a public client sends `client_id`.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the document's view of `TokenForm`
pub enum TokenRequest {
    TokenExchange(TokenExchangeRequest),
    Refresh(RefreshRequest),
    AuthorizationCode(CodeRequest),
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub enum TokenExchangeGrant {
    #[serde(rename = "urn:ietf:params:oauth:grant-type:token-exchange")]
    TokenExchange,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub enum RefreshGrant {
    #[serde(rename = "refresh_token")]
    RefreshToken,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub enum CodeGrant {
    #[serde(rename = "authorization_code")]
    AuthorizationCode,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub enum SubjectTokenType {
    /// A provider's ID token (Google, Apple, Facebook Limited Login, OpenID Connect, dev; told apart by `iss`)
    #[serde(rename = "urn:ietf:params:oauth:token-type:id_token")]
    IdToken,
    /// A Facebook user access token (with `provider=facebook`)
    #[serde(rename = "urn:ietf:params:oauth:token-type:access_token")]
    AccessToken,
}

#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Platform {
    Ios,
    Android,
    Web,
    Desktop,
    Other,
}

/// Sign-in by token exchange (RFC 8693) of a provider's assertion: a new device.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenExchangeRequest {
    grant_type: TokenExchangeGrant,
    /// The provider's ID token, or a Facebook user access token
    #[schema(min_length = 1, max_length = 16384, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    subject_token: String,
    subject_token_type: SubjectTokenType,
    /// `google`, `facebook`, `apple`, a `[[providers.oidc]]` name or `dev`; needed for an access token
    #[schema(max_length = 32)]
    provider: Option<String>,
    /// The nonce from `/oauth/nonce` that the ID token carries
    #[schema(max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    nonce: Option<String>,
    /// The device's name, shown in device lists
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    device_name: Option<String>,
    device_platform: Option<Platform>,
    /// `provider=apple`: the name the app got from Apple, kept for a new user only
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    display_name: Option<String>,
    /// `provider=apple`: the app's `authorizationCode`, redeemed at Apple
    #[schema(max_length = 1024, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    authorization_code: Option<String>,
    #[serde(flatten)]
    client: ClientFields,
}

/// Refresh-token rotation (RFC 6749 §6): the token is spent and a successor returned.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RefreshRequest {
    grant_type: RefreshGrant,
    /// The refresh token
    #[schema(min_length = 1, max_length = 512, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    refresh_token: String,
    #[serde(flatten)]
    client: ClientFields,
}

/// The browser flow's code (RFC 6749 §4.1.3, RFC 7636): single use, 60 seconds.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CodeRequest {
    grant_type: CodeGrant,
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    code: String,
    /// The authorization request's `redirect_uri`, exactly
    #[schema(min_length = 1, max_length = 2048, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    redirect_uri: String,
    /// The PKCE verifier (RFC 7636 §4.1)
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    code_verifier: String,
    #[serde(flatten)]
    client: ClientFields,
}

/// The fields every grant may carry.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ClientFields {
    /// A public client's id, or a confidential one's when it does not use HTTP Basic (with Basic, the same id or none)
    #[schema(max_length = 128, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    client_id: Option<String>,
    /// A confidential client's secret, when it does not use HTTP Basic (never both: RFC 6749 §2.3)
    client_secret: Option<String>,
    /// Space-separated, a subset of the client's scopes (default: all of them)
    #[schema(max_length = 1024, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    scope: Option<String>,
}

/// A successful token answer (RFC 6749 §5.1, RFC 8693 §2.2.1), sent with `Cache-Control: no-store`.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// An RFC 9068 JWT (`typ` `at+jwt`)
    pub access_token: String,
    /// `urn:ietf:params:oauth:token-type:access_token`
    pub issued_token_type: &'static str,
    /// `DPoP` when the request carried a DPoP proof (the access token then has `cnf.jkt`)
    #[schema(value_type = String, pattern = "^(Bearer|DPoP)$")]
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_token: String,
    pub scope: String,
    /// The device this sign-in made or refreshed
    #[schema(format = Uuid)]
    pub device_id: String,
    /// An ID token, for an authorization code with `openid` in scope
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub id_token: Option<String>,
}
