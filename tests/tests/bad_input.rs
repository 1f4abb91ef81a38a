//! Bad input never hurts: property-based tests (proptest, over HTTP, on
//! every backend) of `ingestUsage`, `createPlan` (prices and tiers) and
//! `createSubscription` with hostile values — huge and tiny decimals,
//! exponents, NaN/Infinity, "-0", a leading "+", whitespace, unicode, empty
//! and 1 MB strings, duplicate idempotency keys inside one batch, timestamps
//! at and just beyond the accept window's edges and far away, unknown enum
//! values, missing fields and wrongly typed ones.
//!
//! For every case: the HTTP status is never 500 and no error is INTERNAL; a
//! refused call answers BAD_USER_INPUT (NOT_FOUND for unknown ids) with a
//! short message, and the database is exactly as before (no partial write:
//! one malformed event refuses the whole batch, as its scalars are checked
//! before anything runs). An accepted call stores exactly what was sent.
//! Per SPEC, a well-formed event that is *rejected* (CONFLICT, UNKNOWN_*,
//! OUT_OF_WINDOW, INVALID_VALUE) writes nothing while the rest of its batch
//! lands: a model of those rules predicts every outcome and the rows written.

mod api_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use api_support::{Api, ok, snapshot};
use chrono::{DateTime, Duration, FixedOffset, SecondsFormat, SubsecRound, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tests::TestEnv;

/// Cases per property (each is one or two HTTP calls plus two snapshots).
const CASES: u32 = 64;
/// The organization's frozen clock; its late-usage window is 35 days.
const NOW: &str = "2026-01-16T00:00:00Z";
const WINDOW_DAYS: i64 = 35;
const MB: usize = 1024 * 1024;
/// The largest amount an invoice line holds in USD: `i64::MAX` cents.
const LARGEST_USD: &str = "92233720368547758.07";

fn now() -> DateTime<Utc> {
    NOW.parse().expect("NOW")
}
fn oldest() -> DateTime<Utc> {
    now() - Duration::days(WINDOW_DAYS)
}
fn newest() -> DateTime<Utc> {
    now() + Duration::minutes(5)
}
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

// ---------------------------------------------------------------------------
// HTTP and database helpers.

struct Fx {
    url: String,
    http: reqwest::Client,
    key: String,
    db: DatabaseConnection,
    customer: String,
    /// Plans a subscription may take: a flat fee, the largest flat fee a
    /// Decimal holds, and a graduated metered price.
    plans: Vec<String>,
    backend: tests::Backend,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);
fn seq() -> usize {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

impl Fx {
    async fn post(&self, query: &str, variables: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.key)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .expect("POST reaches the server");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| {
            panic!("HTTP {status}: not JSON: {}", &text[..text.len().min(500)])
        });
        (status, body)
    }

    async fn stored_values(&self, key: &str) -> Vec<String> {
        let backend = self.db.get_database_backend();
        let sql = match backend {
            sea_orm::DatabaseBackend::Postgres => {
                "SELECT value FROM usage_events WHERE idempotency_key = $1"
            }
            _ => "SELECT value FROM usage_events WHERE idempotency_key = ?",
        };
        self.db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, [key.into()]))
            .await
            .expect("query")
            .into_iter()
            .map(|row| row.try_get::<String>("", "value").expect("value"))
            .collect()
    }
}

/// Short form of an answer for failure messages (1 MB inputs echo back).
fn brief(answer: &Value) -> String {
    let text = answer.to_string();
    match text.char_indices().nth(600) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text,
    }
}

fn codes(answer: &Value) -> Vec<String> {
    answer["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    e["extensions"]["code"]
                        .as_str()
                        .unwrap_or("<none>")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Does any string (or object key) in `value` hold U+0000? PostgreSQL
/// cannot store it, so the API refuses it on every backend.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Checks a refused answer: status, one clear error with `code`, no data.
fn refused(status: u16, answer: &Value, code: &str, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(status != 500, "HTTP 500 for {what}: {}", brief(answer));
    let got = codes(answer);
    prop_assert!(
        !got.is_empty() && got.iter().all(|c| c == code),
        "{what}: expected {code}, got {got:?}: {}",
        brief(answer)
    );
    let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
    prop_assert!(
        !message.trim().is_empty() && message.len() <= 1000,
        "{what}: the message must be short and clear, got {} bytes: {}",
        message.len(),
        brief(&json!(message))
    );
    prop_assert!(
        !message.contains("SELECT") && !message.contains("sqlx") && !message.contains("panicked"),
        "{what}: internals in the message: {message}"
    );
    Ok(())
}

fn never_internal(status: u16, answer: &Value, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(status != 500, "HTTP 500 for {what}: {}", brief(answer));
    let got = codes(answer);
    prop_assert!(
        !got.iter()
            .any(|c| c == "INTERNAL" || c == "INTERNAL_SERVER_ERROR" || c == "<none>"),
        "{what}: {}",
        brief(answer)
    );
    Ok(())
}

/// Runs a property with `CASES` cases; the runtime drives the async body.
fn property<S: Strategy>(
    name: &str,
    fx: &Fx,
    rt: &tokio::runtime::Runtime,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    });
    let _ = rt;
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{:?} {name}: {e}", fx.backend);
    }
    println!(
        "bad input [{:?}] {name}: {CASES} cases in {:.1}s",
        fx.backend,
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// Decimal texts and what the contract says about them.

/// Texts that break the decimal rules in every way we could think of.
const EDGE_DECIMALS: &[&str] = &[
    "0",
    "-0",
    "0.0",
    "1.",
    ".5",
    "-.5",
    "0.000000000001",
    "12345678901234.5678",
    "79228162514264337593543950335",
    "-79228162514264337593543950335",
    "79228162514264337593543950336",
    "0.0000000000000000000000000001",
    "0.00000000000000000000000000001",
    "1e10",
    "1E-5",
    "1e+3",
    "1.0e0",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "+1",
    "+0",
    " 1",
    "1 ",
    "\t1",
    "1\n",
    "",
    "-",
    ".",
    "-.",
    "1.2.3",
    "--1",
    "1-",
    "0x1F",
    "1_000",
    "1,5",
    "１",
    "٣",
    "½",
    "∞",
    "1e",
    "e1",
    "12 34",
    "0b1",
    "١٢",
    "1\u{0}",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecClass {
    /// Not a decimal: must be refused.
    Refuse,
    /// An ordinary decimal: must be accepted exactly.
    Exact,
    /// Well-formed but at the edge of what fits: accepted exactly or refused.
    Either,
}

/// SPEC: a Decimal is a string of ASCII digits with an optional '-' and one
/// '.', exact (never rounded); quantities keep ≥ 12 fractional digits.
fn classify(text: &str) -> DecClass {
    let body = text.strip_prefix('-').unwrap_or(text);
    let well_formed = !body.is_empty()
        && body.chars().all(|c| c.is_ascii_digit() || c == '.')
        && body.matches('.').count() <= 1
        && body.chars().any(|c| c.is_ascii_digit());
    if !well_formed {
        return DecClass::Refuse;
    }
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let significant_int = int.trim_start_matches('0').len();
    if significant_int > 29 || frac.len() > 40 {
        return DecClass::Refuse;
    }
    if (1..=15).contains(&int.len()) && frac.len() <= 12 && !(body.contains('.') && frac.is_empty())
    {
        return DecClass::Exact;
    }
    DecClass::Either
}

fn decimal_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "-?[0-9]{1,15}(\\.[0-9]{1,12})?",
        4 => proptest::sample::select(EDGE_DECIMALS).prop_map(str::to_string),
        1 => "[0-9]{16,40}(\\.[0-9]{0,40})?",
        1 => "-?0\\.[0-9]{20,40}",
        1 => "\\PC{0,12}",
        1 => Just("9".repeat(MB)),
    ]
}

