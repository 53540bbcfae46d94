//! Criterion micro benchmarks of the per-request crypto: access token signing and
//! verification per algorithm, master-key wrapping, refresh-token hashing, and per-user
//! encryption (a cached data key) next to the bare XChaCha20-Poly1305 AEAD on the same input.

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
    runtime.block_on(db.write(move |conn| k.ensure_initial_key(conn, idbridge::clock::now()))).expect("key");
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
        session_expires_at: i64::MAX,
        dpop_jkt: None,
    };
    for alg in [SigningAlg::ES256, SigningAlg::EdDSA, SigningAlg::RS256] {
        let keys = signing_keys(alg, dir.path());
        let now = idbridge::clock::now();
        c.bench_function(&format!("access_token_sign_{alg:?}"), |b| {
            b.iter(|| access::issue(&keys, &policy, &grant, now).unwrap())
        });
        let token = access::issue(&keys, &policy, &grant, now).unwrap();
        c.bench_function(&format!("access_token_verify_{alg:?}"), |b| {
            b.iter(|| access::verify(&keys, &policy, &token, now).unwrap())
        });
    }
}

/// A DPoP proof's check (RFC 9449 §4.3: parse, key, one ES256 signature verification, claims)
/// next to the bare ES256 verification of an access token above, and with the `jti` record.
fn dpop_proofs(c: &mut Criterion) {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use idbridge::tokens::dpop::{self, Expected};

    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    let (x, y) = (URL_SAFE_NO_PAD.encode(&point[1..33]), URL_SAFE_NO_PAD.encode(&point[33..65]));
    let now = idbridge::clock::now();
    let token = "an-access-token";
    let ath = URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": y}});
    let claims = serde_json::json!({"jti": "j", "htm": "GET", "htu": "http://idbridge.test/v1/me", "iat": now, "ath": ath});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = pair.sign(&rng, input.as_bytes()).unwrap();
    let proof = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
    let urls = ["http://idbridge.test/v1/me", "http://127.0.0.1:8080/v1/me"];
    let expected = Expected { method: "GET", urls: &urls, access_token: Some(token), nonces: None };
    c.bench_function("dpop_proof_verify_ES256", |b| b.iter(|| dpop::verify(&proof, &expected, now).unwrap()));
    let replay = idbridge::proof_replay::ProofReplay::default();
    let mut n = 0u64;
    c.bench_function("dpop_proof_verify_and_record_jti", |b| {
        b.iter(|| {
            let checked = dpop::verify(&proof, &expected, now).unwrap();
            n += 1;
            replay.record(&checked.jkt, &n.to_string(), checked.iat, now)
        })
    });
}

fn wrapping_and_hashing(c: &mut Criterion) {
    let ring = MasterKeyring::from_keys(vec![[5u8; 32]]);
    let secret = [1u8; 32];
    c.bench_function("master_key_wrap_32_bytes", |b| b.iter(|| ring.wrap(&secret, b"aad")));
    let wrapped = ring.wrap(&secret, b"aad");
    c.bench_function("master_key_unwrap_32_bytes", |b| b.iter(|| ring.unwrap(&wrapped, b"aad").unwrap()));
    let token = idbridge::crypto::random_token::<32>();
    c.bench_function("refresh_token_hash", |b| b.iter(|| idbridge::crypto::sha256_b64(token.as_bytes())));
    // One link of the audit log's hash chain: a sign-in's event, as the sealer and verify hash it.
    let key = idbridge::crypto::server_secrets::ServerSecret::from_bytes([7u8; 32]);
    let event = idbridge::audit_chain::Event {
        id: "0190f0f0-0000-7000-8000-000000000001".into(),
        at: 1_800_000_000,
        actor: "user:0190f0f0-0000-7000-8000-000000000002".into(),
        action: "sign_in".into(),
        user_id: Some("0190f0f0-0000-7000-8000-000000000002".into()),
        device_id: Some("0190f0f0-0000-7000-8000-000000000003".into()),
        ip: Some("203.0.113.7".into()),
        user_agent: Some("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)".into()),
        detail: Some("provider=google client=ios-app".into()),
        seq: None,
        hash: None,
    };
    let previous = "A".repeat(43);
    c.bench_function("audit_chain_link", |b| {
        b.iter(|| idbridge::audit_chain::link(&key, &previous, 42, &event))
    });
}

