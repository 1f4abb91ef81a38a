//! Enumerations stored as SCREAMING_CASE strings (the same spelling as the
//! GraphQL enums), so rows stay readable and adding a variant needs no schema
//! change on either backend.

use std::fmt;

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// State of an organization's test clock.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TestClockStatus {
    #[sea_orm(string_value = "READY")]
    Ready,
    #[sea_orm(string_value = "ADVANCING")]
    Advancing,
}

/// What an API key may do.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApiKeyRole {
    #[sea_orm(string_value = "ADMIN")]
    Admin,
    #[sea_orm(string_value = "OPERATOR")]
    Operator,
    #[sea_orm(string_value = "INGEST")]
    Ingest,
    #[sea_orm(string_value = "READ_ONLY")]
    ReadOnly,
}

/// How a meter folds usage events of a period into one quantity.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Aggregation {
    #[sea_orm(string_value = "COUNT")]
    Count,
    #[sea_orm(string_value = "SUM")]
    Sum,
    #[sea_orm(string_value = "MAX")]
    Max,
    #[sea_orm(string_value = "LAST")]
    Last,
    #[sea_orm(string_value = "UNIQUE_COUNT")]
    UniqueCount,
}

/// Unit of a plan's billing interval.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Interval {
    #[sea_orm(string_value = "DAY")]
    Day,
    #[sea_orm(string_value = "WEEK")]
    Week,
    #[sea_orm(string_value = "MONTH")]
    Month,
    #[sea_orm(string_value = "YEAR")]
    Year,
}

/// How a price turns a quantity into an amount.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PriceModel {
    #[sea_orm(string_value = "FLAT")]
    Flat,
    #[sea_orm(string_value = "PER_UNIT")]
    PerUnit,
    #[sea_orm(string_value = "GRADUATED")]
    Graduated,
    #[sea_orm(string_value = "VOLUME")]
    Volume,
    #[sea_orm(string_value = "PACKAGE")]
    Package,
}

/// Whether a fee is billed at the start or at the end of its period.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingTiming {
    #[sea_orm(string_value = "IN_ADVANCE")]
    InAdvance,
    #[sea_orm(string_value = "IN_ARREARS")]
    InArrears,
}

/// Lifecycle state of a subscription.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionStatus {
    #[sea_orm(string_value = "TRIALING")]
    Trialing,
    #[sea_orm(string_value = "ACTIVE")]
    Active,
    #[sea_orm(string_value = "PAST_DUE")]
    PastDue,
    #[sea_orm(string_value = "CANCELED")]
    Canceled,
}

/// How a subscription's periods are aligned.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingAnchor {
    #[sea_orm(string_value = "ANNIVERSARY")]
    Anniversary,
    #[sea_orm(string_value = "CALENDAR")]
    Calendar,
}

/// Kind of an entry in a subscription's history.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionChangeKind {
    #[sea_orm(string_value = "CREATED")]
    Created,
    #[sea_orm(string_value = "PLAN_CHANGE")]
    PlanChange,
    #[sea_orm(string_value = "QUANTITY_CHANGE")]
    QuantityChange,
    #[sea_orm(string_value = "CANCEL")]
    Cancel,
}

/// What a plan or quantity change bills for the rest of the period.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProrationBehavior {
    #[sea_orm(string_value = "CREATE_PRORATIONS")]
    CreateProrations,
    #[sea_orm(string_value = "ALWAYS_INVOICE")]
    AlwaysInvoice,
    #[sea_orm(string_value = "NONE")]
    None,
}

/// When a subscription change takes effect.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChangeTiming {
    #[sea_orm(string_value = "IMMEDIATELY")]
    Immediately,
    #[sea_orm(string_value = "PERIOD_END")]
    PeriodEnd,
}

/// Why an invoice was created.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InvoiceKind {
    #[sea_orm(string_value = "FIRST")]
    First,
    #[sea_orm(string_value = "PERIODIC")]
    Periodic,
    #[sea_orm(string_value = "PRORATION")]
    Proration,
    #[sea_orm(string_value = "FINAL")]
    Final,
}

/// Lifecycle state of an invoice.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InvoiceStatus {
    #[sea_orm(string_value = "DRAFT")]
    Draft,
    #[sea_orm(string_value = "OPEN")]
    Open,
    #[sea_orm(string_value = "PAID")]
    Paid,
    #[sea_orm(string_value = "VOID")]
    Void,
    #[sea_orm(string_value = "UNCOLLECTIBLE")]
    Uncollectible,
}

/// What an invoice line (or pending item) bills.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InvoiceLineKind {
    #[sea_orm(string_value = "SUBSCRIPTION")]
    Subscription,
    #[sea_orm(string_value = "USAGE")]
    Usage,
    #[sea_orm(string_value = "PRORATION")]
    Proration,
    #[sea_orm(string_value = "LATE_USAGE")]
    LateUsage,
}