// ---------------------------------------------------------------------------
// ingestUsage.

const INGEST: &str = "mutation($events: [UsageEventInput!]!) { ingestUsage(events: $events) {
    accepted duplicates rejected results { index outcome code message } } }";

fn event(key: &str, value: Value, at: &str) -> Value {
    json!({"idempotencyKey": key, "customerExternalId": "cust", "meterCode": "calls",
           "value": value, "timestamp": at})
}

/// One event whose value is any text: refused outright, or accepted exactly.
fn value_texts(fx: &Fx, rt: &tokio::runtime::Runtime) {
    property("ingestUsage value texts", fx, rt, decimal_text(), |text| {
        rt.block_on(async {
            let key = format!("v-{}", seq());
            let before = snapshot(&fx.db).await;
            let (status, answer) = fx
                .post(
                    INGEST,
                    &json!({"events": [event(&key, json!(text), "2026-01-15T00:00:00Z")]}),
                )
                .await;
            let what = format!("value {}", brief(&json!(text)));
            let class = classify(&text);
            if answer["errors"].is_array() {
                prop_assert!(
                    class != DecClass::Exact,
                    "{what} was refused: {}",
                    brief(&answer)
                );
                refused(status, &answer, "BAD_USER_INPUT", &what)?;
                prop_assert_eq!(snapshot(&fx.db).await, before, "{} wrote something", what);
                return Ok(());
            }
            prop_assert!(
                class != DecClass::Refuse,
                "{what} was taken: {}",
                brief(&answer)
            );
            never_internal(status, &answer, &what)?;
            let exact = Decimal::from_str_exact(&text).map_err(|e| {
                TestCaseError::fail(format!("{what} accepted but not exact here: {e}"))
            })?;
            let result = &ok(&answer)["ingestUsage"]["results"][0];
            if exact.is_sign_negative() && !exact.is_zero() {
                prop_assert_eq!(&result["code"], "INVALID_VALUE", "{}", what);
                prop_assert_eq!(snapshot(&fx.db).await, before);
            } else {
                prop_assert_eq!(
                    &result["outcome"],
                    "ACCEPTED",
                    "{}: {}",
                    what,
                    brief(&answer)
                );
                let stored = fx.stored_values(&key).await;
                prop_assert_eq!(stored, vec![exact.normalize().to_string()], "{}", what);
            }
            Ok(())
        })
    });
}

/// A malformed event anywhere in a batch refuses the whole batch.
fn malformed_event_spoils_the_batch(fx: &Fx, rt: &tokio::runtime::Runtime) {
    let malformed = prop_oneof![
        decimal_text()
            .prop_filter("refused texts", |t| classify(t) == DecClass::Refuse)
            .prop_map(|t| ("value".to_string(), json!(t))),
        Just(("value".to_string(), json!(5))),
        Just(("value".to_string(), json!(1.5))),
        proptest::sample::select(vec![
            "",
            "yesterday",
            "2026-02-30T00:00:00Z",
            "2026-01-15",
            "2026-01-15T00:00:00",
            "1768435200",
            "2026-01-15T25:00:00Z",
            "+002026-01-15T00:00:00Z",
            "２０２６-01-15T00:00:00Z",
        ])
        .prop_map(|t| ("timestamp".to_string(), json!(t))),
        Just(("timestamp".to_string(), json!(1_768_435_200))),
        Just(("idempotencyKey".to_string(), Value::Null)),
        Just(("customerExternalId".to_string(), json!(42))),
        Just(("meterCode".to_string(), json!(["calls"]))),
        Just(("valeu".to_string(), json!("1"))),
        Just(("-missing-timestamp".to_string(), Value::Null)),
        Just(("-missing-idempotencyKey".to_string(), Value::Null)),
    ];
    let strategy = (1usize..40, any::<prop::sample::Index>(), malformed);
    property(
        "ingestUsage malformed event in a batch",
        fx,
        rt,
        strategy,
        |(good, at, (field, value))| {
            rt.block_on(async {
                let tag = seq();
                let mut events: Vec<Value> = (0..good)
                    .map(|i| event(&format!("b-{tag}-{i}"), json!("1"), "2026-01-15T00:00:00Z"))
                    .collect();
                let mut bad = event(&format!("b-{tag}-bad"), json!("1"), "2026-01-15T00:00:00Z");
                if let Some(missing) = field.strip_prefix("-missing-") {
                    bad.as_object_mut().expect("object").remove(missing);
                } else {
                    bad[field.as_str()] = value.clone();
                }
                events.insert(at.index(good + 1), bad);
                let before = snapshot(&fx.db).await;
                let (status, answer) = fx.post(INGEST, &json!({ "events": events })).await;
                let what = format!("{field} = {}", brief(&value));
                refused(status, &answer, "BAD_USER_INPUT", &what)?;
                prop_assert!(answer["data"].is_null(), "{what}: {}", brief(&answer));
                prop_assert_eq!(snapshot(&fx.db).await, before, "{} wrote something", what);
                Ok(())
            })
        },
    );
}

/// One generated event of the batch model.
#[derive(Clone, Debug)]
struct Ev {
    key: usize,
    customer: usize,
    meter: usize,
    value: usize,
    at: usize,
    props: usize,
}

const CUSTOMERS: [&str; 3] = ["cust", "nobody", "cüstomer-☃"];
const METERS: [&str; 2] = ["calls", "nope"];
const VALUES: [&str; 7] = ["1", "2", "2.0", "-1", "0", "-0", "0.000000000001"];
const PROPS: usize = 4;

fn props_of(i: usize) -> Option<Value> {
    match i {
        0 => None,
        1 => Some(json!({"a": 1, "b": {"y": [1, 2], "x": "ü"}})),
        2 => Some(json!({"b": {"x": "ü", "y": [1, 2]}, "a": 1})),
        _ => Some(json!([1, 2])),
    }
}

