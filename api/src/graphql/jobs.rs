//! Operating the durable jobs (OPERATOR or ADMIN): the job runs of the
//! caller's organization by kind and state, and the operator's two levers,
//! retry (a dead or failed job runs again) and discard (it never runs).

use async_graphql::{Context, Enum, ID, Object};
use entity::job_run;

use super::auth::{require_org, roles, state};
use super::error::{ApiError, ApiResult};
use super::pagination::PageInfo;
use super::scalars::Instant;

/// What a job does (one queue per kind).
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum JobKind {
    SubscriptionStart,
    TrialExpiry,
    PeriodClose,
    Proration,
    InvoiceFinalize,
    InvoiceOverdue,
}

impl From<JobKind> for workflows::jobs::JobKind {
    fn from(kind: JobKind) -> Self {
        use workflows::jobs::JobKind as K;
        match kind {
            JobKind::SubscriptionStart => K::SubscriptionStart,
            JobKind::TrialExpiry => K::TrialExpiry,
            JobKind::PeriodClose => K::PeriodClose,
            JobKind::Proration => K::Proration,
            JobKind::InvoiceFinalize => K::InvoiceFinalize,
            JobKind::InvoiceOverdue => K::InvoiceOverdue,
        }
    }
}

/// Where a job is in its life.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Discarded,
}

impl From<JobState> for entity::JobState {
    fn from(state: JobState) -> Self {
        use entity::JobState as S;
        match state {
            JobState::Queued => S::Queued,
            JobState::Running => S::Running,
            JobState::Succeeded => S::Succeeded,
            JobState::Failed => S::Failed,
            JobState::Dead => S::Dead,
            JobState::Discarded => S::Discarded,
        }
    }
}

impl From<entity::JobState> for JobState {
    fn from(state: entity::JobState) -> Self {
        use entity::JobState as S;
        match state {
            S::Queued => JobState::Queued,
            S::Running => JobState::Running,
            S::Succeeded => JobState::Succeeded,
            S::Failed => JobState::Failed,
            S::Dead => JobState::Dead,
            S::Discarded => JobState::Discarded,
        }
    }
}

/// One job run from Valora's ledger.
pub struct Job(job_run::Model);

#[Object]
impl Job {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// What the job does, e.g. `period_close:{subscription}:{period start}`.
    async fn key(&self) -> &str {
        &self.0.job_key
    }
    /// The queue name (`period_close`, …).
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    async fn state(&self) -> JobState {
        self.0.state.into()
    }
    /// The row the job acts on (a subscription or an invoice).
    async fn subject_id(&self) -> ID {
        ID(self.0.subject_id.clone())
    }
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    async fn max_attempts(&self) -> i32 {
        self.0.max_attempts
    }
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    async fn run_at(&self) -> Instant {
        Instant(self.0.run_at)
    }
    async fn created_at(&self) -> Instant {
        Instant(self.0.created_at)
    }
    async fn started_at(&self) -> Option<Instant> {
        self.0.started_at.map(Instant)
    }
    async fn finished_at(&self) -> Option<Instant> {
        self.0.finished_at.map(Instant)
    }
}

pub struct JobConnection {
    nodes: Vec<Job>,
    page_info: PageInfo,
}

#[Object]
impl JobConnection {
    async fn nodes(&self) -> &[Job] {
        &self.nodes
    }
    async fn page_info(&self) -> &PageInfo {
        &self.page_info
    }
}

#[derive(Default)]
pub struct JobsQuery;

#[Object]
impl JobsQuery {
    /// The organization's jobs, newest first (at most 100 a page).
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        kind: Option<JobKind>,
        #[graphql(name = "state")] job_state: Option<JobState>,
        #[graphql(default = 50)] first: i32,
        after: Option<String>,
    ) -> ApiResult<JobConnection> {
        let (_, org) = require_org(ctx, roles::OPERATE).await?;
        if !(0..=100).contains(&first) {
            return Err(ApiError::bad_input(format!(
                "first must be between 0 and 100, got {first}"
            )));
        }
        // Opaque cursors, as everywhere in the API.
        let after = after
            .map(|c| {
                hex::decode(&c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        ApiError::bad_input(format!(
                            "invalid cursor {}",
                            workflows::text::quoted(&c)
                        ))
                    })
            })
            .transpose()?;
        let page = worker::ops::list_jobs(
            &state(ctx).db,
            Some(&org.id),
            kind.map(Into::into),
            job_state.map(Into::into),
            first as u64,
            after.as_deref(),
        )
        .await?;
        Ok(JobConnection {
            nodes: page.jobs.into_iter().map(Job).collect(),
            page_info: PageInfo {
                has_next_page: page.has_next_page,
                end_cursor: page.end_cursor.map(hex::encode),
            },
        })
    }
}

#[derive(Default)]
pub struct JobsMutation;

#[Object]
impl JobsMutation {
    /// A DEAD, FAILED or DISCARDED job runs again with its attempts reset.
    async fn retry_job(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Job> {
        let (_, org) = require_org(ctx, roles::OPERATE).await?;
        let st = state(ctx);
        let now = workflows::clock::org_now(&org, st.clock.as_ref());
        Ok(Job(
            worker::ops::retry_job(&st.db, Some(&org.id), &id, now).await?
        ))
    }

    /// A QUEUED, FAILED or DEAD job is set aside and never runs (unless retried).
    async fn discard_job(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Job> {
        let (_, org) = require_org(ctx, roles::OPERATE).await?;
        let st = state(ctx);
        let now = workflows::clock::org_now(&org, st.clock.as_ref());
        Ok(Job(worker::ops::discard_job(
            &st.db,
            Some(&org.id),
            &id,
            now,
        )
        .await?))
    }
}
