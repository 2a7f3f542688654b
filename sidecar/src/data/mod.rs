//! The DATA API: CloudServer's blob protocol over HTTP (`/DataFile`), served from the blob store.
//!
//! The routing is done here rather than by axum's router because the reference grammar (a
//! URL-decoded path matched with its query string) decides the error answers.

mod error;
mod path;
#[cfg(test)]
mod props;
mod range;

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt, stream};
use tracing::Instrument;

use crate::blob::{BlobError, BlobKey, BlobStore};
use crate::health::{CONTENTS_LOST, Health};
use crate::items::{ItemError, SharedItemStore};
use crate::metrics::Metrics;

pub use error::ApiError;

/// The header in which CloudServer sends its request id chain.
const REQUEST_UIDS: &str = "x-scal-request-uids";

#[derive(Clone)]
pub struct DataService {
    pub blobs: BlobStore,
    pub items: SharedItemStore,
    pub metrics: Metrics,
    pub health: Health,
    /// Largest Content-Length a PUT may announce (`--max-object-size`).
    pub max_object_size: u64,
}

pub fn router(service: DataService) -> Router {
    Router::new().fallback(handle).with_state(service)
}

async fn handle(State(service): State<DataService>, request: Request) -> Response {
    let started = Instant::now();
    let route = route(
        request.method(),
        request.uri().path(),
        request.uri().query(),
    );
    let uids = request
        .headers()
        .get(REQUEST_UIDS)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let span = tracing::info_span!("data", route, method = %request.method(), uri = %request.uri(), req_uids = %uids);
    let response = match dispatch(&service, request).instrument(span.clone()).await {
        Ok(response) => response,
        Err(error) => {
            let _entered = span.enter();
            let (name, status) = error.kind();
            if status.is_server_error() {
                tracing::warn!(error = name, %error, "data request failed");
            } else {
                tracing::debug!(error = name, %error, "data request refused");
            }
            error.into_response()
        }
    };
    service
        .metrics
        .observe_data(route, response.status().as_u16(), started.elapsed());
    response
}

fn route(method: &Method, path: &str, query: Option<&str>) -> &'static str {
    match *method {
        Method::PUT => "put",
        Method::GET if path::is_disk_usage(path, query) => "disk_usage",
        Method::GET => "get",
        Method::DELETE => "delete",
        _ => "other",
    }
}

async fn dispatch(service: &DataService, request: Request) -> Result<Response, ApiError> {
    // An emptied memcached, or one read under another placement, would answer "no such
    // blob" for blobs that exist: refuse instead.
    if let Some(why) = service.health.refusal() {
        return Err(ApiError::ServiceUnavailable(why.to_owned()));
    }
    let result = route_request(service, request).await;
    // "Not found" is checked against the epoch before it goes out: between two probes of
    // the watcher it may only mean that memcached was emptied.
    if matches!(result, Err(ApiError::ObjNotFound)) && service.health.verify(&service.items).await {
        return Err(ApiError::ServiceUnavailable(CONTENTS_LOST.into()));
    }
    result
}

