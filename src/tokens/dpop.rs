//! DPoP proofs (RFC 9449): checking one (§4.3), the key's thumbprint (RFC 7638), and the
//! server nonces of §8. Stateless: whether a proof's `jti` was seen before is
//! `proof_replay`'s question, asked by the caller once everything here has passed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::crypto::server_secrets::ServerSecret;

/// The proof's `typ` (RFC 9449 §4.2).
pub const PROOF_TYP: &str = "dpop+jwt";
/// The algorithms a proof may use, as discovery lists them.
pub const ALGORITHMS: [&str; 2] = ["ES256", "EdDSA"];
/// A proof is accepted this long after its `iat`; its `jti` is remembered as long.
pub const PROOF_MAX_AGE_SECS: i64 = 300;
/// A proof's `iat` may be this far ahead of our clock (clock skew), no further.
pub const PROOF_FUTURE_LEEWAY_SECS: i64 = 5;
/// How long a server nonce is accepted after it was issued.
pub const NONCE_TTL_SECS: i64 = 300;
/// A proof is a few hundred bytes; anything near this is not one.
const MAX_PROOF_LEN: usize = 4096;
const NONCE_TAG_LEN: usize = 16;

/// Why a proof was refused: `invalid_dpop_proof`, or `use_dpop_nonce` when only the server
/// nonce is missing or stale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the DPoP proof is invalid: {0}")]
    Invalid(&'static str),
    #[error("the DPoP proof must carry the server's current nonce")]
    UseNonce,
}

/// The request a proof must be for.
pub struct Expected<'a> {
    /// The HTTP method, upper case.
    pub method: &'a str,
    /// The request's URL, without query or fragment, as the issuer names it (`{issuer}{path}`)
    /// and as the request itself names it (its `Host`): `htu` must be one of them.
    pub urls: &'a [&'a str],
    /// At a resource endpoint: the access token the proof must name in `ath`.
    pub access_token: Option<&'a str>,
    /// When server nonces are on: the key they are checked with.
    pub nonces: Option<&'a DpopNonces>,
}

/// A proof that passed every check but the `jti` replay check.
#[derive(Debug, Clone)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof's key (SHA-256, base64url): `cnf.jkt`.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<Value>,
    ath: Option<String>,
    nonce: Option<String>,
}

/// Checks a DPoP proof against the request it came with (RFC 9449 §4.3, steps 1–11 but the
/// `jti` store): one well-formed JWS; `typ` `dpop+jwt`; `alg` ES256 or EdDSA (never `none` or
/// an HMAC); a `jwk` that is a public key of that algorithm; the signature by that key; `htm`
/// and `htu` those of the request; `iat` within the last [`PROOF_MAX_AGE_SECS`]; `ath` the
/// access token's hash when one is presented; the nonce when nonces are on.
pub fn verify(proof: &str, expected: &Expected<'_>, now: i64) -> Result<Proof, ProofError> {
    let invalid = ProofError::Invalid;
    if proof.is_empty() || proof.len() > MAX_PROOF_LEN {
        return Err(invalid("it is empty or too long"));
    }
    let mut parts = proof.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("it is not a compact JWS"));
    };
    let header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or(invalid("its header is not a JSON object"))?;
    let typ = header.get("typ").and_then(Value::as_str);
    if !typ.is_some_and(|t| t.eq_ignore_ascii_case(PROOF_TYP)) {
        return Err(invalid("typ must be dpop+jwt"));
    }
    if header.contains_key("crit") {
        return Err(invalid("no critical header extension is understood"));
    }
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("ES256") => jsonwebtoken::Algorithm::ES256,
        Some("EdDSA") => jsonwebtoken::Algorithm::EdDSA,
        _ => return Err(invalid("alg must be ES256 or EdDSA")),
    };
    let jwk = header.get("jwk").and_then(Value::as_object).ok_or(invalid("the header has no jwk"))?;
    let (key, jkt) = public_key(jwk, alg)?;

    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<ProofClaims>(proof, &key, &validation)
        .map_err(|_| invalid("the signature does not verify with its jwk, or the claims are malformed"))?
        .claims;

    let jti = claims.jti.filter(|j| !j.is_empty() && j.len() <= 256).ok_or(invalid("jti is missing"))?;
    if claims.htm.as_deref() != Some(expected.method) {
        return Err(invalid("htm is not this request's method"));
    }
    let htu = claims.htu.as_deref().ok_or(invalid("htu is missing"))?;
    if !expected.urls.iter().any(|url| same_target(htu, url)) {
        return Err(invalid("htu is not this request's URL"));
    }
    let iat = match claims.iat {
        Some(Value::Number(n)) => n.as_i64().ok_or(invalid("iat is not a whole number of seconds"))?,
        _ => return Err(invalid("iat is missing")),
    };
    if iat > now + PROOF_FUTURE_LEEWAY_SECS {
        return Err(invalid("iat is in the future"));
    }
    if iat < now - PROOF_MAX_AGE_SECS {
        return Err(invalid("the proof is too old"));
    }
    if let Some(token) = expected.access_token {
        let hash = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
        if claims.ath.as_deref() != Some(hash.as_str()) {
            return Err(invalid("ath is not the hash of the access token"));
        }
    }
    if let Some(nonces) = expected.nonces {
        if !claims.nonce.as_deref().is_some_and(|n| nonces.check(n, now)) {
            return Err(ProofError::UseNonce);
        }
    }
    Ok(Proof { jkt, jti, iat })
}

