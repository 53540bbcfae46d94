//! A DPoP client key (RFC 9449), made by hand: proofs for a request, and proofs broken on
//! purpose (every header and claim can be overridden or removed).
//!
//! Self-contained on purpose: `benches/load.rs` includes this file with `#[path]`.
#![allow(dead_code)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

enum Pair {
    Es256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

pub struct DpopKey {
    pair: Pair,
    pub jwk: Value,
    /// RFC 7638 thumbprint (SHA-256, base64url).
    pub jkt: String,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `ath`: the access token's SHA-256, base64url.
pub fn ath(access_token: &str) -> String {
    b64(&Sha256::digest(access_token.as_bytes()))
}

impl DpopKey {
    /// A new P-256 key (ES256).
    pub fn es256() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("key");
        let point = pair.public_key().as_ref().to_vec();
        let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
        let jkt = b64(&Sha256::digest(format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#)));
        DpopKey { pair: Pair::Es256(pair), jwk: json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}), jkt }
    }

    /// A new Ed25519 key (EdDSA).
    pub fn ed25519() -> Self {
        let pair = Ed25519KeyPair::generate().expect("Ed25519 key");
        let x = b64(pair.public_key().as_ref());
        let jkt = b64(&Sha256::digest(format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#)));
        DpopKey { pair: Pair::Ed25519(pair), jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x}), jkt }
    }

    fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Es256(_) => "ES256",
            Pair::Ed25519(_) => "EdDSA",
        }
    }

    /// A proof for `method` `url`, naming `access_token` in `ath` when given.
    pub fn proof(&self, method: &str, url: &str, access_token: Option<&str>) -> String {
        self.proof_with(method, url, access_token, |_, _| {})
    }

    /// A proof with its header and claims changed by `tamper` before signing.
    pub fn proof_with(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        tamper: impl FnOnce(&mut Map<String, Value>, &mut Map<String, Value>),
    ) -> String {
        let mut header = json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk})
            .as_object()
            .cloned()
            .expect("object");
        let mut claims = json!({
            "jti": uuid::Uuid::new_v4().to_string(),
            "htm": method,
            "htu": url,
            "iat": now(),
        })
        .as_object()
        .cloned()
        .expect("object");
        if let Some(token) = access_token {
            claims.insert("ath".into(), json!(ath(token)));
        }
        tamper(&mut header, &mut claims);
        self.sign(&Value::Object(header), &Value::Object(claims))
    }

    /// Signs any header and claims with this key.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let signature = match &self.pair {
            Pair::Es256(pair) => {
                pair.sign(&SystemRandom::new(), input.as_bytes()).expect("sign").as_ref().to_vec()
            }
            Pair::Ed25519(pair) => pair.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&signature))
    }
}
