//! Organization time for scans: every organization's "now" is the process
//! clock, except organizations with a test clock, whose now is their frozen
//! instant. A scan runs once per *clock group*: one group for all
//! organizations on the process clock, one per test-clock organization
//! (test clocks are few: they are for integration testing).

use chrono::{DateTime, Utc};
use entity::organization;
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use workflows::clock::Clock;

/// A snapshot of every organization's now.
#[derive(Clone, Debug)]
pub struct OrgClocks {
    pub now: DateTime<Utc>,
    pub test_clocks: Vec<(String, DateTime<Utc>)>,
}

/// One set of organizations sharing one "now".
#[derive(Clone, Debug)]
pub struct ClockGroup {
    /// `process` or the test-clock organization's id.
    pub label: String,
    pub scope: Condition,
    pub now: DateTime<Utc>,
}

impl OrgClocks {
    pub async fn load<C: ConnectionTrait>(db: &C, clock: &dyn Clock) -> Result<OrgClocks, DbErr> {
        let orgs = organization::Entity::find()
            .filter(organization::Column::TestClockTime.is_not_null())
            .all(db)
            .await?;
        Ok(OrgClocks {
            now: clock.now(),
            test_clocks: orgs
                .into_iter()
                .filter_map(|o| o.test_clock_time.map(|t| (o.id, t)))
                .collect(),
        })
    }

    /// The now of `organization_id`.
    pub fn now_of(&self, organization_id: &str) -> DateTime<Utc> {
        self.test_clocks
            .iter()
            .find(|(id, _)| id == organization_id)
            .map_or(self.now, |(_, t)| *t)
    }

    /// The clock groups, as conditions on an organization-id column.
    ///
    /// The process group is every organization but the test-clock ones,
    /// written as the ranges of ids between them rather than `NOT IN`: an
    /// index that starts with the organization then skips a test-clock
    /// organization's rows instead of reading and dropping each (a frozen
    /// clock's rows are mostly due by the process clock).
    pub fn groups(&self, org_column: impl ColumnTrait) -> Vec<ClockGroup> {
        let mut process = Condition::all();
        if !self.test_clocks.is_empty() {
            let mut ids: Vec<&str> = self.test_clocks.iter().map(|(id, _)| id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let mut ranges = Condition::any().add(org_column.is_null());
            let mut below = None;
            for id in ids {
                let mut range = Condition::all().add(org_column.lt(id));
                if let Some(low) = below {
                    range = range.add(org_column.gt(low));
                }
                ranges = ranges.add(range);
                below = Some(id);
            }
            if let Some(low) = below {
                ranges = ranges.add(org_column.gt(low));
            }
            process = process.add(ranges);
        }
        let mut groups = vec![ClockGroup {
            label: "process".into(),
            scope: process,
            now: self.now,
        }];
        for (id, at) in &self.test_clocks {
            groups.push(ClockGroup {
                label: id.clone(),
                scope: Condition::all().add(org_column.eq(id.clone())),
                now: *at,
            });
        }
        groups
    }
}
