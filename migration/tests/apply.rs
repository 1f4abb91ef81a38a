//! Applies the migrations to fresh SQLite and PostgreSQL databases and checks
//! the schema: every table exists, re-running is a no-op, `down` removes
//! everything, the unique constraints and foreign keys guard what the billing
//! steps rely on, and `audit_events` refuses UPDATE and DELETE.

mod common;

use std::collections::BTreeMap;

use common::fixtures::{Fixtures, at};
use common::{PostgresDb, SqliteDb, TABLES};
use entity::*;
use migration::sea_orm::sea_query::ColumnType;
use migration::sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ActiveValue::Set, ColumnTrait, ConnectionTrait,
    DatabaseConnection, DbBackend, DbErr, EntityTrait, IdenStatic, IntoActiveModel, Iterable,
    PaginatorTrait, QueryFilter, SqlErr, Statement,
};
use migration::{APPEND_ONLY_MESSAGE, Migrator, MigratorTrait};
use sea_orm_migration::SchemaManager;

async fn assert_tables(db: &DatabaseConnection, present: bool) {
    let manager = SchemaManager::new(db);
    for table in TABLES {
        assert_eq!(
            manager.has_table(*table).await.unwrap(),
            present,
            "table {table} present should be {present}"
        );
    }
}

/// The insert must fail on a unique constraint (or primary key).
fn assert_duplicate<T: std::fmt::Debug>(result: Result<T, DbErr>, what: &str) {
    match result {
        Ok(value) => panic!("{what}: expected a unique violation, got {value:?}"),
        Err(error) => match error.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                println!("{what}: refused as expected: {error}")
            }
            _ => panic!("{what}: expected a unique violation, got {error}"),
        },
    }
}

/// Everything except the backend-specific parts.
async fn check_migrations(db: DatabaseConnection) {
    Migrator::up(&db, None).await.expect("first up");
    Migrator::up(&db, None).await.expect("second up is a no-op");
    assert!(
        Migrator::get_pending_migrations(&db)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        Migrator::get_applied_migrations(&db).await.unwrap().len(),
        Migrator::migrations().len()
    );
    assert_tables(&db, true).await;
    check_columns_match_entities(&db).await;

    let a = Fixtures::new("a").insert(&db).await;
    check_audit_is_append_only(&db, &a).await;
    check_constraints(&db, &a).await;

    // Down removes every table (with data present), and up recreates them.
    Migrator::down(&db, None).await.expect("down");
    assert_tables(&db, false).await;
    Migrator::up(&db, None).await.expect("up after down");
    assert_tables(&db, true).await;
    Fixtures::new("a").insert(&db).await;
}

/// Name, nullability and storage type of every column of an entity.
fn entity_columns<E: EntityTrait>() -> (String, BTreeMap<String, (bool, ColumnType)>) {
    let table = E::default().table_name().to_owned();
    let columns = E::Column::iter()
        .map(|column| {
            let def = column.def();
            (
                column.as_str().to_owned(),
                (def.is_null(), def.get_column_type().clone()),
            )
        })
        .collect();
    (table, columns)
}

/// The type name the database reports for a column the migrations declared
/// with the entity's column type.
fn reported_type(backend: DbBackend, column_type: &ColumnType) -> &'static str {
    let postgres = backend == DbBackend::Postgres;
    match column_type {
        ColumnType::String(_) if postgres => "character varying",
        ColumnType::String(_) => "varchar",
        ColumnType::Text => "text",
        ColumnType::Integer => "integer",
        ColumnType::BigInteger if postgres => "bigint",
        // SQLite spells every integer column `integer` (64-bit).
        ColumnType::BigInteger => "integer",
        ColumnType::TimestampWithTimeZone if postgres => "timestamp with time zone",
        ColumnType::TimestampWithTimeZone => "timestamp_with_timezone_text",
        ColumnType::Boolean => "boolean",
        ColumnType::Json if postgres => "json",
        ColumnType::Json => "json_text",
        other => panic!("no column of type {other:?} is expected in Valora's schema"),
    }
}

/// The columns the database has: name → (nullable, reported type).
async fn database_columns(
    db: &DatabaseConnection,
    table: &str,
) -> BTreeMap<String, (bool, String)> {
    let backend = db.get_database_backend();
    let statement = match backend {
        DbBackend::Postgres => Statement::from_sql_and_values(
            backend,
            "SELECT column_name AS name, is_nullable = 'YES' AS nullable, data_type AS type \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
            [table.into()],
        ),
        _ => Statement::from_sql_and_values(
            backend,
            "SELECT name, \"notnull\" = 0 AS nullable, lower(type) AS type FROM pragma_table_info(?)",
            [table.into()],
        ),
    };
    db.query_all_raw(statement)
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            (
                row.try_get::<String>("", "name").unwrap(),
                (
                    row.try_get::<bool>("", "nullable").unwrap(),
                    row.try_get::<String>("", "type").unwrap(),
                ),
            )
        })
        .collect()
}

