//! The tables, identical on both backends (see `migrations/sqlite` and `migrations/postgres`).

diesel::table! {
    users (id) {
        id -> Text,
        created_at -> BigInt,
        display_name -> Nullable<Text>,
        email -> Nullable<Text>,
        is_admin -> Bool,
        disabled_at -> Nullable<BigInt>,
        display_name_ct -> Nullable<Text>,
        email_ct -> Nullable<Text>,
        email_verified -> Nullable<Bool>,
        search_indexed -> Bool,
    }
}

diesel::table! {
    user_search_terms (term, user_id) {
        term -> Text,
        user_id -> Text,
    }
}

diesel::table! {
    identities (id) {
        id -> Text,
        user_id -> Text,
        provider -> Text,
        subject -> Text,
        email -> Nullable<Text>,
        linked_at -> BigInt,
        last_login_at -> BigInt,
        email_ct -> Nullable<Text>,
        email_index -> Nullable<Text>,
        sign_in_blocked_at -> Nullable<BigInt>,
        email_disabled_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    user_keys (user_id, version) {
        user_id -> Text,
        version -> Integer,
        wrapped -> Binary,
        wrapped_by -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    clients (client_id) {
        client_id -> Text,
        kind -> Text,
        secret_hash -> Nullable<Text>,
        redirect_uris -> Text,
        scopes -> Text,
        created_at -> BigInt,
        disabled_at -> Nullable<BigInt>,
        backchannel_logout_uri -> Nullable<Text>,
        dpop_required -> Bool,
    }
}

diesel::table! {
    revocations (device_id) {
        device_id -> Text,
        at -> BigInt,
    }
}

diesel::table! {
    admin_sessions (id_hash) {
        id_hash -> Text,
        user_id -> Text,
        device_id -> Text,
        created_at -> BigInt,
        last_seen_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    devices (id) {
        id -> Text,
        user_id -> Text,
        client_id -> Text,
        idp -> Text,
        scope -> Text,
        name -> Nullable<Text>,
        platform -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        ip -> Nullable<Text>,
        created_at -> BigInt,
        last_seen_at -> BigInt,
        session_expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        dpop_jkt -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Text,
        device_id -> Text,
        token_hash -> Text,
        parent_id -> Nullable<Text>,
        issued_at -> BigInt,
        expires_at -> BigInt,
        spent_at -> Nullable<BigInt>,
        successor_hash -> Nullable<Text>,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        alg -> Text,
        private_key_wrapped -> Binary,
        public_jwk -> Text,
        created_at -> BigInt,
        activates_at -> BigInt,
    }
}

diesel::table! {
    server_secrets (name) {
        name -> Text,
        wrapped -> Binary,
        created_at -> BigInt,
    }
}

diesel::table! {
    login_states (id) {
        id -> Text,
        browser_hash -> Text,
        client_id -> Text,
        redirect_uri -> Text,
        code_challenge -> Text,
        client_state -> Nullable<Text>,
        scope -> Text,
        nonce -> Nullable<Text>,
        provider -> Text,
        upstream_nonce -> Nullable<Text>,
        upstream_verifier -> Nullable<Text>,
        expires_at -> BigInt,
        dpop_jkt -> Nullable<Text>,
    }
}

diesel::table! {
    authorization_codes (code_hash) {
        code_hash -> Text,
        client_id -> Text,
        redirect_uri -> Text,
        code_challenge -> Text,
        scope -> Text,
        nonce -> Nullable<Text>,
        provider -> Text,
        subject -> Text,
        profile -> Nullable<Binary>,
        auth_time -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
        device_id -> Nullable<Text>,
        dpop_jkt -> Nullable<Text>,
    }
}

diesel::table! {
    used_assertions (assertion_hash) {
        assertion_hash -> Text,
        provider -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    nonces (nonce) {
        nonce -> Text,
        client_id -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Text,
        at -> BigInt,
        actor -> Text,
        action -> Text,
        user_id -> Nullable<Text>,
        device_id -> Nullable<Text>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        detail -> Nullable<Text>,
        seq -> Nullable<BigInt>,
        hash -> Nullable<Text>,
    }
}

diesel::table! {
    audit_chain (id) {
        id -> Integer,
        sealed_seq -> BigInt,
        sealed_hash -> Text,
        checkpoint_seq -> BigInt,
        checkpoint_hash -> Text,
    }
}

diesel::table! {
    server_state (name) {
        name -> Text,
        value -> BigInt,
    }
}

diesel::table! {
    provider_tokens (id) {
        id -> Text,
        user_id -> Nullable<Text>,
        provider -> Text,
        subject -> Text,
        client_id -> Text,
        wrapped -> Binary,
        created_at -> BigInt,
        revoke_next_at -> Nullable<BigInt>,
        revoke_attempts -> Integer,
    }
}

diesel::table! {
    deletion_requests (code) {
        code -> Text,
        request_hash -> Text,
        provider -> Text,
        outcome -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    logout_notices (device_id) {
        device_id -> Text,
        client_id -> Text,
        user_id -> Text,
        created_at -> BigInt,
        next_attempt_at -> BigInt,
        attempts -> Integer,
    }
}

diesel::joinable!(identities -> users (user_id));
diesel::joinable!(devices -> users (user_id));
diesel::joinable!(refresh_tokens -> devices (device_id));
diesel::joinable!(user_keys -> users (user_id));
diesel::joinable!(user_search_terms -> users (user_id));
diesel::joinable!(admin_sessions -> users (user_id));
diesel::joinable!(admin_sessions -> devices (device_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    user_search_terms,
    identities,
    clients,
    devices,
    refresh_tokens,
    signing_keys,
    server_secrets,
    login_states,
    authorization_codes,
    used_assertions,
    user_keys,
    nonces,
    audit_events,
    audit_chain,
    admin_sessions,
    revocations,
    server_state,
    provider_tokens,
    deletion_requests,
    logout_notices,
);
