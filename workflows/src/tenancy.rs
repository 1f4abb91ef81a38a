//! Organizations and their API keys.
//!
//! Keys are random secrets shown once; only their SHA-256 is stored
//! (`api_keys.key_hash`). The caller hashes the secret it received and looks
//! the hash up: the comparison the database makes is between hashes, so its
//! timing reveals nothing usable about the secret itself.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use entity::{ApiKeyRole, TestClockStatus, api_key, organization};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, QueryFilter, Set,
};

use crate::audit::{self, AuditEntry, snapshot};
use crate::clock::{Clock, org_now};
use crate::error::{WorkflowError, WorkflowResult};
use crate::ids::new_id;
use crate::text::{MAX_NAME_CHARS, check_required, quoted};

/// A new key: its stored hash and a short non-secret prefix for display.
#[derive(Clone, Debug)]
pub struct NewKey {
    pub hash: String,
    pub prefix: String,
}

/// Settings of a new organization, unvalidated.
#[derive(Clone, Debug)]
pub struct NewOrganization {
    pub name: String,
    pub currency: String,
    pub timezone: String,
    pub net_terms_days: i32,
    pub grace_period_hours: i32,
    pub late_usage_window_days: i32,
    /// Cancel a subscription this many days after it went PAST_DUE (`None`: never).
    pub cancel_after_past_due_days: Option<i32>,
    pub test_clock_start: Option<DateTime<Utc>>,
}

/// Checks an organization's settings; every problem is BAD_USER_INPUT.
pub fn validate_organization(input: &NewOrganization) -> WorkflowResult<()> {
    check_required("name", &input.name, MAX_NAME_CHARS)?;
    billing::Currency::parse(&input.currency)?;
    input.timezone.parse::<chrono_tz::Tz>().map_err(|_| {
        WorkflowError::bad_input(format!("unknown timezone {}", quoted(&input.timezone)))
    })?;
    for (field, value) in [
        ("netTermsDays", input.net_terms_days),
        ("gracePeriodHours", input.grace_period_hours),
        ("lateUsageWindowDays", input.late_usage_window_days),
    ] {
        if value < 0 {
            return Err(WorkflowError::bad_input(format!(
                "{field} must not be negative, got {value}"
            )));
        }
    }
    if let Some(days) = input.cancel_after_past_due_days
        && !(1..=3650).contains(&days)
    {
        return Err(WorkflowError::bad_input(format!(
            "cancelAfterPastDueDays must be between 1 and 3650, got {days}"
        )));
    }
    if input.late_usage_window_days > 3650 || input.net_terms_days > 3650 {
        return Err(WorkflowError::bad_input(
            "netTermsDays and lateUsageWindowDays must be at most 3650",
        ));
    }
    Ok(())
}

/// Creates an organization and its first ADMIN key in one transaction.
pub async fn create_organization(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    actor: &str,
    input: NewOrganization,
    first_key: NewKey,
) -> WorkflowResult<(organization::Model, api_key::Model)> {
    validate_organization(&input)?;
    let now = clock.now().trunc_subsecs(6);
    let org = organization::Model {
        id: new_id(),
        name: input.name,
        currency: input.currency,
        timezone: input.timezone,
        net_terms_days: input.net_terms_days,
        grace_period_hours: input.grace_period_hours,
        late_usage_window_days: input.late_usage_window_days,
        cancel_after_past_due_days: input.cancel_after_past_due_days,
        invoice_prefix: "INV".into(),
        test_clock_time: input.test_clock_start.map(|t| t.trunc_subsecs(6)),
        test_clock_status: input.test_clock_start.map(|_| TestClockStatus::Ready),
        created_at: now,
    };
    let txn = crate::txn::begin_write(db).await?;
    let org = org.into_active_model().reset_all().insert(&txn).await?;
    let at = org_now(&org, clock);
    audit::append(
        &txn,
        &org.id,
        actor,
        AuditEntry {
            action: "organization.created",
            entity_type: "organization",
            entity_id: &org.id,
            before: None,
            after: snapshot(&org),
        },
        at,
    )
    .await?;
    let key = insert_key(&txn, &org, actor, ApiKeyRole::Admin, first_key, at).await?;
    txn.commit().await?;
    Ok((org, key))
}

