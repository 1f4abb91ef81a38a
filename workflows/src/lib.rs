//! Valora's billing workflows.
//!
//! - [`billing`] (re-exported from `workflows/billing`): the pure core — money,
//!   pricing, periods, proration, invoice computation. No I/O, no clock.
//! - The modules here: what surrounds it — the clock abstraction, job kinds
//!   and the outbox, and the idempotent steps that load rows, call the core
//!   and write the result in one transaction.

pub use billing;

pub mod clock;
pub mod ids;
pub mod job_runs;
pub mod jobs;
pub mod lifecycle;
pub mod steps;

// API-side workflows: one concept per module.
pub mod audit;
pub mod catalog;
pub mod customers;
pub mod error;
pub mod idempotency;
pub mod invoice_actions;
pub mod json_rows;
pub mod pagination;
pub mod subscriptions;
pub mod tenancy;
pub mod test_clock;
pub mod text;
pub mod txn;
pub mod usage;