fn instants() -> Vec<(String, DateTime<Utc>)> {
    let micro = Duration::microseconds(1);
    let plain = |t: DateTime<Utc>| (rfc3339(t), t);
    vec![
        plain(oldest()),
        plain(oldest() - micro),
        plain(newest()),
        plain(newest() + micro),
        plain(now()),
        plain(now() - Duration::days(1)),
        // The same instant as `now() - 1 day`, written in another offset.
        (
            "2026-01-15T05:30:00+05:30".into(),
            now() - Duration::days(1),
        ),
        // Sub-microsecond digits are truncated: still inside the window.
        ("2026-01-16T00:05:00.000000999Z".into(), newest()),
        (
            "9999-12-31T23:59:59Z".into(),
            "9999-12-31T23:59:59Z".parse().unwrap(),
        ),
        (
            "0001-01-01T00:00:00Z".into(),
            "0001-01-01T00:00:00Z".parse().unwrap(),
        ),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    Accepted,
    Duplicate,
    /// Rejected with one of these codes.
    Rejected(Vec<&'static str>),
}

/// SPEC's usage rules: the first acceptable occurrence of a key lands; a
/// repeat with the same payload is a DUPLICATE, with another a CONFLICT;
/// otherwise each applicable reason may be the one reported.
fn model(events: &[Ev], keys: &[String]) -> Vec<Expected> {
    let instants = instants();
    let mut known: HashMap<String, (usize, usize, Decimal, DateTime<Utc>, Value)> = HashMap::new();
    events
        .iter()
        .map(|e| {
            let key = &keys[e.key];
            let value = Decimal::from_str_exact(VALUES[e.value])
                .expect("value")
                .normalize();
            let at = instants[e.at].1.trunc_subsecs(6);
            let props = props_of(e.props).unwrap_or(Value::Null);
            let payload = (e.customer, e.meter, value, at, props.clone());
            if let Some(stored) = known.get(key) {
                return if *stored == payload {
                    Expected::Duplicate
                } else {
                    Expected::Rejected(vec!["CONFLICT"])
                };
            }
            let mut reasons = Vec::new();
            if key.is_empty() || key.len() > 255 {
                reasons.push("INVALID_VALUE");
            }
            if e.customer != 0 {
                reasons.push("UNKNOWN_CUSTOMER");
            }
            if e.meter != 0 {
                reasons.push("UNKNOWN_METER");
            }
            if value.is_sign_negative() && !value.is_zero() {
                reasons.push("INVALID_VALUE");
            }
            if !props.is_object() && !props.is_null() {
                reasons.push("INVALID_VALUE");
            }
            if at < oldest() || at > newest() {
                reasons.push("OUT_OF_WINDOW");
            }
            if reasons.is_empty() {
                known.insert(key.clone(), payload);
                Expected::Accepted
            } else {
                Expected::Rejected(reasons)
            }
        })
        .collect()
}

fn batch_model(fx: &Fx, rt: &tokio::runtime::Runtime) {
    let ev = (
        0usize..7,
        0usize..3,
        0usize..2,
        0usize..7,
        0usize..10,
        0usize..PROPS,
    )
        .prop_map(|(key, customer, meter, value, at, props)| Ev {
            key,
            customer,
            meter,
            value,
            at,
            props,
        });
    // Mostly the good customer/meter/instant, so duplicates and conflicts happen.
    let ev = prop_oneof![
        3 => ev.clone().prop_map(|mut e| { e.customer = 0; e.meter = 0; e.at %= 6; e }),
        1 => ev,
    ];
    property(
        "ingestUsage batches (duplicates, conflicts, window edges)",
        fx,
        rt,
        proptest::collection::vec(ev, 1..30),
        |events| {
            rt.block_on(async {
                let tag = seq();
                let keys: Vec<String> = vec![
                    format!("m-{tag}-a"),
                    format!("m-{tag}-b"),
                    format!("m-{tag}-c"),
                    format!("m-{tag}-ключ-🔑"),
                    String::new(),
                    format!("m-{tag}-{}", "k".repeat(300)),
                    format!("m-{tag}-{}", "é".repeat(120)),
                ];
                let instants = instants();
                let batch: Vec<Value> = events
                    .iter()
                    .map(|e| {
                        let mut v = json!({"idempotencyKey": keys[e.key],
                            "customerExternalId": CUSTOMERS[e.customer], "meterCode": METERS[e.meter],
                            "value": VALUES[e.value], "timestamp": instants[e.at].0});
                        if let Some(p) = props_of(e.props) {
                            v["properties"] = p;
                        }
                        v
                    })
                    .collect();
                let expected = model(&events, &keys);
                let before = snapshot(&fx.db).await;
                let (status, answer) = fx.post(INGEST, &json!({ "events": batch })).await;
                never_internal(status, &answer, "batch")?;
                let results = ok(&answer)["ingestUsage"]["results"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                prop_assert_eq!(results.len(), events.len());
                let mut accepted = 0i64;
                for (i, (got, want)) in results.iter().zip(&expected).enumerate() {
                    prop_assert_eq!(got["index"].as_u64(), Some(i as u64));
                    let outcome = got["outcome"].as_str().unwrap_or_default();
                    let fits = match want {
                        Expected::Accepted => outcome == "ACCEPTED",
                        Expected::Duplicate => outcome == "DUPLICATE",
                        Expected::Rejected(reasons) => {
                            outcome == "REJECTED"
                                && reasons.iter().any(|r| got["code"] == *r)
                                && got["message"].as_str().is_some_and(|m| {
                                    !m.is_empty() && m.len() <= 1000
                                })
                        }
                    };
                    prop_assert!(
                        fits,
                        "event {i} {:?}: expected {want:?}, got {got}\nbatch: {}",
                        events[i],
                        brief(&json!(batch))
                    );
                    accepted += i64::from(outcome == "ACCEPTED");
                }
                let after = snapshot(&fx.db).await;
                for ((table, b), (_, a)) in before.iter().zip(&after) {
                    let delta = a - b;
                    let want = match *table {
                        "usage_events" => accepted,
                        "audit_events" => i64::from(accepted > 0),
                        _ => 0,
                    };
                    prop_assert_eq!(delta, want, "{} grew by {}", table, delta);
                }
                Ok(())
            })
        },
    );
}

/// Timestamps around both edges of the window, in any offset, to the nanosecond.
fn window_edges(fx: &Fx, rt: &tokio::runtime::Runtime) {
    let strategy = (
        prop::bool::ANY,
        -3_000_000i64..3_000_000,
        0u32..1000,
        proptest::sample::select(vec![0i32, 3600, -8 * 3600, 5 * 3600 + 1800, 14 * 3600]),
    );
    property(
        "ingestUsage timestamps at the window edges",
        fx,
        rt,
        strategy,
        |(upper, micros, nanos, offset)| {
            rt.block_on(async {
                let edge = if upper { newest() } else { oldest() };
                let t =
                    edge + Duration::microseconds(micros) + Duration::nanoseconds(i64::from(nanos));
                let tz = FixedOffset::east_opt(offset).expect("offset");
                let text = t
                    .with_timezone(&tz)
                    .to_rfc3339_opts(SecondsFormat::Nanos, offset == 0);
                let key = format!("w-{}", seq());
                let before = snapshot(&fx.db).await;
                let (status, answer) = fx
                    .post(INGEST, &json!({"events": [event(&key, json!("1"), &text)]}))
                    .await;
                never_internal(status, &answer, &text)?;
                let result = &ok(&answer)["ingestUsage"]["results"][0];
                let stored = t.trunc_subsecs(6);
                if stored >= oldest() && stored <= newest() {
                    prop_assert_eq!(&result["outcome"], "ACCEPTED", "{}: {}", text, result);
                } else {
                    prop_assert_eq!(&result["code"], "OUT_OF_WINDOW", "{}: {}", text, result);
                    prop_assert_eq!(snapshot(&fx.db).await, before);
                }
                Ok(())
            })
        },
    );
}

// ---------------------------------------------------------------------------
// createPlan.

const CREATE_PLAN: &str = "mutation($input: CreatePlanInput!) { createPlan(input: $input) {
    id code name interval intervalCount trialDays
    prices { model timing unitAmount packageSize description meter { code }
             tiers { upTo unitAmount flatAmount } } } }";

fn text_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,12}",
        2 => "\\PC{0,16}",
        1 => Just(String::new()),
        1 => Just("   ".to_string()),
        1 => Just("x".repeat(201)),
        1 => Just("ü".repeat(MB / 2)),
        1 => Just("nul-\u{0}-byte".to_string()),
    ]
}

