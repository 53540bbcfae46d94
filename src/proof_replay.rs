//! DPoP proofs are single use (RFC 9449 §11.1): every `jti` accepted in the last
//! [`PROOF_MAX_AGE_SECS`] (plus the future leeway) is remembered, in memory, per replica.
//!
//! Why memory and not the database: a proof is refused once older than five minutes, so its
//! `jti` need be remembered no longer, and a replay that reaches another replica still needs
//! the stolen proof's exact request (`htm`, `htu`, `ath`), within those minutes. A write per
//! proof would double the cost of every DPoP request. Entries are keyed by a hash of the key's
//! thumbprint and the `jti`, so one client cannot spend another's `jti`s.
//!
//! Bounded: at most [`CAPACITY`] entries (about 40 bytes each). When full, expired ones are
//! dropped; if every entry is still live the proof is refused as `Full` (a 503 with
//! `Retry-After`), never accepted unrecorded.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::tokens::dpop::{PROOF_FUTURE_LEEWAY_SECS, PROOF_MAX_AGE_SECS};

const SHARDS: usize = 16;
/// Live entries across every shard.
pub const CAPACITY: usize = 1 << 20;

#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// First time: now remembered.
    New,
    /// This key used this `jti` before, within the window.
    Replayed,
    /// No room for a live entry: refuse, and retry later.
    Full,
}

pub struct ProofReplay {
    shards: Vec<Mutex<HashMap<[u8; 16], i64>>>,
}

impl Default for ProofReplay {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }
}

impl ProofReplay {
    /// Records the proof's `jti` for key `jkt`, issued at `iat`, unless it was seen.
    pub fn record(&self, jkt: &str, jti: &str, iat: i64, now: i64) -> Seen {
        let mut hasher = Sha256::new();
        hasher.update(jkt.as_bytes());
        hasher.update([0]);
        hasher.update(jti.as_bytes());
        let digest = hasher.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        // After this the proof is too old to pass anyway.
        let forget_at =
            iat.max(now - PROOF_FUTURE_LEEWAY_SECS) + PROOF_MAX_AGE_SECS + PROOF_FUTURE_LEEWAY_SECS;
        let shard = &self.shards[key[0] as usize % SHARDS];
        let mut seen = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.get(&key).is_some_and(|&until| until > now) {
            return Seen::Replayed;
        }
        if seen.len() >= CAPACITY / SHARDS {
            seen.retain(|_, until| *until > now);
            if seen.len() >= CAPACITY / SHARDS {
                return Seen::Full;
            }
        }
        seen.insert(key, forget_at);
        Seen::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_single_use_per_key_within_the_window() {
        let replay = ProofReplay::default();
        assert_eq!(replay.record("key-a", "j1", 1_000, 1_000), Seen::New);
        assert_eq!(replay.record("key-a", "j1", 1_000, 1_200), Seen::Replayed);
        assert_eq!(replay.record("key-b", "j1", 1_000, 1_000), Seen::New, "another key's jti is its own");
        // Past the window the proof is refused as stale before it gets here; the entry may go.
        let after = 1_000 + PROOF_MAX_AGE_SECS + PROOF_FUTURE_LEEWAY_SECS;
        assert_eq!(replay.record("key-a", "j1", after, after), Seen::New);
    }
}
