//! Resource limits, end to end over HTTP on every backend: requests too big,
//! too deep, too wide or too complex, and usage batches over 10,000 events
//! are refused with a clear status or error code, write nothing, and leave
//! the server answering; and memory stays bounded under them.
//!
//! - a body over `api::http::MAX_BODY_BYTES` gets HTTP 413 (with or without
//!   a `Content-Length`), one just under it is served;
//! - depth over `MAX_DEPTH`, parser recursion over `MAX_RECURSIVE_DEPTH`,
//!   complexity over `MAX_COMPLEXITY` (many aliases, wide pages) and aliased
//!   `ingestUsage` fields that would multiply the batch limit are
//!   BAD_USER_INPUT; a JSON array of operations (batching) is a 400;
//! - 10,001 events are refused whole, 10,000 are accepted;
//! - the API (a child process running `api::server::start`) keeps its peak
//!   RSS (VmHWM) within a bound while 20 oversized and 20 maximum-size
//!   requests hit it, and a worker process (running the worker pool) stays
//!   within the same bound while it bills a test clock month of a few
//!   hundred subscriptions. The figures are printed.
//!
//! Memory is measured in child processes (this test binary started again
//! with `VALORA_RESOURCE_CHILD` set, running only [`child_process`]), so the
//! other tests of this file, running in parallel threads, cannot skew it.

mod api_support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::graphql::{MAX_COMPLEXITY, MAX_DEPTH};
use api::http::MAX_BODY_BYTES;
use api_support::{Api, count, snapshot};
use serde_json::{Value, json};
use tests::TestEnv;
use worker::QueueBackend;

const NOW: &str = "2026-01-16T00:00:00Z";
/// How much the API's peak RSS may grow under the abuse below: 48 request
/// bodies' worth (384 MiB at 8 MiB). Oversized bodies must cost nothing
/// (they are refused before they are read); each of the 4 maximum-size
/// requests in flight at once holds a few copies of its body (the bytes, the
/// parsed JSON, the GraphQL value, the SQL parameter), and pooled database
/// connections keep buffers as large as the largest statement they sent.
/// Measured with the body limit enforced: about 165 MiB on SQLite and
/// 265 MiB on PostgreSQL, flat after the first rounds.
const API_MEMORY_BOUND_MIB: u64 = 48 * MAX_BODY_BYTES as u64 / (1024 * 1024);
/// How much a worker's peak RSS may grow while it bills a month.
const WORKER_MEMORY_BOUND_MIB: u64 = 256;
const CHILD_ENV: &str = "VALORA_RESOURCE_CHILD";

// ---------------------------------------------------------------------------
// HTTP.

#[derive(Clone)]
struct Http {
    url: String,
    http: reqwest::Client,
    key: Option<String>,
}

impl Http {
    fn new(addr: std::net::SocketAddr) -> Http {
        Http {
            url: format!("http://{addr}/graphql"),
            http: reqwest::Client::new(),
            key: None,
        }
    }

    fn with_key(&self, key: &str) -> Http {
        Http {
            key: Some(key.to_string()),
            ..self.clone()
        }
    }

    /// POSTs `body` as JSON; the status and the body text (`None` when the
    /// connection failed before an answer came back).
    async fn raw(&self, body: impl Into<reqwest::Body>) -> Option<(u16, String)> {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    }

    async fn gql(&self, query: &str, variables: Value) -> (u16, Value) {
        let body = json!({"query": query, "variables": variables}).to_string();
        let (status, text) = self.raw(body).await.expect("the server answers");
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("HTTP {status}: not JSON: {}", brief(&text)));
        (status, value)
    }

    /// The server still answers a small query correctly.
    async fn alive(&self, after: &str) {
        let (status, answer) = self.gql("{ apiVersion }", json!({})).await;
        assert_eq!(status, 200, "after {after}: {answer}");
        assert!(
            answer["data"]["apiVersion"].is_string(),
            "after {after}: {answer}"
        );
    }
}

