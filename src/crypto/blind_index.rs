//! A keyed blind index of e-mail addresses: HMAC-SHA256 of the normalised address under a
//! server secret, so an exact address can be looked up without storing it in plaintext and
//! without the index alone telling which address it is.
//!
//! The same key makes the console's search terms (`accounts::search`): keyed HMACs of the
//! prefixes (2 to 12 characters) of each word of a user's name, and of the prefixes of each of
//! their e-mails' local parts, two kinds kept apart by a label. A search computes the terms of
//! what was typed and looks them up; the decrypted profile then confirms each match.

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

/// Prefixes shorter than this are not indexed: a search needs two characters a word.
pub const PREFIX_MIN: usize = 2;
/// Prefixes longer than this are not indexed: a longer word is looked up by its first
/// `PREFIX_MAX` characters, and the decrypted profile confirms the rest.
pub const PREFIX_MAX: usize = 12;
/// Words of a name indexed, at most.
const NAME_WORDS_MAX: usize = 16;
/// A user's terms are padded with random ones to a multiple of this.
const PAD_TO: usize = 16;

/// The words of a name (or of a search), lower-cased, split at anything not a letter or a
/// digit, each once.
pub fn words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let word = word.to_lowercase();
        if !words.contains(&word) {
            words.push(word);
        }
    }
    words
}

/// The local part of an e-mail (before the last `@`), normalised.
pub fn local_part(email: &str) -> String {
    let email = normalize_email(email);
    match email.rsplit_once('@') {
        Some((local, _)) => local.to_string(),
        None => email,
    }
}

/// The first `n` characters of `text`.
fn prefix(text: &str, n: usize) -> &str {
    text.char_indices().nth(n).map_or(text, |(at, _)| &text[..at])
}

/// What a console search looks up, and how a decrypted profile confirms a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// Every one of these name terms, one per word typed (two characters or more).
    pub name_terms: Vec<String>,
    /// Or this e-mail term: the text typed as the start of an e-mail.
    pub email_term: Option<String>,
    words: Vec<String>,
    email_prefix: Option<String>,
}

impl SearchQuery {
    /// Whether a profile matches: every word typed starts a word of the name, or the text
    /// typed starts one of the e-mails (compared normalised).
    pub fn matches(&self, name: Option<&str>, emails: &[String]) -> bool {
        let by_name = !self.words.is_empty() && {
            let have = name.map(words).unwrap_or_default();
            self.words.iter().all(|w| have.iter().any(|h| h.starts_with(w.as_str())))
        };
        let by_email = self
            .email_prefix
            .as_deref()
            .is_some_and(|p| emails.iter().any(|e| normalize_email(e).starts_with(p)));
        by_name || by_email
    }
}

