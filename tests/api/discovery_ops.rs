//! Discovery, published keys, body limits and health endpoints.

use serde_json::json;

use crate::support::*;

async fn discovery_document_names_the_issuer_and_endpoints(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app.get("/.well-known/openid-configuration").await;

    a.assert_status(200);
    let d = &a.body;
    assert_eq!(d["issuer"], json!(PUBLIC_URL), "{}", a.text);
    for (field, path) in [
        ("jwks_uri", "/.well-known/jwks.json"),
        ("token_endpoint", "/oauth/token"),
        ("revocation_endpoint", "/oauth/revoke"),
        ("introspection_endpoint", "/oauth/introspect"),
    ] {
        assert_eq!(d[field], json!(format!("{PUBLIC_URL}{path}")), "{field}: {}", a.text);
    }
    for field in ["grant_types_supported", "token_endpoint_auth_methods_supported", "scopes_supported"] {
        assert!(d[field].is_array(), "{field} missing: {}", a.text);
    }
    let grants = d["grant_types_supported"].as_array().unwrap();
    for g in [TOKEN_EXCHANGE, "refresh_token"] {
        assert!(grants.contains(&json!(g)), "grant {g} not advertised: {}", a.text);
    }
    for g in ["password", "implicit"] {
        assert!(!grants.contains(&json!(g)), "grant {g} must not exist: {}", a.text);
    }
}
both_backends!(discovery_document_names_the_issuer_and_endpoints);

async fn jwks_is_cacheable_for_five_minutes(backend: Backend) {
    let app = spawn_app(backend).await;

    let a = app.get("/.well-known/jwks.json").await;

    a.assert_status(200);
    assert_eq!(a.header("cache-control").as_deref(), Some("public, max-age=300"));
    let keys = a.body["keys"].as_array().expect("keys array");
    assert!(!keys.is_empty(), "{}", a.text);
    for k in keys {
        assert!(k["kid"].is_string(), "key without kid: {k}");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(k.get(private).is_none(), "private member {private} published: {k}");
        }
    }
}
both_backends!(jwks_is_cacheable_for_five_minutes);

async fn token_request_over_64_kib_is_413(backend: Backend) {
    let app = spawn_app(backend).await;
    let huge = "a".repeat(70 * 1024);

    let a = app.exchange(&huge, &[]).await;

    a.assert_status(413);
    app.assert_nothing_written().await;
}
both_backends!(token_request_over_64_kib_is_413);

async fn healthz_and_readyz_are_200(backend: Backend) {
    let app = spawn_app(backend).await;

    let health = app.get("/healthz").await;
    let ready = app.get("/readyz").await;

    health.assert_status(200);
    ready.assert_status(200);
}
both_backends!(healthz_and_readyz_are_200);