fn brief(text: &str) -> String {
    match text.char_indices().nth(400) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text.to_string(),
    }
}

fn code(answer: &Value) -> String {
    answer["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}

fn message(answer: &Value) -> String {
    answer["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A JSON body of exactly `size` bytes: `{ apiVersion }` padded with a
/// GraphQL comment, so the server has to parse all of it.
fn padded_body(size: usize) -> String {
    let head = r#"{"query":"{ apiVersion } #"#;
    let tail = r#""}"#;
    let pad = size - head.len() - tail.len();
    let mut body = String::with_capacity(size);
    body.push_str(head);
    body.extend(std::iter::repeat_n('x', pad));
    body.push_str(tail);
    assert_eq!(body.len(), size);
    body
}

/// A body of exactly `size` bytes whose bulk is a variable (cheap to parse,
/// unlike a document of that size): `customer(id: $pad)` with an id of
/// several MiB.
fn padded_variable_body(size: usize) -> String {
    let head = r#"{"query":"query($pad: ID!) { customer(id: $pad) { id } }","variables":{"pad":""#;
    let tail = r#""}}"#;
    let mut body = String::with_capacity(size);
    body.push_str(head);
    body.extend(std::iter::repeat_n('x', size - head.len() - tail.len()));
    body.push_str(tail);
    body
}

/// POSTs `body` over a raw connection, with a Content-Length or chunked,
/// reading the answer while still writing: a server that refuses early
/// answers before the body is sent and may hang up on the rest, which an
/// ordinary client reports as a failed write instead of the answer.
/// Returns the status code, or `None` when no answer came back.
async fn post_raw(addr: std::net::SocketAddr, body: Arc<String>, chunked: bool) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut reader, mut writer) = stream.into_split();
    let read = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // The status line is all that is needed.
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&answer).to_string();
        text.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
    });
    let length = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{length}\r\n\
         Connection: close\r\n\r\n"
    );
    let write = async {
        writer.write_all(head.as_bytes()).await?;
        for piece in body.as_bytes().chunks(64 * 1024) {
            if chunked {
                writer
                    .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                writer.write_all(piece).await?;
                writer.write_all(b"\r\n").await?;
            } else {
                writer.write_all(piece).await?;
            }
        }
        if chunked {
            writer.write_all(b"0\r\n\r\n").await?;
        }
        writer.flush().await
    };
    // A failed write (the server hung up) is fine: the answer is what counts.
    let _ = write.await;
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .ok()?
        .ok()?
}

// ---------------------------------------------------------------------------
// Fixtures.

/// A server (no workers) and an ADMIN client of a fresh organization.
async fn start(env: &mut TestEnv) -> (Api, Http, Http) {
    env.config.embedded_workers = false;
    let api = Api::start(env).await;
    let anon = Http::new(api.server.addr);
    let (status, answer) = anon
        .with_key(&api.admin_token)
        .gql(
            "mutation($input: CreateOrganizationInput!) { createOrganization(input: $input) { apiKey } }",
            json!({"input": {"name": "Limits", "currency": "USD", "testClockStart": NOW}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let key = answer["data"]["createOrganization"]["apiKey"]
        .as_str()
        .expect("key")
        .to_string();
    let admin = anon.with_key(&key);
    (api, anon, admin)
}

fn events(n: usize, prefix: &str) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                json!({"idempotencyKey": format!("{prefix}-{i}"), "customerExternalId": "cust",
                       "meterCode": "calls", "value": "1", "timestamp": "2026-01-15T00:00:00Z"})
            })
            .collect(),
    )
}

async fn usage_fixture(admin: &Http) {
    for (query, input) in [
        (
            "mutation($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }",
            json!({"externalId": "cust", "name": "Cust"}),
        ),
        (
            "mutation($input: CreateMeterInput!) { createMeter(input: $input) { id } }",
            json!({"code": "calls", "name": "Calls", "aggregation": "SUM"}),
        ),
    ] {
        let (status, answer) = admin.gql(query, json!({ "input": input })).await;
        assert!(status == 200 && answer["errors"].is_null(), "{answer}");
    }
}

