//! Tenant isolation and role rules, proven by walking the whole GraphQL
//! schema by introspection (never a hand-written list of operations).
//!
//! Two organizations (alpha and bravo) each get a real row of every kind an
//! operation can take an `ID` of: customer, meter, plan (with prices),
//! subscription, usage, an invoice and a job made by the real workers, and
//! API keys. Then, over HTTP, on every backend:
//!
//! 1. **Cross-tenant walk**: every Query and Mutation field that takes an
//!    `ID` (as an argument or inside an input object) is called by alpha
//!    with bravo's IDs — all at once and one position at a time, the other
//!    positions holding alpha's own valid IDs. Nothing of bravo's may appear
//!    in any answer, every error is NOT_FOUND (SPEC: another tenant's IDs
//!    behave as if they did not exist), a read answers null or an empty
//!    list, no mutation succeeds, and bravo's rows (and alpha's) are exactly
//!    as before.
//! 2. **Role walk**: every operation is called anonymously and with each
//!    role's key (READ_ONLY, INGEST, OPERATOR, ADMIN). Refused calls get
//!    UNAUTHENTICATED / FORBIDDEN and change nothing (a READ_ONLY key changes
//!    nothing at all); allowed calls are never refused; no call ever answers
//!    INTERNAL or HTTP 500.
//!
//! An operation taking an `ID` the walk cannot map to a kind of row fails the
//! test, so a new operation cannot silently escape it.

mod api_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use api_support::{Api, ok, snapshot};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use tests::TestEnv;

/// The instant both organizations' test clocks are frozen at.
const NOW: &str = "2026-01-16T00:00:00Z";

// ---------------------------------------------------------------------------
// Raw HTTP: the status code matters (never 500), so not `Client::graphql`.

struct Http {
    url: String,
    http: reqwest::Client,
}

impl Http {
    fn new(addr: std::net::SocketAddr) -> Http {
        Http {
            url: format!("http://{addr}/graphql"),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, key: Option<&str>, query: &str, variables: &Value) -> (u16, Value) {
        let mut request = self
            .http
            .post(&self.url)
            .json(&json!({"query": query, "variables": variables}));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("POST reaches the server");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("HTTP {status}: not JSON: {text}\nquery: {query}"));
        (status, body)
    }
}

