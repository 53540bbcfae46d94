//! The `/v1/crypto` ciphertext decoder (`idb1:v<n>:<base64url>`) and the AEAD open behind it.
#![no_main]

use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use idbridge::crypto::user_keys::{open, parse_ciphertext, seal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cipher = XChaCha20Poly1305::new(&[7u8; 32].into());
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(parsed) = parse_ciphertext(text) {
            let _ = open(&cipher, "0b7e0000-0000-4000-8000-000000000000", parsed, "ctx");
        }
    }
    // A round trip of whatever came, under every context length it suggests.
    let context = String::from_utf8_lossy(&data[..data.len().min(16)]).into_owned();
    let sealed = seal(&cipher, "user", 1, &context, data);
    let opened = open(&cipher, "user", parse_ciphertext(&sealed).expect("own ciphertext parses"), &context);
    assert_eq!(&*opened.expect("own ciphertext opens"), data);
});
