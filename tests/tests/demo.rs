//! The `--demo` tour keeps working: it bills three months of its sample
//! organization through the workers, with the amounts a reader can check.

use serde_json::json;
use tests::TestEnv;
use tests::http::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_bills_three_months_of_its_sample_organization() {
    let env = TestEnv::sqlite();
    let mut config = env.config.clone();
    config.embedded_workers = true;
    let server = api::server::start(config).await.expect("server starts");
    let outcome = api::demo::run(&server.schema).await.expect("demo runs");
    let table = api::demo::table(&outcome.invoices);
    println!("{table}");
    assert_eq!(outcome.invoices.len(), 14, "{table}");
    assert!(
        outcome.invoices.iter().all(|i| i["status"] == "OPEN"),
        "{table}"
    );
    let total = |customer: &str, from: &str| {
        outcome
            .invoices
            .iter()
            .find(|i| {
                i["customer"]["name"] == customer
                    && i["periodStart"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(from))
            })
            .map(|i| i["total"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    // Alice upgrades 29.00 → 99.00 on Jan 16: −14.97 + 51.10 + 99.00 in advance.
    assert_eq!(total("alice", "2026-01-16"), "135.13", "{table}");
    // Carol, graduated: 10,000 × 0.01 + 90,000 × 0.005 + 50,000 × 0.001.
    assert_eq!(total("carol", "2026-01-01"), "600", "{table}");
    assert_eq!(outcome.api_key.len(), 64);
    // The same invoices through a nested list (batched per page, not per subscription).
    let client = Client::new(server.addr).with_key(&outcome.api_key);
    let answer = client
        .graphql(
            "{ subscriptions(first: 10) { nodes { invoices { number } } } }",
            json!({}),
        )
        .await;
    let nested: usize = answer["data"]["subscriptions"]["nodes"]
        .as_array()
        .map(|subs| {
            subs.iter()
                .map(|s| s["invoices"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(nested, 14, "{answer}");
    server.stop().await.expect("stops");
    env.cleanup().await;
}