// ---------------------------------------------------------------------------
// Child processes: the API server or a worker, in this very test binary.

/// Not a test on its own: the body of the child processes the memory tests
/// start (`VALORA_RESOURCE_CHILD=api|worker`). Without the variable it
/// returns at once.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let config = worker::Config::from_env().expect("child configuration");
        match role.as_str() {
            "api" => {
                let server = api::server::start(config).await.expect("api starts");
                ready(&server.addr.to_string());
                std::future::pending::<()>().await;
            }
            "worker" => {
                let db = worker::database::connect(&config).await.expect("database");
                worker::database::migrate(&db).await.expect("migrations");
                let _pool = worker::pool::start_with(
                    &config,
                    db,
                    Arc::new(workflows::clock::SystemClock),
                    worker::pool::PoolOptions::default(),
                )
                .await
                .expect("worker pool starts");
                ready("worker");
                std::future::pending::<()>().await;
            }
            other => panic!("unknown child role {other}"),
        }
    });
}

/// Tells the parent the child is up: `READY <what>` in a file the parent
/// polls (the test harness captures a child test's stdout).
fn ready(what: &str) {
    let path = std::env::var("VALORA_RESOURCE_READY").expect("ready file");
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, format!("READY {what}\n")).expect("ready file");
    std::fs::rename(&tmp, &path).expect("ready file");
}

/// A child process, killed (by its pid) when dropped.
struct ChildProcess {
    child: Child,
    addr: Option<std::net::SocketAddr>,
}

