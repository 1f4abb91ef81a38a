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
pub mod jobs;