impl BlindIndex {
    fn term(&self, kind: &[u8], text: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.0.bytes()).expect("HMAC takes any key length");
        mac.update(b"idbridge search\0");
        mac.update(kind);
        mac.update(b"\0");
        mac.update(text.as_bytes());
        // 128 bits: no two prefixes meet by chance.
        URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..16])
    }

    fn prefix_terms(&self, kind: &[u8], text: &str, into: &mut Vec<String>) {
        let len = text.chars().count().min(PREFIX_MAX);
        for n in PREFIX_MIN..=len {
            into.push(self.term(kind, prefix(text, n)));
        }
    }

    /// A user's search terms: their name words' prefixes and their e-mails' local parts'
    /// prefixes, each once, padded with random terms (that no search makes) to a multiple of 16.
    pub fn terms_of(&self, name: Option<&str>, emails: &[String]) -> Vec<String> {
        let mut terms = Vec::new();
        for word in name.map(words).unwrap_or_default().iter().take(NAME_WORDS_MAX) {
            self.prefix_terms(b"name", word, &mut terms);
        }
        for email in emails {
            self.prefix_terms(b"email", &local_part(email), &mut terms);
        }
        terms.sort_unstable();
        terms.dedup();
        while terms.len() % PAD_TO != 0 || terms.is_empty() {
            terms.push(URL_SAFE_NO_PAD.encode(crate::crypto::random_bytes::<16>()));
        }
        terms
    }

    /// What a search for `q` looks up; `None` when it is too short to search by prefix.
    pub fn query(&self, q: &str) -> Option<SearchQuery> {
        let q = normalize_email(q);
        let (name_words, email_prefix) = match q.split_once('@') {
            // An e-mail typed (in part): found by its local part, confirmed by the whole prefix.
            Some((local, _)) => (Vec::new(), (local.chars().count() >= PREFIX_MIN).then(|| q.clone())),
            None => {
                let single = !q.contains(char::is_whitespace) && q.chars().count() >= PREFIX_MIN;
                (words(&q), single.then(|| q.clone()))
            }
        };
        // Every word typed must start a name word (`matches`); the terms are of those long
        // enough to index, each once.
        let words = name_words;
        // The longest word first: its term is likely the rarest, and drives the lookup.
        let mut indexed: Vec<&String> = words.iter().filter(|w| w.chars().count() >= PREFIX_MIN).collect();
        indexed.sort_by_key(|w| std::cmp::Reverse(w.chars().count().min(PREFIX_MAX)));
        let mut name_terms: Vec<String> = Vec::new();
        for word in indexed {
            let term = self.term(b"name", prefix(word, PREFIX_MAX));
            if !name_terms.contains(&term) {
                name_terms.push(term);
            }
        }

        let email_term = email_prefix
            .as_deref()
            .map(|p| self.term(b"email", prefix(&local_part_of_prefix(p), PREFIX_MAX)));
        if name_terms.is_empty() && email_term.is_none() {
            return None;
        }
        Some(SearchQuery { name_terms, email_term, words, email_prefix })
    }

    pub fn of_email(&self, email: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.0.bytes()).expect("HMAC takes any key length");
        mac.update(b"idbridge email\0");
        mac.update(normalize_email(email).as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

/// The local part of what was typed as the start of an e-mail (all of it when no `@` yet).
fn local_part_of_prefix(typed: &str) -> String {
    typed.split_once('@').map_or(typed, |(local, _)| local).to_string()
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

    #[test]
    fn a_search_meets_the_terms_of_the_names_and_emails_it_starts() {
        let index = BlindIndex(ServerSecret::from_bytes([3; 32]));
        let emails = vec!["Ada.Lovelace@Example.com".to_string()];
        let terms = index.terms_of(Some("Ada  Lovelace-Byron"), &emails);
        assert_eq!(terms.len() % 16, 0);
        let found = |q: &str| {
            let query = index.query(q).expect("a query");
            let by_terms = (!query.name_terms.is_empty()
                && query.name_terms.iter().all(|t| terms.contains(t)))
                || query.email_term.as_ref().is_some_and(|t| terms.contains(t));
            by_terms && query.matches(Some("Ada  Lovelace-Byron"), &emails)
        };
        for q in
            ["ada", "LOVE", "lovelace ada", "by", "ada.lov", "ada.lovelace@exa", "Ada.Lovelace@Example.com"]
        {
            assert!(found(q), "{q}");
        }
        for q in ["ad lx", "x lovelace", "lovelaces", "ada.lovelace@other", "bob"] {
            assert!(!found(q), "{q}");
        }
        assert_eq!(index.query("a"), None, "one character is too short");
        // Long words: found by their first 12 characters, confirmed in full.
        let long = "Wolfeschlegelsteinhausenbergerdorff";
        let long_terms = index.terms_of(Some(long), &[]);
        let query = index.query("wolfeschlegelstein").expect("a query");
        assert!(long_terms.contains(&query.name_terms[0]));
        assert!(query.matches(Some(long), &[]));
        assert!(!index.query("wolfeschlegelXX").expect("a query").matches(Some(long), &[]));
        // Two words with one indexed prefix make one term, which a user has once.
        let twice = index.query("wolfeschlegelstein wolfeschlegelsteinhausen").expect("a query");
        assert_eq!(twice.name_terms.len(), 1);
    }
}
