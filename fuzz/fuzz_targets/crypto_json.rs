//! The JSON bodies of `/v1/crypto`, then their checks: `user_id` (any UUID spelling), `context`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<idbridge::http::crypto::CiphertextBody>(data) {
        let _ = body.check_fields();
    }
    let _ = serde_json::from_slice::<idbridge::http::crypto::EncryptBody>(data);
});
