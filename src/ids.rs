//! Typed ids, parsed once where they come in (a path, a form, the command line) and trusted
//! from there on. Users and devices are UUIDs idbridge made: anything else cannot exist, so a
//! malformed one is "not found" before any query. Their text is always the canonical form
//! (lower-case, hyphenated), which is how they are stored.

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// The id in `text` (any UUID spelling), or `None` when it is not a UUID.
            pub fn parse(text: &str) -> Option<Self> {
                uuid::Uuid::try_parse(text).ok().map(|id| Self(id.to_string()))
            }

            /// The id in `text` only when it is spelled as idbridge writes it (an API that
            /// always matched ids exactly keeps doing so).
            pub fn parse_exact(text: &str) -> Option<Self> {
                Self::parse(text).filter(|id| id.0 == text)
            }

            /// An id read from idbridge's own storage or tokens, already canonical.
            pub fn trusted(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

uuid_id!(
    /// A user's id: `sub` of their access tokens, `id` of `/v1/me`.
    UserId
);
uuid_id!(
    /// A device's id: `sid` of its access tokens, `device_id` of the token answer.
    DeviceId
);

/// What the command line says of an id that is not a UUID.
pub const NOT_A_UUID: &str = "a user id is a UUID such as 0192f5e4-7c1a-7d2e-9b1f-3a4c5d6e7f80";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_canonical_uuids() {
        let id = UserId::parse("0192F5E4-7C1A-7D2E-9B1F-3A4C5D6E7F80").expect("a UUID");
        assert_eq!(id.as_str(), "0192f5e4-7c1a-7d2e-9b1f-3a4c5d6e7f80");
        assert!(DeviceId::parse("not-a-uuid").is_none());
        assert!(DeviceId::parse("").is_none());
        assert!(UserId::parse_exact("0192F5E4-7C1A-7D2E-9B1F-3A4C5D6E7F80").is_none());
        assert!(UserId::parse_exact("0192f5e4-7c1a-7d2e-9b1f-3a4c5d6e7f80").is_some());
    }
}
