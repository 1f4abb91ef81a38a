//! Cursor pagination by id: ids are UUIDv7 (time-ordered), so "after id X,
//! ascending" is creation order and stable under inserts.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Select,
};

/// Largest page a client may ask for.
pub const MAX_PAGE: u64 = 100;

/// One page of rows.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub nodes: Vec<T>,
    pub has_next_page: bool,
    /// Rows matching the filters, over all pages.
    pub total: u64,
}

/// Rows of `select` with `id > after`, ascending by `id`, at most `first`.
pub async fn page<E, C>(
    db: &C,
    select: Select<E>,
    id: E::Column,
    first: u64,
    after: Option<String>,
) -> Result<Page<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: FromQueryResult + Send + Sync,
    C: ConnectionTrait,
{
    let total = select.clone().count(db).await?;
    let mut select = select;
    if let Some(after) = after {
        select = select.filter(id.gt(after));
    }
    let mut nodes = select.order_by_asc(id).limit(first + 1).all(db).await?;
    let has_next_page = nodes.len() as u64 > first;
    nodes.truncate(first as usize);
    Ok(Page {
        nodes,
        has_next_page,
        total,
    })
}

/// Rows grouped by their parent's id, keeping their order: what a list field
/// loads for a whole page with one `IN (…)` query.
pub fn group_by_parent<T>(
    rows: Vec<T>,
    parent: impl Fn(&T) -> Option<&str>,
) -> std::collections::HashMap<String, Vec<T>> {
    let mut groups: std::collections::HashMap<String, Vec<T>> = Default::default();
    for row in rows {
        if let Some(id) = parent(&row) {
            groups.entry(id.to_string()).or_default().push(row);
        }
    }
    groups
}