/// A JSON field: usually present with a value from `s`, sometimes absent
/// (`None`), sometimes a wrong type.
fn field<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
    to_json: fn(T) -> Value,
) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        8 => s.prop_map(move |v| Some(to_json(v))),
        1 => Just(None),
        1 => proptest::sample::select(vec![json!(true), json!(1.5), json!([]), json!({}), json!("1")])
            .prop_map(Some),
    ]
    .boxed()
}

fn enum_value(valid: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(valid).prop_map(str::to_string),
        1 => proptest::sample::select(vec!["FORTNIGHT", "TIERED", "", "month", "Month", "ÜBER", "null"])
            .prop_map(str::to_string),
    ]
}

fn int_value() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 0i64..5,
        2 => proptest::sample::select(vec![-1i64, 1000, 1001, 3650, 3651, i64::from(i32::MAX), i64::from(i32::MIN)]),
        1 => Just(i64::from(i32::MAX) + 1),
        1 => Just(10_000_000_000_000_000i64),
    ]
}

#[derive(Debug, Clone)]
struct PlanCase {
    input: serde_json::Map<String, Value>,
}

fn tier() -> impl Strategy<Value = Value> {
    (
        prop::option::of(decimal_text()),
        decimal_text(),
        prop::option::of(decimal_text()),
    )
        .prop_map(|(up_to, unit, flat)| {
            let mut t = json!({"unitAmount": unit});
            if let Some(u) = up_to {
                t["upTo"] = json!(u);
            }
            if let Some(f) = flat {
                t["flatAmount"] = json!(f);
            }
            t
        })
}

fn price() -> impl Strategy<Value = Value> {
    let models: &'static [&'static str] = &["FLAT", "PER_UNIT", "GRADUATED", "VOLUME", "PACKAGE"];
    (
        enum_value(models),
        prop::option::of(enum_value(&["IN_ADVANCE", "IN_ARREARS"])),
        prop::option::of(proptest::sample::select(vec!["calls", "nope", ""])),
        prop::option::of(decimal_text()),
        prop::option::of(decimal_text()),
        prop::option::of(proptest::collection::vec(tier(), 0..4)),
        prop::option::of(text_value()),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(model, timing, meter, unit, package, tiers, description, drop_model)| {
                let mut p = serde_json::Map::new();
                if !drop_model {
                    p.insert("model".into(), json!(model));
                }
                if let Some(v) = timing {
                    p.insert("timing".into(), json!(v));
                }
                if let Some(v) = meter {
                    p.insert("meterCode".into(), json!(v));
                }
                if let Some(v) = unit {
                    p.insert("unitAmount".into(), json!(v));
                }
                if let Some(v) = package {
                    p.insert("packageSize".into(), json!(v));
                }
                if let Some(v) = tiers {
                    p.insert("tiers".into(), json!(v));
                }
                if let Some(v) = description {
                    p.insert("description".into(), json!(v));
                }
                Value::Object(p)
            },
        )
}

/// A non-negative amount, as an exact decimal text (sometimes at the edge of
/// what a Decimal holds).
fn amount_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[0-9]{1,6}(\\.[0-9]{1,12})?",
        1 => proptest::sample::select(vec![
            "0",
            "0.000000000001",
            "0.0004",
            "12345678901234.5678",
            "79228162514264337593543950335",
        ])
        .prop_map(str::to_string),
    ]
}

/// A price that follows the model rules (so valid plans are generated too).
fn valid_price() -> impl Strategy<Value = Value> {
    let tiers = proptest::collection::btree_set(1u64..1_000_000, 0..3).prop_flat_map(|bounds| {
        let n = bounds.len() + 1;
        (
            Just(bounds),
            proptest::collection::vec(amount_text(), n),
            proptest::collection::vec(prop::option::of(amount_text()), n),
        )
            .prop_map(|(bounds, units, flats)| {
                let mut bounds: Vec<Value> =
                    bounds.into_iter().map(|b| json!(b.to_string())).collect();
                bounds.push(Value::Null);
                bounds
                    .into_iter()
                    .zip(units)
                    .zip(flats)
                    .map(|((up_to, unit), flat)| {
                        let mut t = json!({"upTo": up_to, "unitAmount": unit});
                        if let Some(f) = flat {
                            t["flatAmount"] = json!(f);
                        }
                        t
                    })
                    .collect::<Vec<_>>()
            })
    });
    (
        0usize..5,
        amount_text(),
        "[1-9][0-9]{0,3}",
        tiers,
        prop::option::of(text_value()),
        prop::bool::ANY,
    )
        .prop_map(|(model, unit, package, tiers, description, arrears)| {
            let mut p = match model {
                0 => json!({"model": "FLAT", "unitAmount": unit,
                            "timing": if arrears { "IN_ARREARS" } else { "IN_ADVANCE" }}),
                1 => json!({"model": "PER_UNIT", "meterCode": "calls", "unitAmount": unit}),
                2 => json!({"model": "GRADUATED", "meterCode": "calls", "tiers": tiers}),
                3 => json!({"model": "VOLUME", "meterCode": "calls", "tiers": tiers}),
                _ => json!({"model": "PACKAGE", "meterCode": "calls", "unitAmount": unit,
                            "packageSize": package}),
            };
            if let Some(d) = description {
                p["description"] = json!(d);
            }
            p
        })
}

