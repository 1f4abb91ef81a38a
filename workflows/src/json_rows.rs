//! Bulk inserts on PostgreSQL with the rows in one bind parameter.
//!
//! A multi-row INSERT binds every field of every row (4,224 parameters for
//! a close batch's audit events, 5,000 for 500 usage events), each encoded,
//! sent and parsed on its own, and its text changes with the row count.
//! Here the rows travel as one JSON array that `json_to_recordset` unpacks:
//! one parameter, one statement text per table. Rows are serialized with
//! serde, so their field names must be the column names; a JSON `null`
//! becomes SQL NULL. The rows are inserted in the array's order (a function
//! scan keeps it), which callers rely on for lock order.

use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement};
use serde::Serialize;

use crate::error::{WorkflowError, WorkflowResult};
use crate::txn::with_cached_plans;

/// A table's columns as `(name, PostgreSQL type)`, in the order inserted.
pub type Columns = &'static [(&'static str, &'static str)];

/// `INSERT INTO table (…) SELECT … FROM json_to_recordset($1::json) AS r(…)`;
/// callers may append `ON CONFLICT …` or `RETURNING …`.
pub fn insert_sql(table: &str, columns: Columns) -> String {
    let names = columns
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let typed = columns
        .iter()
        .map(|(name, ty)| format!("\"{name}\" {ty}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {table} ({names}) SELECT {names} FROM json_to_recordset($1::json) AS r({typed})"
    )
}

/// Runs `sql` (from [`insert_sql`]) with `rows` as its parameter, inside a
/// transaction, its foreign-key checks on cached plans
/// ([`crate::txn::with_cached_plans`]); returns what it RETURNs.
pub async fn insert<C: ConnectionTrait, T: Serialize>(
    txn: &C,
    sql: String,
    rows: &[T],
) -> WorkflowResult<Vec<QueryResult>> {
    let document = serde_json::to_string(rows)
        .map_err(|e| WorkflowError::Internal(format!("rows as JSON for a bulk insert: {e}")))?;
    let statement = Statement::from_sql_and_values(DbBackend::Postgres, sql, [document.into()]);
    with_cached_plans(txn, async || txn.query_all_raw(statement).await)
        .await
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_column_twice_and_types_them_once() {
        let sql = insert_sql("t", &[("a", "text"), ("timestamp", "timestamptz")]);
        assert_eq!(
            sql,
            "INSERT INTO t (\"a\", \"timestamp\") SELECT \"a\", \"timestamp\" \
             FROM json_to_recordset($1::json) AS r(\"a\" text, \"timestamp\" timestamptz)"
        );
    }
}