async fn insert_key<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    actor: &str,
    role: ApiKeyRole,
    key: NewKey,
    at: DateTime<Utc>,
) -> WorkflowResult<api_key::Model> {
    let model = api_key::ActiveModel {
        id: Set(new_id()),
        organization_id: Set(org.id.clone()),
        role: Set(role),
        key_hash: Set(key.hash),
        key_prefix: Set(key.prefix),
        created_at: Set(at),
        revoked_at: Set(None),
    }
    .insert(txn)
    .await?;
    // The snapshot holds the hash, never the secret.
    audit::append(
        txn,
        &org.id,
        actor,
        AuditEntry {
            action: "api_key.created",
            entity_type: "api_key",
            entity_id: &model.id,
            before: None,
            after: Some(serde_json::json!({"id": model.id, "role": role.as_str(), "keyPrefix": model.key_prefix})),
        },
        at,
    )
    .await?;
    Ok(model)
}

/// A new key for `org`.
pub async fn create_api_key(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    org: &organization::Model,
    actor: &str,
    role: ApiKeyRole,
    key: NewKey,
) -> WorkflowResult<api_key::Model> {
    let txn = crate::txn::begin_write(db).await?;
    let model = insert_key(&txn, org, actor, role, key, org_now(org, clock)).await?;
    txn.commit().await?;
    Ok(model)
}

/// Revokes a key of `org`; revoking twice is harmless.
pub async fn revoke_api_key(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    org: &organization::Model,
    actor: &str,
    id: &str,
) -> WorkflowResult<()> {
    let txn = crate::txn::begin_write(db).await?;
    let key = api_key::Entity::find_by_id(id.to_string())
        .filter(api_key::Column::OrganizationId.eq(&org.id))
        .one(&txn)
        .await?
        .ok_or(WorkflowError::NotFound("api key"))?;
    if key.revoked_at.is_some() {
        return Ok(());
    }
    let now = org_now(org, clock);
    let mut active = key.clone().into_active_model();
    active.revoked_at = Set(Some(now));
    active.update(&txn).await?;
    audit::append(
        &txn,
        &org.id,
        actor,
        AuditEntry {
            action: "api_key.revoked",
            entity_type: "api_key",
            entity_id: &key.id,
            before: None,
            after: None,
        },
        now,
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// The live (not revoked) key with this hash, and its organization.
pub async fn authenticate<C: ConnectionTrait>(
    db: &C,
    key_hash: &str,
) -> WorkflowResult<Option<(api_key::Model, organization::Model)>> {
    let found = api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(key_hash))
        .filter(api_key::Column::RevokedAt.is_null())
        .find_also_related(organization::Entity)
        .one(db)
        .await?;
    Ok(found.and_then(|(key, org)| org.map(|org| (key, org))))
}

/// The caller's organization.
pub async fn load_org<C: ConnectionTrait>(db: &C, id: &str) -> WorkflowResult<organization::Model> {
    organization::Entity::find_by_id(id.to_string())
        .one(db)
        .await?
        .ok_or(WorkflowError::NotFound("organization"))
}

/// `now + days`, refusing overflow.
pub fn add_days(at: DateTime<Utc>, days: i64) -> WorkflowResult<DateTime<Utc>> {
    Duration::try_days(days)
        .and_then(|d| at.checked_add_signed(d))
        .ok_or_else(|| WorkflowError::bad_input(format!("{days} days from {at} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> NewOrganization {
        NewOrganization {
            name: "Acme".into(),
            currency: "USD".into(),
            timezone: "Europe/Paris".into(),
            net_terms_days: 30,
            grace_period_hours: 0,
            late_usage_window_days: 35,
            cancel_after_past_due_days: None,
            test_clock_start: None,
        }
    }

    #[test]
    fn settings_are_validated() {
        assert!(validate_organization(&input()).is_ok());
        let bad = |f: fn(&mut NewOrganization)| {
            let mut i = input();
            f(&mut i);
            matches!(validate_organization(&i), Err(WorkflowError::BadInput(_)))
        };
        assert!(bad(|i| i.currency = "XYZ".into()));
        assert!(bad(|i| i.currency = "usd".into()));
        assert!(bad(|i| i.timezone = "Mars/Base".into()));
        assert!(bad(|i| i.net_terms_days = -1));
        assert!(bad(|i| i.grace_period_hours = -1));
        assert!(bad(|i| i.late_usage_window_days = -1));
        assert!(bad(|i| i.name = " ".into()));
    }
}
