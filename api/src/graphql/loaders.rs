//! Batch loading for lists that fan out.
//!
//! A list resolver looks ahead at the selection: when its nodes ask for a
//! related row (`Invoice.lines`, `Subscription.customer`, `Subscription.plan`,
//! `Subscription.invoices`,
//! `Customer.subscriptions`…), it loads that relation for the whole page with
//! one `IN (…)` query and primes this per-request cache; the node resolvers
//! read the cache and only query on a miss. One request never sees another's
//! cache (it is created per request by the HTTP layer).

use std::collections::HashMap;
use std::sync::Mutex;

use async_graphql::Context;
use entity::{customer, invoice, invoice_line, subscription};
use workflows::catalog::PlanView;

/// Per-request cache of related rows, by parent id.
#[derive(Default)]
pub struct Loaders {
    customers: Mutex<HashMap<String, customer::Model>>,
    plans: Mutex<HashMap<String, PlanView>>,
    lines: Mutex<HashMap<String, Vec<invoice_line::Model>>>,
    subscriptions: Mutex<HashMap<String, Vec<subscription::Model>>>,
    invoices: Mutex<HashMap<String, Vec<invoice::Model>>>,
}

fn loaders<'a>(ctx: &Context<'a>) -> Option<&'a Loaders> {
    ctx.data_opt::<Loaders>()
}

/// Does the current field's `nodes` selection (or the list itself) ask for `field`?
pub fn wants(ctx: &Context<'_>, path: &[&str]) -> bool {
    if loaders(ctx).is_none() {
        return false;
    }
    let mut look = ctx.look_ahead();
    for name in path {
        look = look.field(name);
    }
    look.exists()
}

macro_rules! cache {
    ($get:ident, $prime:ident, $field:ident, $ty:ty) => {
        pub fn $get(ctx: &Context<'_>, id: &str) -> Option<$ty> {
            let loaders = loaders(ctx)?;
            let map = loaders.$field.lock().ok()?;
            map.get(id).cloned()
        }

        pub fn $prime(ctx: &Context<'_>, rows: impl IntoIterator<Item = (String, $ty)>) {
            if let Some(loaders) = loaders(ctx)
                && let Ok(mut map) = loaders.$field.lock()
            {
                map.extend(rows);
            }
        }
    };
}

cache!(customer, prime_customers, customers, customer::Model);
cache!(plan, prime_plans, plans, PlanView);
cache!(lines, prime_lines, lines, Vec<invoice_line::Model>);
cache!(
    subscriptions,
    prime_subscriptions,
    subscriptions,
    Vec<subscription::Model>
);
cache!(invoices, prime_invoices, invoices, Vec<invoice::Model>);