/// A plan that the contract must refuse, whatever else is in it.
fn plan_must_refuse(input: &serde_json::Map<String, Value>) -> Option<String> {
    let string = |k: &str| input.get(k).and_then(Value::as_str);
    if has_nul(&Value::Object(input.clone())) {
        return Some("U+0000 in a string".into());
    }
    for required in ["code", "name", "interval", "prices"] {
        if !input.contains_key(required) {
            return Some(format!("missing {required}"));
        }
    }
    match string("code") {
        None => return Some("code is not a string".into()),
        Some(c) if c.trim().is_empty() || c.chars().count() > 200 => {
            return Some("code must be 1 to 200 characters".into());
        }
        _ => {}
    }
    match string("name") {
        None => return Some("name is not a string".into()),
        Some(n) if n.chars().count() > 200 => return Some("name over 200 characters".into()),
        _ => {}
    }
    if !matches!(string("interval"), Some("DAY" | "WEEK" | "MONTH" | "YEAR")) {
        return Some("unknown interval".into());
    }
    for (k, range) in [("intervalCount", 1..=1000), ("trialDays", 0..=3650)] {
        if let Some(v) = input.get(k) {
            match v.as_i64() {
                Some(n) if range.contains(&n) => {}
                _ => return Some(format!("{k} = {v}")),
            }
        }
    }
    let Some(prices) = input.get("prices").and_then(Value::as_array) else {
        return Some("prices is not a list".into());
    };
    if prices.is_empty() {
        return Some("no prices".into());
    }
    for p in prices {
        let Some(p) = p.as_object() else {
            return Some("a price is not an object".into());
        };
        if !matches!(
            p.get("model").and_then(Value::as_str),
            Some("FLAT" | "PER_UNIT" | "GRADUATED" | "VOLUME" | "PACKAGE")
        ) {
            return Some("unknown or missing model".into());
        }
        if p.get("description")
            .and_then(Value::as_str)
            .is_some_and(|d| d.chars().count() > 1000)
        {
            return Some("description over 1000 characters".into());
        }
        if let Some(t) = p.get("timing")
            && !matches!(t.as_str(), Some("IN_ADVANCE" | "IN_ARREARS"))
        {
            return Some("unknown timing".into());
        }
        let mut decimals: Vec<&str> = Vec::new();
        for k in ["unitAmount", "packageSize"] {
            if let Some(v) = p.get(k).filter(|v| !v.is_null()) {
                decimals.push(v.as_str().unwrap_or("<not a string>"));
            }
        }
        for t in p
            .get("tiers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for k in ["upTo", "unitAmount", "flatAmount"] {
                if let Some(v) = t.get(k).filter(|v| !v.is_null()) {
                    decimals.push(v.as_str().unwrap_or("<not a string>"));
                }
            }
        }
        if let Some(bad) = decimals.iter().find(|d| classify(d) == DecClass::Refuse) {
            return Some(format!("decimal {}", brief(&json!(bad))));
        }
    }
    None
}