async fn route_request(service: &DataService, request: Request) -> Result<Response, ApiError> {
    let uri = request.uri().clone();
    let path_and_query = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    match *request.method() {
        Method::GET if path::is_disk_usage(uri.path(), uri.query()) => service.disk_usage().await,
        Method::PUT => {
            if path::parse(path_and_query)?.key.is_some() {
                return Err(ApiError::InvalidUri("PUT url cannot contain a key".into()));
            }
            let declared = content_length(request.headers())?;
            // Refused on the announced length, before any body byte is read or stored.
            if declared > service.max_object_size {
                return Err(ApiError::EntityTooLarge {
                    declared,
                    max: service.max_object_size,
                });
            }
            service.put(request, declared).await
        }
        Method::GET => {
            let key = path::parse(path_and_query)?
                .key
                .ok_or(ApiError::MissingParameter)?;
            let range = request
                .headers()
                .get(header::RANGE)
                .and_then(|value| value.to_str().ok())
                .and_then(range::parse);
            service.get(&key, range).await
        }
        Method::DELETE => {
            let key = path::parse(path_and_query)?
                .key
                .ok_or(ApiError::MissingParameter)?;
            service.delete(&key).await
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn content_length(headers: &HeaderMap) -> Result<u64, ApiError> {
    let value = headers
        .get(header::CONTENT_LENGTH)
        .ok_or(ApiError::MissingContentLength)?;
    value
        .to_str()
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse().ok())
        .ok_or(ApiError::InvalidInput)
}

/// A key of the right grammar that this store cannot have issued names no blob.
fn blob_key(key: &str) -> Result<BlobKey, ApiError> {
    key.parse().map_err(|_| ApiError::ObjNotFound)
}

impl DataService {
    /// Record what a store failure says about memcached, then turn it into the API's error.
    fn failed(&self, error: BlobError) -> ApiError {
        if let BlobError::Items(item_error) = &error {
            self.metrics.memcached_error(item_error.label());
            match item_error {
                ItemError::Unavailable(_) => self.health.request_found_unreachable(),
                ItemError::Full => {
                    tracing::error!("storage full: memcached refused a write (evictions are off)")
                }
                _ => {}
            }
        }
        ApiError::from(error)
    }

    async fn put(&self, request: Request, declared: u64) -> Result<Response, ApiError> {
        let received = self.metrics.data_bytes_in.clone();
        let body = request
            .into_body()
            .into_data_stream()
            .inspect_ok(move |frame| {
                received.inc_by(frame.len() as u64);
            });
        let key = self
            .blobs
            .put(body, declared)
            .await
            .map_err(|error| self.failed(error))?;
        tracing::debug!(blob = %key, size = declared, "stored");
        let location = HeaderValue::try_from(format!("/DataFile/{key}"))
            .map_err(|error| ApiError::InternalError(error.to_string()))?;
        Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
    }

    async fn get(&self, key: &str, spec: Option<range::RangeSpec>) -> Result<Response, ApiError> {
        let key = blob_key(key)?;
        let blob = self
            .blobs
            .open(&key, range::first_byte(spec))
            .await
            .map_err(|error| self.failed(error))?;
        let size = blob.size();
        let (status, start, end) = match range::select(spec, size) {
            range::Selection::Unsatisfiable => return Err(ApiError::InvalidRange),
            range::Selection::Whole => (StatusCode::OK, 0, size.saturating_sub(1)),
            range::Selection::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        };
        let length = if size == 0 { 0 } else { end - start + 1 };
        let mut content = self.blobs.read(key, blob, start..=end);
        // The first piece is read before the status goes out, so a blob whose data is gone
        // gets an error answer rather than a cut-off 200.
        let first = content
            .next()
            .await
            .transpose()
            .map_err(|error| self.failed(error))?;
        let sent = self.metrics.data_bytes_out.clone();
        let open = self.metrics.open_download();
        let failures = self.clone();
        let body = stream::iter(first.map(Ok))
            .chain(content)
            .inspect_ok(move |piece| {
                // The guard lives as long as the body does.
                let _open = &open;
                sent.inc_by(piece.len() as u64);
            })
            .inspect_err(move |error| {
                tracing::error!(blob = %key, %error, "blob read failed mid-response; connection cut");
                if let BlobError::Items(item_error) = error {
                    failures.metrics.memcached_error(item_error.label());
                }
            });
        let mut response = Response::new(Body::from_stream(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if status == StatusCode::PARTIAL_CONTENT {
            let content_range = format!("bytes {start}-{end}/{size}");
            if let Ok(value) = HeaderValue::try_from(content_range) {
                headers.insert(header::CONTENT_RANGE, value);
            }
        }
        Ok(response)
    }

    async fn delete(&self, key: &str) -> Result<Response, ApiError> {
        let key = blob_key(key)?;
        self.blobs
            .delete(&key)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    async fn disk_usage(&self) -> Result<Response, ApiError> {
        let stats = self
            .items
            .stats()
            .await
            .map_err(|error| self.failed(BlobError::Items(error)))?;
        let free = stats.limit_bytes.saturating_sub(stats.used_bytes);
        let body =
            serde_json::json!({ "available": free, "free": free, "total": stats.limit_bytes });
        Ok(Response::new(Body::from(body.to_string())))
    }
}
