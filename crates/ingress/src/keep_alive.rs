//! `Connection: close` on every response whose request body was not read to
//! its end (issue 11).
//!
//! Handlers answer some requests without reading the whole body: a `413`
//! (declared or streamed past `http.body_limit_bytes`), and the `401`, `429`
//! and `415` that are decided before any body is buffered (see
//! [`crate::body`]). hyper cannot reuse such a connection (the rest of the
//! body is still on the wire), so it closes it after the response, and a
//! keep-alive client that was not told so fails its next request with a
//! broken pipe. RFC 9112 §9.6: a server that closes says `Connection: close`.
//!
//! Draining instead would make us read (up to) a body we refused for its size
//! or from a caller we did not authenticate, so the connection is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;

/// Middleware: tracks whether the request body reached its end and, if it did
/// not, marks the response `Connection: close`.
pub async fn close_unless_drained(request: Request, next: Next) -> Response {
    if !has_body(&request) {
        return next.run(request).await;
    }
    let drained = Arc::new(AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    let seen = drained.clone();
    // Polled only once the body itself ended: then the connection is reusable.
    let end = futures::stream::poll_fn(move |_| {
        seen.store(true, Ordering::Release);
        Poll::<Option<Result<Bytes, axum::Error>>>::Ready(None)
    });
    let body = Body::from_stream(body.into_data_stream().chain(end));
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if !drained.load(Ordering::Acquire) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request with a body to read: a non-zero `Content-Length`, or chunked.
fn has_body(request: &Request) -> bool {
    let headers = request.headers();
    let length =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    match length {
        Some(n) => n > 0,
        None => headers.contains_key(header::TRANSFER_ENCODING),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::post;
    use tower::ServiceExt;

    async fn call(read_body: bool, body: &'static str) -> Option<HeaderValue> {
        let app = Router::new()
            .route(
                "/",
                post(move |body: Body| async move {
                    if read_body {
                        let _ = axum::body::to_bytes(body, 4).await;
                    }
                }),
            )
            .layer(axum::middleware::from_fn(close_unless_drained));
        let request = Request::post("/")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        response.headers().get(header::CONNECTION).cloned()
    }

    #[tokio::test]
    async fn only_an_unread_body_closes_the_connection() {
        assert_eq!(call(true, "abc").await, None, "read to the end");
        assert_eq!(call(false, "abc").await.as_ref().map(|v| v.to_str().ok()), Some(Some("close")));
        assert!(call(true, "too long").await.is_some(), "stopped at the limit");
        assert_eq!(call(false, "").await, None, "no body");
    }
}
