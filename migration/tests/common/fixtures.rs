//! One fully populated row per entity (every optional field set), tied
//! together by valid foreign keys. Ids and globally unique values carry a
//! suffix so several organizations can be inserted into one database.

use chrono::{DateTime, Utc};
use entity::*;
use migration::sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, DatabaseConnection, IntoActiveModel,
};
use serde_json::json;

pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

pub fn dec(text: &str) -> Dec {
    text.parse().unwrap()
}

/// The exact decimals the storage must keep.
pub const BIG: &str = "12345678901234.5678";
pub const TINY: &str = "0.000000000001";
pub const CREDIT: &str = "-51.61";
pub const UNIT_PRICE: &str = "0.0004";

#[derive(Clone, Debug)]
pub struct Fixtures {
    pub organization: organization::Model,
    pub api_key: api_key::Model,
    pub idempotency_key: idempotency_key::Model,
    pub customer: customer::Model,
    pub meter: meter::Model,
    pub plan: plan::Model,
    pub plan_version: plan_version::Model,
    pub price: price::Model,
    pub price_tier: price_tier::Model,
    pub subscription: subscription::Model,
    pub subscription_change: subscription_change::Model,
    pub usage_event: usage_event::Model,
    pub invoice: invoice::Model,
    pub invoice_line: invoice_line::Model,
    pub invoice_sequence: invoice_sequence::Model,
    pub pending_invoice_item: pending_invoice_item::Model,
    pub outbox: outbox::Model,
    pub job_run: job_run::Model,
    pub audit_event: audit_event::Model,
}

