//! Helpers shared by the integration tests: fixtures and a scripted mock API server.
#![allow(dead_code)]

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use tower_test::mock::{self, Handle};
use zenko_memcached_operator::crd::ZenkoMemcachedModule;

/// A fixture module, read as `manifests -f` reads files.
pub fn fixture(name: &str) -> ZenkoMemcachedModule {
    zenko_memcached_operator::manifests::parse_module(&fixture_text(name), "default")
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The text of a file in tests/fixtures.
pub fn fixture_text(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn mock_client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer(handle))
}

/// One request the API server received, with its body parsed.
pub struct Received {
    pub method: Method,
    pub uri: String,
    pub body: serde_json::Value,
    respond: mock::SendResponse<Response<Body>>,
}

impl Received {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    pub fn respond_json(self, status: StatusCode, body: &serde_json::Value) {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.respond.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(bytes))
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }

    /// Answers with plain text, as the API server answers a pod's log.
    pub fn respond_text(self, text: &str) {
        self.respond.send_response(
            Response::builder()
                .status(StatusCode::OK)
                .body(Body::from(text.as_bytes().to_vec()))
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }

    /// Answers as the API server does to an apply: with the object it now stores.
    pub fn respond_with_body(self) {
        let body = self.body.clone();
        self.respond_json(StatusCode::OK, &body);
    }

    pub fn respond_status(self, code: u16, reason: &str) {
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{reason} (from the test)"), "reason": reason, "code": code,
        });
        self.respond_json(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &status,
        );
    }
}

pub struct ApiServer(pub Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    /// The next request, or a panic naming what was expected if none comes.
    pub async fn next(&mut self, expected: &str) -> Received {
        let next = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for: {expected}"));
        let (request, respond) = next.unwrap_or_else(|| panic!("client gone before: {expected}"));
        let method = request.method().clone();
        let uri = request.uri().to_string();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{uri}: body is not JSON: {e}"))
        };
        Received {
            method,
            uri,
            body,
            respond,
        }
    }

    /// Asserts the next request's method and path and returns it.
    pub async fn expect(&mut self, method: Method, path: &str) -> Received {
        let r = self.next(&format!("{method} {path}")).await;
        assert_eq!(
            (&r.method, r.path()),
            (&method, path),
            "full uri: {}",
            r.uri
        );
        r
    }

    /// Asserts that the client sends nothing more once every clone of it is dropped.
    pub async fn expect_no_more(mut self) {
        let next = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("the client was never dropped"));
        if let Some((request, _)) = next {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}
