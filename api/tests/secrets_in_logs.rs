//! API keys and the admin token never reach the logs.
//!
//! Runs the real `api` binary with JSON logs at `debug` (our spans plus the
//! database driver's statements), drives it through every path a secret takes
//! — bootstrap with the admin token, a new organization's key, a key minted
//! by `createApiKey`, a wrong key, key revocation, ordinary calls — then greps
//! everything it printed for each secret and for its SHA-256 (what is stored).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// One HTTP/1.1 request; the whole response, or `None` when nothing answers.
async fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let auth = bearer
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

async fn http(addr: &str, method: &str, path: &str, bearer: Option<&str>, body: &str) -> String {
    try_http(addr, method, path, bearer, body)
        .await
        .unwrap_or_else(|| panic!("{method} {path}: no answer"))
}

async fn graphql(addr: &str, bearer: Option<&str>, query: &str, variables: Value) -> Value {
    let body = json!({"query": query, "variables": variables}).to_string();
    let response = http(addr, "POST", "/graphql", bearer, &body).await;
    let payload = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    // The body may be chunked; the JSON object sits between the first `{` and the last `}`.
    let start = payload.find('{').unwrap_or(0);
    let end = payload.rfind('}').map_or(payload.len(), |i| i + 1);
    serde_json::from_str(&payload[start..end]).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[tokio::test]
async fn no_secret_is_ever_logged() {
    let dir = std::env::temp_dir().join(format!("valora-secrets-{}", &random_hex()[..12]));
    std::fs::create_dir_all(&dir).expect("test directory");
    let addr = format!("127.0.0.1:{}", free_port());
    let admin_token = random_hex();
    let log_path = dir.join("api.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_api"))
        .env("VALORA_DATA_DIR", &dir)
        .env("BIND", &addr)
        .env("VALORA_ADMIN_TOKEN", &admin_token)
        .env("VALORA_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .env("VALORA_WORKER_BIND", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::from(log.try_clone().expect("log handle")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("api binary starts");

    let started = Instant::now();
    while !try_http(&addr, "GET", "/healthz", None, "")
        .await
        .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "api did not come up: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let created = graphql(
        &addr,
        Some(&admin_token),
        "mutation($input: CreateOrganizationInput!) { createOrganization(input: $input) { organization { id } apiKey } }",
        json!({"input": {"name": "Acme", "currency": "USD"}}),
    )
    .await;
    let org_key = created["data"]["createOrganization"]["apiKey"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();

    let minted = graphql(
        &addr,
        Some(&org_key),
        "mutation { createApiKey(role: INGEST) { id apiKey } }",
        json!({}),
    )
    .await;
    let ingest_key = minted["data"]["createApiKey"]["apiKey"]
        .as_str()
        .unwrap_or_else(|| panic!("{minted}"))
        .to_string();
    let ingest_key_id = minted["data"]["createApiKey"]["id"].clone();

    let customer = graphql(
        &addr,
        Some(&org_key),
        "mutation { createCustomer(input: {externalId: \"c-1\", name: \"Ann\"}) { id } }",
        json!({}),
    )
    .await;
    assert!(customer["errors"].is_null(), "{customer}");

    let wrong_key = random_hex();
    let refused = graphql(
        &addr,
        Some(&wrong_key),
        "{ customers { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{refused}"
    );
    // The admin token is for bootstrap only; using it elsewhere is refused, not logged.
    let refused = graphql(
        &addr,
        Some(&admin_token),
        "{ customers { totalCount } }",
        json!({}),
    )
    .await;
    assert!(!refused["errors"].is_null(), "{refused}");

    let revoked = graphql(
        &addr,
        Some(&org_key),
        "mutation($id: ID!) { revokeApiKey(id: $id) }",
        json!({"id": ingest_key_id}),
    )
    .await;
    assert_eq!(revoked["data"]["revokeApiKey"], true, "{revoked}");
    let refused = graphql(
        &addr,
        Some(&ingest_key),
        "{ customers { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{refused}"
    );
    let _ = http(&addr, "GET", "/ops", Some(&org_key), "").await;

    // SIGTERM: let it flush and exit.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let logs = std::fs::read_to_string(&log_path).expect("logs");

    // The logs were captured at all, with the request spans in them.
    assert!(
        logs.lines().count() > 20,
        "too few log lines to prove anything:\n{logs}"
    );
    assert!(
        logs.contains("\"operation\":\"createApiKey\""),
        "the graphql span is missing from the logs"
    );

    let secrets = [
        ("admin token", admin_token.as_str()),
        ("organization key", org_key.as_str()),
        ("minted key", ingest_key.as_str()),
        ("wrong key", wrong_key.as_str()),
    ];
    for (what, secret) in secrets {
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        for (form, needle) in [("secret", secret), ("SHA-256", hash.as_str())] {
            let hit = logs.lines().find(|line| line.contains(needle));
            assert!(
                hit.is_none(),
                "the {what}'s {form} is in the logs: {}",
                hit.unwrap_or_default()
            );
        }
    }
    println!(
        "secrets: {} log lines ({} bytes) grepped for 4 secrets and their hashes, none found",
        logs.lines().count(),
        logs.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
