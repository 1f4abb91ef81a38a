//! A small HTTP client for driving a running Valora server in tests.

use std::net::SocketAddr;

use serde_json::{Value, json};

/// Talks to one server, optionally with an API key.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    bearer: Option<String>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            bearer: None,
        }
    }

    pub fn with_key(&self, key: &str) -> Client {
        Client {
            bearer: Some(key.to_string()),
            ..self.clone()
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET reaches the server");
        let status = response.status().as_u16();
        (status, response.text().await.expect("GET body"))
    }

    /// Runs a GraphQL operation and returns the whole response body.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(key) = &self.bearer {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("POST reaches the server");
        response.json().await.expect("GraphQL answers JSON")
    }
}
