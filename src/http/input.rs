//! Checks on text that comes in and may reach the database: no NUL or other control
//! characters (PostgreSQL refuses NUL in text), and a length bound. Bad input is a 400 that
//! names the field, never a 500.

use super::errors::OAuthError;

/// `value` when it is acceptable text of at most `max_len` characters (as JSON Schema's
/// `maxLength` counts them); empty counts as absent.
pub fn text<'a>(
    field: &'static str,
    value: Option<&'a str>,
    max_len: usize,
) -> Result<Option<&'a str>, OAuthError> {
    match value {
        None | Some("") => Ok(None),
        Some(v) if v.len() > max_len.saturating_mul(4) || v.chars().count() > max_len => {
            Err(OAuthError::invalid_request(format!("{field} is longer than {max_len} characters")))
        }
        Some(v) if v.contains(char::is_control) => {
            Err(OAuthError::invalid_request(format!("{field} contains control characters")))
        }
        Some(v) => Ok(Some(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_control_characters_and_overlong_text_are_refused() {
        assert!(text("f", Some("a\0b"), 10).is_err());
        assert!(text("f", Some("a\u{7}"), 10).is_err());
        assert!(text("f", Some("abcdef"), 5).is_err());
        assert_eq!(text("f", Some("Alice's phone"), 100).unwrap(), Some("Alice's phone"));
        assert_eq!(text("f", Some("ééééé"), 5).unwrap(), Some("ééééé"), "characters, not bytes");
        assert!(text("f", Some("éééééé"), 5).is_err());
        assert_eq!(text("f", Some(""), 5).unwrap(), None);
    }
}