fn error_codes(answer: &Value) -> Vec<String> {
    answer["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    e["extensions"]["code"]
                        .as_str()
                        .unwrap_or("<no code>")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Introspection.

const INTROSPECT: &str = r#"
query {
  __schema {
    queryType { name }
    mutationType { name }
    types {
      kind name
      fields(includeDeprecated: true) { name args { name defaultValue type { ...T } } type { ...T } }
      inputFields { name defaultValue type { ...T } }
      enumValues(includeDeprecated: true) { name }
    }
  }
}
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }
"#;

#[derive(Clone, Debug)]
struct TypeRef {
    kind: String,
    name: Option<String>,
    of_type: Option<Box<TypeRef>>,
}

impl TypeRef {
    fn parse(v: &Value) -> TypeRef {
        TypeRef {
            kind: v["kind"].as_str().expect("kind").to_string(),
            name: v["name"].as_str().map(str::to_string),
            of_type: v
                .get("ofType")
                .filter(|t| !t.is_null())
                .map(|t| Box::new(TypeRef::parse(t))),
        }
    }

    fn non_null(&self) -> bool {
        self.kind == "NON_NULL"
    }

    /// The named type under any NON_NULL / LIST wrappers.
    fn named(&self) -> &str {
        match &self.of_type {
            Some(inner) => inner.named(),
            None => self.name.as_deref().expect("a named type"),
        }
    }

    /// The type as written in a variable definition.
    fn render(&self) -> String {
        match self.kind.as_str() {
            "NON_NULL" => format!("{}!", self.of_type.as_ref().expect("ofType").render()),
            "LIST" => format!("[{}]", self.of_type.as_ref().expect("ofType").render()),
            _ => self.name.clone().expect("a named type"),
        }
    }
}

#[derive(Clone, Debug)]
struct InputValue {
    name: String,
    ty: TypeRef,
    has_default: bool,
}

impl InputValue {
    fn parse(v: &Value) -> InputValue {
        InputValue {
            name: v["name"].as_str().expect("name").to_string(),
            ty: TypeRef::parse(&v["type"]),
            has_default: !v["defaultValue"].is_null(),
        }
    }

    /// Required: non-null without a default.
    fn required(&self) -> bool {
        self.ty.non_null() && !self.has_default
    }
}

#[derive(Clone, Debug)]
struct Field {
    name: String,
    args: Vec<InputValue>,
    ty: TypeRef,
}

#[derive(Clone, Debug)]
struct TypeDef {
    kind: String,
    fields: Vec<Field>,
    input_fields: Vec<InputValue>,
    enum_values: Vec<String>,
}

struct Schema {
    query: String,
    mutation: String,
    types: BTreeMap<String, TypeDef>,
}

impl Schema {
    fn parse(answer: &Value) -> Schema {
        let schema = &answer["data"]["__schema"];
        let mut types = BTreeMap::new();
        for t in schema["types"].as_array().expect("types") {
            let list = |key: &str| t[key].as_array().cloned().unwrap_or_default();
            types.insert(
                t["name"].as_str().expect("type name").to_string(),
                TypeDef {
                    kind: t["kind"].as_str().expect("kind").to_string(),
                    fields: list("fields")
                        .iter()
                        .map(|f| Field {
                            name: f["name"].as_str().expect("field name").to_string(),
                            args: f["args"]
                                .as_array()
                                .expect("args")
                                .iter()
                                .map(InputValue::parse)
                                .collect(),
                            ty: TypeRef::parse(&f["type"]),
                        })
                        .collect(),
                    input_fields: list("inputFields").iter().map(InputValue::parse).collect(),
                    enum_values: list("enumValues")
                        .iter()
                        .map(|e| e["name"].as_str().expect("enum value").to_string())
                        .collect(),
                },
            );
        }
        Schema {
            query: schema["queryType"]["name"]
                .as_str()
                .expect("query type")
                .into(),
            mutation: schema["mutationType"]["name"]
                .as_str()
                .expect("mutation type")
                .into(),
            types,
        }
    }

    fn def(&self, name: &str) -> &TypeDef {
        self.types
            .get(name)
            .unwrap_or_else(|| panic!("introspection lists no type {name}"))
    }

    /// Every root operation: (is_mutation, field).
    fn operations(&self) -> Vec<(bool, Field)> {
        let mut out = Vec::new();
        for (mutation, root) in [(false, &self.query), (true, &self.mutation)] {
            for field in &self.def(root).fields {
                if !field.name.starts_with("__") {
                    out.push((mutation, field.clone()));
                }
            }
        }
        out
    }

    /// A selection of the scalar fields of `ty` and, `depth` levels down, of
    /// its object fields (fields with required arguments are left out).
    fn selection(&self, ty: &TypeRef, depth: usize) -> String {
        let def = self.def(ty.named());
        match def.kind.as_str() {
            "OBJECT" => {
                let mut parts = Vec::new();
                for f in &def.fields {
                    if f.name.starts_with("__") || f.args.iter().any(InputValue::required) {
                        continue;
                    }
                    let inner = self.def(f.ty.named());
                    if inner.kind == "OBJECT" {
                        if depth > 0 {
                            parts.push(format!("{} {}", f.name, self.selection(&f.ty, depth - 1)));
                        }
                    } else {
                        parts.push(f.name.clone());
                    }
                }
                if parts.is_empty() {
                    parts.push("__typename".into());
                }
                format!("{{ {} }}", parts.join(" "))
            }
            "SCALAR" | "ENUM" => String::new(),
            other => panic!("cannot select from a {other} ({})", ty.named()),
        }
    }
}

// ---------------------------------------------------------------------------
// Kinds of rows an ID may point at.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Customer,
    Meter,
    Plan,
    Subscription,
    Invoice,
    Job,
    ApiKey,
    /// Any row (e.g. `auditEvents(entityId)`): every kind is tried.
    Any,
}

const CONCRETE: [Kind; 7] = [
    Kind::Customer,
    Kind::Meter,
    Kind::Plan,
    Kind::Subscription,
    Kind::Invoice,
    Kind::Job,
    Kind::ApiKey,
];

fn kind_of_word(word: &str) -> Option<Kind> {
    let w = word.to_ascii_lowercase();
    Some(match w.as_str() {
        "customer" => Kind::Customer,
        "meter" => Kind::Meter,
        "plan" => Kind::Plan,
        "subscription" => Kind::Subscription,
        "invoice" | "upcominginvoice" => Kind::Invoice,
        "job" => Kind::Job,
        "apikey" | "key" => Kind::ApiKey,
        "entity" => Kind::Any,
        _ => return None,
    })
}

