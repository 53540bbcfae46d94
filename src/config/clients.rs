//! `[[clients]]`: the OAuth clients the file declares (the `clients` module builds its registry from them).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    Public,
    Confidential,
}

impl ClientKind {
    /// The name in the configuration, the database and the console.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Public => "public",
            ClientKind::Confidential => "confidential",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [ClientKind::Public, ClientKind::Confidential].into_iter().find(|k| k.as_str() == name)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    pub client_id: String,
    pub kind: ClientKind,
    #[serde(default)]
    pub secret_hash: String,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// OpenID Connect Back-Channel Logout: told when a device of this client ends.
    #[serde(default)]
    pub backchannel_logout_uri: String,
    /// Where `/oauth/logout` may send the browser back to, matched exactly.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Token requests without a DPoP proof are refused.
    #[serde(default)]
    pub dpop_required: bool,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "api".into()]
}