/// State of a background job run.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    #[sea_orm(string_value = "QUEUED")]
    Queued,
    #[sea_orm(string_value = "RUNNING")]
    Running,
    #[sea_orm(string_value = "SUCCEEDED")]
    Succeeded,
    #[sea_orm(string_value = "FAILED")]
    Failed,
    #[sea_orm(string_value = "DEAD")]
    Dead,
    #[sea_orm(string_value = "DISCARDED")]
    Discarded,
}

/// `as_str` (the stored spelling) and `Display` for every enumeration.
macro_rules! stored_spelling {
    ($($name:ident { $($variant:ident => $text:literal),+ $(,)? })+) => {
        $(
            impl $name {
                /// The stored (and GraphQL) spelling.
                pub const fn as_str(self) -> &'static str {
                    match self {
                        $(Self::$variant => $text,)+
                    }
                }
            }

            impl fmt::Display for $name {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str(self.as_str())
                }
            }
        )+
    };
}

stored_spelling! {
    TestClockStatus { Ready => "READY", Advancing => "ADVANCING" }
    ApiKeyRole { Admin => "ADMIN", Operator => "OPERATOR", Ingest => "INGEST", ReadOnly => "READ_ONLY" }
    Aggregation { Count => "COUNT", Sum => "SUM", Max => "MAX", Last => "LAST", UniqueCount => "UNIQUE_COUNT" }
    Interval { Day => "DAY", Week => "WEEK", Month => "MONTH", Year => "YEAR" }
    PriceModel { Flat => "FLAT", PerUnit => "PER_UNIT", Graduated => "GRADUATED", Volume => "VOLUME", Package => "PACKAGE" }
    BillingTiming { InAdvance => "IN_ADVANCE", InArrears => "IN_ARREARS" }
    SubscriptionStatus { Trialing => "TRIALING", Active => "ACTIVE", PastDue => "PAST_DUE", Canceled => "CANCELED" }
    BillingAnchor { Anniversary => "ANNIVERSARY", Calendar => "CALENDAR" }
    SubscriptionChangeKind { Created => "CREATED", PlanChange => "PLAN_CHANGE", QuantityChange => "QUANTITY_CHANGE", Cancel => "CANCEL" }
    ProrationBehavior { CreateProrations => "CREATE_PRORATIONS", AlwaysInvoice => "ALWAYS_INVOICE", None => "NONE" }
    ChangeTiming { Immediately => "IMMEDIATELY", PeriodEnd => "PERIOD_END" }
    InvoiceKind { First => "FIRST", Periodic => "PERIODIC", Proration => "PRORATION", Final => "FINAL" }
    InvoiceStatus { Draft => "DRAFT", Open => "OPEN", Paid => "PAID", Void => "VOID", Uncollectible => "UNCOLLECTIBLE" }
    InvoiceLineKind { Subscription => "SUBSCRIPTION", Usage => "USAGE", Proration => "PRORATION", LateUsage => "LATE_USAGE" }
    JobState { Queued => "QUEUED", Running => "RUNNING", Succeeded => "SUCCEEDED", Failed => "FAILED", Dead => "DEAD", Discarded => "DISCARDED" }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Display`, serde and the database value must never disagree.
    fn check<E: ActiveEnum<Value = String> + sea_orm::Iterable + fmt::Display + Serialize>() {
        for variant in E::iter() {
            assert_eq!(variant.to_string(), variant.to_value());
            assert_eq!(
                serde_json::to_value(&variant).unwrap(),
                serde_json::Value::String(variant.to_value())
            );
        }
    }

    #[test]
    fn spellings_agree() {
        check::<TestClockStatus>();
        check::<ApiKeyRole>();
        check::<Aggregation>();
        check::<Interval>();
        check::<PriceModel>();
        check::<BillingTiming>();
        check::<SubscriptionStatus>();
        check::<BillingAnchor>();
        check::<SubscriptionChangeKind>();
        check::<ProrationBehavior>();
        check::<ChangeTiming>();
        check::<InvoiceKind>();
        check::<InvoiceStatus>();
        check::<InvoiceLineKind>();
        check::<JobState>();
    }

    #[test]
    fn serde_matches_database() {
        assert_eq!(
            serde_json::to_string(&ProrationBehavior::CreateProrations).unwrap(),
            "\"CREATE_PRORATIONS\""
        );
        assert_eq!(
            serde_json::to_string(&InvoiceLineKind::LateUsage).unwrap(),
            "\"LATE_USAGE\""
        );
        let state: JobState = serde_json::from_str("\"DISCARDED\"").unwrap();
        assert_eq!(state, JobState::Discarded);
    }
}
