//! The zero-setup promise and the server shell: on every backend the API starts
//! on an empty database, migrates it, and answers its probes and GraphQL.

use serde_json::json;
use tests::http::Client;
use tests::{Backend, TestEnv};
use worker::QueueBackend;

#[tokio::test]
async fn serves_probes_graphql_and_graphiql_on_every_backend() {
    let mut seen = vec![];
    for env in TestEnv::all().await {
        seen.push(env.backend);
        let server = api::server::start(env.config.clone())
            .await
            .unwrap_or_else(|e| panic!("{:?}: server starts: {e}", env.backend));
        let client = Client::new(server.addr);

        let (status, body) = client.get("/healthz").await;
        assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));

        let (status, body) = client.get("/readyz").await;
        assert_eq!(status, 200, "{:?}: {body}", env.backend);
        let ready: serde_json::Value = serde_json::from_str(&body).expect("readyz JSON");
        assert_eq!(ready["database"], "ok");
        assert_eq!(ready["queue"], "ok");

        let answer = client.graphql("{ __typename apiVersion }", json!({})).await;
        assert_eq!(answer["data"]["__typename"], "Query", "{answer}");
        assert_eq!(answer["data"]["apiVersion"], env!("CARGO_PKG_VERSION"));

        let (status, page) = client.get("/graphql").await;
        assert_eq!(status, 200);
        assert!(
            page.to_lowercase().contains("graphiql"),
            "GET /graphql serves GraphiQL"
        );

        let (status, _) = client.get("/metrics").await;
        assert_eq!(status, 200);

        server.stop().await.expect("server stops cleanly");
        env.cleanup().await;
    }
    assert!(seen.contains(&Backend::Sqlite));
}

#[tokio::test]
async fn restarting_on_the_same_database_is_a_no_op_migration() {
    for env in TestEnv::all().await {
        let first = api::server::start(env.config.clone())
            .await
            .expect("first start");
        first.stop().await.expect("stop");
        let second = api::server::start(env.config.clone())
            .await
            .expect("second start on a migrated database");
        let (status, _) = Client::new(second.addr).get("/readyz").await;
        assert_eq!(status, 200);
        second.stop().await.expect("stop");
        env.cleanup().await;
    }
}

#[tokio::test]
async fn readiness_fails_when_the_queue_is_unreachable() {
    let Some(env) = TestEnv::postgres().await else {
        return;
    };
    let mut config = env.config.clone();
    // Nothing listens on port 1: Redis is "down" while PostgreSQL is fine.
    config.queue = QueueBackend::Redis {
        url: "redis://127.0.0.1:1".into(),
    };
    let server = api::server::start(config)
        .await
        .expect("starts without Redis");
    let (status, body) = Client::new(server.addr).get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("readyz JSON");
    assert_eq!(ready["database"], "ok");
    assert_eq!(ready["queue"], "unreachable");
    assert!(
        !body.contains("127.0.0.1:1"),
        "no connection details leak: {body}"
    );
    server.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn zero_setup_generates_a_private_admin_token_file() {
    let env = TestEnv::sqlite();
    let mut config = env.config.clone();
    config.admin_token = None;
    let server = api::server::start(config.clone()).await.expect("starts");
    let path = server.admin_token_file.clone().expect("token file written");
    let token = std::fs::read_to_string(&path).expect("token readable");
    assert_eq!(token.len(), 64, "a 256-bit hex secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only the owner may read the token");
    }
    server.stop().await.expect("stop");
    // The same token survives a restart.
    let again = api::server::start(config).await.expect("restarts");
    assert_eq!(std::fs::read_to_string(&path).expect("token"), token);
    again.stop().await.expect("stop");
    env.cleanup().await;
}

/// Valora's PostgreSQL connections plan each statement with its parameters;
/// bulk inserts run with the plan cache's own choice (so foreign-key checks
/// are not planned per row) and give the setting back, also when they fail.
#[tokio::test]
async fn bulk_inserts_borrow_cached_plans_and_give_them_back() {
    use sea_orm::{ConnectionTrait, DbErr, TransactionTrait};
    use workflows::txn::with_cached_plans;

    async fn mode<C: ConnectionTrait>(db: &C) -> String {
        db.query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SHOW plan_cache_mode",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap()
    }

    let Some(env) = TestEnv::postgres().await else {
        return;
    };
    let db = worker::database::connect(&env.config).await.unwrap();
    let txn = db.begin().await.unwrap();
    assert_eq!(mode(&txn).await, "force_custom_plan");
    let inside = with_cached_plans(&txn, async || Ok::<_, DbErr>(mode(&txn).await))
        .await
        .unwrap();
    assert_eq!(inside, "auto");
    assert_eq!(mode(&txn).await, "force_custom_plan", "given back");
    txn.commit().await.unwrap();

    let txn = db.begin().await.unwrap();
    let failed = with_cached_plans(&txn, async || {
        txn.execute_unprepared("INSERT INTO no_such_table VALUES (1)")
            .await
    })
    .await;
    assert!(failed.is_err());
    txn.rollback().await.unwrap();
    assert_eq!(
        mode(&db).await,
        "force_custom_plan",
        "a failed insert changes nothing"
    );
    db.close().await.unwrap();
    env.cleanup().await;
}
