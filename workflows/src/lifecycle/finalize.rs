//! Finalization of a draft once its grace period is over.
//!
//! A periodic (or final) draft is recomputed first, so usage that arrived
//! for the closed period during the grace period is billed on it rather than
//! as a later LATE_USAGE line; its pending-proration lines are kept as they
//! are. Then the one finalization routine freezes it: gapless number,
//! `dueAt`, `contentHash` (see [`crate::invoice_actions::finalize`]).

use chrono::{DateTime, Utc};
use entity::InvoiceStatus;
use sea_orm::DatabaseConnection;

use crate::clock::{Clock, org_now};
use crate::invoice_actions::{billing_line, finalize, lines_of};
use crate::jobs::Job;
use crate::lifecycle::{actor, commit_step, draft, inputs, lock, not_due};
use crate::steps::{StepError, StepOutcome};
use crate::tenancy::load_org;

/// The step of `invoice_finalize` jobs.
pub async fn run(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    job: &Job,
) -> Result<StepOutcome, StepError> {
    let txn = crate::txn::begin_write(db).await?;
    let inv = lock::invoice(&txn, &job.subject_id).await?;
    let org = load_org(&txn, &inv.organization_id).await?;
    let now = org_now(&org, clock);
    if inv.status != InvoiceStatus::Draft {
        let why = format!("invoice is {}", inv.status);
        return commit_step(txn, job, clock, StepOutcome::Skipped(why)).await;
    }
    if let Some(due) = inv.finalize_at
        && now < due
    {
        return Err(not_due("finalization", due, now));
    }
    if let (Some(sub_id), Some(period_start)) =
        (&inv.subscription_id, closed_period_start(&inv.billing_key))
    {
        let sub = lock::subscription(&txn, sub_id).await?;
        let (terms, meters) = crate::subscriptions::terms(&txn, &org, &sub).await?;
        let n = inputs::period_number(&terms, period_start)?;
        let currency = inputs::currency(&org)?;
        let mut lines =
            inputs::period_close_lines(&txn, &org, &sub, (&terms, meters), n, Some(&inv.id))
                .await?;
        let stored = lines_of(&txn, &org.id, vec![inv.id.clone()])
            .await?
            .remove(&inv.id)
            .unwrap_or_default();
        lines.extend(
            stored
                .iter()
                .map(|line| billing_line(currency, line))
                .filter(|line| line.kind == billing::LineKind::Proration),
        );
        let current: Vec<_> = stored.iter().map(|l| billing_line(currency, l)).collect();
        if lines != current && !lines.is_empty() {
            draft::replace_lines(&txn, &inv, &lines, currency).await?;
        }
    }
    // Finalized as of its due instant, not whenever a worker got to it: numbers
    // aside, the invoice (finalizedAt, dueAt) does not depend on worker speed.
    let at = inv.finalize_at.unwrap_or(now);
    finalize(&txn, &org, &inv.id, at, &actor(job)).await?;
    commit_step(txn, job, clock, StepOutcome::Done).await
}

/// The start of the period a periodic draft closed, from its billing key.
fn closed_period_start(billing_key: &str) -> Option<DateTime<Utc>> {
    let rest = billing_key.strip_prefix("periodic:")?;
    let (_, instant) = rest.split_once(':')?;
    DateTime::parse_from_rfc3339(instant)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn periodic_keys_name_their_period() {
        let start = Utc.with_ymd_and_hms(2026, 1, 16, 0, 0, 0).unwrap();
        assert_eq!(
            closed_period_start(&draft::periodic_key("sub", start)),
            Some(start)
        );
        assert_eq!(closed_period_start(&draft::first_key("sub")), None);
        assert_eq!(closed_period_start(&draft::change_key("c")), None);
    }
}
