//! `POST /oauth/token`'s form, as actix-web reads it (serde_urlencoded into `TokenForm`), then
//! every field through the input checks the grants apply.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(form) = serde_urlencoded::from_bytes::<idbridge::http::oauth::TokenForm>(data) {
        let _ = form.check_fields();
    }
});
