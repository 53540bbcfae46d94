//! The dev provider (dev mode only): mints ID tokens for any name, signed by a key that lives
//! in this process, so the whole flow runs without Google.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::json;

use super::oidc::{IdTokenPolicy, KeySource, OidcVerifier};
use super::ProviderKind;
use crate::clients::DEV_PUBLIC_CLIENT;

const DEV_TOKEN_TTL_SECS: i64 = 600;

pub struct DevProvider {
    issuer: String,
    kid: String,
    encoding: EncodingKey,
    decoding: Arc<DecodingKey>,
}

impl DevProvider {
    pub fn new(public_url: &str) -> Self {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .expect("P-256 key generation");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .expect("a freshly generated key parses");
        let (x, y) = pair.public_key().as_ref()[1..].split_at(32);
        let decoding =
            DecodingKey::from_ec_components(&URL_SAFE_NO_PAD.encode(x), &URL_SAFE_NO_PAD.encode(y))
                .expect("valid P-256 point");
        Self {
            issuer: format!("{public_url}/dev"),
            kid: crate::crypto::random_token::<8>(),
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            decoding: Arc::new(decoding),
        }
    }

    pub fn verifier(&self) -> OidcVerifier {
        OidcVerifier::new(
            ProviderKind::Dev,
            IdTokenPolicy {
                issuers: vec![self.issuer.clone()],
                audiences: vec![DEV_PUBLIC_CLIENT.to_string()],
                hosted_domain: None,
                algorithm: Algorithm::ES256,
            },
            KeySource::Local(HashMap::from([(self.kid.clone(), self.decoding.clone())])),
        )
    }

    /// An ID token for `name`, whose subject is the name itself.
    pub fn mint(&self, name: &str, nonce: Option<&str>) -> Result<String, jsonwebtoken::errors::Error> {
        let now = crate::clock::now();
        let mut claims = json!({
            "iss": self.issuer,
            "aud": DEV_PUBLIC_CLIENT,
            "sub": name,
            "name": name,
            "iat": now,
            "exp": now + DEV_TOKEN_TTL_SECS,
            "jti": crate::crypto::random_token::<16>(),
        });
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
    }
}