/// Every entity's columns exist with the same nullability and a matching
/// type, and no table has a column its entity lacks.
async fn check_columns_match_entities(db: &DatabaseConnection) {
    let backend = db.get_database_backend();
    let entities = vec![
        entity_columns::<organization::Entity>(),
        entity_columns::<api_key::Entity>(),
        entity_columns::<idempotency_key::Entity>(),
        entity_columns::<customer::Entity>(),
        entity_columns::<meter::Entity>(),
        entity_columns::<plan::Entity>(),
        entity_columns::<plan_version::Entity>(),
        entity_columns::<price::Entity>(),
        entity_columns::<price_tier::Entity>(),
        entity_columns::<subscription::Entity>(),
        entity_columns::<subscription_change::Entity>(),
        entity_columns::<usage_event::Entity>(),
        entity_columns::<invoice::Entity>(),
        entity_columns::<invoice_line::Entity>(),
        entity_columns::<invoice_sequence::Entity>(),
        entity_columns::<pending_invoice_item::Entity>(),
        entity_columns::<outbox::Entity>(),
        entity_columns::<job_run::Entity>(),
        entity_columns::<audit_event::Entity>(),
    ];
    assert_eq!(entities.len(), TABLES.len());
    for (table, columns) in entities {
        assert!(TABLES.contains(&table.as_str()), "{table}");
        let actual = database_columns(db, &table).await;
        let expected: BTreeMap<String, (bool, String)> = columns
            .into_iter()
            .map(|(name, (nullable, column_type))| {
                (
                    name,
                    (nullable, reported_type(backend, &column_type).to_owned()),
                )
            })
            .collect();
        assert_eq!(actual, expected, "columns of {table}");
    }
}

async fn check_audit_is_append_only(db: &DatabaseConnection, a: &Fixtures) {
    let mut update = a.audit_event.clone().into_active_model();
    update.actor = Set("someone else".into());
    let error = update
        .update(db)
        .await
        .expect_err("UPDATE of an audit event");
    assert!(error.to_string().contains(APPEND_ONLY_MESSAGE), "{error}");

    let error = db
        .execute_unprepared("UPDATE audit_events SET hash = 'x'")
        .await
        .expect_err("raw UPDATE of audit events");
    assert!(error.to_string().contains(APPEND_ONLY_MESSAGE), "{error}");

    let error = audit_event::Entity::delete_by_id(a.audit_event.id)
        .exec(db)
        .await
        .expect_err("DELETE of an audit event");
    assert!(error.to_string().contains(APPEND_ONLY_MESSAGE), "{error}");

    let error = db
        .execute_unprepared("DELETE FROM audit_events")
        .await
        .expect_err("raw DELETE of audit events");
    assert!(error.to_string().contains(APPEND_ONLY_MESSAGE), "{error}");

    // Still exactly the original row; appending still works.
    let rows = audit_event::Entity::find().all(db).await.unwrap();
    assert_eq!(rows, vec![a.audit_event.clone()]);
    let mut next = a.audit_event.clone().into_active_model();
    next.id = NotSet;
    next.seq = Set(2);
    next.prev_hash = Set(a.audit_event.hash.clone());
    next.insert(db).await.expect("append seq 2");
}

