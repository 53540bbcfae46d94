//! DPoP at the edge (RFC 9449): the `DPoP` header of a request, checked against the request
//! (`tokens::dpop::verify`) and spent (`proof_replay`); and how a refusal is answered, at the
//! token endpoint (`400`, RFC 6749 shape) and at resource endpoints (`401` with a DPoP
//! challenge).

use actix_web::HttpRequest;

use super::errors::{OAuthError, Problem};
use crate::proof_replay::Seen;
use crate::state::AppState;
use crate::tokens::dpop::{self, Expected, Proof, ProofError};

/// What of a request a DPoP check needs, taken before the handler's future runs. A request
/// without a `DPoP` header (every Bearer request) costs an empty list and nothing more.
pub struct ProofHeaders {
    proofs: Vec<String>,
    /// The request's target, read only when it carries a proof.
    target: Option<Target>,
}

struct Target {
    method: String,
    path: String,
    /// The request's own URL (scheme and `Host` as received), without query.
    own_url: String,
}

/// Why a request's proof was not accepted.
#[derive(Debug)]
pub enum Refusal {
    /// `invalid_dpop_proof`.
    Invalid(String),
    /// `use_dpop_nonce`, with a fresh nonce to send.
    UseNonce(String),
    /// No room to remember the proof's `jti`: 503.
    Busy,
}

impl ProofHeaders {
    pub fn of(req: &HttpRequest) -> Self {
        let proofs: Vec<String> = req
            .headers()
            .get_all("dpop")
            .map(|v| v.to_str().map(str::to_string).unwrap_or_default())
            .collect();
        let target = (!proofs.is_empty()).then(|| {
            let info = req.connection_info();
            Target {
                method: req.method().as_str().to_string(),
                path: req.path().to_string(),
                own_url: format!("{}://{}{}", info.scheme(), info.host(), req.path()),
            }
        });
        Self { proofs, target }
    }

    /// Whether the request carries a `DPoP` header at all.
    pub fn present(&self) -> bool {
        !self.proofs.is_empty()
    }
}

/// The request's proof, checked and spent: `None` without a `DPoP` header. `access_token` is
/// the token a resource request presents (the proof must name it in `ath`).
pub fn check(
    state: &AppState,
    headers: &ProofHeaders,
    access_token: Option<&str>,
) -> Result<Option<Proof>, Refusal> {
    let (proof, target) = match (headers.proofs.as_slice(), &headers.target) {
        ([], _) | (_, None) => return Ok(None),
        ([one], Some(target)) => (one, target),
        _ => return Err(Refusal::Invalid("a request carries one DPoP proof".into())),
    };
    let now = crate::clock::now();
    // The issuer's name for this endpoint (what discovery lists, right behind a proxy), or the
    // request's own: a client library builds `htu` from the URL it sends to.
    let url = format!("{}{}", state.settings.issuer(), target.path);
    let expected = Expected {
        method: &target.method,
        urls: &[&url, &target.own_url],
        access_token,
        nonces: state.settings.tokens.dpop_nonce.then_some(&state.dpop_nonces),
    };
    let proof = dpop::verify(proof, &expected, now).map_err(|e| match e {
        ProofError::UseNonce => Refusal::UseNonce(state.dpop_nonces.issue(now)),
        invalid => Refusal::Invalid(invalid.to_string()),
    })?;
    match state.proof_replay.record(&proof.jkt, &proof.jti, proof.iat, now) {
        Seen::New => Ok(Some(proof)),
        Seen::Replayed => Err(Refusal::Invalid("the DPoP proof's jti was used before".into())),
        Seen::Full => Err(Refusal::Busy),
    }
}

/// A fresh nonce for the `DPoP-Nonce` header of an answer, when nonces are on.
pub fn next_nonce(state: &AppState) -> Option<String> {
    state.settings.tokens.dpop_nonce.then(|| state.dpop_nonces.issue(crate::clock::now()))
}

impl From<Refusal> for OAuthError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Invalid(why) => OAuthError::invalid_dpop_proof(why),
            Refusal::UseNonce(nonce) => OAuthError::use_dpop_nonce(nonce),
            Refusal::Busy => {
                OAuthError::temporarily_unavailable("too many DPoP proofs in flight; retry shortly")
            }
        }
    }
}

impl From<Refusal> for Problem {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Invalid(why) => Problem::dpop_refused("invalid_dpop_proof", why),
            Refusal::UseNonce(nonce) => Problem::use_dpop_nonce(nonce),
            Refusal::Busy => Problem::unavailable(),
        }
    }
}
