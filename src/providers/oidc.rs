//! Verification of an OpenID Connect ID token, as Google documents it: signature with an
//! allowlisted algorithm against the issuer's keys, `iss`, `aud`, `azp`, `exp`, `iat`, `nbf`
//! and `hd`, with at most 60 s of leeway. The nonce is the caller's (it needs the store).

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::jwks::JwksCache;
use super::{AssertionError, ProviderKind, VerifiedAssertion};
use crate::crypto::sha256_b64;

pub const LEEWAY_SECS: u64 = 60;
/// Provider ID tokens live an hour; one that claims to outlive a day is refused.
const MAX_LIFETIME_AHEAD_SECS: i64 = 86_400;
/// Longer than any real ID token; bounds the work spent on garbage.
const MAX_TOKEN_LEN: usize = 16 * 1024;

pub struct IdTokenPolicy {
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub hosted_domain: Option<String>,
    /// The one algorithm the issuer signs with; the token's header does not choose.
    pub algorithm: Algorithm,
}

pub enum KeySource {
    /// Discovery plus a JWKS cache (Google).
    Remote(JwksCache),
    /// Keys held in this process (the dev provider).
    Local(HashMap<String, Arc<DecodingKey>>),
}

pub struct OidcVerifier {
    kind: ProviderKind,
    policy: IdTokenPolicy,
    keys: KeySource,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn all(&self) -> &[String] {
        match self {
            Audience::One(a) => std::slice::from_ref(a),
            Audience::Many(list) => list,
        }
    }
}

#[derive(Deserialize)]
struct IdTokenClaims {
    sub: String,
    aud: Audience,
    iat: i64,
    exp: i64,
    azp: Option<String>,
    hd: Option<String>,
    nonce: Option<String>,
    email: Option<String>,
    /// A boolean, or (Apple) the string `"true"` or `"false"`.
    email_verified: Option<serde_json::Value>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

impl OidcVerifier {
    pub fn new(kind: ProviderKind, policy: IdTokenPolicy, keys: KeySource) -> Self {
        Self { kind, policy, keys }
    }

    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    pub fn accepts_issuer(&self, iss: &str) -> bool {
        self.policy.issuers.iter().any(|i| i == iss)
    }

    pub async fn verify(&self, token: &str) -> Result<VerifiedAssertion, AssertionError> {
        let header = parse_header(token)?;
        // RFC 8725: the verifier picks the algorithm; `none`, HS256 and friends never pass.
        if header.alg != algorithm_name(self.policy.algorithm) {
            return Err(AssertionError::Algorithm);
        }
        if header.crit.is_some() {
            return Err(AssertionError::CriticalHeader);
        }
        let kid = header.kid.filter(|k| !k.is_empty() && k.len() <= 256).ok_or(AssertionError::UnknownKey)?;
        let key = match &self.keys {
            KeySource::Remote(cache) => cache.key(&kid).await?,
            KeySource::Local(keys) => keys.get(&kid).cloned().ok_or(AssertionError::UnknownKey)?,
        };

        let mut validation = Validation::new(self.policy.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&self.policy.issuers);
        validation.set_audience(&self.policy.audiences);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<IdTokenClaims>(token, &key, &validation)
            .map_err(|e| map_jwt_error(e.kind()))?
            .claims;

        // OIDC Core 3.1.3.7: every audience must be one of ours, not merely one of them.
        if !claims.aud.all().iter().all(|a| self.policy.audiences.contains(a)) {
            return Err(AssertionError::Audience);
        }
        let now = crate::clock::now();
        if claims.iat > now + LEEWAY_SECS as i64 {
            return Err(AssertionError::IssuedInFuture);
        }
        if let Some(azp) = &claims.azp {
            if !self.policy.audiences.contains(azp) {
                return Err(AssertionError::AuthorizedParty);
            }
        }
        if let Some(domain) = &self.policy.hosted_domain {
            if claims.hd.as_deref() != Some(domain.as_str()) {
                return Err(AssertionError::HostedDomain);
            }
        }
        if claims.exp > now.saturating_add(MAX_LIFETIME_AHEAD_SECS) {
            return Err(AssertionError::ExpiryTooFar);
        }
        if claims.sub.is_empty() || claims.sub.len() > 255 || claims.sub.contains(char::is_control) {
            return Err(AssertionError::BadClaim("sub"));
        }
        // Text that reaches the database: no NUL or other control characters, bounded length.
        let plain =
            |v: &Option<String>| v.as_ref().is_none_or(|t| t.len() <= 320 && !t.contains(char::is_control));
        if !plain(&claims.email) {
            return Err(AssertionError::BadClaim("email"));
        }
        if !plain(&claims.name) {
            return Err(AssertionError::BadClaim("name"));
        }
        if claims.nonce.as_ref().is_some_and(|n| n.len() > 256) {
            return Err(AssertionError::BadClaim("nonce"));
        }
        Ok(VerifiedAssertion {
            provider: self.kind,
            subject: claims.sub,
            email_verified: claims.email_verified.as_ref().and_then(|v| match v {
                serde_json::Value::Bool(b) => Some(*b),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            }),
            email: claims.email,
            name: claims.name,
            nonce: claims.nonce,
            // The signing input, not the signature: an ECDSA signature can be re-encoded
            // (s → n − s) and still verify, which would make a replay look new.
            assertion_hash: Some(sha256_b64(signing_input(token).as_bytes())),
            // One second past the last instant the token is still accepted.
            expires_at: claims.exp.saturating_add(LEEWAY_SECS as i64 + 1),
            audience: claims.aud.all().first().cloned(),
            upstream: None,
        })
    }
}

/// `header.payload`: what the signature covers.
fn signing_input(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(input, _)| input)
}

fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

fn segment_json<T: serde::de::DeserializeOwned>(token: &str, index: usize) -> Result<T, AssertionError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AssertionError::Malformed);
    }
    let mut parts = token.split('.');
    let segment = parts.nth(index).ok_or(AssertionError::Malformed)?;
    if token.split('.').count() != 3 {
        return Err(AssertionError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| AssertionError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AssertionError::Malformed)
}

fn parse_header(token: &str) -> Result<JoseHeader, AssertionError> {
    segment_json(token, 0)
}

/// The unverified `iss`, only to pick the verifier; everything is checked after.
pub fn peek_issuer(token: &str) -> Result<String, AssertionError> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    segment_json::<Iss>(token, 1)?.iss.ok_or(AssertionError::MissingClaim("iss".into()))
}

fn map_jwt_error(kind: &ErrorKind) -> AssertionError {
    match kind {
        ErrorKind::ExpiredSignature => AssertionError::Expired,
        ErrorKind::ImmatureSignature => AssertionError::NotYetValid,
        ErrorKind::InvalidIssuer => AssertionError::UnknownIssuer,
        ErrorKind::InvalidAudience => AssertionError::Audience,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AssertionError::Algorithm,
        ErrorKind::MissingRequiredClaim(c) => AssertionError::MissingClaim(c.clone()),
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
            AssertionError::Signature
        }
        _ => AssertionError::Malformed,
    }
}
