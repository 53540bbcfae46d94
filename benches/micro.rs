//! Criterion micro benchmarks of the per-request crypto: access token signing and
//! verification per algorithm, master-key wrapping, and refresh-token hashing.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use idbridge::config::SigningAlg;
use idbridge::crypto::keyring::MasterKeyring;
use idbridge::crypto::signing::SigningKeys;
use idbridge::db::{self, Db};
use idbridge::tokens::access::{self, AccessTokenPolicy, Grant};

fn signing_keys(alg: SigningAlg, dir: &std::path::Path) -> Arc<SigningKeys> {
    let url = format!("sqlite://{}/{alg:?}.db", dir.display());
    let db = Db::new(&url, 2).expect("database url");
    db.migrate().expect("migrations");
    let keyring = Arc::new(MasterKeyring::from_keys(vec![[9u8; 32]]));
    let keys = Arc::new(SigningKeys::new(keyring, alg, 600, 30 * 86_400));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let k = keys.clone();
    runtime.block_on(db.write(move |conn| k.ensure_initial_key(conn, db::now()))).expect("key");
    let k = keys.clone();
    runtime.block_on(db.run(move |conn| k.reload(conn))).expect("reload");
    keys
}

fn access_tokens(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let policy = AccessTokenPolicy {
        issuer: "http://idbridge.test".into(),
        audience: "http://idbridge.test/api".into(),
        ttl_secs: 600,
    };
    let grant = Grant {
        user_id: "9b2537f4-9703-4bba-aa7e-82925e92d03d",
        device_id: "cbb2a933-b45f-472d-8f39-bdc41d083dc1",
        client_id: "app",
        scope: "openid profile api",
        idp: "google",
    };
    for alg in [SigningAlg::ES256, SigningAlg::EdDSA, SigningAlg::RS256] {
        let keys = signing_keys(alg, dir.path());
        let now = db::now();
        c.bench_function(&format!("access_token_sign_{alg:?}"), |b| {
            b.iter(|| access::issue(&keys, &policy, &grant, now).unwrap())
        });
        let token = access::issue(&keys, &policy, &grant, now).unwrap();
        c.bench_function(&format!("access_token_verify_{alg:?}"), |b| {
            b.iter(|| access::verify(&keys, &policy, &token, now).unwrap())
        });
    }
}

fn wrapping_and_hashing(c: &mut Criterion) {
    let ring = MasterKeyring::from_keys(vec![[5u8; 32]]);
    let secret = [1u8; 32];
    c.bench_function("master_key_wrap_32_bytes", |b| b.iter(|| ring.wrap(&secret, b"aad")));
    let wrapped = ring.wrap(&secret, b"aad");
    c.bench_function("master_key_unwrap_32_bytes", |b| b.iter(|| ring.unwrap(&wrapped, b"aad").unwrap()));
    let token = idbridge::crypto::random_token::<32>();
    c.bench_function("refresh_token_hash", |b| b.iter(|| idbridge::crypto::sha256_b64(token.as_bytes())));
}

criterion_group!(benches, access_tokens, wrapping_and_hashing);
criterion_main!(benches);