impl Fixtures {
    pub fn new(suffix: &str) -> Fixtures {
        let org = format!("org_{suffix}");
        let created = at("2026-01-16T09:30:15.123456Z");
        let period_start = at("2026-01-01T00:00:00Z");
        let period_end = at("2026-02-01T00:00:00Z");
        Fixtures {
            organization: organization::Model {
                id: org.clone(),
                name: "Acme".into(),
                currency: "USD".into(),
                timezone: "Europe/Paris".into(),
                net_terms_days: 30,
                grace_period_hours: 24,
                late_usage_window_days: 35,
                cancel_after_past_due_days: Some(14),
                invoice_prefix: "ACME".into(),
                test_clock_time: Some(period_start),
                test_clock_status: Some(TestClockStatus::Advancing),
                created_at: created,
            },
            api_key: api_key::Model {
                id: format!("key_{suffix}"),
                organization_id: org.clone(),
                role: ApiKeyRole::ReadOnly,
                key_hash: format!("{suffix}{}", "ab".repeat(32)),
                key_prefix: "vk_12345".into(),
                created_at: created,
                revoked_at: Some(period_end),
            },
            idempotency_key: idempotency_key::Model {
                organization_id: org.clone(),
                key: "create-customer-1".into(),
                operation: "createCustomer".into(),
                request_hash: "cd".repeat(32),
                entity_id: format!("cus_{suffix}"),
                created_at: created,
            },
            customer: customer::Model {
                id: format!("cus_{suffix}"),
                organization_id: org.clone(),
                external_id: "customer-42".into(),
                name: "Zoë Example".into(),
                email: Some("zoe@example.com".into()),
                created_at: created,
            },
            meter: meter::Model {
                id: format!("met_{suffix}"),
                organization_id: org.clone(),
                code: "api_calls".into(),
                name: "API calls".into(),
                aggregation: Aggregation::UniqueCount,
                unique_property: Some("user".into()),
                created_at: created,
            },
            plan: plan::Model {
                id: format!("pln_{suffix}"),
                organization_id: org.clone(),
                code: "pro".into(),
                name: "Pro".into(),
                interval: Interval::Month,
                interval_count: 3,
                trial_days: 14,
                created_at: created,
            },
            plan_version: plan_version::Model {
                id: format!("plv_{suffix}"),
                organization_id: org.clone(),
                plan_id: format!("pln_{suffix}"),
                version: 1,
                effective_from: period_start,
                created_at: created,
            },
            price: price::Model {
                id: format!("prc_{suffix}"),
                organization_id: org.clone(),
                plan_version_id: format!("plv_{suffix}"),
                position: 0,
                model: PriceModel::Package,
                timing: BillingTiming::InArrears,
                meter_id: Some(format!("met_{suffix}")),
                unit_amount: Some(dec(UNIT_PRICE)),
                package_size: Some(dec("1000")),
                description: Some("API calls, per 1000".into()),
            },
            price_tier: price_tier::Model {
                id: format!("tier_{suffix}"),
                organization_id: org.clone(),
                price_id: format!("prc_{suffix}"),
                position: 0,
                up_to: Some(dec(BIG)),
                unit_amount: dec(TINY),
                flat_amount: dec(CREDIT),
            },
            subscription: subscription::Model {
                id: format!("sub_{suffix}"),
                organization_id: org.clone(),
                customer_id: format!("cus_{suffix}"),
                plan_id: format!("pln_{suffix}"),
                quantity: 3,
                status: SubscriptionStatus::PastDue,
                billing_anchor: BillingAnchor::Calendar,
                started_at: created,
                trial_end: Some(period_start),
                period_anchor: period_start,
                period_index: 7,
                current_period_start: Some(period_start),
                current_period_end: Some(period_end),
                cancel_at_period_end: true,
                canceled_at: Some(period_end),
                past_due_since: Some(created),
                created_at: created,
                updated_at: period_end,
            },
            subscription_change: subscription_change::Model {
                id: format!("chg_{suffix}"),
                organization_id: org.clone(),
                subscription_id: format!("sub_{suffix}"),
                kind: SubscriptionChangeKind::QuantityChange,
                plan_id: format!("pln_{suffix}"),
                quantity: 5,
                effective_at: at("2026-01-16T00:00:00Z"),
                proration_behavior: Some(ProrationBehavior::None),
                timing: Some(ChangeTiming::PeriodEnd),
                applied_at: Some(period_end),
                created_at: created,
            },
            usage_event: usage_event::Model {
                id: format!("evt_{suffix}"),
                organization_id: org.clone(),
                customer_id: format!("cus_{suffix}"),
                meter_id: format!("met_{suffix}"),
                idempotency_key: "event-1".into(),
                value: dec(TINY),
                timestamp: at("2026-01-20T12:00:00.000001Z"),
                properties: Some(json!({"user": "u1", "region": "eu", "n": 3, "amount": "1.50"})),
                payload_hash: "ef".repeat(32),
                created_at: created,
            },
            invoice: invoice::Model {
                id: format!("inv_{suffix}"),
                organization_id: org.clone(),
                customer_id: format!("cus_{suffix}"),
                subscription_id: Some(format!("sub_{suffix}")),
                kind: InvoiceKind::Periodic,
                status: InvoiceStatus::Open,
                currency: "USD".into(),
                billing_key: format!("periodic:sub_{suffix}:2026-01-01T00:00:00Z"),
                period_start: Some(period_start),
                period_end: Some(period_end),
                subtotal_minor: -5161,
                total_minor: i64::MAX,
                number: Some("ACME-2026-000001".into()),
                number_year: Some(2026),
                number_seq: Some(1),
                finalize_at: Some(period_end),
                created_at: created,
                finalized_at: Some(period_end),
                due_at: Some(at("2026-03-03T00:00:00Z")),
                paid_at: Some(at("2026-03-01T00:00:00Z")),
                voided_at: Some(at("2026-03-02T00:00:00Z")),
                content_hash: Some("01".repeat(32)),
            },
            invoice_line: invoice_line::Model {
                id: format!("lin_{suffix}"),
                organization_id: org.clone(),
                invoice_id: format!("inv_{suffix}"),
                position: 0,
                kind: InvoiceLineKind::LateUsage,
                description: "Late usage: API calls".into(),
                price_id: Some(format!("prc_{suffix}")),
                quantity: dec(BIG),
                unit_amount: Some(dec(UNIT_PRICE)),
                amount_minor: i64::MIN,
                period_start,
                period_end,
            },
            invoice_sequence: invoice_sequence::Model {
                organization_id: org.clone(),
                year: 2026,
                last_seq: i64::MAX,
            },
            pending_invoice_item: pending_invoice_item::Model {
                id: format!("pii_{suffix}"),
                organization_id: org.clone(),
                subscription_id: format!("sub_{suffix}"),
                source_key: format!("proration:chg_{suffix}:credit"),
                kind: InvoiceLineKind::Proration,
                description: "Unused time on Pro".into(),
                price_id: Some(format!("prc_{suffix}")),
                quantity: dec("16"),
                unit_amount: Some(dec(CREDIT)),
                amount_minor: -5161,
                period_start: at("2026-01-16T00:00:00Z"),
                period_end,
                invoice_id: Some(format!("inv_{suffix}")),
                created_at: created,
            },
            outbox: outbox::Model {
                id: 0, // assigned by the database
                organization_id: org.clone(),
                job_kind: "period_close".into(),
                job_key: format!("period_close:sub_{suffix}:2026-02-01T00:00:00Z"),
                subject_id: format!("sub_{suffix}"),
                payload: json!({"subscription_id": format!("sub_{suffix}"), "period_start": "2026-02-01T00:00:00Z"}),
                run_at: period_end,
                created_at: created,
                relayed_at: Some(created),
            },
            job_run: job_run::Model {
                id: format!("job_{suffix}"),
                job_key: format!("period_close:sub_{suffix}:2026-02-01T00:00:00Z"),
                kind: "period_close".into(),
                organization_id: Some(org.clone()),
                subject_id: format!("sub_{suffix}"),
                state: JobState::Dead,
                attempts: 5,
                max_attempts: 5,
                last_error: Some("connection reset ".repeat(100)),
                run_at: period_end,
                next_attempt_at: Some(period_end),
                created_at: created,
                started_at: Some(created),
                finished_at: Some(period_end),
                updated_at: period_end,
            },
            audit_event: audit_event::Model {
                id: 0, // assigned by the database
                organization_id: org,
                seq: 1,
                at: created,
                actor: format!("key_{suffix}"),
                action: "subscription.cancel".into(),
                entity_type: "subscription".into(),
                entity_id: format!("sub_{suffix}"),
                before: Some(json!({"status": "ACTIVE"})),
                after: Some(json!({"status": "CANCELED", "quantity": 3})),
                prev_hash: "0".repeat(64),
                hash: "ab".repeat(32),
            },
        }
    }

