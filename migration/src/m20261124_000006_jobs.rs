//! Job machinery: the transactional outbox and the job-runs table (attempts,
//! state and last error per job key; apalis-redis cannot report these itself).

use sea_orm_migration::{prelude::*, schema::*};

use crate::helpers::{drop_tables, foreign_key, id, index};
use crate::m20261124_000001_tenancy::Organizations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    OrganizationId,
    JobKind,
    JobKey,
    SubjectId,
    Payload,
    RunAt,
    CreatedAt,
    RelayedAt,
}

#[derive(DeriveIden)]
enum JobRuns {
    Table,
    Id,
    JobKey,
    Kind,
    OrganizationId,
    SubjectId,
    State,
    Attempts,
    MaxAttempts,
    LastError,
    RunAt,
    NextAttemptAt,
    CreatedAt,
    StartedAt,
    FinishedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    // Auto-increment: the relay forwards rows in id order.
                    .col(big_pk_auto(Outbox::Id))
                    .col(string(Outbox::OrganizationId))
                    .col(string(Outbox::JobKind))
                    .col(string(Outbox::JobKey))
                    .col(string(Outbox::SubjectId))
                    .col(json(Outbox::Payload))
                    .col(timestamp_with_time_zone(Outbox::RunAt))
                    .col(timestamp_with_time_zone(Outbox::CreatedAt))
                    .col(timestamp_with_time_zone_null(Outbox::RelayedAt))
                    .foreign_key(&mut foreign_key(
                        "fk_outbox_organization_id",
                        (Outbox::Table, Outbox::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_outbox_relayed_at_id",
                Outbox::Table,
                [Outbox::RelayedAt, Outbox::Id],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_outbox_organization_id",
                Outbox::Table,
                [Outbox::OrganizationId],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(JobRuns::Table)
                    .if_not_exists()
                    .col(id(JobRuns::Id))
                    .col(string_uniq(JobRuns::JobKey))
                    .col(string(JobRuns::Kind))
                    .col(string_null(JobRuns::OrganizationId))
                    .col(string(JobRuns::SubjectId))
                    .col(string(JobRuns::State))
                    .col(integer(JobRuns::Attempts))
                    .col(integer(JobRuns::MaxAttempts))
                    .col(text_null(JobRuns::LastError))
                    .col(timestamp_with_time_zone(JobRuns::RunAt))
                    .col(timestamp_with_time_zone_null(JobRuns::NextAttemptAt))
                    .col(timestamp_with_time_zone(JobRuns::CreatedAt))
                    .col(timestamp_with_time_zone_null(JobRuns::StartedAt))
                    .col(timestamp_with_time_zone_null(JobRuns::FinishedAt))
                    .col(timestamp_with_time_zone(JobRuns::UpdatedAt))
                    .foreign_key(&mut foreign_key(
                        "fk_job_runs_organization_id",
                        (JobRuns::Table, JobRuns::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_job_runs_state_next_attempt_at",
                JobRuns::Table,
                [JobRuns::State, JobRuns::NextAttemptAt],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_job_runs_kind_state",
                JobRuns::Table,
                [JobRuns::Kind, JobRuns::State],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_job_runs_organization_id",
                JobRuns::Table,
                [JobRuns::OrganizationId],
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(
            manager,
            [JobRuns::Table.into_iden(), Outbox::Table.into_iden()],
        )
        .await
    }
}