async fn check_constraints(db: &DatabaseConnection, a: &Fixtures) {
    // Same idempotency key in the same organization.
    let mut event = a.usage_event.clone();
    event.id = "evt_dup".into();
    assert_duplicate(
        event.into_active_model().insert(db).await,
        "usage event with a used idempotency key",
    );

    // One invoice per billing key: the "one periodic invoice per subscription
    // and period" guard.
    let mut invoice = a.invoice.clone();
    invoice.id = "inv_dup".into();
    invoice.number = None;
    invoice.number_year = None;
    invoice.number_seq = None;
    assert_duplicate(
        invoice.into_active_model().insert(db).await,
        "second invoice with the same billing key",
    );

    // One invoice per number, and per (year, seq).
    let mut invoice = a.invoice.clone();
    invoice.id = "inv_num".into();
    invoice.billing_key = "proration:x".into();
    invoice.number_seq = Some(2);
    assert_duplicate(
        invoice.into_active_model().insert(db).await,
        "second invoice with the same number",
    );
    let mut invoice = a.invoice.clone();
    invoice.id = "inv_seq".into();
    invoice.billing_key = "proration:y".into();
    invoice.number = Some("ACME-2026-999999".into());
    assert_duplicate(
        invoice.into_active_model().insert(db).await,
        "second invoice with the same (year, seq)",
    );

    // Drafts have no number: NULLs never collide.
    for n in 0..2 {
        let mut draft = a.invoice.clone();
        draft.id = format!("inv_draft_{n}");
        draft.billing_key = format!("first:draft:{n}");
        draft.status = InvoiceStatus::Draft;
        draft.number = None;
        draft.number_year = None;
        draft.number_seq = None;
        draft
            .into_active_model()
            .insert(db)
            .await
            .expect("draft without number");
    }

    // One line per position in an invoice.
    let mut line = a.invoice_line.clone();
    line.id = "lin_dup".into();
    assert_duplicate(
        line.into_active_model().insert(db).await,
        "invoice line with a used position",
    );

    // One pending item per source key.
    let mut item = a.pending_invoice_item.clone();
    item.id = "pii_dup".into();
    item.invoice_id = None;
    assert_duplicate(
        item.into_active_model().insert(db).await,
        "pending item with a used source key",
    );

    // One audit event per (organization, seq): the hash chain cannot fork.
    let mut audit = a.audit_event.clone().into_active_model();
    audit.id = NotSet;
    audit.hash = Set("fork".into());
    assert_duplicate(audit.insert(db).await, "audit event with a used seq");

    // One job run per job key; one API key per hash; codes unique per organization.
    let mut job = a.job_run.clone();
    job.id = "job_dup".into();
    assert_duplicate(
        job.into_active_model().insert(db).await,
        "job run with a used key",
    );
    let mut key = a.api_key.clone();
    key.id = "key_dup".into();
    assert_duplicate(
        key.into_active_model().insert(db).await,
        "API key with a used hash",
    );
    let mut customer = a.customer.clone();
    customer.id = "cus_dup".into();
    assert_duplicate(
        customer.into_active_model().insert(db).await,
        "customer with a used external id",
    );
    let mut meter = a.meter.clone();
    meter.id = "met_dup".into();
    assert_duplicate(
        meter.into_active_model().insert(db).await,
        "meter with a used code",
    );
    let mut plan = a.plan.clone();
    plan.id = "pln_dup".into();
    assert_duplicate(
        plan.into_active_model().insert(db).await,
        "plan with a used code",
    );
    let mut version = a.plan_version.clone();
    version.id = "plv_dup".into();
    assert_duplicate(
        version.into_active_model().insert(db).await,
        "plan version with a used number",
    );
    let mut tier = a.price_tier.clone();
    tier.id = "tier_dup".into();
    assert_duplicate(
        tier.into_active_model().insert(db).await,
        "price tier with a used position",
    );
    assert_duplicate(
        a.invoice_sequence
            .clone()
            .into_active_model()
            .insert(db)
            .await,
        "second sequence row for the same year",
    );
    assert_duplicate(
        a.idempotency_key
            .clone()
            .into_active_model()
            .insert(db)
            .await,
        "idempotency key used twice",
    );

    // Foreign keys are enforced.
    let mut orphan = a.customer.clone();
    orphan.id = "cus_orphan".into();
    orphan.organization_id = "org_missing".into();
    orphan.external_id = "orphan".into();
    let error = orphan
        .into_active_model()
        .insert(db)
        .await
        .expect_err("customer of a missing organization");
    assert!(
        matches!(
            error.sql_err(),
            Some(SqlErr::ForeignKeyConstraintViolation(_))
        ),
        "{error}"
    );

    // The same per-organization keys in another organization are fine.
    let b = Fixtures::new("b").insert(db).await;
    assert_eq!(b.customer.external_id, a.customer.external_id);
    assert_eq!(b.usage_event.idempotency_key, a.usage_event.idempotency_key);
    assert_eq!(b.audit_event.seq, 1);
    assert_eq!(organization::Entity::find().count(db).await.unwrap(), 2);

    // Sweeper-style query on instants works (text comparison on SQLite).
    let due = subscription::Entity::find()
        .filter(subscription::Column::Status.eq(SubscriptionStatus::PastDue))
        .filter(subscription::Column::CurrentPeriodEnd.lte(at("2026-02-01T00:00:00Z")))
        .count(db)
        .await
        .unwrap();
    assert_eq!(due, 2);
    let not_due = subscription::Entity::find()
        .filter(subscription::Column::CurrentPeriodEnd.lt(at("2026-01-31T23:59:59.999999Z")))
        .count(db)
        .await
        .unwrap();
    assert_eq!(not_due, 0);
}

#[tokio::test]
async fn sqlite_migrations_apply() {
    let sqlite = SqliteDb::new().await;
    check_migrations(sqlite.db.clone()).await;
    sqlite.remove().await;
}

#[tokio::test]
async fn postgres_migrations_apply() {
    let Some(pg) = PostgresDb::new("postgres_migrations_apply").await else {
        return;
    };
    pg.run(|db, _| check_migrations(db)).await;
}

/// Many processes starting at once (API + N workers) all migrate; on
/// PostgreSQL the advisory lock makes them wait for each other instead of
/// failing on concurrent `CREATE TABLE`.
#[tokio::test]
async fn postgres_concurrent_migrators() {
    let Some(pg) = PostgresDb::new("postgres_concurrent_migrators").await else {
        return;
    };
    pg.run(|db, url| async move {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let db = migration::sea_orm::Database::connect(&url).await.unwrap();
                let result = Migrator::up(&db, None).await;
                let _ = db.close().await;
                result
            }));
        }
        for task in tasks {
            task.await.unwrap().expect("concurrent up");
        }
        assert_tables(&db, true).await;
        assert_eq!(
            Migrator::get_applied_migrations(&db).await.unwrap().len(),
            Migrator::migrations().len()
        );
    })
    .await;
}
