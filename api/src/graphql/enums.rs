//! The contract's enums, mirrored from the stored enumerations.

use async_graphql::Enum;

#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "entity::Interval")]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "entity::BillingAnchor")]
pub enum BillingAnchor {
    Anniversary,
    Calendar,
}

#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "entity::PriceModel")]
pub enum PriceModel {
    Flat,
    PerUnit,
    Graduated,
    Volume,
    Package,
}

#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "entity::BillingTiming")]
pub enum BillingTiming {
    InAdvance,
    InArrears,
}

#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "entity::Aggregation")]
pub enum Aggregation {
    Count,
    Sum,
    Max,
    Last,
    UniqueCount,
}

#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "entity::SubscriptionStatus")]
pub enum SubscriptionStatus {
    Trialing,
    Active,
    PastDue,
    Canceled,
}

#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "entity::InvoiceStatus")]
pub enum InvoiceStatus {
    Draft,
    Open,
    Paid,
    Void,
    Uncollectible,
}

#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "entity::InvoiceLineKind")]
pub enum InvoiceLineKind {
    Subscription,
    Usage,
    Proration,
    LateUsage,
}

#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "entity::ProrationBehavior")]
pub enum ProrationBehavior {
    CreateProrations,
    AlwaysInvoice,
    None,
}

#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "entity::ChangeTiming")]
pub enum ChangeTiming {
    Immediately,
    PeriodEnd,
}

#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "entity::TestClockStatus")]
pub enum TestClockStatus {
    Ready,
    Advancing,
}

#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(remote = "entity::ApiKeyRole")]
pub enum ApiKeyRole {
    Admin,
    Operator,
    Ingest,
    ReadOnly,
}

#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum UsageEventOutcome {
    Accepted,
    Duplicate,
    Rejected,
}
