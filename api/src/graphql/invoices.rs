//! Invoices: reads, `upcomingInvoice`, and the state transitions.

use async_graphql::{Context, ID, Object};
use entity::{invoice, invoice_line};
use workflows::invoice_actions::{InvoiceFilter, Settlement, amount_from_minor};

use super::auth::{require, require_org, roles, state};
use super::catalog::Price;
use super::customers::Customer;
use super::enums::{InvoiceLineKind, InvoiceStatus};
use super::error::{ApiError, ApiResult};
use super::loaders;
use super::pagination::{PageInfo, count, page_args, page_info};
use super::scalars::{Dec, Instant};
use super::subscriptions::Subscription;

/// A stored invoice, or an unsaved one (`upcomingInvoice`) with its lines.
#[derive(Clone)]
pub struct Invoice {
    pub model: invoice::Model,
    pub lines: Option<Vec<invoice_line::Model>>,
}

impl Invoice {
    pub fn stored(model: invoice::Model) -> Invoice {
        Invoice { model, lines: None }
    }

    fn amount(&self, minor: i64) -> ApiResult<Dec> {
        Ok(Dec(amount_from_minor(&self.model.currency, minor)?))
    }
}

#[Object]
impl Invoice {
    async fn id(&self) -> ID {
        ID(self.model.id.clone())
    }
    async fn number(&self) -> Option<&str> {
        self.model.number.as_deref()
    }
    async fn status(&self) -> InvoiceStatus {
        self.model.status.into()
    }
    async fn customer(&self, ctx: &Context<'_>) -> ApiResult<Customer> {
        if let Some(hit) = loaders::customer(ctx, &self.model.customer_id) {
            return Ok(Customer(hit));
        }
        workflows::customers::get_customer(
            &state(ctx).db,
            &self.model.organization_id,
            &self.model.customer_id,
        )
        .await?
        .map(Customer)
        .ok_or_else(|| ApiError::not_found("customer"))
    }
    async fn subscription(&self, ctx: &Context<'_>) -> ApiResult<Option<Subscription>> {
        let Some(id) = &self.model.subscription_id else {
            return Ok(None);
        };
        Ok(workflows::subscriptions::get_subscription(
            &state(ctx).db,
            &self.model.organization_id,
            id,
        )
        .await?
        .map(Subscription))
    }
    async fn currency(&self) -> &str {
        &self.model.currency
    }
    async fn period_start(&self) -> Option<Instant> {
        self.model.period_start.map(Instant)
    }
    async fn period_end(&self) -> Option<Instant> {
        self.model.period_end.map(Instant)
    }
    async fn lines(&self, ctx: &Context<'_>) -> ApiResult<Vec<InvoiceLine>> {
        let lines = match &self.lines {
            Some(lines) => lines.clone(),
            None if let Some(hit) = loaders::lines(ctx, &self.model.id) => hit,
            None => workflows::invoice_actions::lines_of(
                &state(ctx).db,
                &self.model.organization_id,
                vec![self.model.id.clone()],
            )
            .await?
            .remove(&self.model.id)
            .unwrap_or_default(),
        };
        Ok(lines
            .into_iter()
            .map(|line| InvoiceLine {
                line,
                currency: self.model.currency.clone(),
            })
            .collect())
    }
    async fn subtotal(&self) -> ApiResult<Dec> {
        self.amount(self.model.subtotal_minor)
    }
    async fn total(&self) -> ApiResult<Dec> {
        self.amount(self.model.total_minor)
    }
    async fn created_at(&self) -> Instant {
        Instant(self.model.created_at)
    }
    async fn finalized_at(&self) -> Option<Instant> {
        self.model.finalized_at.map(Instant)
    }
    async fn due_at(&self) -> Option<Instant> {
        self.model.due_at.map(Instant)
    }
    async fn paid_at(&self) -> Option<Instant> {
        self.model.paid_at.map(Instant)
    }
    async fn content_hash(&self) -> Option<&str> {
        self.model.content_hash.as_deref()
    }
}

pub struct InvoiceLine {
    line: invoice_line::Model,
    currency: String,
}

#[Object]
impl InvoiceLine {
    async fn kind(&self) -> InvoiceLineKind {
        self.line.kind.into()
    }
    async fn description(&self) -> &str {
        &self.line.description
    }
    async fn price(&self, ctx: &Context<'_>) -> ApiResult<Option<Price>> {
        let Some(id) = &self.line.price_id else {
            return Ok(None);
        };
        Ok(workflows::catalog::prices_by_id(
            &state(ctx).db,
            &self.line.organization_id,
            std::slice::from_ref(id),
        )
        .await?
        .remove(id)
        .map(Price))
    }
    async fn quantity(&self) -> Dec {
        Dec(self.line.quantity.get())
    }
    async fn unit_amount(&self) -> Option<Dec> {
        self.line.unit_amount.map(|d| Dec(d.get()))
    }
    async fn amount(&self) -> ApiResult<Dec> {
        Ok(Dec(amount_from_minor(
            &self.currency,
            self.line.amount_minor,
        )?))
    }
    async fn period_start(&self) -> Instant {
        Instant(self.line.period_start)
    }
    async fn period_end(&self) -> Instant {
        Instant(self.line.period_end)
    }
}

