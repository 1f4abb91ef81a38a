//! Test clocks: an organization created with `testClockStart` lives at a
//! frozen instant that only [`advance`] moves. Advancing sets the clock and
//! marks it ADVANCING; the workers run the work that became due and set it
//! back to READY.

use chrono::{DateTime, SubsecRound, Utc};
use entity::{TestClockStatus, organization};
use sea_orm::{ActiveModelTrait, DatabaseConnection, EntityTrait, IntoActiveModel, Set};

use crate::audit::{self, AuditEntry};
use crate::error::{WorkflowError, WorkflowResult};

/// Moves `org`'s test clock to `to` (never backwards).
pub async fn advance(
    db: &DatabaseConnection,
    org_id: &str,
    actor: &str,
    to: DateTime<Utc>,
) -> WorkflowResult<organization::Model> {
    let to = to.trunc_subsecs(6);
    let txn = crate::txn::begin_write(db).await?;
    let org = organization::Entity::find_by_id(org_id.to_string())
        .one(&txn)
        .await?
        .ok_or(WorkflowError::NotFound("organization"))?;
    let Some(frozen) = org.test_clock_time else {
        return Err(WorkflowError::bad_input(
            "this organization has no test clock",
        ));
    };
    if to < frozen {
        return Err(WorkflowError::bad_input(format!(
            "a test clock only moves forward: {to} is before its time {frozen}"
        )));
    }
    let mut active = org.clone().into_active_model();
    active.test_clock_time = Set(Some(to));
    active.test_clock_status = Set(Some(TestClockStatus::Advancing));
    let updated = active.update(&txn).await?;
    audit::append(
        &txn,
        &org.id,
        actor,
        AuditEntry {
            action: "test_clock.advanced",
            entity_type: "organization",
            entity_id: &org.id,
            before: Some(serde_json::json!({"testClockTime": frozen, "testClockStatus": org.test_clock_status})),
            after: Some(serde_json::json!({"testClockTime": to, "testClockStatus": TestClockStatus::Advancing})),
        },
        to,
    )
    .await?;
    txn.commit().await?;
    Ok(updated)
}
