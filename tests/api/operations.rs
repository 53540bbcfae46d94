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

/// Every operation declares the parameters of its path (OpenAPI 3.1 requires it), every request
/// body and every answer has a description, and every answer with a body says its media type.
async fn the_openapi_document_declares_every_path_parameter_and_answer(backend: Backend) {
    let app = spawn_dev_app(backend).await;

    let doc = app.get("/openapi.json").await;

    doc.assert_status(200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    for (path, item) in doc.body["paths"].as_object().expect("paths") {
        let declared_in_path: Vec<&str> =
            path.split('{').skip(1).filter_map(|rest| rest.split_once('}')).map(|(name, _)| name).collect();
        for (method, op) in item.as_object().unwrap() {
            let params: Vec<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path" && p["required"] == true)
                .filter_map(|p| p["name"].as_str())
                .collect();
            for name in &declared_in_path {
                assert!(params.contains(name), "{method} {path} does not declare `{name}`");
            }
            let responses =
                op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}: no responses"));
            assert!(!responses.is_empty(), "{method} {path}");
            for (status, answer) in responses {
                assert!(answer["description"].is_string(), "{method} {path} {status}");
            }
            assert!(op["operationId"].is_string(), "{method} {path}");
        }
    }
    // What idbridge answers is described, shapes and all.
    let token = &doc.body["components"]["schemas"]["TokenResponse"];
    for field in ["access_token", "token_type", "expires_in", "refresh_token", "scope", "device_id"] {
        assert!(token["required"].as_array().unwrap().contains(&Value::from(field)), "{field}: {token}");
    }
    let shapes = &doc.body["components"]["schemas"]["TokenRequest"]["oneOf"];
    assert_eq!(shapes.as_array().map(Vec::len), Some(3), "one shape per grant: {shapes}");
}
both_backends!(the_openapi_document_declares_every_path_parameter_and_answer);

/// The document describes this server: its URL, no dev routes outside dev mode, and the
/// provider names this one takes (a `[[providers.oidc]]` one too).
async fn the_openapi_document_describes_the_running_server(backend: Backend) {
    let entra = crate::support::fake_google::FakeGoogle::start().await;
    let entry = format!(
        "\n[[providers.oidc]]\nname = \"entra\"\nissuer = \"{}\"\nclient_ids = [\"x\"]\n",
        entra.issuer()
    );
    let app = spawn_app_with(backend, |c| c.extra = entry).await;

    let doc = app.get("/openapi.json").await;

    doc.assert_status(200);
    assert_eq!(doc.body["servers"][0]["url"], PUBLIC_URL);
    let paths = doc.body["paths"].as_object().unwrap();
    assert!(!paths.contains_key("/dev/id-token") && !paths.contains_key("/oauth/authorize/dev"));
    let unlink = &paths["/v1/me/identities/{provider}"]["delete"]["parameters"][0]["schema"]["enum"];
    assert!(unlink.as_array().unwrap().contains(&Value::from("entra")), "{unlink}");
    let token_url =
        &doc.body["components"]["securitySchemes"]["oauth2"]["flows"]["authorizationCode"]["tokenUrl"];
    assert_eq!(token_url.as_str(), Some(format!("{PUBLIC_URL}/oauth/token").as_str()));
}
both_backends!(the_openapi_document_describes_the_running_server);

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
