//! SeaORM entities of Valora's data model: one module per table, the shared
//! enumerations, and `Dec`, the exact decimal stored as text.
//!
//! Storage rules: no floating point anywhere. Rounded money is `i64` minor units
//! (`*_minor` columns); unit prices, quantities, tier bounds and usage values are
//! [`Dec`] (TEXT, lossless on SQLite and PostgreSQL). Instants are UTC. Every
//! table except `organizations` (and the optional scope of `job_runs`) carries
//! `organization_id` for tenant scoping.

pub mod dec;
pub mod enums;

pub mod api_key;
pub mod audit_event;
pub mod customer;
pub mod idempotency_key;
pub mod invoice;
pub mod invoice_line;
pub mod invoice_sequence;
pub mod job_run;
pub mod meter;
pub mod organization;
pub mod outbox;
pub mod pending_invoice_item;
pub mod plan;
pub mod plan_version;
pub mod price;
pub mod price_tier;
pub mod subscription;
pub mod subscription_change;
pub mod usage_event;

pub use dec::Dec;
pub use enums::{
    Aggregation, ApiKeyRole, BillingAnchor, BillingTiming, ChangeTiming, Interval, InvoiceKind,
    InvoiceLineKind, InvoiceStatus, JobState, PriceModel, ProrationBehavior,
    SubscriptionChangeKind, SubscriptionStatus, TestClockStatus,
};

/// Entity aliases (`Subscription::find()`…), plus `Dec` and the enumerations.
pub mod prelude {
    pub use crate::api_key::Entity as ApiKey;
    pub use crate::audit_event::Entity as AuditEvent;
    pub use crate::customer::Entity as Customer;
    pub use crate::dec::Dec;
    pub use crate::enums::*;
    pub use crate::idempotency_key::Entity as IdempotencyKey;
    pub use crate::invoice::Entity as Invoice;
    pub use crate::invoice_line::Entity as InvoiceLine;
    pub use crate::invoice_sequence::Entity as InvoiceSequence;
    pub use crate::job_run::Entity as JobRun;
    pub use crate::meter::Entity as Meter;
    pub use crate::organization::Entity as Organization;
    pub use crate::outbox::Entity as Outbox;
    pub use crate::pending_invoice_item::Entity as PendingInvoiceItem;
    pub use crate::plan::Entity as Plan;
    pub use crate::plan_version::Entity as PlanVersion;
    pub use crate::price::Entity as Price;
    pub use crate::price_tier::Entity as PriceTier;
    pub use crate::subscription::Entity as Subscription;
    pub use crate::subscription_change::Entity as SubscriptionChange;
    pub use crate::usage_event::Entity as UsageEvent;
}