impl ChildProcess {
    fn start(env: &TestEnv, role: &str) -> ChildProcess {
        let config = &env.config;
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args([
                "child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, role)
            .env("DATABASE_URL", &config.database_url)
            .env("VALORA_DATA_DIR", &config.data_dir)
            .env("VALORA_QUEUE_PREFIX", &config.queue_prefix)
            .env(
                "VALORA_ADMIN_TOKEN",
                config.admin_token.as_deref().unwrap_or(""),
            )
            .env("BIND", "127.0.0.1:0")
            .env("VALORA_EMBEDDED_WORKERS", "false")
            .env("VALORA_WORKER_BIND", "127.0.0.1:0")
            .env("VALORA_SWEEP_INTERVAL_MS", "200")
            .env("VALORA_QUEUE_POLL_MS", "50")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        match &config.queue {
            QueueBackend::Redis { url } => command.env("REDIS_URL", url),
            QueueBackend::Embedded => command.env_remove("REDIS_URL"),
        };
        std::fs::create_dir_all(&config.data_dir).expect("data dir");
        let ready_file = config
            .data_dir
            .join(format!("{role}-{}.ready", tests::unique_suffix()));
        command.env("VALORA_RESOURCE_READY", &ready_file);
        let mut child = command.spawn().expect("the child starts");
        let deadline = Instant::now() + Duration::from_secs(120);
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(&ready_file) {
                break text
                    .trim()
                    .strip_prefix("READY ")
                    .and_then(|a| a.parse().ok());
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the {role} child exited before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "the {role} child did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        ChildProcess { child, addr }
    }

    fn memory(&self) -> Memory {
        Memory::of(self.child.id())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` and `VmHWM` (peak RSS) of a process, in KiB.
#[derive(Clone, Copy, Debug)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

impl Memory {
    fn of(pid: u32) -> Memory {
        let mut text = String::new();
        std::fs::File::open(format!("/proc/{pid}/status"))
            .and_then(|mut f| f.read_to_string(&mut text))
            .expect("/proc/<pid>/status (Linux)");
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
        };
        Memory {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
        }
    }

    fn mib(kib: u64) -> f64 {
        kib as f64 / 1024.0
    }
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_the_server_lives_on() {
    for mut env in TestEnv::all().await {
        let backend = env.backend;
        let (api, anon, admin) = start(&mut env).await;
        let before = snapshot(api.db()).await;

        // Just under the limit: served.
        let (status, text) = admin
            .raw(padded_variable_body(MAX_BODY_BYTES - 16))
            .await
            .expect("an answer");
        assert_eq!(status, 200, "{backend:?}: {}", brief(&text));
        assert_eq!(text, r#"{"data":{"customer":null}}"#, "{backend:?}");

        // Over it, by one byte and by a lot, with a Content-Length and
        // without one (chunked, where only counting can tell): 413.
        let addr = api.server.addr;
        for (size, chunked) in [
            (MAX_BODY_BYTES + 1, false),
            (4 * MAX_BODY_BYTES, false),
            (MAX_BODY_BYTES + 1, true),
            (2 * MAX_BODY_BYTES, true),
        ] {
            let status = post_raw(addr, Arc::new(padded_body(size)), chunked).await;
            assert_eq!(
                status,
                Some(413),
                "{backend:?}: a {size}-byte body{} must get 413 Payload Too Large",
                if chunked { " (chunked)" } else { "" }
            );
            admin.alive(&format!("a {size}-byte body")).await;
        }
        anon.alive("oversized bodies").await;
        assert_eq!(snapshot(api.db()).await, before, "{backend:?}");
        println!(
            "resource limits [{backend:?}]: bodies of {} and {} bytes (with Content-Length) and {} and {} bytes (chunked) answered 413; {} bytes served",
            MAX_BODY_BYTES + 1,
            4 * MAX_BODY_BYTES,
            MAX_BODY_BYTES + 1,
            2 * MAX_BODY_BYTES,
            MAX_BODY_BYTES - 16
        );
        api.stop().await;
        env.cleanup().await;
    }
}

/// `{ customers { nodes { subscriptions { customer { subscriptions … { id } } } } } }`,
/// `depth` fields deep.
fn nested(depth: usize) -> String {
    assert!(depth >= 3);
    let mut fields = vec!["customers", "nodes"];
    while fields.len() < depth - 1 {
        fields.push(if fields.len() % 2 == 0 {
            "subscriptions"
        } else {
            "customer"
        });
    }
    let mut query = String::from("{ ");
    for f in &fields {
        query.push_str(f);
        query.push_str(" { ");
    }
    query.push_str("id");
    for _ in &fields {
        query.push_str(" }");
    }
    query.push_str(" }");
    query
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_queries_are_refused() {
    for mut env in TestEnv::all().await {
        let backend = env.backend;
        let (api, _, admin) = start(&mut env).await;

        let (status, answer) = admin.gql(&nested(MAX_DEPTH), json!({})).await;
        assert_eq!(status, 200);
        assert!(
            answer["errors"].is_null(),
            "depth {MAX_DEPTH} is allowed: {answer}"
        );

        let (status, answer) = admin.gql(&nested(MAX_DEPTH + 1), json!({})).await;
        assert_ne!(status, 500);
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
        assert!(
            message(&answer).contains("deep"),
            "a clear message: {answer}"
        );

        // Far deeper than any parser should recurse: refused, never a crash.
        let mut cases: Vec<(&str, String)> = Vec::new();
        let n = 100_000;
        cases.push((
            "100,000 nested selection sets",
            format!("{{ {}{} }}", "a { ".repeat(n), "} ".repeat(n)),
        ));
        cases.push((
            "100,000 nested list literals",
            format!(
                "{{ customer(id: {}\"x\"{}) {{ id }} }}",
                "[".repeat(n),
                "]".repeat(n)
            ),
        ));
        cases.push((
            "100,000 nested object literals",
            format!(
                "mutation {{ createCustomer(input: {}{}) {{ id }} }}",
                "{a: ".repeat(n),
                "1}".repeat(n)
            ),
        ));
        cases.push((
            "deep introspection",
            format!(
                "{{ __schema {{ types {{ {}name{} }} }} }}",
                "ofType { ".repeat(40),
                " }".repeat(40)
            ),
        ));
        for (what, query) in cases {
            let (status, answer) = admin.gql(&query, json!({})).await;
            assert_ne!(status, 500, "{what}");
            assert_eq!(
                code(&answer),
                "BAD_USER_INPUT",
                "{what}: {}",
                brief(&answer.to_string())
            );
            admin.alive(what).await;
        }
        // Deeply nested JSON in the variables: the request itself is refused.
        let deep_json = format!(
            "{{\"query\":\"query($p: JSON) {{ apiVersion }}\",\"variables\":{{\"p\":{}1{}}}}}",
            "[".repeat(n),
            "]".repeat(n)
        );
        let (status, text) = admin.raw(deep_json).await.expect("an answer");
        assert!(
            status == 400 || (status == 200 && text.contains("BAD_USER_INPUT")),
            "deeply nested JSON: HTTP {status}: {}",
            brief(&text)
        );
        admin.alive("deeply nested JSON").await;
        println!(
            "resource limits [{backend:?}]: depth {MAX_DEPTH} served, {} refused; 100,000-deep documents and JSON refused",
            MAX_DEPTH + 1
        );
        api.stop().await;
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_and_complex_queries_are_refused() {
    for mut env in TestEnv::all().await {
        let backend = env.backend;
        let (api, _, admin) = start(&mut env).await;
        usage_fixture(&admin).await;
        let before = snapshot(api.db()).await;

        let aliases = |n: usize| {
            let fields: String = (0..n).map(|i| format!("a{i}: apiVersion ")).collect();
            format!("{{ {fields}}}")
        };
        let (status, answer) = admin.gql(&aliases(MAX_COMPLEXITY), json!({})).await;
        assert_eq!(status, 200);
        assert!(
            answer["errors"].is_null(),
            "{MAX_COMPLEXITY} aliases are allowed: {}",
            brief(&answer.to_string())
        );
        let (status, answer) = admin.gql(&aliases(MAX_COMPLEXITY + 1), json!({})).await;
        assert_ne!(status, 500);
        assert_eq!(
            code(&answer),
            "BAD_USER_INPUT",
            "{}",
            brief(&answer.to_string())
        );
        assert!(
            message(&answer).contains("complex"),
            "a clear message: {answer}"
        );

        // A page costs its selection once per node it may return.
        let wide_nodes: String = (0..60).map(|i| format!("f{i}: id ")).collect();
        let page =
            |first: usize| format!("{{ invoices(first: {first}) {{ nodes {{ {wide_nodes} }} }} }}");
        let (_, answer) = admin.gql(&page(10), json!({})).await;
        assert!(answer["errors"].is_null(), "{answer}");
        let (status, answer) = admin.gql(&page(100), json!({})).await;
        assert_ne!(status, 500);
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");

        // Aliases cannot multiply the batch limit: two full batches in one
        // request are refused whole.
        let twice = "mutation($e: [UsageEventInput!]!) {
            a: ingestUsage(events: $e) { accepted } b: ingestUsage(events: $e) { accepted } }";
        let (status, answer) = admin
            .gql(twice, json!({"e": events(10_000, "alias")}))
            .await;
        assert_ne!(status, 500);
        assert_eq!(
            code(&answer),
            "BAD_USER_INPUT",
            "{}",
            brief(&answer.to_string())
        );
        assert!(answer["data"].is_null(), "{}", brief(&answer.to_string()));
        // 2,000 one-event batches in one request: refused as well.
        let many: String = (0..2_000)
            .map(|i| format!("a{i}: ingestUsage(events: $e) {{ accepted duplicates rejected }} "))
            .collect();
        let (status, answer) = admin
            .gql(
                &format!("mutation($e: [UsageEventInput!]!) {{ {many}}}"),
                json!({"e": events(1, "many")}),
            )
            .await;
        assert_ne!(status, 500);
        assert_eq!(
            code(&answer),
            "BAD_USER_INPUT",
            "{}",
            brief(&answer.to_string())
        );
        assert_eq!(
            snapshot(api.db()).await,
            before,
            "{backend:?}: refused requests wrote nothing"
        );

        // Batching several operations in one JSON array is not supported.
        let (status, text) = admin
            .raw(
                json!([{"query": "{ apiVersion }"}, {"query": "mutation { createCustomer(input: {externalId: \"b\", name: \"B\"}) { id } }"}])
                    .to_string(),
            )
            .await
            .expect("an answer");
        assert!(
            status == 400 || (status == 200 && text.contains("BAD_USER_INPUT")),
            "a batch of operations: HTTP {status}: {}",
            brief(&text)
        );
        assert_eq!(snapshot(api.db()).await, before, "{backend:?}: nothing ran");
        admin.alive("a batch of operations").await;
        println!(
            "resource limits [{backend:?}]: {MAX_COMPLEXITY} aliases served, {} refused; 100-node wide page refused; aliased 2×10,000 and 2,000×1 ingestUsage refused; operation batches refused (HTTP {status})",
            MAX_COMPLEXITY + 1
        );
        api.stop().await;
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_pass_ten_thousand_and_one_do_not() {
    for mut env in TestEnv::all().await {
        let backend = env.backend;
        let (api, _, admin) = start(&mut env).await;
        usage_fixture(&admin).await;
        let ingest =
            "mutation($e: [UsageEventInput!]!) { ingestUsage(events: $e) { accepted rejected } }";

        let before = snapshot(api.db()).await;
        let (status, answer) = admin
            .gql(ingest, json!({"e": events(10_001, "over")}))
            .await;
        assert_ne!(status, 500);
        assert_eq!(
            code(&answer),
            "BAD_USER_INPUT",
            "{}",
            brief(&answer.to_string())
        );
        assert!(
            message(&answer).contains("10000"),
            "a clear message: {}",
            message(&answer)
        );
        assert_eq!(
            snapshot(api.db()).await,
            before,
            "{backend:?}: nothing written"
        );

        let started = Instant::now();
        let (status, answer) = admin.gql(ingest, json!({"e": events(10_000, "ok")})).await;
        assert_eq!(status, 200);
        assert_eq!(
            answer["data"]["ingestUsage"]["accepted"],
            10_000,
            "{}",
            brief(&answer.to_string())
        );
        assert_eq!(count(api.db(), "usage_events").await, 10_000);
        println!(
            "resource limits [{backend:?}]: 10,001 events refused, 10,000 accepted in {:.2}s",
            started.elapsed().as_secs_f64()
        );
        api.stop().await;
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_memory_stays_bounded_under_oversized_and_maximum_requests() {
    const ROUNDS: usize = 5;
    const CONCURRENT: usize = 4;
    for env in TestEnv::all().await {
        let backend = env.backend;
        // Migrations and the organization through the child itself.
        let child = ChildProcess::start(&env, "api");
        let addr = child.addr.expect("the api child's address");
        let anon = Http::new(addr);
        let token = env.config.admin_token.clone().expect("token");
        let (_, answer) = anon
            .with_key(&token)
            .gql(
                "mutation { createOrganization(input: {name: \"Mem\", currency: \"USD\", testClockStart: \"2026-01-16T00:00:00Z\"}) { apiKey } }",
                json!({}),
            )
            .await;
        let admin = anon.with_key(
            answer["data"]["createOrganization"]["apiKey"]
                .as_str()
                .expect("key"),
        );
        usage_fixture(&admin).await;
        let oversized = Arc::new(padded_body(4 * MAX_BODY_BYTES));
        let maximum = padded_variable_body(MAX_BODY_BYTES - 1024);

        // Without a body limit, memory grows with whatever clients send:
        // that has to hold before measuring anything else.
        let probe = post_raw(addr, oversized.clone(), false).await;
        assert_eq!(
            probe,
            Some(413),
            "{backend:?}: a {}-byte body was not refused with 413, so the API reads any body \
             whole and its memory is bounded by nothing",
            oversized.len()
        );
        // Warm up (connection pools, allocator arenas, the first big parse).
        let warm = admin.raw(maximum.clone()).await.map(|a| a.0);
        assert_eq!(
            warm,
            Some(200),
            "{backend:?}: a maximum-size request is served"
        );
        let (_, answer) = admin
            .gql(
                "mutation($e: [UsageEventInput!]!) { ingestUsage(events: $e) { accepted } }",
                json!({"e": events(10_000, "warm")}),
            )
            .await;
        assert_eq!(answer["data"]["ingestUsage"]["accepted"], 10_000);
        let baseline = child.memory();

        let started = Instant::now();
        let mut statuses: std::collections::BTreeMap<String, usize> = Default::default();
        for _ in 0..ROUNDS {
            let mut tasks = Vec::new();
            for _ in 0..CONCURRENT {
                let body = oversized.clone();
                tasks.push(tokio::spawn(async move {
                    ("oversized", post_raw(addr, body, false).await)
                }));
                let client = admin.clone();
                let body = maximum.clone();
                tasks.push(tokio::spawn(async move {
                    ("maximum", client.raw(body).await.map(|a| a.0))
                }));
            }
            for task in tasks {
                let (kind, status) = task.await.expect("request task");
                let label = format!(
                    "{kind} → {}",
                    status.map_or("no answer".to_string(), |s| s.to_string())
                );
                *statuses.entry(label).or_default() += 1;
            }
        }
        // And two real 10,000-event batches (the largest useful requests).
        for prefix in ["mem-a", "mem-b"] {
            let (status, answer) = admin
                .gql(
                    "mutation($e: [UsageEventInput!]!) { ingestUsage(events: $e) { accepted } }",
                    json!({"e": events(10_000, prefix)}),
                )
                .await;
            assert_eq!(
                answer["data"]["ingestUsage"]["accepted"], 10_000,
                "HTTP {status}"
            );
        }
        admin.alive("the memory run").await;
        let after = child.memory();
        let growth_kib = after.hwm_kib.saturating_sub(baseline.rss_kib);
        let n = ROUNDS * CONCURRENT;
        println!(
            "resource limits [{backend:?}]: API memory: RSS {:.1} MiB before, peak (VmHWM) {:.1} MiB, RSS {:.1} MiB after; \
             growth {:.1} MiB (bound {API_MEMORY_BOUND_MIB} MiB); {n} oversized ({} B) + {n} maximum ({} B) requests, \
             {CONCURRENT}+{CONCURRENT} at a time, + 2×10,000 events in {:.1}s; answers {statuses:?}",
            Memory::mib(baseline.rss_kib),
            Memory::mib(after.hwm_kib),
            Memory::mib(after.rss_kib),
            Memory::mib(growth_kib),
            oversized.len(),
            maximum.len(),
            started.elapsed().as_secs_f64()
        );
        assert_eq!(
            statuses.get("oversized → 413"),
            Some(&n),
            "{backend:?}: every oversized request refused with 413: {statuses:?}"
        );
        assert_eq!(
            statuses.get("maximum → 200"),
            Some(&n),
            "{backend:?}: every maximum-size request served: {statuses:?}"
        );
        assert!(
            growth_kib < API_MEMORY_BOUND_MIB * 1024,
            "{backend:?}: the API's peak RSS grew {:.1} MiB (bound {API_MEMORY_BOUND_MIB} MiB)",
            Memory::mib(growth_kib)
        );
        drop(child);
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_memory_stays_bounded_through_a_big_billing_run() {
    const SUBSCRIPTIONS: usize = 200;
    const EVENTS_EACH: usize = 10;
    for mut env in TestEnv::all().await {
        let backend = env.backend;
        let (api, _, admin) = start(&mut env).await;
        usage_fixture(&admin).await;
        let (_, answer) = admin
            .gql(
                "mutation($input: CreatePlanInput!) { createPlan(input: $input) { id } }",
                json!({"input": {"code": "hybrid", "name": "Hybrid", "interval": "MONTH", "prices": [
                    {"model": "FLAT", "unitAmount": "10.00"},
                    {"model": "GRADUATED", "meterCode": "calls", "tiers": [
                        {"upTo": "5", "unitAmount": "0.5"}, {"unitAmount": "0.1", "flatAmount": "1"}]}]}}),
            )
            .await;
        let plan = answer["data"]["createPlan"]["id"]
            .as_str()
            .expect("plan")
            .to_string();
        let mut usage = Vec::new();
        for i in 0..SUBSCRIPTIONS {
            let customer = format!("c{i}");
            let (_, answer) = admin
                .gql(
                    "mutation($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }",
                    json!({"input": {"externalId": customer, "name": customer}}),
                )
                .await;
            let id = answer["data"]["createCustomer"]["id"]
                .as_str()
                .expect("customer")
                .to_string();
            let (_, answer) = admin
                .gql(
                    "mutation($input: CreateSubscriptionInput!) { createSubscription(input: $input) { id } }",
                    json!({"input": {"customerId": id, "planId": plan}}),
                )
                .await;
            assert!(answer["errors"].is_null(), "{answer}");
            for e in 0..EVENTS_EACH {
                usage.push(json!({"idempotencyKey": format!("u-{i}-{e}"), "customerExternalId": customer,
                    "meterCode": "calls", "value": format!("{}", e + 1), "timestamp": "2026-01-16T00:04:00Z"}));
            }
        }
        let (_, answer) = admin
            .gql(
                "mutation($e: [UsageEventInput!]!) { ingestUsage(events: $e) { accepted } }",
                json!({"e": usage}),
            )
            .await;
        assert_eq!(
            answer["data"]["ingestUsage"]["accepted"],
            SUBSCRIPTIONS * EVENTS_EACH
        );

        let worker = ChildProcess::start(&env, "worker");
        let pid = worker.child.id();
        // The subscriptions' start jobs first, then a month of billing.
        let baseline = worker.memory();
        let started = Instant::now();
        let (_, answer) = admin
            .gql(
                "mutation { advanceTestClock(to: \"2026-02-16T00:00:00Z\") { status } }",
                json!({}),
            )
            .await;
        assert!(answer["errors"].is_null(), "{answer}");
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut samples = 0;
        loop {
            samples += 1;
            let (_, answer) = admin
                .gql("{ organization { testClock { status } } }", json!({}))
                .await;
            if answer["data"]["organization"]["testClock"]["status"] == "READY" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{backend:?}: the worker did not bill the month in time: {answer}"
            );
            let _ = Memory::of(pid);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let took = started.elapsed();
        let after = worker.memory();
        let invoices = count(api.db(), "invoices").await;
        assert!(
            invoices >= 2 * SUBSCRIPTIONS as i64,
            "{backend:?}: a first and a period invoice per subscription, got {invoices}"
        );
        let growth_kib = after.hwm_kib.saturating_sub(baseline.rss_kib);
        println!(
            "resource limits [{backend:?}]: worker memory: RSS {:.1} MiB at start, peak (VmHWM) {:.1} MiB, RSS {:.1} MiB after \
             billing {SUBSCRIPTIONS} subscriptions × {EVENTS_EACH} events ({invoices} invoices) in {:.1}s ({samples} samples); growth {:.1} MiB (bound {WORKER_MEMORY_BOUND_MIB} MiB)",
            Memory::mib(baseline.rss_kib),
            Memory::mib(after.hwm_kib),
            Memory::mib(after.rss_kib),
            took.as_secs_f64(),
            Memory::mib(growth_kib),
        );
        assert!(
            growth_kib < WORKER_MEMORY_BOUND_MIB * 1024,
            "{backend:?}: the worker's peak RSS grew {:.1} MiB (bound {WORKER_MEMORY_BOUND_MIB} MiB)",
            Memory::mib(growth_kib)
        );
        drop(worker);
        api.stop().await;
        env.cleanup().await;
    }
}
