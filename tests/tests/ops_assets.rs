//! The operations assets say only true things: every Grafana panel queries a
//! metric the code really emits (SPEC §5), every panel uses the provisioned
//! datasource, and `docker-compose.yml` wires the fleet the way Prometheus
//! and Grafana expect it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    let mut value: Yaml =
        serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{path}: merge keys: {e}"));
    value
}

/// Every series a Valora process emits, from the code's own constants.
fn emitted() -> BTreeSet<&'static str> {
    api::metrics::everything().into_iter().collect()
}

/// The `valora_*` metric names a PromQL expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut names = vec![];
    let mut i = 0;
    while let Some(found) = expr[i..].find("valora_") {
        let start = i + found;
        let mut end = start + "valora_".len();
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        // Only whole identifiers (not `xvalora_…` or a label value's tail).
        if (start == 0 || !word(bytes[start - 1])) && (end == bytes.len() || !word(bytes[end])) {
            names.push(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

/// Whether a queried series exists: an emitted name, or a histogram's
/// `_bucket`/`_sum`/`_count` series (Valora's `*_seconds` are histograms).
fn is_emitted(name: &str, emitted: &BTreeSet<&str>) -> bool {
    if emitted.contains(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|base| base.ends_with("_seconds") && emitted.contains(base))
    })
}

/// The queried names that no code emits.
fn unknown_metrics<'a>(
    exprs: impl IntoIterator<Item = &'a str>,
    emitted: &BTreeSet<&str>,
) -> Vec<String> {
    exprs
        .into_iter()
        .flat_map(metric_names)
        .filter(|name| !is_emitted(name, emitted))
        .collect()
}

/// A cheap PromQL sanity check: brackets balance and quotes close.
fn balanced(expr: &str) -> bool {
    let mut stack = vec![];
    let mut quoted = false;
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let open = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if stack.pop() != Some(open) {
                    return false;
                }
            }
            _ => {}
        }
    }
    stack.is_empty() && !quoted
}

fn dashboards() -> Vec<(String, Json)> {
    let dir = repo().join("grafana/dashboards");
    let mut out: Vec<(String, Json)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("dashboard readable");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Json) -> Vec<&Json> {
    fn walk<'a>(list: &'a Json, out: &mut Vec<&'a Json>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = vec![];
    walk(&dashboard["panels"], &mut out);
    out
}

fn provisioned_datasource_uid() -> String {
    let provisioning = yaml("grafana/provisioning/datasources/prometheus.yml");
    let sources = provisioning["datasources"]
        .as_sequence()
        .expect("datasources");
    assert_eq!(sources.len(), 1, "one datasource: Prometheus");
    assert_eq!(sources[0]["type"].as_str(), Some("prometheus"));
    sources[0]["uid"]
        .as_str()
        .expect("the datasource has a fixed uid the dashboards name")
        .to_string()
}

