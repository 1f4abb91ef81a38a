//! One request carries at most [`MAX_BATCH`] usage events, however written.
//!
//! Aliases (`a: ingestUsage(events: $e) b: ingestUsage(events: $e) …`) and
//! fragment spreads must not multiply the batch limit, and a request over it
//! is refused whole, before anything runs. The events are counted from the
//! document and the variables, without parsing one: the list lengths of the
//! `events` arguments of every `ingestUsage` field an operation holds.
//!
//! Why not a complexity rule: async-graphql computes a field's complexity
//! from its arguments parsed into Rust values, so counting the batch that
//! way cloned and parsed all of it once more during validation, about 9% of
//! the API process's CPU at 1,000-event batches (`docs/benchmarks.md`).
//! `ingestUsage` keeps a fixed complexity of its own, so a request still
//! holds a bounded number of such fields.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{
    ExecutableDocument, Field, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::{Name, ServerResult, Value as ConstValue, Variables};
use async_graphql_value::Value;
use workflows::usage::MAX_BATCH;

use super::error::ApiError;

/// The root field whose `events` are counted, and that argument.
const FIELD: &str = "ingestUsage";
const ARGUMENT: &str = "events";

/// The schema extension (see [`super::build`]).
pub struct BatchLimit;

impl ExtensionFactory for BatchLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(BatchLimit)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for BatchLimit {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        for (_, op) in doc.operations.iter() {
            let events = Counter::new(&doc, &op.node, variables).operation();
            if events > MAX_BATCH {
                let err: async_graphql::Error = ApiError::bad_input(format!(
                    "one request carries at most {MAX_BATCH} usage events in all \
                     (every ingestUsage field and alias together), this one {events}"
                ))
                .into();
                return Err(err.into_server_error(op.pos));
            }
        }
        Ok(doc)
    }
}

/// Counts the events of one operation. Fragments are counted once each and
/// remembered, so nested spreads cost linear time; a spread cycle counts
/// nothing (validation refuses it afterwards).
struct Counter<'a> {
    doc: &'a ExecutableDocument,
    op: &'a OperationDefinition,
    variables: &'a Variables,
    fragments: HashMap<&'a Name, usize>,
    visiting: Vec<&'a Name>,
}

impl<'a> Counter<'a> {
    fn new(
        doc: &'a ExecutableDocument,
        op: &'a OperationDefinition,
        variables: &'a Variables,
    ) -> Self {
        Counter {
            doc,
            op,
            variables,
            fragments: HashMap::new(),
            visiting: Vec::new(),
        }
    }

    fn operation(&mut self) -> usize {
        self.set(&self.op.selection_set.node)
    }

    /// Events in a root selection set: `ingestUsage` is a root field, so
    /// only the set's own fields and its fragments count, never sub-fields.
    fn set(&mut self, set: &'a SelectionSet) -> usize {
        let mut total = 0_usize;
        for item in &set.items {
            let events = match &item.node {
                Selection::Field(field) if field.node.name.node == FIELD => {
                    self.field_events(&field.node)
                }
                Selection::Field(_) => 0,
                Selection::InlineFragment(fragment) => self.set(&fragment.node.selection_set.node),
                Selection::FragmentSpread(spread) => self.fragment(&spread.node.fragment_name.node),
            };
            total = total.saturating_add(events);
        }
        total
    }

    fn fragment(&mut self, name: &'a Name) -> usize {
        if let Some(&known) = self.fragments.get(name) {
            return known;
        }
        let Some(fragment) = self.doc.fragments.get(name) else {
            return 0;
        };
        if self.visiting.contains(&name) {
            return 0;
        }
        self.visiting.push(name);
        let events = self.set(&fragment.node.selection_set.node);
        self.visiting.pop();
        self.fragments.insert(name, events);
        events
    }

    /// How many events a field's `events` argument holds, as GraphQL
    /// coerces it: a list by its length, a single object as a list of one,
    /// null or absent as none; an argument that is a variable is looked up
    /// (or its default). Read as written, never copied.
    fn field_events(&self, field: &Field) -> usize {
        match field.get_argument(ARGUMENT).map(|value| &value.node) {
            None | Some(Value::Null) => 0,
            Some(Value::List(items)) => items.len(),
            Some(Value::Variable(name)) => self.variable(name).map_or(0, const_length),
            Some(_) => 1,
        }
    }

    fn variable(&self, name: &Name) -> Option<&'a ConstValue> {
        self.variables.get(name).or_else(|| {
            self.op
                .variable_definitions
                .iter()
                .find(|def| def.node.name.node == *name)
                .and_then(|def| def.node.default_value())
        })
    }
}

fn const_length(value: &ConstValue) -> usize {
    match value {
        ConstValue::List(items) => items.len(),
        ConstValue::Null => 0,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(query: &str, variables: serde_json::Value) -> Vec<usize> {
        let doc = async_graphql::parser::parse_query(query).expect("a document");
        let variables = Variables::from_json(variables);
        doc.operations
            .iter()
            .map(|(_, op)| Counter::new(&doc, &op.node, &variables).operation())
            .collect()
    }

    #[test]
    fn counts_events_across_aliases_fragments_and_variables() {
        let e = |n: usize| serde_json::Value::Array(vec![serde_json::json!({"k": 1}); n]);
        assert_eq!(
            count(
                "mutation($e: [UsageEventInput!]!) { a: ingestUsage(events: $e) { accepted } b: ingestUsage(events: $e) { accepted } }",
                serde_json::json!({"e": e(7)}),
            ),
            [14]
        );
        assert_eq!(
            count(
                "mutation { ingestUsage(events: [{k: 1}, {k: 2}]) { accepted } x: ingestUsage(events: {k: 1}) { accepted } }",
                serde_json::json!({}),
            ),
            [3]
        );
        assert_eq!(
            count(
                "mutation($e: [UsageEventInput!]! = [{k: 1}, {k: 2}, {k: 3}]) { ... F ... F ... on Mutation { ...F } }
                 fragment F on Mutation { ingestUsage(events: $e) { accepted } }",
                serde_json::json!({}),
            ),
            [9]
        );
        assert_eq!(
            count(
                "mutation($a: UsageEventInput!) { ingestUsage(events: [$a, $a]) { accepted } createCustomer(input: {}) { id } }",
                serde_json::json!({"a": {"k": 1}}),
            ),
            [2]
        );
    }

    #[test]
    fn nested_and_cyclic_fragments_cost_linear_time() {
        // 40 levels of two spreads each: 2^40 fields as written out.
        let mut query = String::from(
            "mutation($e: [UsageEventInput!]!) { ...F0 }
             fragment F40 on Mutation { ingestUsage(events: $e) { accepted } }",
        );
        for i in 0..40 {
            query.push_str(&format!(
                " fragment F{i} on Mutation {{ ...F{next} ...F{next} }}",
                next = i + 1
            ));
        }
        query.push_str(" fragment C on Mutation { ...D } fragment D on Mutation { ...C }");
        let counted = count(&query, serde_json::json!({"e": [{"k": 1}]}));
        assert_eq!(counted, [1 << 40]);
        assert_eq!(
            count(
                "mutation { ...C } fragment C on Mutation { ...D ingestUsage(events: {k: 1}) { accepted } } fragment D on Mutation { ...C }",
                serde_json::json!({})
            ),
            [1]
        );
    }
}