fn create_plan(fx: &Fx, rt: &tokio::runtime::Runtime) {
    let strategy = (
        field(text_value(), |s| json!(s)),
        field(text_value(), |s| json!(s)),
        field(enum_value(&["DAY", "WEEK", "MONTH", "YEAR"]), |s| json!(s)),
        prop::option::of(field(int_value(), |n| json!(n))),
        prop::option::of(field(int_value(), |n| json!(n))),
        field(
            proptest::collection::vec(prop_oneof![3 => valid_price(), 1 => price()], 0..4),
            |v| json!(v),
        ),
        prop::bool::weighted(0.7),
    )
        .prop_map(|(code, name, interval, count, trial, prices, unique)| {
            let mut input = serde_json::Map::new();
            for (k, v) in [
                ("code", code),
                ("name", name),
                ("interval", interval),
                ("intervalCount", count.flatten()),
                ("trialDays", trial.flatten()),
                ("prices", prices),
            ] {
                if let Some(v) = v {
                    input.insert(k.into(), v);
                }
            }
            // Mostly fresh codes, so valid plans do get created.
            if unique
                && let Some(Value::String(code)) = input.get_mut("code")
                && code.len() < 100
                && !code.trim().is_empty()
            {
                code.push_str(&format!("-{}", seq()));
            }
            PlanCase { input }
        });
    // Half the cases follow the rules (with odd names, descriptions and
    // amounts), so storing exactly is exercised as much as refusing.
    let plausible = (
        "[a-z]{1,12}",
        prop_oneof![3 => "[A-Za-z ]{1,20}", 1 => text_value()],
        enum_value(&["DAY", "WEEK", "MONTH", "YEAR"]),
        prop::option::of(1i64..=12),
        prop::option::of(0i64..=30),
        proptest::collection::vec(valid_price(), 1..4),
    )
        .prop_map(|(code, name, interval, count, trial, prices)| {
            let mut input = serde_json::Map::new();
            input.insert("code".into(), json!(format!("{code}-{}", seq())));
            input.insert("name".into(), json!(name));
            input.insert("interval".into(), json!(interval));
            if let Some(n) = count {
                input.insert("intervalCount".into(), json!(n));
            }
            if let Some(n) = trial {
                input.insert("trialDays".into(), json!(n));
            }
            input.insert("prices".into(), json!(prices));
            PlanCase { input }
        });
    let strategy = prop_oneof![strategy, plausible];
    let created = AtomicUsize::new(0);
    property("createPlan", fx, rt, strategy, |case| {
        rt.block_on(async {
            let input = Value::Object(case.input.clone());
            let before = snapshot(&fx.db).await;
            let (status, answer) = fx.post(CREATE_PLAN, &json!({ "input": input })).await;
            let what = format!("createPlan {}", brief(&input));
            never_internal(status, &answer, &what)?;
            if let Some(reason) = plan_must_refuse(&case.input) {
                refused(
                    status,
                    &answer,
                    "BAD_USER_INPUT",
                    &format!("{what} ({reason})"),
                )?;
            }
            if answer["errors"].is_array() {
                let code = codes(&answer)[0].clone();
                prop_assert!(
                    code == "BAD_USER_INPUT" || code == "CONFLICT",
                    "{what}: {}",
                    brief(&answer)
                );
                refused(status, &answer, &code, &what)?;
                prop_assert_eq!(snapshot(&fx.db).await, before, "{} wrote something", what);
                return Ok(());
            }
            created.fetch_add(1, Ordering::Relaxed);
            // Stored exactly as sent.
            let plan = &ok(&answer)["createPlan"];
            for k in ["code", "name", "interval"] {
                prop_assert_eq!(&plan[k], &input[k], "{}", k);
            }
            prop_assert_eq!(
                &plan["intervalCount"],
                &input.get("intervalCount").cloned().unwrap_or(json!(1))
            );
            prop_assert_eq!(
                &plan["trialDays"],
                &input.get("trialDays").cloned().unwrap_or(json!(0))
            );
            let sent = input["prices"].as_array().expect("prices");
            let got = plan["prices"].as_array().expect("prices");
            prop_assert_eq!(sent.len(), got.len());
            let same = |a: &Value, b: &Value| match (a.as_str(), b.as_str()) {
                (Some(a), Some(b)) => {
                    Decimal::from_str_exact(a).ok() == Decimal::from_str_exact(b).ok()
                }
                _ => a.is_null() && b.is_null(),
            };
            let mut tiers = 0;
            for (s, g) in sent.iter().zip(got) {
                prop_assert_eq!(&s["model"], &g["model"]);
                prop_assert!(same(&s["unitAmount"], &g["unitAmount"]), "{} vs {}", s, g);
                prop_assert!(same(&s["packageSize"], &g["packageSize"]), "{} vs {}", s, g);
                prop_assert_eq!(&s["description"], &g["description"]);
                for (st, gt) in s["tiers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .zip(g["tiers"].as_array().into_iter().flatten())
                {
                    tiers += 1;
                    prop_assert!(same(&st["upTo"], &gt["upTo"]), "{} vs {}", st, gt);
                    prop_assert!(
                        same(&st["unitAmount"], &gt["unitAmount"]),
                        "{} vs {}",
                        st,
                        gt
                    );
                    let flat = st.get("flatAmount").cloned().unwrap_or(json!("0"));
                    prop_assert!(same(&flat, &gt["flatAmount"]), "{} vs {}", st, gt);
                }
            }
            let after = snapshot(&fx.db).await;
            for ((table, b), (_, a)) in before.iter().zip(&after) {
                let want = match *table {
                    "plans" | "plan_versions" | "audit_events" => 1,
                    "prices" => sent.len() as i64,
                    "price_tiers" => tiers,
                    _ => 0,
                };
                prop_assert_eq!(a - b, want, "{} grew by {}", table, a - b);
            }
            Ok(())
        })
    });
    println!(
        "bad input [{:?}] createPlan: {} of {CASES} generated plans were valid and stored exactly",
        fx.backend,
        created.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------
// createSubscription.

const CREATE_SUB: &str =
    "mutation($input: CreateSubscriptionInput!) { createSubscription(input: $input) {
    id quantity status billingAnchor startedAt trialEnd currentPeriodStart currentPeriodEnd } }";

fn create_subscription(fx: &Fx, rt: &tokio::runtime::Runtime) {
    let id = |real: fn(&Fx, usize) -> String| {
        move |choice: usize, fx: &Fx| -> Option<Value> {
            match choice {
                0..=5 => Some(json!(real(fx, choice))),
                6 => Some(json!("01a20000-0000-7000-8000-000000000000")),
                7 => Some(json!("")),
                8 => Some(json!("ü☃-\u{0}-id")),
                9 => Some(json!("x".repeat(MB))),
                10 => Some(json!(12)),
                _ => None,
            }
        }
    };
    let customer_id = id(|fx, _| fx.customer.clone());
    let plan_id = id(|fx, choice| fx.plans[choice % fx.plans.len()].clone());
    let instant = prop_oneof![
        3 => Just(None),
        1 => proptest::sample::select(vec![
            NOW,
            "2026-01-16T00:00:00.123456789Z",
            "2026-01-16T00:00:00+14:00",
            "2026-01-31T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-02-30T00:00:00Z",
            "",
            "yesterday",
            "2026-01-16",
        ])
        .prop_map(|s| Some(json!(s))),
    ];
    let strategy = (
        0usize..12,
        0usize..12,
        prop::option::of(field(int_value(), |n| json!(n))),
        prop::option::of(field(int_value(), |n| json!(n))),
        prop::option::of(field(enum_value(&["ANNIVERSARY", "CALENDAR"]), |s| {
            json!(s)
        })),
        instant,
        prop::option::of(prop_oneof![
            4 => Just("fresh".to_string()),
            1 => Just(String::new()),
            1 => Just("k".repeat(256)),
            1 => Just("k".repeat(MB)),
            1 => Just("ключ-🔑".to_string()),
        ]),
    );
    // Half the cases are valid requests (any plan, seats up to the limit,
    // far-away start dates), so what is stored is checked as much as what
    // is refused.
    let plausible = (
        Just(0usize),
        0usize..6,
        prop::option::of(prop_oneof![Just(1i64), 1i64..=1_000_000].prop_map(|n| Some(json!(n)))),
        prop::option::of(prop_oneof![Just(0i64), 0i64..=3650].prop_map(|n| Some(json!(n)))),
        prop::option::of(
            proptest::sample::select(vec!["ANNIVERSARY", "CALENDAR"]).prop_map(|s| Some(json!(s))),
        ),
        prop::option::of(
            proptest::sample::select(vec![
                NOW,
                "2026-01-31T00:00:00Z",
                "2024-02-29T12:00:00-05:00",
                "0001-01-01T00:00:00Z",
                "1970-01-01T00:00:00Z",
                "9999-12-31T23:59:59Z",
            ])
            .prop_map(|s| json!(s)),
        ),
        prop::option::of(Just("fresh".to_string())),
    );
    let strategy = prop_oneof![strategy, plausible];
    let created = AtomicUsize::new(0);
    property(
        "createSubscription",
        fx,
        rt,
        strategy,
        |(customer, plan, quantity, trial, anchor, start, key)| {
            rt.block_on(async {
                let mut input = serde_json::Map::new();
                let put = |input: &mut serde_json::Map<String, Value>, k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        input.insert(k.into(), v);
                    }
                };
                put(&mut input, "customerId", customer_id(customer, fx));
                put(&mut input, "planId", plan_id(plan, fx));
                put(&mut input, "quantity", quantity.flatten());
                put(&mut input, "trialDays", trial.flatten());
                put(&mut input, "billingAnchor", anchor.flatten());
                put(&mut input, "startAt", start);
                // Keys that may be stored get a unique suffix: a key reused
                // by a later case with another body is (rightly) a CONFLICT.
                let key = key.map(|k| match k.as_str() {
                    "fresh" => format!("s-{}", seq()),
                    "ключ-🔑" => format!("ключ-🔑-{}", seq()),
                    _ => k,
                });
                put(&mut input, "idempotencyKey", key.clone().map(Value::from));
                let input = Value::Object(input);
                let before = snapshot(&fx.db).await;
                let (status, answer) = fx.post(CREATE_SUB, &json!({ "input": input })).await;
                let what = format!("createSubscription {}", brief(&input));
                never_internal(status, &answer, &what)?;

                let valid_id = |k: &str, real: &str| input.get(k).and_then(Value::as_str) == Some(real);
                let int_in = |k: &str, range: std::ops::RangeInclusive<i64>| {
                    input.get(k).is_none_or(|v| v.as_i64().is_some_and(|n| range.contains(&n)))
                };
                // GraphQL's ID takes a string or an integer.
                let is_id = |k: &str| input.get(k).is_some_and(|v| v.is_string() || v.is_i64());
                let must_refuse = has_nul(&input)
                    || !is_id("customerId")
                    || !is_id("planId")
                    || !int_in("quantity", 1..=1_000_000)
                    || !int_in("trialDays", 0..=3650)
                    || input
                        .get("billingAnchor")
                        .is_some_and(|a| !matches!(a.as_str(), Some("ANNIVERSARY" | "CALENDAR")))
                    || input
                        .get("startAt")
                        .is_some_and(|t| t.as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).is_none())
                    || key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 255);
                if must_refuse {
                    refused(status, &answer, "BAD_USER_INPUT", &what)?;
                } else if !valid_id("customerId", &fx.customer)
                    || !fx.plans.iter().any(|p| valid_id("planId", p))
                {
                    refused(status, &answer, "NOT_FOUND", &what)?;
                }
                if answer["errors"].is_array() {
                    let code = codes(&answer)[0].clone();
                    refused(status, &answer, &code, &what)?;
                    prop_assert_eq!(snapshot(&fx.db).await, before, "{} wrote something", what);
                    return Ok(());
                }
                created.fetch_add(1, Ordering::Relaxed);
                let sub = &ok(&answer)["createSubscription"];
                prop_assert_eq!(&sub["quantity"], &input.get("quantity").cloned().unwrap_or(json!(1)));
                prop_assert_eq!(
                    &sub["billingAnchor"],
                    &input.get("billingAnchor").cloned().unwrap_or(json!("ANNIVERSARY"))
                );
                let started: DateTime<Utc> = match input.get("startAt").and_then(Value::as_str) {
                    Some(t) => DateTime::parse_from_rfc3339(t)
                        .expect("valid")
                        .with_timezone(&Utc)
                        .trunc_subsecs(6),
                    None => now(),
                };
                prop_assert_eq!(&sub["startedAt"], &json!(rfc3339(started)));
                let trial = input.get("trialDays").and_then(Value::as_i64).unwrap_or(0);
                prop_assert_eq!(&sub["status"], if trial > 0 { "TRIALING" } else { "ACTIVE" });
                let after = snapshot(&fx.db).await;
                for ((table, b), (_, a)) in before.iter().zip(&after) {
                    let want = match *table {
                        "subscriptions" | "subscription_changes" | "outbox" | "audit_events" => 1,
                        "idempotency_keys" => i64::from(key.is_some()),
                        _ => 0,
                    };
                    prop_assert_eq!(a - b, want, "{} grew by {}", table, a - b);
                }
                // What it would bill is computable, whatever the dates.
                let (status, answer) = fx
                    .post(
                        "query($id: ID!) { upcomingInvoice(subscriptionId: $id) { total lines { amount } } }",
                        &json!({"id": sub["id"]}),
                    )
                    .await;
                never_internal(status, &answer, &format!("upcomingInvoice after {what}"))?;
                Ok(())
            })
        },
    );
    println!(
        "bad input [{:?}] createSubscription: {} of {CASES} generated subscriptions were valid and stored exactly",
        fx.backend,
        created.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------
// Literal (not variable) forms: unknown enum values, wrong types, missing
// fields, written straight into the document.

fn literal_forms(fx: &Fx, rt: &tokio::runtime::Runtime) {
    let cases = [
        "mutation { createPlan(input: {code: \"l1\", name: \"L\", interval: FORTNIGHT, prices: [{model: FLAT, unitAmount: \"1\"}]}) { id } }",
        "mutation { createPlan(input: {code: \"l2\", name: \"L\", interval: MONTH, prices: [{model: TIERED, unitAmount: \"1\"}]}) { id } }",
        "mutation { createPlan(input: {code: \"l4\", name: \"L\", interval: MONTH, prices: [{model: FLAT, unitAmount: 1}]}) { id } }",
        "mutation { createPlan(input: {code: \"l5\", name: \"L\", interval: MONTH, prices: [{model: FLAT, unitAmount: \"1e3\"}]}) { id } }",
        "mutation { createPlan(input: {code: \"l6\", name: \"L\", interval: MONTH}) { id } }",
        "mutation { createPlan(input: {code: \"l7\", name: \"L\", interval: MONTH, intervalCount: 1.5, prices: [{model: FLAT, unitAmount: \"1\"}]}) { id } }",
        "mutation { createPlan(input: {code: \"l8\", name: \"L\", interval: MONTH, intervalCount: 99999999999, prices: [{model: FLAT, unitAmount: \"1\"}]}) { id } }",
        "mutation { createPlan(input: {code: \"l9\", name: \"L\", interval: MONTH, prices: [{model: GRADUATED, tiers: [{upTo: \"NaN\", unitAmount: \"1\"}, {unitAmount: \"1\"}]}]}) { id } }",
        "mutation { createPlan(input: {code: \"l10\", name: \"L\", interval: MONTH, prices: [{model: FLAT, unitAmount: \"1\", bogus: 1}]}) { id } }",
        "mutation { createSubscription(input: {customerId: \"c\", planId: \"p\", billingAnchor: SOMETIMES}) { id } }",
        "mutation { createSubscription(input: {customerId: \"c\", planId: \"p\", quantity: \"2\"}) { id } }",
        "mutation { createSubscription(input: {planId: \"p\"}) { id } }",
        "mutation { createSubscription(input: {customerId: \"c\", planId: \"p\", startAt: \"soon\"}) { id } }",
        "mutation { ingestUsage(events: [{idempotencyKey: \"l\", customerExternalId: \"cust\", meterCode: \"calls\", value: \"Infinity\", timestamp: \"2026-01-15T00:00:00Z\"}]) { accepted } }",
        "mutation { ingestUsage(events: [{idempotencyKey: \"l\", customerExternalId: \"cust\", meterCode: \"calls\", value: 1, timestamp: \"2026-01-15T00:00:00Z\"}]) { accepted } }",
        "mutation { ingestUsage(events: [{idempotencyKey: \"l\", customerExternalId: \"cust\", meterCode: \"calls\"}]) { accepted } }",
        "mutation { ingestUsage(events: {idempotencyKey: \"l\"}) { accepted } }",
        "mutation { ingestUsage(events: [{idempotencyKey: \"l\", customerExternalId: \"cust\", meterCode: \"calls\", timestamp: \"2026-01-15T00:00:00Z\"}]) { nope } }",
        "mutation { ingestUsage(events: [ }",
        "mutation { createPlan(input: {code: \"l11\", name: \"\\u0000\", interval: MONTH, prices: [{model: FLAT, unitAmount: \"1\"}]}) { id } }",
        "mutation { createCustomer(input: {externalId: \"nul\\u0000\", name: \"N\"}) { id } }",
        "mutation { ingestUsage(events: [{idempotencyKey: \"l\", customerExternalId: \"cust\", meterCode: \"calls\", timestamp: \"2026-01-15T00:00:00Z\", properties: {note: \"a\\u0000b\"}}]) { accepted } }",
        "query { customer(id: \"\\u0000\") { id } }",
    ];
    let started = std::time::Instant::now();
    rt.block_on(async {
        for query in cases {
            let before = snapshot(&fx.db).await;
            let (status, answer) = fx.post(query, &json!({})).await;
            let what = format!("{:?}: {query}", fx.backend);
            never_internal(status, &answer, &what).unwrap();
            refused(status, &answer, "BAD_USER_INPUT", &what).unwrap();
            assert_eq!(snapshot(&fx.db).await, before, "{what}");
        }
    });
    println!(
        "bad input [{:?}] literal forms: {} documents in {:.1}s",
        fx.backend,
        cases.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Amounts no invoice could hold are refused when they are set, not found
/// by a worker (or `upcomingInvoice`) that can never bill them.
fn amounts_beyond_an_invoice(fx: &Fx, rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        let plan = |code: &str, prices: Value| {
            json!({"input": {"code": code, "name": code, "interval": "MONTH", "prices": prices}})
        };
        for (code, prices) in [
            ("over-flat", json!([{"model": "FLAT", "unitAmount": "92233720368547758.08"}])),
            ("over-max", json!([{"model": "FLAT", "unitAmount": "79228162514264337593543950335"}])),
            ("over-tier", json!([{"model": "VOLUME", "meterCode": "calls", "tiers": [
                {"upTo": "1", "unitAmount": "1"}, {"unitAmount": "1", "flatAmount": "1e30"}]}])),
            ("over-tier2", json!([{"model": "VOLUME", "meterCode": "calls", "tiers": [
                {"upTo": "1", "unitAmount": "1"},
                {"unitAmount": "1", "flatAmount": "10000000000000000000000"}]}])),
        ] {
            let before = snapshot(&fx.db).await;
            let (status, answer) = fx.post(CREATE_PLAN, &plan(code, prices)).await;
            refused(status, &answer, "BAD_USER_INPUT", code).unwrap();
            assert_eq!(snapshot(&fx.db).await, before, "{code}");
        }
        let (_, answer) = fx
            .post(
                CREATE_PLAN,
                &plan("at-the-limit", json!([{"model": "FLAT", "unitAmount": LARGEST_USD}])),
            )
            .await;
        let id = ok(&answer)["createPlan"]["id"].clone();
        let before = snapshot(&fx.db).await;
        let (status, answer) = fx
            .post(
                CREATE_SUB,
                &json!({"input": {"customerId": fx.customer, "planId": id, "quantity": 2}}),
            )
            .await;
        refused(status, &answer, "BAD_USER_INPUT", "2 seats beyond an invoice").unwrap();
        assert_eq!(snapshot(&fx.db).await, before);
        let (_, answer) = fx
            .post(
                CREATE_SUB,
                &json!({"input": {"customerId": fx.customer, "planId": id}}),
            )
            .await;
        let sub = ok(&answer)["createSubscription"]["id"].clone();
        let (status, answer) = fx
            .post(
                "query($id: ID!) { upcomingInvoice(subscriptionId: $id) { total } }",
                &json!({"id": sub}),
            )
            .await;
        never_internal(status, &answer, "upcomingInvoice at the limit").unwrap();
        assert_eq!(ok(&answer)["upcomingInvoice"]["total"], LARGEST_USD, "{answer}");
        usage_beyond_an_invoice(fx).await;
    });
}

/// Usage can add up past what an invoice holds (no single event is wrong):
/// `upcomingInvoice` then answers CONFLICT "cannot be invoiced", with the
/// reason, never INTERNAL; the events stay stored.
async fn usage_beyond_an_invoice(fx: &Fx) {
    let (_, answer) = fx
        .post(
            CREATE_PLAN,
            &json!({"input": {"code": "per-call", "name": "per call", "interval": "MONTH",
                "prices": [{"model": "PER_UNIT", "meterCode": "calls", "unitAmount": "1"}]}}),
        )
        .await;
    let plan = ok(&answer)["createPlan"]["id"].clone();
    let (_, answer) = fx
        .post(
            CREATE_SUB,
            &json!({"input": {"customerId": fx.customer, "planId": plan}}),
        )
        .await;
    let sub = ok(&answer)["createSubscription"]["id"].clone();
    let upcoming = || async {
        fx.post(
            "query($id: ID!) { upcomingInvoice(subscriptionId: $id) { total } }",
            &json!({"id": sub}),
        )
        .await
    };
    let (status, answer) = upcoming().await;
    never_internal(status, &answer, "upcomingInvoice before usage").unwrap();
    // 1e22 USD: a Decimal, but not 64-bit cents. Then two values whose sum
    // leaves Decimal's range (about 7.9e28).
    let tag = seq();
    for (round, values) in [
        ("minor units", vec!["10000000000000000000000"]),
        ("decimal range", vec!["70000000000000000000000000000"; 2]),
    ] {
        let events: Vec<Value> = values
            .iter()
            .enumerate()
            .map(|(i, v)| event(&format!("over-{tag}-{round}-{i}"), json!(v), NOW))
            .collect();
        let (_, answer) = fx.post(INGEST, &json!({"events": events})).await;
        assert_eq!(
            ok(&answer)["ingestUsage"]["accepted"],
            json!(values.len()),
            "{answer}"
        );
        let (status, answer) = upcoming().await;
        refused(status, &answer, "CONFLICT", round).unwrap();
        let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("cannot be invoiced"),
            "{round}: {message}"
        );
    }
}