pub struct InvoiceConnection {
    pub nodes: Vec<Invoice>,
    pub has_next_page: bool,
    pub total: u64,
}

#[Object]
impl InvoiceConnection {
    async fn nodes(&self) -> &[Invoice] {
        &self.nodes
    }
    async fn page_info(&self) -> PageInfo {
        page_info(
            self.has_next_page,
            self.nodes.last().map(|n| n.model.id.as_str()),
        )
    }
    async fn total_count(&self) -> i32 {
        count(self.total)
    }
}

#[derive(Default)]
pub struct InvoiceQuery;

#[Object]
impl InvoiceQuery {
    #[graphql(complexity = "super::pagination::page_cost(first, child_complexity)")]
    async fn invoices(
        &self,
        ctx: &Context<'_>,
        status: Option<InvoiceStatus>,
        customer_id: Option<ID>,
        subscription_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<InvoiceConnection> {
        let caller = require(ctx, roles::READ)?;
        let (first, after) = page_args(first, after)?;
        let filter = InvoiceFilter {
            status: status.map(Into::into),
            customer_id: customer_id.map(|id| id.0),
            subscription_id: subscription_id.map(|id| id.0),
        };
        let db = &state(ctx).db;
        let org = &caller.organization_id;
        let page = workflows::invoice_actions::list_invoices(db, org, filter, first, after).await?;
        let ids: Vec<String> = page.nodes.iter().map(|i| i.id.clone()).collect();
        if loaders::wants(ctx, &["nodes", "lines"]) {
            let mut lines = workflows::invoice_actions::lines_of(db, org, ids.clone()).await?;
            loaders::prime_lines(
                ctx,
                ids.iter()
                    .map(|id| (id.clone(), lines.remove(id).unwrap_or_default())),
            );
        }
        if loaders::wants(ctx, &["nodes", "customer"]) {
            let ids = page.nodes.iter().map(|i| i.customer_id.clone()).collect();
            let customers = workflows::customers::customers_by_ids(db, org, ids).await?;
            loaders::prime_customers(ctx, customers.into_iter().map(|c| (c.id.clone(), c)));
        }
        Ok(InvoiceConnection {
            nodes: page.nodes.into_iter().map(Invoice::stored).collect(),
            has_next_page: page.has_next_page,
            total: page.total,
        })
    }

    async fn invoice(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Invoice>> {
        let caller = require(ctx, roles::READ)?;
        Ok(
            workflows::invoice_actions::get_invoice(&state(ctx).db, &caller.organization_id, &id)
                .await?
                .map(Invoice::stored),
        )
    }

    /// What the next period close (or trial end) would invoice; nothing is written.
    async fn upcoming_invoice(
        &self,
        ctx: &Context<'_>,
        subscription_id: ID,
    ) -> ApiResult<Option<Invoice>> {
        let (_, org) = require_org(ctx, roles::READ).await?;
        Ok(
            workflows::invoice_actions::upcoming(&state(ctx).db, &org, &subscription_id)
                .await?
                .map(|unsaved| Invoice {
                    model: unsaved.invoice,
                    lines: Some(unsaved.lines),
                }),
        )
    }
}

#[derive(Default)]
pub struct InvoiceMutation;

impl InvoiceMutation {
    async fn settle(ctx: &Context<'_>, id: &ID, settlement: Settlement) -> ApiResult<Invoice> {
        let (caller, org) = require_org(ctx, roles::OPERATE).await?;
        let st = state(ctx);
        let model = workflows::invoice_actions::settle(
            &st.db,
            st.clock.as_ref(),
            &org,
            &caller.actor(),
            id,
            settlement,
        )
        .await?;
        Ok(Invoice::stored(model))
    }
}

#[Object]
impl InvoiceMutation {
    async fn finalize_invoice(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Invoice> {
        let (caller, org) = require_org(ctx, roles::OPERATE).await?;
        let st = state(ctx);
        let model = workflows::invoice_actions::finalize_now(
            &st.db,
            st.clock.as_ref(),
            &org,
            &caller.actor(),
            &id,
        )
        .await?;
        Ok(Invoice::stored(model))
    }

    async fn void_invoice(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Invoice> {
        Self::settle(ctx, &id, Settlement::Void).await
    }

    async fn mark_invoice_paid(
        &self,
        ctx: &Context<'_>,
        id: ID,
        paid_at: Option<Instant>,
    ) -> ApiResult<Invoice> {
        Self::settle(
            ctx,
            &id,
            Settlement::Paid {
                at: paid_at.map(|t| t.0),
            },
        )
        .await
    }

    async fn mark_invoice_uncollectible(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Invoice> {
        Self::settle(ctx, &id, Settlement::Uncollectible).await
    }
}