/// Which kind of row the `ID` named `arg` of operation `op` points at.
fn resolve_kind(op: &Field, arg: &str) -> Kind {
    if let Some(prefix) = arg.strip_suffix("Id").filter(|p| !p.is_empty())
        && let Some(kind) = kind_of_word(prefix)
    {
        return kind;
    }
    if arg == "id" {
        // The return type names the row (`invoice(id): Invoice`), else the
        // operation's name does (`revokeApiKey(id): Boolean`).
        if let Some(kind) = kind_of_word(op.ty.named()) {
            return kind;
        }
        let name = op.name.to_ascii_lowercase();
        for (word, kind) in [
            ("apikey", Kind::ApiKey),
            ("subscription", Kind::Subscription),
            ("invoice", Kind::Invoice),
            ("customer", Kind::Customer),
            ("meter", Kind::Meter),
            ("plan", Kind::Plan),
            ("job", Kind::Job),
        ] {
            if name.contains(word) {
                return kind;
            }
        }
    }
    panic!(
        "the tenant walk cannot tell what kind of row `{}` of `{}` points at: \
         teach resolve_kind about it so the operation is walked",
        arg, op.name
    );
}

/// One organization's rows, its keys and the text of everything it owns.
struct Org {
    id: String,
    admin: String,
    keys: BTreeMap<&'static str, String>,
    ids: BTreeMap<Kind, String>,
}

impl Org {
    fn id_of(&self, kind: Kind) -> String {
        self.ids
            .get(&kind)
            .unwrap_or_else(|| panic!("no {kind:?} id"))
            .clone()
    }
}

// ---------------------------------------------------------------------------
// Building calls.

/// An `ID` slot in a call: where it is and what it points at.
#[derive(Clone, Debug)]
struct Slot {
    path: String,
    kind: Kind,
}

struct Builder<'a> {
    schema: &'a Schema,
    op: &'a Field,
    /// The id each slot gets.
    choose: &'a dyn Fn(&Slot) -> String,
    slots: Vec<Slot>,
}

impl Builder<'_> {
    fn value(&mut self, path: &str, name: &str, ty: &TypeRef) -> Value {
        match ty.kind.as_str() {
            "NON_NULL" => self.value(path, name, ty.of_type.as_ref().expect("ofType")),
            "LIST" => Value::Array(vec![self.value(
                &format!("{path}[0]"),
                name,
                ty.of_type.as_ref().expect("ofType"),
            )]),
            "ENUM" => {
                let def = self.schema.def(ty.named());
                json!(def.enum_values.first().expect("an enum value"))
            }
            "INPUT_OBJECT" => {
                let def = self.schema.def(ty.named()).clone();
                let mut object = serde_json::Map::new();
                for field in &def.input_fields {
                    if field.required() || field.ty.named() == "ID" {
                        let child = format!("{path}.{}", field.name);
                        object.insert(
                            field.name.clone(),
                            self.value(&child, &field.name, &field.ty),
                        );
                    }
                }
                Value::Object(object)
            }
            "SCALAR" => match ty.named() {
                "ID" => {
                    let slot = Slot {
                        path: path.to_string(),
                        kind: resolve_kind(self.op, name),
                    };
                    let id = (self.choose)(&slot);
                    self.slots.push(slot);
                    json!(id)
                }
                "String" => json!("x"),
                "Int" => json!(1),
                "Float" => json!(1.0),
                "Boolean" => json!(false),
                "DateTime" => json!(NOW),
                "Decimal" => json!("1"),
                "JSON" => json!({}),
                other => panic!(
                    "the tenant walk cannot build a value of scalar {other} for `{}` of `{}`",
                    name, self.op.name
                ),
            },
            other => panic!("unexpected input kind {other}"),
        }
    }
}

