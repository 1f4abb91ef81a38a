//! Identifiers of new rows: UUIDv7 text, time-ordered so cursors by id are stable.

/// A new row id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
