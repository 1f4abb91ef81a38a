//! Page arguments and `PageInfo`. Cursors are opaque: the hex encoding of
//! the last node's id (ids are UUIDv7, so id order is creation order).

use async_graphql::SimpleObject;
use workflows::pagination::MAX_PAGE;

use super::error::{ApiError, ApiResult};

pub const DEFAULT_PAGE: u64 = 50;

#[derive(SimpleObject, Clone, Debug)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

pub fn encode_cursor(id: &str) -> String {
    hex::encode(id.as_bytes())
}

fn decode_cursor(cursor: &str) -> ApiResult<String> {
    hex::decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|id| !id.is_empty() && id.len() <= 64)
        .ok_or_else(|| {
            ApiError::bad_input(format!(
                "invalid cursor {}",
                workflows::text::quoted(cursor)
            ))
        })
}

/// Validated `(first, after)`: `first` in `0..=100` (default 50).
pub fn page_args(first: Option<i32>, after: Option<String>) -> ApiResult<(u64, Option<String>)> {
    let first = match first {
        None => DEFAULT_PAGE,
        Some(n) if n < 0 => {
            return Err(ApiError::bad_input(format!(
                "first must not be negative, got {n}"
            )));
        }
        Some(n) if n as u64 > MAX_PAGE => {
            return Err(ApiError::bad_input(format!(
                "first must be at most {MAX_PAGE}, got {n}"
            )));
        }
        Some(n) => n as u64,
    };
    let after = after.as_deref().map(decode_cursor).transpose()?;
    Ok((first, after))
}

pub fn page_info(has_next_page: bool, last_id: Option<&str>) -> PageInfo {
    PageInfo {
        has_next_page,
        end_cursor: last_id.map(encode_cursor),
    }
}

/// Converts a count for the `Int!` totalCount field.
pub fn count(total: u64) -> i32 {
    i32::try_from(total).unwrap_or(i32::MAX)
}

/// Complexity of a connection: its selection counted once per node it may
/// return, so a page of 100 with deep selections cannot hide behind the
/// limit (negative or oversized `first` are refused later; cost stays bounded).
pub fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let nodes = first.map_or(DEFAULT_PAGE, |n| n.clamp(0, MAX_PAGE as i32) as u64) as usize;
    nodes
        .max(1)
        .saturating_mul(child_complexity)
        .saturating_add(1)
}