/// The query text and variables of one call of `op`.
fn build_call(
    schema: &Schema,
    mutation: bool,
    op: &Field,
    choose: &dyn Fn(&Slot) -> String,
) -> (String, Value, Vec<Slot>) {
    let mut builder = Builder {
        schema,
        op,
        choose,
        slots: Vec::new(),
    };
    let mut defs = Vec::new();
    let mut args = Vec::new();
    let mut variables = serde_json::Map::new();
    for arg in &op.args {
        let is_id = arg.ty.named() == "ID";
        let holds_id = schema_input_holds_id(schema, &arg.ty, &mut BTreeSet::new());
        // Required arguments, every ID argument, and (to keep pages small) `first`.
        if arg.required() || is_id || holds_id {
            let value = builder.value(&arg.name, &arg.name, &arg.ty);
            defs.push(format!("${}: {}", arg.name, arg.ty.render()));
            args.push(format!("{0}: ${0}", arg.name));
            variables.insert(arg.name.clone(), value);
        } else if arg.name == "first" && arg.ty.named() == "Int" {
            args.push("first: 5".into());
        }
    }
    let keyword = if mutation { "mutation" } else { "query" };
    let defs = if defs.is_empty() {
        String::new()
    } else {
        format!("({})", defs.join(", "))
    };
    let args = if args.is_empty() {
        String::new()
    } else {
        format!("({})", args.join(", "))
    };
    let selection = schema.selection(&op.ty, 3);
    let query = format!("{keyword} Walk{defs} {{ {}{args} {selection} }}", op.name);
    (query, Value::Object(variables), builder.slots)
}

/// Does this input type hold an `ID` somewhere inside (so its optional
/// fields still get built)?
fn schema_input_holds_id(schema: &Schema, ty: &TypeRef, seen: &mut BTreeSet<String>) -> bool {
    let name = ty.named();
    if name == "ID" {
        return true;
    }
    let def = schema.def(name);
    if def.kind != "INPUT_OBJECT" || !seen.insert(name.to_string()) {
        return false;
    }
    def.input_fields
        .iter()
        .any(|f| schema_input_holds_id(schema, &f.ty, seen))
}

fn takes_id(schema: &Schema, op: &Field) -> bool {
    op.args
        .iter()
        .any(|a| schema_input_holds_id(schema, &a.ty, &mut BTreeSet::new()))
}

// ---------------------------------------------------------------------------
// Database state of one organization, row by row.

macro_rules! rows_of {
    ($db:expr, $org:expr, $out:expr, $($module:ident),+ $(,)?) => {
        $(
            for row in entity::$module::Entity::find()
                .filter(entity::$module::Column::OrganizationId.eq($org))
                .all($db)
                .await
                .expect(concat!("load ", stringify!($module)))
            {
                $out.push((
                    stringify!($module),
                    serde_json::to_value(&row).expect("rows serialize"),
                ));
            }
        )+
    };
}