fn user_data_encryption(c: &mut Criterion) {
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};
    use idbridge::crypto::user_keys::{self, UserKeys};

    // A user key unwrapped once into the cache, as every request after the first finds it.
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(&format!("sqlite://{}/users.db", dir.path().display()), 2).expect("database url");
    db.migrate().expect("migrations");
    let keys = Arc::new(UserKeys::new(Arc::new(MasterKeyring::from_keys(vec![[9u8; 32]]))));
    let user = "9b2537f4-9703-4bba-aa7e-82925e92d03d";
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime
        .block_on(db.write(move |conn| {
            diesel::RunQueryDsl::execute(
                diesel::sql_query(format!(
                    "INSERT INTO users (id, created_at, is_admin) VALUES ('{user}', 0, FALSE)"
                )),
                conn,
            )?;
            Ok::<_, db::DbError>(())
        }))
        .unwrap();
    let k = keys.clone();
    runtime.block_on(db.write(move |conn| k.create(conn, user, 1, 0))).unwrap();
    let k = keys.clone();
    runtime.block_on(db.run(move |conn| k.cipher(conn, user, 1))).unwrap().expect("the key");

    let bare = XChaCha20Poly1305::new(&[7u8; 32].into());
    for size in [64usize, 1024, 64 * 1024] {
        let data = vec![0x5au8; size];
        let mut group = c.benchmark_group(format!("encrypt_{size}B"));
        group.throughput(criterion::Throughput::Bytes(size as u64));
        group.bench_function("bare_aead", |b| {
            b.iter(|| {
                let nonce = idbridge::crypto::random_bytes::<24>();
                let mut buf = data.clone();
                let tag = bare.encrypt_in_place_detached(XNonce::from_slice(&nonce), b"", &mut buf).unwrap();
                (buf, tag)
            })
        });
        // The same AEAD with the text encoding an API answer needs: what idbridge adds beyond
        // both is the key lookup, the bound associated data and the version prefix.
        group.bench_function("bare_aead_base64", |b| {
            b.iter(|| {
                let nonce = idbridge::crypto::random_bytes::<24>();
                let mut buf = Vec::with_capacity(24 + data.len() + 16);
                buf.extend_from_slice(&nonce);
                buf.extend_from_slice(&data);
                let tag =
                    bare.encrypt_in_place_detached(XNonce::from_slice(&nonce), b"", &mut buf[24..]).unwrap();
                buf.extend_from_slice(&tag);
                base64_simd::URL_SAFE_NO_PAD.encode_to_string(&buf)
            })
        });
        group.bench_function("idbridge", |b| {
            b.iter(|| {
                let cipher = keys.cached(user, 1).expect("cached");
                user_keys::seal(&cipher, user, 1, "notes", &data)
            })
        });
        group.finish();

        let mut group = c.benchmark_group(format!("decrypt_{size}B"));
        group.throughput(criterion::Throughput::Bytes(size as u64));
        let nonce = [3u8; 24];
        let mut sealed = data.clone();
        let tag = bare.encrypt_in_place_detached(XNonce::from_slice(&nonce), b"", &mut sealed).unwrap();
        group.bench_function("bare_aead", |b| {
            b.iter(|| {
                let mut buf = sealed.clone();
                bare.decrypt_in_place_detached(XNonce::from_slice(&nonce), b"", &mut buf, &tag).unwrap();
                buf
            })
        });
        let mut framed = nonce.to_vec();
        framed.extend_from_slice(&sealed);
        framed.extend_from_slice(&tag);
        let framed_text = base64_simd::URL_SAFE_NO_PAD.encode_to_string(&framed);
        group.bench_function("bare_aead_base64", |b| {
            b.iter(|| {
                let mut buf = base64_simd::URL_SAFE_NO_PAD.decode_to_vec(&framed_text).unwrap();
                let end = buf.len() - 16;
                let tag = chacha20poly1305::Tag::clone_from_slice(&buf[end..]);
                let (n, d) = buf[..end].split_at_mut(24);
                bare.decrypt_in_place_detached(XNonce::from_slice(n), b"", d, &tag).unwrap();
                buf
            })
        });
        let text = user_keys::seal(&keys.cached(user, 1).unwrap(), user, 1, "notes", &data);
        group.bench_function("idbridge", |b| {
            b.iter(|| {
                let cipher = keys.cached(user, 1).expect("cached");
                let parsed = user_keys::parse_ciphertext(&text).unwrap();
                user_keys::open(&cipher, user, parsed, "notes").unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, access_tokens, dpop_proofs, wrapping_and_hashing, user_data_encryption);
criterion_main!(benches);
