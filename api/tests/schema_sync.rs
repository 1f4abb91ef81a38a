//! `api/schema.graphql` is the exported SDL; it must match the code.
//! Regenerate with `UPDATE_SCHEMA=1 cargo test -p api --test schema_sync`.

#[test]
fn exported_sdl_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let current = api::graphql::sdl();
    if std::env::var("UPDATE_SCHEMA").as_deref() == Ok("1") {
        std::fs::write(path, &current).expect("write schema.graphql");
        return;
    }
    let exported = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        exported == current,
        "api/schema.graphql is out of date: run UPDATE_SCHEMA=1 cargo test -p api --test schema_sync"
    );
}