/// Every row the organization owns, as JSON, in a stable order.
async fn org_rows(db: &DatabaseConnection, org: &str) -> Vec<(&'static str, Value)> {
    let mut out: Vec<(&'static str, Value)> = Vec::new();
    for row in entity::organization::Entity::find_by_id(org.to_string())
        .all(db)
        .await
        .expect("load organization")
    {
        out.push((
            "organization",
            serde_json::to_value(&row).expect("rows serialize"),
        ));
    }
    rows_of!(
        db,
        org,
        out,
        api_key,
        audit_event,
        customer,
        idempotency_key,
        invoice,
        invoice_line,
        invoice_sequence,
        job_run,
        meter,
        outbox,
        pending_invoice_item,
        plan,
        plan_version,
        price,
        price_tier,
        subscription,
        subscription_change,
        usage_event,
    );
    out.sort_by_key(|(table, row)| (*table, row.to_string()));
    out
}

/// Identifying text of an organization's rows (ids, codes, names, hashes)
/// that does not occur in `other`'s rows: finding one of them in an answer
/// to the other organization is a leak.
fn private_tokens(rows: &[(&str, Value)], other: &[(&str, Value)]) -> BTreeSet<String> {
    fn collect(rows: &[(&str, Value)]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (_, row) in rows {
            for (key, value) in row.as_object().expect("a row is an object") {
                let identifying = key == "id"
                    || key.ends_with("_id")
                    || key.ends_with("hash")
                    || [
                        "code",
                        "name",
                        "external_id",
                        "email",
                        "idempotency_key",
                        "key",
                        "job_key",
                        "key_prefix",
                        "description",
                    ]
                    .contains(&key.as_str());
                if let (true, Some(text)) = (identifying, value.as_str())
                    && text.len() >= 6
                {
                    out.insert(text.to_string());
                }
            }
        }
        out
    }
    let mine = collect(rows);
    let theirs = collect(other);
    mine.difference(&theirs).cloned().collect()
}

// ---------------------------------------------------------------------------
// Fixtures.

const INGEST_Q: &str = "mutation($events: [UsageEventInput!]!) { ingestUsage(events: $events) { accepted rejected results { outcome code } } }";

/// Runs an operation that must succeed and returns its `data`.
async fn must(http: &Http, key: &str, query: &str, variables: Value) -> Value {
    let (status, answer) = http.post(Some(key), query, &variables).await;
    assert_eq!(status, 200, "{answer}");
    ok(&answer).clone()
}

async fn make_org(api: &Api, http: &Http, label: &str) -> Org {
    let tag = format!("{label}-{}", tests::unique_suffix());
    let data = must(
        http,
        &api.admin_token,
        "mutation($input: CreateOrganizationInput!) { createOrganization(input: $input) { organization { id } apiKey } }",
        json!({"input": {"name": format!("{tag}-org"), "currency": "USD", "testClockStart": NOW}}),
    )
    .await;
    let org_id = data["createOrganization"]["organization"]["id"]
        .as_str()
        .expect("org id")
        .to_string();
    let admin = data["createOrganization"]["apiKey"]
        .as_str()
        .expect("key")
        .to_string();
    let mut keys = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for role in ["OPERATOR", "INGEST", "READ_ONLY", "SPARE"] {
        let as_role = if role == "SPARE" { "READ_ONLY" } else { role };
        let data = must(
            http,
            &admin,
            "mutation($role: ApiKeyRole!) { createApiKey(role: $role) { id apiKey } }",
            json!({"role": as_role}),
        )
        .await;
        let payload = &data["createApiKey"];
        if role == "SPARE" {
            ids.insert(
                Kind::ApiKey,
                payload["id"].as_str().expect("id").to_string(),
            );
        } else {
            keys.insert(role, payload["apiKey"].as_str().expect("key").to_string());
        }
    }
    let data = must(
        http,
        &admin,
        "mutation($input: CreateMeterInput!) { createMeter(input: $input) { id } }",
        json!({"input": {"code": format!("{tag}-meter"), "name": format!("{tag} meter"), "aggregation": "SUM"}}),
    )
    .await;
    ids.insert(
        Kind::Meter,
        data["createMeter"]["id"].as_str().expect("id").to_string(),
    );
    let data = must(
        http,
        &admin,
        "mutation($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }",
        json!({"input": {"externalId": format!("{tag}-customer"), "name": format!("{tag} Customer"),
                         "email": format!("{tag}@example.com")}}),
    )
    .await;
    let customer = data["createCustomer"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    ids.insert(Kind::Customer, customer.clone());
    let data = must(
        http,
        &admin,
        "mutation($input: CreatePlanInput!) { createPlan(input: $input) { id } }",
        json!({"input": {"code": format!("{tag}-plan"), "name": format!("{tag} plan"), "interval": "MONTH",
            "prices": [
                {"model": "FLAT", "unitAmount": "10.00", "description": format!("{tag} base fee")},
                {"model": "PER_UNIT", "meterCode": format!("{tag}-meter"), "unitAmount": "0.5",
                 "description": format!("{tag} calls")}
            ]}}),
    )
    .await;
    let plan = data["createPlan"]["id"].as_str().expect("id").to_string();
    ids.insert(Kind::Plan, plan.clone());
    let data = must(
        http,
        &admin,
        "mutation($input: CreateSubscriptionInput!) { createSubscription(input: $input) { id } }",
        json!({"input": {"customerId": customer, "planId": plan, "quantity": 2,
                         "idempotencyKey": format!("{tag}-idem")}}),
    )
    .await;
    ids.insert(
        Kind::Subscription,
        data["createSubscription"]["id"]
            .as_str()
            .expect("id")
            .to_string(),
    );
    let events: Vec<Value> = (0..3)
        .map(|i| {
            json!({"idempotencyKey": format!("{tag}-usage-{i}"), "customerExternalId": format!("{tag}-customer"),
                   "meterCode": format!("{tag}-meter"), "value": "7", "timestamp": "2026-01-15T00:00:00Z",
                   "properties": {"marker": format!("{tag}-props")}})
        })
        .collect();
    let data = must(http, &admin, INGEST_Q, json!({"events": events})).await;
    assert_eq!(data["ingestUsage"]["accepted"], 3, "{data}");
    Org {
        id: org_id,
        admin,
        keys,
        ids,
    }
}

/// Waits until the workers have invoiced the organization's subscription
/// and no job is due or running; fills in the invoice and job ids.
async fn settle(http: &Http, org: &mut Org) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, answer) = http
            .post(
                Some(&org.admin),
                "{ invoices { nodes { id } } jobs(first: 100) { nodes { id state runAt } } }",
                &json!({}),
            )
            .await;
        let data = ok(&answer);
        let invoice = data["invoices"]["nodes"][0]["id"].as_str();
        let jobs = data["jobs"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // RFC 3339 UTC instants of one format compare as text.
        let pending = jobs.iter().any(|j| {
            j["state"] == "RUNNING"
                || j["state"] == "FAILED"
                || (j["state"] == "QUEUED" && j["runAt"].as_str().is_some_and(|t| t <= NOW))
        });
        let done = jobs.iter().find(|j| j["state"] == "SUCCEEDED");
        if let (Some(invoice), Some(job), false) = (invoice, done, pending) {
            org.ids.insert(Kind::Invoice, invoice.to_string());
            org.ids
                .insert(Kind::Job, job["id"].as_str().expect("job id").to_string());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the workers did not invoice the fixture subscription: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------
// Role rules (SPEC §3 "Tenancy, auth, audit"; api::graphql::auth::roles).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Allowed,
    Unauthenticated,
    Forbidden,
}

const ROLES: [&str; 5] = ["ANONYMOUS", "READ_ONLY", "INGEST", "OPERATOR", "ADMIN"];

fn rule(role: &str, mutation: bool, op: &str) -> Expect {
    if op == "apiVersion" {
        return Expect::Allowed;
    }
    if role == "ANONYMOUS" || op == "createOrganization" {
        // createOrganization takes the server's bootstrap token, never a key.
        return Expect::Unauthenticated;
    }
    let allowed = if !mutation {
        match op {
            // Every key may see whose it is.
            "organization" => true,
            // Jobs are operations: OPERATOR and ADMIN.
            "jobs" => matches!(role, "OPERATOR" | "ADMIN"),
            _ => matches!(role, "READ_ONLY" | "OPERATOR" | "ADMIN"),
        }
    } else {
        match role {
            "ADMIN" => true,
            // OPERATOR: ops — invoices and jobs.
            "OPERATOR" => op.contains("Invoice") || op.ends_with("Job"),
            // INGEST: usage only.
            "INGEST" => op == "ingestUsage",
            _ => false,
        }
    };
    if allowed {
        Expect::Allowed
    } else {
        Expect::Forbidden
    }
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_isolates_tenants_and_enforces_roles() {
    for mut env in TestEnv::all().await {
        let started = Instant::now();
        let backend = env.backend;

        // Fixtures through the real workers (invoices and jobs are theirs)...
        env.config.embedded_workers = true;
        let api = Api::start(&env).await;
        let http = Http::new(api.server.addr);
        let mut alpha = make_org(&api, &http, "alpha").await;
        let mut bravo = make_org(&api, &http, "bravo").await;
        settle(&http, &mut alpha).await;
        settle(&http, &mut bravo).await;
        api.stop().await;

        // ...then a server without workers, so nothing moves but the calls.
        env.config.embedded_workers = false;
        let api = Api::start(&env).await;
        let http = Http::new(api.server.addr);
        let db = api.db().clone();

        let (_, introspection) = http.post(None, INTROSPECT, &json!({})).await;
        let schema = Schema::parse(&introspection);
        let operations = schema.operations();
        let id_ops: Vec<&(bool, Field)> = operations
            .iter()
            .filter(|(_, op)| takes_id(&schema, op))
            .collect();
        assert!(
            id_ops.len() >= 15,
            "introspection found only {} ID-taking operations",
            id_ops.len()
        );

        let bravo_before = org_rows(&db, &bravo.id).await;
        let alpha_before = org_rows(&db, &alpha.id).await;
        let counts_before = snapshot(&db).await;
        let mut secrets = private_tokens(&bravo_before, &alpha_before);
        secrets.extend(bravo.keys.values().cloned());
        secrets.insert(bravo.admin.clone());
        assert!(
            secrets.iter().any(|s| s.contains("bravo")) && secrets.contains(&bravo.id),
            "the leak scan knows bravo's names and ids: {secrets:?}"
        );
        // A token found in an answer is a leak, unless the request itself
        // carried it (an id echoed back in a NOT_FOUND is not a leak; the
        // code and null data are checked separately).
        let leak = |answer: &Value, request: &Value| -> Option<String> {
            let text = answer.to_string();
            let sent = request.to_string();
            secrets
                .iter()
                .find(|s| text.contains(s.as_str()) && !sent.contains(s.as_str()))
                .cloned()
        };

        // 1. Cross-tenant walk.
        let mut calls = 0usize;
        for role in ["ADMIN", "OPERATOR"] {
            let key = if role == "ADMIN" {
                alpha.admin.clone()
            } else {
                alpha.keys[role].clone()
            };
            for (mutation, op) in &id_ops {
                if rule(role, *mutation, &op.name) != Expect::Allowed {
                    continue; // the role walk below covers refusals
                }
                // Discover the slots (and their kinds) once, with alpha's ids.
                let (_, _, slots) =
                    build_call(&schema, *mutation, op, &|s: &Slot| own_id(&alpha, s.kind));
                // Variants: every slot bravo's; and each slot alone bravo's.
                let mut variants: Vec<(Option<String>, Kind)> = Vec::new();
                for kind in expand(slots.iter().map(|s| s.kind)) {
                    variants.push((None, kind));
                }
                if slots.len() > 1 {
                    for slot in &slots {
                        for kind in expand([slot.kind]) {
                            variants.push((Some(slot.path.clone()), kind));
                        }
                    }
                }
                for (only, any_kind) in variants {
                    let choose = |s: &Slot| {
                        let kind = if s.kind == Kind::Any {
                            any_kind
                        } else {
                            s.kind
                        };
                        match &only {
                            Some(path) if *path != s.path => own_id(&alpha, kind),
                            _ => bravo.id_of(kind),
                        }
                    };
                    let (query, variables, _) = build_call(&schema, *mutation, op, &choose);
                    let (status, answer) = http.post(Some(&key), &query, &variables).await;
                    calls += 1;
                    let what = format!(
                        "{backend:?} {role} {}({}) with bravo's ids{}: HTTP {status} {answer}\nquery: {query}\nvariables: {variables}",
                        op.name,
                        slots
                            .iter()
                            .map(|s| s.path.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        only.as_deref()
                            .map(|p| format!(" at {p}"))
                            .unwrap_or_default(),
                    );
                    assert_ne!(status, 500, "{what}");
                    if let Some(token) = leak(&answer, &variables) {
                        panic!("LEAK of {token:?}: {what}");
                    }
                    let codes = error_codes(&answer);
                    if codes.is_empty() {
                        assert!(
                            !mutation,
                            "a mutation succeeded on another tenant's id: {what}"
                        );
                        assert!(
                            is_nothing(&answer["data"][&op.name]),
                            "a read found something with another tenant's id: {what}"
                        );
                    } else {
                        assert!(
                            codes.iter().all(|c| c == "NOT_FOUND"),
                            "another tenant's id must be NOT_FOUND: {what}"
                        );
                        assert!(
                            answer["data"].is_null() || answer["data"][&op.name].is_null(),
                            "{what}"
                        );
                    }
                }
            }
        }
        assert_eq!(
            org_rows(&db, &bravo.id).await,
            bravo_before,
            "{backend:?}: bravo's rows changed"
        );
        assert_eq!(
            org_rows(&db, &alpha.id).await,
            alpha_before,
            "{backend:?}: alpha's rows changed by calls that all failed"
        );
        assert_eq!(snapshot(&db).await, counts_before, "{backend:?}");

        // Usage names customers and meters by code, not ID: bravo's codes are unknown to alpha.
        let bravo_customer = bravo_before
            .iter()
            .find(|(t, _)| *t == "customer")
            .and_then(|(_, r)| r["external_id"].as_str())
            .expect("bravo's customer")
            .to_string();
        let bravo_meter = bravo_before
            .iter()
            .find(|(t, _)| *t == "meter")
            .and_then(|(_, r)| r["code"].as_str())
            .expect("bravo's meter")
            .to_string();
        let (status, answer) = http
            .post(
                Some(&alpha.admin),
                INGEST_Q,
                &json!({"events": [{"idempotencyKey": "cross", "customerExternalId": bravo_customer,
                                    "meterCode": bravo_meter, "timestamp": "2026-01-15T00:00:00Z"}]}),
            )
            .await;
        calls += 1;
        assert_eq!(status, 200);
        assert_eq!(
            ok(&answer)["ingestUsage"]["results"][0]["code"],
            "UNKNOWN_CUSTOMER",
            "{answer}"
        );
        assert_eq!(org_rows(&db, &bravo.id).await, bravo_before);
        assert_eq!(snapshot(&db).await, counts_before);

        // 2. Role walk over every operation, with alpha's own ids.
        let mut role_calls = 0usize;
        for role in ROLES {
            let key = match role {
                "ANONYMOUS" => None,
                "ADMIN" => Some(alpha.admin.clone()),
                r => Some(alpha.keys[r].clone()),
            };
            let mut ordered: Vec<&(bool, Field)> = operations.iter().collect();
            // Refused calls first, so "nothing changed" covers all of them.
            ordered.sort_by_key(|(m, op)| rule(role, *m, &op.name) == Expect::Allowed);
            let before_all = (
                org_rows(&db, &alpha.id).await,
                org_rows(&db, &bravo.id).await,
                snapshot(&db).await,
            );
            let mut checked_refusals = false;
            for (mutation, op) in ordered {
                let expect = rule(role, *mutation, &op.name);
                if expect == Expect::Allowed && !checked_refusals {
                    checked_refusals = true;
                    let now = (
                        org_rows(&db, &alpha.id).await,
                        org_rows(&db, &bravo.id).await,
                        snapshot(&db).await,
                    );
                    assert!(
                        now == before_all,
                        "{backend:?} {role}: refused calls changed rows"
                    );
                }
                let (query, variables, _) =
                    build_call(&schema, *mutation, op, &|s: &Slot| own_id(&alpha, s.kind));
                let (status, answer) = http.post(key.as_deref(), &query, &variables).await;
                role_calls += 1;
                let what = format!(
                    "{backend:?} {role} {}: HTTP {status} {answer}\nquery: {query}\nvariables: {variables}",
                    op.name
                );
                assert_ne!(status, 500, "{what}");
                if let Some(token) = leak(&answer, &variables) {
                    panic!("LEAK of {token:?}: {what}");
                }
                let codes = error_codes(&answer);
                assert!(
                    !codes
                        .iter()
                        .any(|c| c == "INTERNAL" || c == "INTERNAL_SERVER_ERROR"),
                    "{what}"
                );
                match expect {
                    Expect::Allowed => assert!(
                        !codes
                            .iter()
                            .any(|c| c == "FORBIDDEN" || c == "UNAUTHENTICATED"),
                        "{role} may call {}: {what}",
                        op.name
                    ),
                    Expect::Forbidden => assert_eq!(codes, vec!["FORBIDDEN"], "{what}"),
                    Expect::Unauthenticated => {
                        assert_eq!(codes, vec!["UNAUTHENTICATED"], "{what}")
                    }
                }
                if expect != Expect::Allowed {
                    assert!(
                        answer["data"].is_null() || answer["data"][&op.name].is_null(),
                        "{what}"
                    );
                }
            }
            let after = (
                org_rows(&db, &alpha.id).await,
                org_rows(&db, &bravo.id).await,
                snapshot(&db).await,
            );
            if !checked_refusals || matches!(role, "ANONYMOUS" | "READ_ONLY") {
                assert!(after == before_all, "{backend:?} {role}: rows changed");
            }
            // Whatever alpha's keys did, bravo's rows never moved.
            assert_eq!(
                after.1, bravo_before,
                "{backend:?} {role}: bravo's rows changed"
            );
        }

        println!(
            "tenant walk [{backend:?}]: {} operations walked ({} take an ID), {} cross-tenant calls, \
             {} role calls ({} roles + anonymous), 0 leaks, bravo unchanged ({} rows), {:.1}s",
            operations.len(),
            id_ops.len(),
            calls,
            role_calls,
            ROLES.len() - 1,
            bravo_before.len(),
            started.elapsed().as_secs_f64()
        );
        api.stop().await;
        env.cleanup().await;
    }
}

/// Alpha's own id of `kind` (an `Any` slot gets alpha's customer).
fn own_id(org: &Org, kind: Kind) -> String {
    match kind {
        Kind::Any => org.id_of(Kind::Customer),
        k => org.id_of(k),
    }
}

/// The concrete kinds to try for these slot kinds (all kinds when one is `Any`).
fn expand(kinds: impl IntoIterator<Item = Kind>) -> Vec<Kind> {
    if kinds.into_iter().any(|k| k == Kind::Any) {
        CONCRETE.to_vec()
    } else {
        vec![Kind::Customer]
    }
}

/// Null, an empty list, or a connection with no nodes.
fn is_nothing(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(object) => {
            object
                .get("nodes")
                .is_some_and(|n| n.as_array().is_some_and(Vec::is_empty))
                && object.get("totalCount").is_none_or(|t| t == 0)
        }
        _ => false,
    }
}
