//! Operations: `/metrics`, the OpenAPI document, discovery advertising only what exists, and
//! the SQLite files' permissions.

use serde_json::Value;

use crate::support::*;

async fn metrics_count_requests_sign_ins_refreshes_and_more(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;
    app.refresh(&signed.refresh_token).await.assert_status(200);

    let a = app.get("/metrics").await;

    a.assert_status(200);
    assert!(
        a.header("content-type").unwrap_or_default().starts_with("text/plain"),
        "{:?}",
        a.header("content-type")
    );
    for needle in [
        "idbridge_http_requests_total{method=\"POST\",route=\"/oauth/token\",status=\"200\"} 2",
        "idbridge_http_request_duration_seconds_bucket{",
        "idbridge_sign_ins_total{outcome=\"ok\",provider=\"google\"} 1",
        "idbridge_refreshes_total{outcome=\"ok\"} 1",
        "idbridge_jwks_fetches_total{outcome=\"ok\",provider=\"google\"} 1",
        "idbridge_db_pool_connections{state=\"idle\"}",
        "idbridge_signing_key_age_seconds ",
        "# TYPE idbridge_refresh_token_reuse_total counter",
    ] {
        assert!(a.text.contains(needle), "missing `{needle}` in:\n{}", a.text);
    }
    assert!(!a.text.contains(&signed.refresh_token) && !a.text.contains(&signed.access_token));
}
both_backends!(metrics_count_requests_sign_ins_refreshes_and_more);

async fn made_up_methods_do_not_become_metric_series(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 0..5 {
        let method = reqwest::Method::from_bytes(format!("X{i}FLOOD").as_bytes()).unwrap();
        app.client.request(method, app.url("/healthz")).send().await.unwrap();
    }

    let metrics = app.get("/metrics").await;

    assert!(!metrics.text.contains("FLOOD"), "a made-up method became a label");
    assert!(metrics.text.contains("method=\"OTHER\""), "{}", metrics.text);
}
both_backends!(made_up_methods_do_not_become_metric_series);

async fn discovery_advertises_only_endpoints_that_answer(backend: Backend) {
    let app = spawn_app(backend).await;

    let d = app.get("/.well-known/openid-configuration").await;

    let grants = d.body["grant_types_supported"].as_array().unwrap();
    assert!(
        !grants.contains(&Value::from("password")) && !grants.contains(&Value::from("implicit")),
        "{}",
        d.text
    );
    for field in [
        "jwks_uri",
        "token_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "authorization_endpoint",
    ] {
        let url = d.body[field].as_str().unwrap_or_else(|| panic!("{field} missing: {}", d.text));
        let path = url.strip_prefix(PUBLIC_URL).unwrap();
        let method = if matches!(field, "jwks_uri" | "authorization_endpoint") {
            reqwest::Method::GET
        } else {
            reqwest::Method::POST
        };
        let r = app.client.request(method, app.url(path)).send().await.unwrap();
        assert_ne!(r.status().as_u16(), 404, "{field} {path} does not exist");
    }
}
both_backends!(discovery_advertises_only_endpoints_that_answer);

async fn the_openapi_document_is_served_and_lists_every_route(backend: Backend) {
    let app = spawn_dev_app(backend).await;

    let a = app.get("/openapi.json").await;

    a.assert_status(200);
    assert_eq!(
        a.body["openapi"].as_str().map(|v| &v[..2]),
        Some("3."),
        "{}",
        &a.text[..a.text.len().min(200)]
    );
    let paths = a.body["paths"].as_object().expect("paths");
    for (path, methods) in idbridge::http::ROUTES {
        let documented = paths.get(*path).unwrap_or_else(|| panic!("{path} is not in openapi.json"));
        for method in *methods {
            assert!(
                documented.get(method.to_lowercase()).is_some(),
                "{method} {path} is not in openapi.json"
            );
        }
    }
    for (path, item) in paths {
        let route = idbridge::http::ROUTES.iter().find(|(p, _)| p == path);
        let (_, methods) =
            route.unwrap_or_else(|| panic!("openapi.json documents {path}, which is not a route"));
        for method in item.as_object().unwrap().keys().filter(|k| *k != "parameters") {
            assert!(
                methods.contains(&method.to_uppercase().as_str()),
                "{method} {path} is documented, not routed"
            );
        }
        // Every documented operation answers (a dev app has every route).
        let concrete =
            path.replace("{id}", "00000000-0000-0000-0000-000000000000").replace("{provider}", "google");
        let method = reqwest::Method::from_bytes(methods[0].as_bytes()).unwrap();
        let r = app.client.request(method, app.url(&concrete)).send().await.unwrap();
        let answer = Answer::read(r).await;
        assert!(
            !(answer.status.as_u16() == 404 && answer.text.contains("no such endpoint"))
                && answer.status.as_u16() != 405,
            "{path}: {} {}",
            answer.status,
            answer.text
        );
    }
}
both_backends!(the_openapi_document_is_served_and_lists_every_route);

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_database_and_its_wal_are_private_to_the_service() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app(Backend::Sqlite).await;
    app.sign_in().await;
    let db = std::path::PathBuf::from(app.db.url.trim_start_matches("sqlite://"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);

    assert_eq!(mode(db.parent().unwrap()).unwrap(), 0o700, "the data folder");
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        assert_eq!(
            mode(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            0o600,
            "{}",
            path.display()
        );
    }
}
