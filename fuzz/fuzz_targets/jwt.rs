//! Every JWT decoder idbridge runs on a token from outside: the issuer peek that picks a
//! provider, a provider's ID-token verification (header, `crit`, algorithm, claims), and the
//! access-token check of `/v1` and introspection, and a DPoP proof's check (RFC 9449 §4.3).
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
use idbridge::crypto::keyring::MasterKeyring;
use idbridge::crypto::signing::SigningKeys;
use idbridge::providers::oidc::{IdTokenPolicy, KeySource, OidcVerifier};
use idbridge::providers::ProviderKind;
use idbridge::tokens::access::{self, AccessTokenPolicy};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    verifier: OidcVerifier,
    keys: SigningKeys,
    policy: AccessTokenPolicy,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut local = HashMap::new();
        local.insert("k1".to_string(), Arc::new(jsonwebtoken::DecodingKey::from_secret(b"not-a-real-key").expect("an HMAC key")));
        let policy = IdTokenPolicy {
            issuers: vec!["https://accounts.google.com".into()],
            audiences: vec!["client".into()],
            hosted_domain: None,
            algorithm: jsonwebtoken::Algorithm::RS256,
        };
        Fixture {
            verifier: OidcVerifier::new(ProviderKind::Google, policy, KeySource::Local(local)),
            keys: SigningKeys::new(
                Arc::new(MasterKeyring::from_keys(vec![[7; 32]])),
                idbridge::config::SigningAlg::ES256,
                600,
                30 * 86_400,
            ),
            policy: AccessTokenPolicy {
                issuer: "https://idbridge.test".into(),
                audience: "https://idbridge.test/api".into(),
                ttl_secs: 600,
            },
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let f = fixture();
    let _ = idbridge::providers::oidc::peek_issuer(token);
    // Local keys never wait: the future is ready at once.
    let _ = f.verifier.verify(token).now_or_never();
    let _ = access::verify(&f.keys, &f.policy, token, 1_800_000_000);
    let _ = access::looks_like_jwt(token);
    let urls = ["https://idbridge.test/v1/me"];
    let expected = idbridge::tokens::dpop::Expected { method: "GET", urls: &urls, access_token: Some("t"), nonces: None };
    let _ = idbridge::tokens::dpop::verify(token, &expected, 1_800_000_000);
});
