//! A thin HTTP/1 client for the few libpod endpoints bollard (Docker-compatible API only) cannot
//! reach, e.g. creating an L2-only network (`ipam_options.driver = none`). One connection per
//! request over the same socket bollard uses; JSON in, JSON out.

use super::{EngineUri, PodmanError};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Path prefix of the libpod API; 4.0.0 is the oldest version with the endpoints used here.
pub(crate) const LIBPOD_PREFIX: &str = "/v4.0.0/libpod";
const TIMEOUT: Duration = Duration::from_secs(60);

/// A raw answer: status code and body bytes.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The engine's error message (`{"message": ...}` or `{"cause": ...}`), or the body text,
    /// on one line.
    pub fn error_message(&self) -> String {
        let text = match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(v) => v
                .get("message")
                .or_else(|| v.get("cause"))
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string()),
            Err(_) => String::from_utf8_lossy(&self.body).into_owned(),
        };
        super::one_line(&format!("HTTP {}: {}", self.status, text.trim()))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Libpod {
    uri: EngineUri,
}

impl Libpod {
    pub fn new(uri: EngineUri) -> Self {
        Self { uri }
    }

    /// Send one request; `path` starts with `/` and is used as is (callers add the prefix).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<RawResponse, PodmanError> {
        let op = format!("{method} {path}");
        let fut = async {
            match &self.uri {
                EngineUri::Unix(p) => {
                    let io = tokio::net::UnixStream::connect(p).await.map_err(|e| {
                        PodmanError::api(&op, format!("connect {}: {e}", p.display()))
                    })?;
                    send(io, method, path, body, &op).await
                }
                EngineUri::Tcp(addr) => {
                    let io = tokio::net::TcpStream::connect(addr.as_str())
                        .await
                        .map_err(|e| PodmanError::api(&op, format!("connect {addr}: {e}")))?;
                    send(io, method, path, body, &op).await
                }
            }
        };
        match tokio::time::timeout(TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(PodmanError::api(&op, "timed out after 60 s")),
        }
    }

    /// Like [`Libpod::request`], but a non-2xx status is an error and the body is JSON.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, PodmanError> {
        let op = format!("{method} {path}");
        json_body(&op, self.request(method, path, body).await?)
    }

    /// Like [`Libpod::json`], but a 404 is `None` (no such object).
    pub async fn json_unless_404(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Option<serde_json::Value>, PodmanError> {
        let op = format!("{method} {path}");
        let resp = self.request(method, path, body).await?;
        if resp.status == 404 {
            return Ok(None);
        }
        json_body(&op, resp).map(Some)
    }
}

/// The JSON body of a 2xx answer (`Null` when empty); any other status is an error.
fn json_body(op: &str, resp: RawResponse) -> Result<serde_json::Value, PodmanError> {
    if !resp.is_success() {
        return Err(PodmanError::api(op, resp.error_message()));
    }
    if resp.body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&resp.body)
        .map_err(|e| PodmanError::api(op, format!("bad JSON in answer: {e}")))
}

async fn send<S>(
    io: S,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
    op: &str,
) -> Result<RawResponse, PodmanError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| PodmanError::api(op, format!("HTTP handshake: {e}")))?;
    let conn_task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("libpod connection ended: {e}");
        }
    });
    let bytes = match body {
        Some(v) => Bytes::from(
            serde_json::to_vec(v).map_err(|e| PodmanError::api(op, format!("encode: {e}")))?,
        ),
        None => Bytes::new(),
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "d");
    if body.is_some() {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = builder
        .body(Full::new(bytes))
        .map_err(|e| PodmanError::api(op, format!("build request: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| PodmanError::api(op, format!("send: {e}")))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| PodmanError::api(op, format!("read answer: {e}")))?
        .to_bytes()
        .to_vec();
    conn_task.abort();
    Ok(RawResponse { status, body })
}
