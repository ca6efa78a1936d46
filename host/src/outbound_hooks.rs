//! Outbound HTTP from guests: checked against the component's `allowed_outbound_hosts`;
//! `http://<component>.spin.internal/...` is served in-process (Spin's local service chaining).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::app::{App, Caller};

/// Defaults for requests that set no timeouts, so that a silent peer cannot hold an instance
/// until the handler timeout.
const DEFAULT_OPTIONS: RequestOptions = RequestOptions {
    connect_timeout: Some(Duration::from_secs(10)),
    first_byte_timeout: Some(Duration::from_secs(30)),
    between_bytes_timeout: Some(Duration::from_secs(30)),
};

pub struct OutboundHooks {
    pub app: Arc<App>,
    pub component: usize,
}

/// What a [`WasiHttpHooks::send_request`] future gives.
pub type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let app = self.app.clone();
        let from = self.component;
        Box::new(async move { send(app, from, request, options).await })
    }
}

async fn send(
    app: Arc<App>,
    from: usize,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> SendResult {
    let source = &app.components[from];
    let uri = request.uri().clone();
    if !source.outbound.allows(&uri) {
        tracing::warn!(
            "outbound request from component `{}` to {} refused: not in allowed_outbound_hosts",
            source.id,
            redact(&uri)
        );
        return Err(Error::HttpRequestDenied);
    }
    let host = uri.host().unwrap_or_default().to_ascii_lowercase();
    if let Some(target) = host.strip_suffix(".spin.internal") {
        let Some(target) = app.component_index(target) else {
            tracing::warn!(
                "chained request from `{}` to unknown component `{target}`",
                source.id
            );
            return Err(Error::DestinationNotFound);
        };
        let (parts, body) = request.into_parts();
        let body = http_body_util::Limited::new(body, app.limits.max_body_bytes)
            .collect()
            .await
            .map_err(|_| Error::HttpRequestBodySize(None))?
            .to_bytes();
        let response = app.handle(target, parts, body, Caller::Chained).await;
        let done: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async { Ok(()) });
        return Ok((response, done));
    }
    let options = Some(options.unwrap_or(DEFAULT_OPTIONS));
    let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
    Ok((response.map(BodyExt::boxed_unsync), Box::new(io)))
}

/// The URL without its query, which may carry tokens.
fn redact(uri: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("?"),
        uri.authority().map(|a| a.as_str()).unwrap_or("?"),
        uri.path()
    )
}