/// 9,999 good events and one malformed one: nothing is written.
fn big_batch_with_one_bad_event(fx: &Fx, rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        let tag = seq();
        let mut events: Vec<Value> = (0..9_999)
            .map(|i| {
                event(
                    &format!("big-{tag}-{i}"),
                    json!("1"),
                    "2026-01-15T00:00:00Z",
                )
            })
            .collect();
        events.insert(
            5_000,
            event(
                &format!("big-{tag}-bad"),
                json!("1e3"),
                "2026-01-15T00:00:00Z",
            ),
        );
        let before = snapshot(&fx.db).await;
        let (status, answer) = fx.post(INGEST, &json!({ "events": events })).await;
        refused(status, &answer, "BAD_USER_INPUT", "9,999 good + 1 bad").unwrap();
        let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("1e3"),
            "the message names the bad value: {message}"
        );
        assert_eq!(
            snapshot(&fx.db).await,
            before,
            "{:?}: nothing written",
            fx.backend
        );
    });
}

// ---------------------------------------------------------------------------

async fn setup(env: &mut TestEnv) -> (Api, Fx) {
    // No workers: the only writes are the calls under test.
    env.config.embedded_workers = false;
    let api = Api::start(env).await;
    let (_, admin) = api.org("Fuzz", Some(NOW)).await;
    let key = ok(&admin
        .graphql(
            "mutation { createApiKey(role: ADMIN) { apiKey } }",
            json!({}),
        )
        .await)["createApiKey"]["apiKey"]
        .as_str()
        .expect("key")
        .to_string();
    let customer = api_support::create_customer(&admin, "cust").await;
    api_support::create_meter(&admin, "calls", "SUM").await;
    let plans = vec![
        api_support::create_plan(&admin, "basic", api_support::flat("10.00")).await,
        api_support::create_plan(&admin, "huge", api_support::flat(LARGEST_USD)).await,
        api_support::create_plan(
            &admin,
            "tiered",
            json!([{"model": "GRADUATED", "meterCode": "calls", "tiers": [
                {"upTo": "10", "unitAmount": LARGEST_USD},
                {"unitAmount": "0.000000000001", "flatAmount": LARGEST_USD}]}]),
        )
        .await,
    ];
    let fx = Fx {
        url: format!("http://{}/graphql", api.server.addr),
        http: reqwest::Client::new(),
        key,
        db: api.db().clone(),
        customer,
        plans,
        backend: env.backend,
    };
    (api, fx)
}