/// The proof's key, checked to be a public key of the proof's algorithm, and its RFC 7638
/// thumbprint (the required members in lexicographic order, SHA-256, base64url).
fn public_key(
    jwk: &Map<String, Value>,
    alg: jsonwebtoken::Algorithm,
) -> Result<(jsonwebtoken::DecodingKey, String), ProofError> {
    let invalid = ProofError::Invalid;
    // RFC 9449 §4.3 step 7: a private key in the header is refused, whatever else it holds.
    const PRIVATE: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
    if PRIVATE.iter().any(|m| jwk.contains_key(*m)) {
        return Err(invalid("the jwk must be a public key"));
    }
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    // A coordinate is exactly 32 bytes of unpadded base64url, spelled canonically.
    let coordinate = |name: &str| {
        member(name)
            .filter(|v| {
                URL_SAFE_NO_PAD
                    .decode(v)
                    .is_ok_and(|raw| raw.len() == 32 && URL_SAFE_NO_PAD.encode(&raw) == *v)
            })
            .ok_or(invalid("the jwk's coordinates are malformed"))
    };
    let (key, canonical) = match alg {
        jsonwebtoken::Algorithm::ES256 => {
            if member("kty") != Some("EC") || member("crv") != Some("P-256") {
                return Err(invalid("an ES256 proof needs an EC P-256 jwk"));
            }
            let (x, y) = (coordinate("x")?, coordinate("y")?);
            let key = jsonwebtoken::DecodingKey::from_ec_components(x, y)
                .map_err(|_| invalid("the jwk is not a P-256 public key"))?;
            (key, format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#))
        }
        _ => {
            if member("kty") != Some("OKP") || member("crv") != Some("Ed25519") {
                return Err(invalid("an EdDSA proof needs an OKP Ed25519 jwk"));
            }
            let x = coordinate("x")?;
            let key = jsonwebtoken::DecodingKey::from_ed_components(x)
                .map_err(|_| invalid("the jwk is not an Ed25519 public key"))?;
            (key, format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#))
        }
    };
    Ok((key, URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))))
}

/// `htu` against the request's URL, both without query and fragment and normalised as RFC
/// 3986 §6.2.2 and §6.2.3 say (scheme and host case, default port, percent-encoding case,
/// dot segments), which is what the `url` crate's parser does.
fn same_target(htu: &str, expected: &str) -> bool {
    let normal = |s: &str| {
        url::Url::parse(s).ok().filter(|u| u.has_host()).map(|mut u| {
            u.set_query(None);
            u.set_fragment(None);
            u
        })
    };
    match (normal(htu), normal(expected)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The SHA-256 thumbprint a `dpop_jkt` parameter must look like: 43 base64url characters.
pub fn is_thumbprint(value: &str) -> bool {
    value.len() == 43 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Server nonces (RFC 9449 §8), stateless: the expiry and an HMAC over it under a server
/// secret, so every replica accepts every other's, and issuing one writes nothing.
pub struct DpopNonces {
    key: [u8; 32],
}

impl DpopNonces {
    pub fn new(secret: &ServerSecret) -> Self {
        // Its own key, derived from the sign-in nonce secret: the two kinds never pass as each other.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret.bytes()).expect("HMAC takes any key length");
        mac.update(b"idbridge dpop nonce key");
        Self { key: mac.finalize().into_bytes().into() }
    }

    fn tag(&self, expires_at: i64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&expires_at.to_be_bytes());
        mac
    }

    /// A nonce valid for [`NONCE_TTL_SECS`] from `now`.
    pub fn issue(&self, now: i64) -> String {
        let expires_at = now + NONCE_TTL_SECS;
        let tag = self.tag(expires_at).finalize().into_bytes();
        let mut raw = expires_at.to_be_bytes().to_vec();
        raw.extend_from_slice(&tag[..NONCE_TAG_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `nonce` is one of ours and not expired.
    pub fn check(&self, nonce: &str, now: i64) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if raw.len() != 8 + NONCE_TAG_LEN {
            return false;
        }
        let (expiry, tag) = raw.split_at(8);
        let expires_at = i64::from_be_bytes(expiry.try_into().unwrap_or_default());
        expires_at > now
            && expires_at <= now + NONCE_TTL_SECS
            && self.tag(expires_at).verify_truncated_left(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_is_compared_without_query_and_fragment_after_normalisation() {
        let url = "https://id.example.com/oauth/token";
        assert!(same_target("https://id.example.com/oauth/token?x=1#f", url));
        assert!(same_target("HTTPS://ID.example.com:443/oauth/./token", url));
        assert!(!same_target("https://id.example.com/oauth/token/", url));
        assert!(!same_target("https://other.example.com/oauth/token", url));
        assert!(!same_target("/oauth/token", url));
    }

    #[test]
    fn a_nonce_passes_until_it_expires_and_only_under_its_key() {
        let nonces = DpopNonces::new(&ServerSecret::from_bytes([7; 32]));
        let other = DpopNonces::new(&ServerSecret::from_bytes([8; 32]));
        let nonce = nonces.issue(1_000);
        assert!(nonces.check(&nonce, 1_000));
        assert!(nonces.check(&nonce, 1_000 + NONCE_TTL_SECS - 1));
        assert!(!nonces.check(&nonce, 1_000 + NONCE_TTL_SECS));
        assert!(!other.check(&nonce, 1_000));
        assert!(!nonces.check("garbage", 1_000));
    }

    #[test]
    fn thumbprints_follow_rfc_7638() {
        // RFC 7638 §3.1's example is RSA; this is RFC 8037 §A.3's Ed25519 thumbprint.
        let jwk: Map<String, Value> = serde_json::from_str(
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
        )
        .unwrap();
        let (_, jkt) = public_key(&jwk, jsonwebtoken::Algorithm::EdDSA).unwrap();
        assert_eq!(jkt, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }
}
