//! Text every backend can store: no input string may contain U+0000.
//!
//! PostgreSQL refuses NUL in `text` and `jsonb` ("invalid byte sequence"),
//! SQLite stores it: without this guard the same request was a NOT_FOUND or
//! a stored row on one backend and an INTERNAL error on the other. Checked
//! once, before validation and execution, over the variables and every
//! argument written in the document (object keys included), so a refused
//! request runs no resolver and writes nothing.

use std::convert::Infallible;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Pos, ServerError, ServerResult, Value as ConstValue, Variables};

use super::error::ApiError;

/// The schema extension (see [`super::build`]).
pub struct TextGuard;

impl ExtensionFactory for TextGuard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(TextGuard)
    }
}

fn refuse(where_: &str, pos: Pos) -> ServerError {
    let err: async_graphql::Error = ApiError::bad_input(format!(
        "{where_} contains the character U+0000, which text may not hold"
    ))
    .into();
    err.into_server_error(pos)
}

fn const_has_nul(value: &ConstValue) -> bool {
    match value {
        ConstValue::String(s) => s.contains('\0'),
        ConstValue::List(items) => items.iter().any(const_has_nul),
        ConstValue::Object(fields) => fields
            .iter()
            .any(|(k, v)| k.contains('\0') || const_has_nul(v)),
        _ => false,
    }
}

/// Does an argument as written in the document hold a NUL? (The parser's
/// value type is not re-exported by async-graphql, so this is a macro over
/// whatever it is; variables count as null here, they are checked apart.)
macro_rules! argument_has_nul {
    ($value:expr) => {{
        let value: ConstValue = match $value
            .clone()
            .into_const_with(|_| Ok::<ConstValue, Infallible>(ConstValue::Null))
        {
            Ok(value) => value,
            Err(never) => match never {},
        };
        const_has_nul(&value)
    }};
}

/// The position of the first argument (in `set`, recursively) holding a NUL.
fn selection_nul(set: &SelectionSet) -> Option<Pos> {
    for item in &set.items {
        let (directives, inner) = match &item.node {
            Selection::Field(field) => {
                if let Some((_, value)) = field
                    .node
                    .arguments
                    .iter()
                    .find(|(_, v)| argument_has_nul!(v.node))
                {
                    return Some(value.pos);
                }
                (&field.node.directives, &field.node.selection_set.node)
            }
            Selection::InlineFragment(fragment) => {
                (&fragment.node.directives, &fragment.node.selection_set.node)
            }
            Selection::FragmentSpread(spread) => {
                (&spread.node.directives, &SelectionSet::default())
            }
        };
        for directive in directives {
            if let Some((_, value)) = directive
                .node
                .arguments
                .iter()
                .find(|(_, v)| argument_has_nul!(v.node))
            {
                return Some(value.pos);
            }
        }
        if let Some(pos) = selection_nul(inner) {
            return Some(pos);
        }
    }
    None
}

fn document_nul(doc: &ExecutableDocument) -> Option<Pos> {
    for (_, op) in doc.operations.iter() {
        for var in &op.node.variable_definitions {
            if let Some(default) = &var.node.default_value
                && const_has_nul(&default.node)
            {
                return Some(default.pos);
            }
        }
        if let Some(pos) = selection_nul(&op.node.selection_set.node) {
            return Some(pos);
        }
    }
    doc.fragments
        .values()
        .find_map(|fragment| selection_nul(&fragment.node.selection_set.node))
}

#[async_graphql::async_trait::async_trait]
impl Extension for TextGuard {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some((name, _)) = variables.iter().find(|(_, v)| const_has_nul(v)) {
            return Err(refuse(&format!("variable ${name}"), Pos::default()));
        }
        let doc = next.run(ctx, query, variables).await?;
        if let Some(pos) = document_nul(&doc) {
            return Err(refuse("an argument", pos));
        }
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nul_in_documents_and_variables() {
        let doc = async_graphql::parser::parse_query(
            r#"query { a(x: {k: ["ok", "b\u0000d"]}) { ... on Q { b(y: "fine") } } }"#,
        )
        .unwrap();
        assert!(document_nul(&doc).is_some());
        let doc = async_graphql::parser::parse_query(
            r#"query($v: String = "x") { a(x: {k: ["ok"]}) @include(if: true) { b } }"#,
        )
        .unwrap();
        assert!(document_nul(&doc).is_none());
        let vars = Variables::from_json(serde_json::json!({"e": [{"p": {"k\u{0}": 1}}]}));
        assert!(vars.iter().any(|(_, v)| const_has_nul(v)));
        let vars = Variables::from_json(serde_json::json!({"e": [{"p": {"k": "ü"}}]}));
        assert!(!vars.iter().any(|(_, v)| const_has_nul(v)));
    }
}