/// One test per property family, each on every backend.
fn on_every_backend(run: impl Fn(&Fx, &tokio::runtime::Runtime)) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for mut env in rt.block_on(TestEnv::all()) {
        let (api, fx) = rt.block_on(setup(&mut env));
        run(&fx, &rt);
        rt.block_on(async {
            api.stop().await;
            env.cleanup().await;
        });
    }
}

#[test]
fn usage_values_are_exact_or_refused() {
    on_every_backend(|fx, rt| {
        value_texts(fx, rt);
        big_batch_with_one_bad_event(fx, rt);
    });
}

#[test]
fn a_malformed_event_refuses_its_whole_batch() {
    on_every_backend(malformed_event_spoils_the_batch);
}

#[test]
fn usage_batches_follow_the_outcome_rules() {
    on_every_backend(|fx, rt| {
        batch_model(fx, rt);
        window_edges(fx, rt);
    });
}

#[test]
fn plans_are_stored_exactly_or_not_at_all() {
    on_every_backend(create_plan);
}

#[test]
fn subscriptions_are_stored_exactly_or_not_at_all() {
    on_every_backend(create_subscription);
}

#[test]
fn literal_documents_are_refused_cleanly() {
    on_every_backend(|fx, rt| {
        literal_forms(fx, rt);
        amounts_beyond_an_invoice(fx, rt);
    });
}