    /// Inserts every row (parents first) and returns what the database holds,
    /// with the generated ids filled in.
    pub async fn insert(&self, db: &DatabaseConnection) -> Fixtures {
        let mut out = self.clone();
        out.organization = self
            .organization
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.api_key = self
            .api_key
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.idempotency_key = self
            .idempotency_key
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.customer = self
            .customer
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.meter = self
            .meter
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.plan = self
            .plan
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.plan_version = self
            .plan_version
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.price = self
            .price
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.price_tier = self
            .price_tier
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.subscription = self
            .subscription
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.subscription_change = self
            .subscription_change
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.usage_event = self
            .usage_event
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.invoice = self
            .invoice
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.invoice_line = self
            .invoice_line
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.invoice_sequence = self
            .invoice_sequence
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.pending_invoice_item = self
            .pending_invoice_item
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();
        out.job_run = self
            .job_run
            .clone()
            .into_active_model()
            .insert(db)
            .await
            .unwrap();

        let mut outbox = self.outbox.clone().into_active_model();
        outbox.id = NotSet;
        out.outbox = outbox.insert(db).await.unwrap();
        assert!(out.outbox.id > 0);

        let mut audit = self.audit_event.clone().into_active_model();
        audit.id = NotSet;
        out.audit_event = audit.insert(db).await.unwrap();
        assert!(out.audit_event.id > 0);
        out
    }
}
