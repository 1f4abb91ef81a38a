//! Exactness of stored numbers on both backends: `Dec` values (TEXT) and
//! `i64` minor units come back bit-for-bit, and every entity reads back
//! exactly what was written (which also proves the migrations' column types
//! match the entities).

mod common;

use common::fixtures::{BIG, CREDIT, Fixtures, TINY, UNIT_PRICE, dec};
use common::{PostgresDb, SqliteDb};
use entity::*;
use migration::sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, EntityTrait, IntoActiveModel, Statement,
};
use migration::{Migrator, MigratorTrait};

/// The raw text stored in `table.column` for the row `id`.
async fn stored_text(db: &DatabaseConnection, table: &str, column: &str, id: &str) -> String {
    let backend = db.get_database_backend();
    let sql = match backend {
        migration::sea_orm::DbBackend::Postgres => {
            format!("SELECT {column} AS v FROM {table} WHERE id = $1")
        }
        _ => format!("SELECT {column} AS v FROM {table} WHERE id = ?"),
    };
    let row = db
        .query_one_raw(Statement::from_sql_and_values(backend, sql, [id.into()]))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<String>("", "v").unwrap()
}

async fn check_round_trip(db: DatabaseConnection) {
    Migrator::up(&db, None).await.unwrap();
    let written = Fixtures::new("m");
    let inserted = written.insert(&db).await;

    // Every entity, read back by primary key, equals what was written.
    macro_rules! same {
        ($field:ident, $key:expr) => {{
            let read = $field::Entity::find_by_id($key)
                .one(&db)
                .await
                .unwrap()
                .expect(stringify!($field));
            assert_eq!(read, inserted.$field, stringify!($field));
        }};
    }
    same!(organization, written.organization.id.clone());
    same!(api_key, written.api_key.id.clone());
    same!(
        idempotency_key,
        (
            written.idempotency_key.organization_id.clone(),
            written.idempotency_key.key.clone()
        )
    );
    same!(customer, written.customer.id.clone());
    same!(meter, written.meter.id.clone());
    same!(plan, written.plan.id.clone());
    same!(plan_version, written.plan_version.id.clone());
    same!(price, written.price.id.clone());
    same!(price_tier, written.price_tier.id.clone());
    same!(subscription, written.subscription.id.clone());
    same!(subscription_change, written.subscription_change.id.clone());
    same!(usage_event, written.usage_event.id.clone());
    same!(invoice, written.invoice.id.clone());
    same!(invoice_line, written.invoice_line.id.clone());
    same!(
        invoice_sequence,
        (
            written.invoice_sequence.organization_id.clone(),
            written.invoice_sequence.year
        )
    );
    same!(
        pending_invoice_item,
        written.pending_invoice_item.id.clone()
    );
    same!(outbox, inserted.outbox.id);
    same!(job_run, written.job_run.id.clone());
    same!(audit_event, inserted.audit_event.id);

    // Apart from database-assigned ids, what the database holds is what was written.
    let mut expected = written.clone();
    expected.outbox.id = inserted.outbox.id;
    expected.audit_event.id = inserted.audit_event.id;
    assert_eq!(format!("{expected:?}"), format!("{inserted:?}"));

    // The exact decimals, compared numerically and as text.
    let tier = price_tier::Entity::find_by_id(written.price_tier.id.clone())
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tier.up_to.unwrap().to_string(), BIG);
    assert_eq!(tier.unit_amount.to_string(), TINY);
    assert_eq!(tier.flat_amount.to_string(), CREDIT);
    let price = price::Entity::find_by_id(written.price.id.clone())
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(price.unit_amount, Some(dec(UNIT_PRICE)));
    assert_eq!(price.unit_amount.unwrap().to_string(), UNIT_PRICE);
    let event = usage_event::Entity::find_by_id(written.usage_event.id.clone())
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.value.to_string(), TINY);
    assert_eq!(event.value.scale(), 12);

    // i64 minor units at the extremes.
    let invoice = invoice::Entity::find_by_id(written.invoice.id.clone())
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(invoice.subtotal_minor, -5161);
    assert_eq!(invoice.total_minor, i64::MAX);
    let line = invoice_line::Entity::find_by_id(written.invoice_line.id.clone())
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line.amount_minor, i64::MIN);
    assert_eq!(line.quantity.to_string(), BIG);

    // On disk: normalized decimal text, no float artefacts.
    assert_eq!(
        stored_text(&db, "price_tiers", "up_to", &tier.id).await,
        BIG
    );
    assert_eq!(
        stored_text(&db, "price_tiers", "unit_amount", &tier.id).await,
        TINY
    );
    assert_eq!(
        stored_text(&db, "price_tiers", "flat_amount", &tier.id).await,
        CREDIT
    );
    assert_eq!(
        stored_text(&db, "prices", "unit_amount", &price.id).await,
        UNIT_PRICE
    );

    // "1.50" is stored as "1.5" and reads back equal to 1.50.
    let mut trailing = written.usage_event.clone();
    trailing.id = "evt_trailing".into();
    trailing.idempotency_key = "event-trailing".into();
    trailing.value = dec("1.50");
    let read = trailing
        .clone()
        .into_active_model()
        .insert(&db)
        .await
        .unwrap();
    assert_eq!(read.value, dec("1.5"));
    assert_eq!(
        stored_text(&db, "usage_events", "value", "evt_trailing").await,
        "1.5"
    );

    // More values at the edges of what quantities need (≥ 12 fractional digits).
    for (n, text) in [
        "0.000000000000000000000000001",
        "-0.000000000001",
        "79228162514264337593543950335",
        "-12345678901234.567890123456",
        "0",
    ]
    .into_iter()
    .enumerate()
    {
        let mut event = written.usage_event.clone();
        event.id = format!("evt_edge_{n}");
        event.idempotency_key = format!("event-edge-{n}");
        event.value = dec(text);
        let read = event.into_active_model().insert(&db).await.unwrap();
        assert_eq!(read.value.to_string(), text);
        assert_eq!(
            stored_text(&db, "usage_events", "value", &read.id).await,
            text
        );
    }
}

#[tokio::test]
async fn sqlite_money_round_trip() {
    let sqlite = SqliteDb::new().await;
    check_round_trip(sqlite.db.clone()).await;
    sqlite.remove().await;
}

#[tokio::test]
async fn postgres_money_round_trip() {
    let Some(pg) = PostgresDb::new("postgres_money_round_trip").await else {
        return;
    };
    pg.run(|db, _| check_round_trip(db)).await;
}
