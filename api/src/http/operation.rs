//! The `operation` label of the GraphQL request metrics.
//!
//! The label is the root field a request calls (`ingestUsage`, `invoices`…),
//! checked against the schema's own root fields, so a client can never mint
//! a new time series: the client-chosen operation name is not used, and
//! anything outside the schema is counted under a fixed fallback label.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Selection, SelectionSet, TypeKind, TypeSystemDefinition,
};
use async_graphql::parser::{parse_query, parse_schema};

/// Several different root fields in one request.
pub const MULTIPLE: &str = "multiple";
/// Only `__schema`, `__type` or `__typename`.
pub const INTROSPECTION: &str = "introspection";
/// A field the schema does not have, or an operation that cannot be found.
pub const UNKNOWN: &str = "unknown";
/// The request does not parse.
pub const INVALID: &str = "invalid";

/// The root field names of the schema's `Query` and `Mutation` types.
pub struct RootFields(BTreeSet<String>);

impl RootFields {
    /// Collects the root fields from the schema's SDL.
    pub fn from_sdl(sdl: &str) -> Self {
        let mut roots = BTreeSet::new();
        let Ok(document) = parse_schema(sdl) else {
            return RootFields(roots);
        };
        let mut root_types: Vec<String> = vec!["Query".into(), "Mutation".into()];
        for definition in &document.definitions {
            if let TypeSystemDefinition::Schema(schema) = definition {
                root_types = [&schema.node.query, &schema.node.mutation]
                    .into_iter()
                    .flatten()
                    .map(|name| name.node.to_string())
                    .collect();
            }
        }
        for definition in &document.definitions {
            if let TypeSystemDefinition::Type(ty) = definition
                && root_types.iter().any(|root| ty.node.name.node == *root)
                && let TypeKind::Object(object) = &ty.node.kind
            {
                roots.extend(object.fields.iter().map(|f| f.node.name.node.to_string()));
            }
        }
        RootFields(roots)
    }

    /// Valora's schema, read once.
    pub fn valora() -> &'static RootFields {
        static ROOTS: OnceLock<RootFields> = OnceLock::new();
        ROOTS.get_or_init(|| RootFields::from_sdl(&crate::graphql::sdl()))
    }

    /// The label for a request's query text and (optional) operation name.
    pub fn label(&self, query: &str, operation_name: Option<&str>) -> String {
        let Ok(document) = parse_query(query) else {
            return INVALID.into();
        };
        let selection = match (&document.operations, operation_name) {
            (DocumentOperations::Single(op), _) => &op.node.selection_set.node,
            (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name) {
                Some(op) => &op.node.selection_set.node,
                None => return UNKNOWN.into(),
            },
            (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
                match ops.values().next() {
                    Some(op) => &op.node.selection_set.node,
                    None => return UNKNOWN.into(),
                }
            }
            (DocumentOperations::Multiple(_), None) => return UNKNOWN.into(),
        };
        let mut names = BTreeSet::new();
        collect_root_names(&document, selection, &mut names, 0);
        let called: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !n.starts_with("__"))
            .collect();
        match called.as_slice() {
            [] if names.is_empty() => UNKNOWN.into(),
            [] => INTROSPECTION.into(),
            [one] => match self.0.get(*one) {
                Some(known) => known.clone(),
                None => UNKNOWN.into(),
            },
            _ => MULTIPLE.into(),
        }
    }
}

/// The field names at the root of `selection`, following fragments (to a
/// bounded depth, so a fragment cycle, which validation rejects anyway,
/// cannot loop).
fn collect_root_names(
    document: &ExecutableDocument,
    selection: &SelectionSet,
    names: &mut BTreeSet<String>,
    depth: usize,
) {
    if depth > 8 {
        return;
    }
    for item in &selection.items {
        match &item.node {
            Selection::Field(field) => {
                names.insert(field.node.name.node.to_string());
            }
            Selection::InlineFragment(fragment) => collect_root_names(
                document,
                &fragment.node.selection_set.node,
                names,
                depth + 1,
            ),
            Selection::FragmentSpread(spread) => {
                if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node) {
                    collect_root_names(
                        document,
                        &fragment.node.selection_set.node,
                        names,
                        depth + 1,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> &'static RootFields {
        RootFields::valora()
    }

    #[test]
    fn a_request_is_labelled_by_the_root_field_it_calls() {
        assert_eq!(
            roots().label(
                "mutation Mine { ingestUsage(events: []) { accepted } }",
                None
            ),
            "ingestUsage"
        );
        assert_eq!(
            roots().label("{ a: invoices { totalCount } }", None),
            "invoices"
        );
        assert_eq!(
            roots().label(
                "query A { apiVersion } query B { customers { totalCount } }",
                Some("B")
            ),
            "customers"
        );
        assert_eq!(
            roots().label("query { ...F } fragment F on Query { apiVersion }", None),
            "apiVersion"
        );
    }

    #[test]
    fn client_chosen_names_never_become_labels() {
        assert_eq!(roots().label("{ madeUp }", None), UNKNOWN);
        assert_eq!(roots().label("query A { apiVersion }", Some("Z")), UNKNOWN);
        assert_eq!(
            roots().label("query A { apiVersion } query B { apiVersion }", None),
            UNKNOWN
        );
        assert_eq!(
            roots().label("{ apiVersion invoices { totalCount } }", None),
            MULTIPLE
        );
        assert_eq!(
            roots().label("{ __schema { types { name } } }", None),
            INTROSPECTION
        );
        assert_eq!(roots().label("{{{", None), INVALID);
    }

    #[test]
    fn every_root_field_of_the_schema_is_a_label() {
        assert!(roots().0.contains("createOrganization"));
        assert!(roots().0.contains("ingestUsage"));
        assert!(roots().0.contains("invoices"));
        assert!(roots().0.len() > 20, "{}", roots().0.len());
    }
}
