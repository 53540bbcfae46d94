//! Resource servers that check idbridge's access tokens offline against its JWKS: the actix
//! example (`examples/resource_server.rs`), and the Python (PyJWT) and Node (`jose`) snippets
//! the README shows (`examples/resource_server.py`, `.mjs`), run when their tools are present.

use actix_web::{App, HttpServer};

use crate::support::*;

#[allow(dead_code)]
#[path = "../../examples/resource_server.rs"]
mod example;

/// The audience and issuer of an app started by `app_at_its_own_address`.
fn issuer_of(app: &TestApp) -> example::Issuer {
    example::Issuer { issuer: app.address.clone(), audience: AUDIENCE.to_string() }
}

async fn start_example(app: &TestApp) -> String {
    let routes = example::configure(issuer_of(app));
    let server = HttpServer::new(move || App::new().configure(routes.clone()))
        .workers(1)
        .bind("127.0.0.1:0")
        .expect("bind the example");
    let address = format!("http://{}", server.addrs()[0]);
    tokio::spawn(server.run());
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actix_example_answers_401_403_and_200_as_rfc_6750_says() {
    let app = app_at_its_own_address(Backend::Sqlite, false).await;
    let api = start_example(&app).await;
    let tokens = app.sign_in().await;
    let get = |path: &str, token: Option<&str>| {
        let mut request = app.client.get(format!("{api}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let ok = get("/notes", Some(&tokens.access_token)).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["owner"], tokens.user_id.as_str());

    let scope = get("/admin/reports", Some(&tokens.access_token)).await.unwrap();
    assert_eq!(scope.status().as_u16(), 403);
    assert!(scope.headers()["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));

    let mut tampered = tokens.access_token.clone();
    tampered.pop();
    tampered.push(if tokens.access_token.ends_with('A') { 'B' } else { 'A' });
    for token in [None, Some(tampered.as_str()), Some("not-a-jwt")] {
        let refused = get("/notes", token).await.unwrap();
        assert_eq!(refused.status().as_u16(), 401, "{token:?}");
        assert!(refused.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    }
    // Another audience is refused.
    let elsewhere =
        example::Issuer { issuer: app.address.clone(), audience: "https://other.example/api".into() };
    let routes = example::configure(elsewhere);
    let other =
        HttpServer::new(move || App::new().configure(routes.clone())).workers(1).bind("127.0.0.1:0").unwrap();
    let other_address = format!("http://{}", other.addrs()[0]);
    tokio::spawn(other.run());
    let wrong_aud = app
        .client
        .get(format!("{other_address}/notes"))
        .bearer_auth(&tokens.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_aud.status().as_u16(), 401);
}

/// Runs `program args...` in `examples/` and returns its exit status and output.
async fn run(program: &str, args: Vec<String>) -> (i32, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(&program).args(&args).current_dir(dir).output().expect("run");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    })
    .await
    .unwrap()
}

fn tool_works(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program).args(args).output().map(|o| o.status.success()).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_node_snippets_verify_tokens_when_their_tools_are_present() {
    let app = app_at_its_own_address(Backend::Sqlite, false).await;
    let tokens = app.sign_in().await;
    let args = |scope: &str, token: &str| {
        vec![app.address.clone(), AUDIENCE.to_string(), scope.to_string(), token.to_string()]
    };
    let mut ran = Vec::new();
    if tool_works("python3", &["-c", "import jwt, cryptography"]) {
        let mut python = args("api", &tokens.access_token);
        python.insert(0, "resource_server.py".into());
        let (code, out) = run("python3", python.clone()).await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&tokens.user_id), "{out}");
        python[3] = "reports".into();
        assert_eq!(run("python3", python.clone()).await.0, 3, "missing scope");
        python[3] = "api".into();
        python[4] = tokens.refresh_token.clone();
        assert_eq!(run("python3", python).await.0, 1, "not a JWT");
        ran.push("python");
    }
    let node_modules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node_modules/jose");
    if node_modules.exists() && tool_works("node", &["--version"]) {
        let mut node = args("api", &tokens.access_token);
        node.insert(0, "resource_server.mjs".into());
        let (code, out) = run("node", node.clone()).await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&tokens.user_id), "{out}");
        node[3] = "reports".into();
        assert_eq!(run("node", node).await.0, 3, "missing scope");
        ran.push("node");
    }
    eprintln!("resource-server snippets run: {ran:?} (.ci/run installs PyJWT and jose when pip and npm are present)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_logout_token_snippet_verifies_a_real_logout_token_when_pyjwt_is_present() {
    if !tool_works("python3", &["-c", "import jwt, cryptography"]) {
        eprintln!("PyJWT is not installed: the logout-token snippet is not run (.ci/run installs it)");
        return;
    }
    let receiver = crate::support::logout_receiver::LogoutReceiver::start().await;
    let uri = receiver.uri.clone();
    let app = app_at_its_own_address_with(Backend::Sqlite, |c| c.app_logout_uri = Some(uri)).await;
    let tokens = app.sign_in().await;
    app.revoke(&tokens.refresh_token, Auth::Public("app")).await.assert_status(200);
    let logout_token = receiver.wait_for_accepted(1).await.remove(0);

    let args = |client: &str, token: &str| {
        vec!["backchannel_logout.py".to_string(), app.address.clone(), client.to_string(), token.to_string()]
    };
    let (code, out) = run("python3", args("app", &logout_token)).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&tokens.device_id) && out.contains(&tokens.user_id), "{out}");
    assert_eq!(run("python3", args("another-app", &logout_token)).await.0, 1, "another client's token");
    assert_eq!(
        run("python3", args("app", &tokens.access_token)).await.0,
        1,
        "an access token is no logout token"
    );
}