#[test]
fn extraction_finds_metric_names_and_flags_renamed_ones() {
    let emitted = emitted();
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, job) (rate(valora_scheduler_job_duration_seconds_bucket{job="x"}[5m]))) / valora_outbox_relayed_total"#
        ),
        [
            "valora_scheduler_job_duration_seconds_bucket",
            "valora_outbox_relayed_total"
        ]
    );
    assert!(metric_names(r#"up{job=~"valora-.*"}"#).is_empty());
    assert!(balanced(r#"sum by (le) (rate(x{a="(["}[5m]))"#));
    assert!(!balanced("sum(rate(x[5m])"));
    assert!(!balanced("rate(x{a=\"b}[5m])"));
    assert!(metric_names(r#"foo{kind="xvalora_total"}"#).is_empty());
    // Real names, histogram series included, pass.
    assert!(
        unknown_metrics(
            [
                "rate(valora_scheduler_job_runs_total[5m])",
                "rate(valora_graphql_request_duration_seconds_sum[5m])",
                "valora_queue_depth{state=\"DEAD\"}",
            ],
            &emitted
        )
        .is_empty()
    );
    // A renamed metric (or a typo) is caught, and so is a histogram suffix on a counter.
    assert_eq!(
        unknown_metrics(
            [
                "sum(rate(valora_scheduler_job_runz_total[5m]))",
                "rate(valora_graphql_requests_total_bucket[5m])",
                "valora_jobs_total",
            ],
            &emitted
        ),
        [
            "valora_scheduler_job_runz_total",
            "valora_graphql_requests_total_bucket"
        ]
    );
}

#[test]
fn every_dashboard_query_names_a_metric_the_code_emits() {
    let emitted = emitted();
    let uid = provisioned_datasource_uid();
    let dashboards = dashboards();
    let files: BTreeSet<&str> = dashboards.iter().map(|(f, _)| f.as_str()).collect();
    for wanted in ["scheduler.json", "queues.json", "billing.json", "api.json"] {
        assert!(files.contains(wanted), "grafana/dashboards/{wanted} exists");
    }
    let mut uids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for (file, dashboard) in &dashboards {
        assert!(
            dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 30),
            "{file}: schemaVersion"
        );
        assert!(
            dashboard["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: title"
        );
        let dashboard_uid = dashboard["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: uid"));
        assert!(
            uids.insert(dashboard_uid.to_string()),
            "{file}: uid {dashboard_uid} is unique"
        );
        let mut ids = BTreeSet::new();
        let mut queries = 0;
        for panel in panels(dashboard) {
            let title = panel["title"].as_str().unwrap_or("?");
            let id = panel["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}/{title}: id"));
            assert!(ids.insert(id), "{file}/{title}: panel id {id} is unique");
            let pos = &panel["gridPos"];
            for k in ["x", "y", "w", "h"] {
                assert!(pos[k].is_u64(), "{file}/{title}: gridPos.{k}");
            }
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"].as_str(),
                Some(uid.as_str()),
                "{file}/{title}: panel datasource"
            );
            let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
            let targets = targets.unwrap_or_else(|| panic!("{file}/{title}: no targets"));
            for target in targets {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}/{title}: target without expr"));
                assert!(target["refId"].is_string(), "{file}/{title}: refId");
                if !target["datasource"].is_null() {
                    assert_eq!(
                        target["datasource"]["uid"].as_str(),
                        Some(uid.as_str()),
                        "{file}/{title}: target datasource"
                    );
                }
                assert!(balanced(expr), "{file}/{title}: unbalanced PromQL {expr}");
                let unknown = unknown_metrics([expr], &emitted);
                assert!(
                    unknown.is_empty(),
                    "{file}/{title}: {expr} queries {unknown:?}, which no code emits"
                );
                queried.extend(metric_names(expr).into_iter().map(|n| {
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| n.strip_suffix(s).filter(|b| emitted.contains(b)))
                        .map_or(n.clone(), str::to_string)
                }));
                queries += 1;
            }
        }
        assert!(queries > 0, "{file}: has queries");
    }
    // And the other way round: every series is on some dashboard.
    let missing: Vec<_> = emitted.iter().filter(|m| !queried.contains(**m)).collect();
    assert!(
        missing.is_empty(),
        "emitted but on no dashboard: {missing:?}"
    );
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let service = &compose["services"][name];
    assert!(!service.is_null(), "docker-compose.yml has service {name}");
    service
}

