//! A keyed blind index of e-mail addresses: HMAC-SHA256 of the normalised address under a
//! server secret, so an exact address can be looked up without storing it in plaintext and
//! without the index alone telling which address it is.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::server_secrets::ServerSecret;

pub struct BlindIndex(pub ServerSecret);

/// Trimmed and lower-cased: how two spellings of one address meet.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

impl BlindIndex {
    pub fn of_email(&self, email: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.0.bytes()).expect("HMAC takes any key length");
        mac.update(b"idbridge email\0");
        mac.update(normalize_email(email).as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_address_meet_and_keys_differ() {
        let a = BlindIndex(ServerSecret::from_bytes([1; 32]));
        let b = BlindIndex(ServerSecret::from_bytes([2; 32]));
        assert_eq!(a.of_email(" Ada@Example.COM "), a.of_email("ada@example.com"));
        assert_ne!(a.of_email("ada@example.com"), a.of_email("bob@example.com"));
        assert_ne!(a.of_email("ada@example.com"), b.of_email("ada@example.com"));
    }
}