/// A DPoP-bound sign-in against an app at its own address (its issuer is its address).
async fn bound_tokens(app: &TestApp) -> (Tokens, crate::support::dpop::DpopKey) {
    let key = crate::support::dpop::DpopKey::es256();
    let id_token = app.google.id_token_for(&crate::support::fake_google::random_sub());
    let form =
        [("grant_type", TOKEN_EXCHANGE), ("subject_token", &id_token), ("subject_token_type", ID_TOKEN_TYPE)];
    let proof = key.proof("POST", &app.url("/oauth/token"), None);
    let a = app.post_form_with("/oauth/token", Auth::Public("app"), &form, &[("DPoP", &proof)]).await;
    (Tokens::from_answer(&a, ""), key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actix_example_checks_dpop_bound_tokens_and_their_proofs() {
    let app = app_at_its_own_address(Backend::Sqlite, false).await;
    let api = start_example(&app).await;
    let (tokens, key) = bound_tokens(&app).await;
    let at = tokens.access_token.as_str();
    let notes = format!("{api}/notes");
    let get = |scheme: &str, proof: Option<String>| {
        let mut request = app.client.get(&notes).header("Authorization", format!("{scheme} {at}"));
        if let Some(proof) = proof {
            request = request.header("DPoP", proof);
        }
        request.send()
    };

    let proof = key.proof("GET", &notes, Some(at));
    let ok = get("DPoP", Some(proof.clone())).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let thief = crate::support::dpop::DpopKey::es256();
    let refusals = [
        ("a replayed proof", get("DPoP", Some(proof)).await.unwrap()),
        ("Bearer downgrade", get("Bearer", None).await.unwrap()),
        ("no proof", get("DPoP", None).await.unwrap()),
        ("another key", get("DPoP", Some(thief.proof("GET", &notes, Some(at)))).await.unwrap()),
        (
            "another URL",
            get("DPoP", Some(key.proof("GET", &format!("{api}/admin/reports"), Some(at)))).await.unwrap(),
        ),
    ];
    for (what, refused) in refusals {
        assert_eq!(refused.status().as_u16(), 401, "{what}");
        let challenge = refused.headers()["www-authenticate"].to_str().unwrap().to_string();
        assert!(challenge.starts_with("DPoP"), "{what}: {challenge}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_node_snippets_check_dpop_proofs_when_their_tools_are_present() {
    let app = app_at_its_own_address(Backend::Sqlite, false).await;
    let (tokens, key) = bound_tokens(&app).await;
    let at = tokens.access_token.clone();
    let url = "https://api.example/notes";
    let args = |proof: Option<String>| {
        let mut a = vec![app.address.clone(), AUDIENCE.to_string(), "api".to_string(), at.clone()];
        if let Some(proof) = proof {
            a.extend([proof, "GET".to_string(), url.to_string()]);
        }
        a
    };
    let thief = crate::support::dpop::DpopKey::es256();
    let mut ran = Vec::new();
    let node_ready =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node_modules/jose").exists()
            && tool_works("node", &["--version"]);
    let tools = [
        ("python3", "resource_server.py", tool_works("python3", &["-c", "import jwt, cryptography"])),
        ("node", "resource_server.mjs", node_ready),
    ];
    for (program, script, present) in tools {
        if !present {
            continue;
        }
        let with = |proof: Option<String>| {
            let mut a = args(proof);
            a.insert(0, script.to_string());
            a
        };
        let (code, out) = run(program, with(Some(key.proof("GET", url, Some(&at))))).await;
        assert_eq!(code, 0, "{program}: {out}");
        assert_eq!(run(program, with(None)).await.0, 1, "{program}: a bound token without its proof");
        let by_thief = thief.proof("GET", url, Some(&at));
        assert_eq!(run(program, with(Some(by_thief))).await.0, 1, "{program}: another key");
        let elsewhere = key.proof("POST", url, Some(&at));
        assert_eq!(run(program, with(Some(elsewhere))).await.0, 1, "{program}: another method");
        let stale = key.proof_with("GET", url, Some(&at), |_, c| {
            c.insert("iat".into(), serde_json::json!(crate::support::fake_google::now() - 600));
        });
        assert_eq!(run(program, with(Some(stale))).await.0, 1, "{program}: a stale proof");
        ran.push(program);
    }
    eprintln!("DPoP snippets run: {ran:?}");
}