/// A service's environment as a map (mapping or `KEY=value` list form).
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    let scalar = |v: &Yaml| match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        _ => String::new(),
    };
    match &service["environment"] {
        Yaml::Mapping(map) => map.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Yaml::Sequence(list) => list
            .iter()
            .filter_map(|item| {
                item.as_str()?
                    .split_once('=')
                    .map(|(k, v)| (k.into(), v.into()))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `"host:container"` port mappings of a service, as (host, container).
fn ports(service: &Yaml) -> Vec<(u16, u16)> {
    service["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|p| {
            let text = p
                .as_str()
                .expect("ports are quoted \"host:container\" strings");
            let (host, container) = text.split_once(':').expect("host:container");
            (
                host.parse().expect("host port"),
                container.parse().expect("container port"),
            )
        })
        .collect()
}

fn port_of(bind: &str) -> u16 {
    let (host, port) = bind.rsplit_once(':').expect("bind is host:port");
    assert_eq!(
        host, "0.0.0.0",
        "{bind}: a container must listen on all interfaces to be scraped"
    );
    port.parse().expect("bind port")
}

#[test]
fn docker_compose_runs_the_fleet_prometheus_scrapes() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(Yaml::as_str).collect();
    for wanted in [
        "postgres",
        "redis",
        "migrate",
        "api",
        "worker",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(wanted), "service {wanted} in {names:?}");
    }
    for name in &names {
        let s = service(&compose, name);
        assert!(
            !s["image"].is_null() || !s["build"].is_null(),
            "{name}: image or build"
        );
    }
    for name in ["migrate", "api", "worker"] {
        let env = environment(service(&compose, name));
        for var in ["DATABASE_URL", "REDIS_URL"] {
            assert!(
                env.get(var).is_some_and(|v| !v.is_empty()),
                "{name}: {var} in {env:?}"
            );
        }
        assert!(
            env["DATABASE_URL"].contains("@postgres:5432/"),
            "{name}: DATABASE_URL names the postgres service"
        );
        assert!(
            env["REDIS_URL"].contains("//redis:6379"),
            "{name}: REDIS_URL names the redis service"
        );
    }
    assert_eq!(
        service(&compose, "worker")["deploy"]["replicas"].as_u64(),
        Some(3),
        "three workers"
    );

    // Where each service listens inside the network.
    let mut listens: BTreeMap<&str, u16> = BTreeMap::from([
        ("postgres", 5432),
        ("redis", 6379),
        ("prometheus", 9090),
        ("grafana", 3000),
    ]);
    listens.insert(
        "api",
        port_of(&environment(service(&compose, "api"))["BIND"]),
    );
    listens.insert(
        "worker",
        port_of(&environment(service(&compose, "worker"))["VALORA_WORKER_BIND"]),
    );
    assert_eq!((listens["api"], listens["worker"]), (8080, 9090));

    // Published ports reach the port each service listens on.
    for (name, host) in [
        ("postgres", 5432),
        ("redis", 6379),
        ("api", 8080),
        ("prometheus", 9091),
        ("grafana", 3000),
    ] {
        let published = ports(service(&compose, name));
        assert!(
            published.contains(&(host, listens[name])),
            "{name}: publishes {host}:{} in {published:?}",
            listens[name]
        );
    }
    assert!(
        ports(service(&compose, "worker")).is_empty(),
        "three replicas cannot publish one host port"
    );

    // Every scrape target is a compose service on the port it listens on.
    let prometheus = yaml("grafana/prometheus.yml");
    let mut targets = vec![];
    for job in prometheus["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
    {
        for config in job["static_configs"].as_sequence().into_iter().flatten() {
            for target in config["targets"].as_sequence().expect("targets") {
                let (host, port) = target
                    .as_str()
                    .expect("target")
                    .rsplit_once(':')
                    .expect("host:port");
                targets.push((host.to_string(), port.parse::<u16>().expect("port")));
            }
        }
        for config in job["dns_sd_configs"].as_sequence().into_iter().flatten() {
            let port = config["port"].as_u64().expect("dns_sd port") as u16;
            for name in config["names"].as_sequence().expect("names") {
                targets.push((name.as_str().expect("name").to_string(), port));
            }
        }
    }
    let scraped: BTreeSet<&str> = targets.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(
        scraped,
        BTreeSet::from(["api", "worker"]),
        "Prometheus scrapes the API and the workers"
    );
    for (host, port) in &targets {
        assert_eq!(
            listens.get(host.as_str()),
            Some(port),
            "scrape target {host}:{port}"
        );
    }

    // Prometheus and Grafana get their configuration where they read it.
    let volumes = |name: &str| -> Vec<String> {
        service(&compose, name)["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    assert!(
        volumes("prometheus")
            .iter()
            .any(|v| v.starts_with("./grafana/prometheus.yml:/etc/prometheus/prometheus.yml"))
    );
    let grafana = volumes("grafana");
    assert!(
        grafana
            .iter()
            .any(|v| v.starts_with("./grafana/provisioning:/etc/grafana/provisioning"))
    );
    let provider = yaml("grafana/provisioning/dashboards/valora.yml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("provider path");
    assert!(
        grafana
            .iter()
            .any(|v| v.starts_with(&format!("./grafana/dashboards:{path}"))),
        "dashboards mounted at the provider's path {path}: {grafana:?}"
    );
    let datasource = yaml("grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(
        datasource["datasources"][0]["url"].as_str(),
        Some(format!("http://prometheus:{}", listens["prometheus"]).as_str())
    );
}
