//! The metrics HTTP endpoint: `GET /metrics` (Prometheus text) and `GET /health` (200 when a
//! primary is known, 503 otherwise). One request per connection; anything else is 404/400.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;

use super::Metrics;
use crate::service::KvService;

/// Pause after a failed accept (out of file descriptors, ...) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

const REQUEST_BYTES_MAX: usize = 8 << 10;

pub async fn run_metrics_listener<S: KvService>(
    listener: TcpListener,
    metrics: std::sync::Arc<Metrics>,
    service: S,
) {
    let service = Rc::new(service);
    loop {
        let Ok(mut stream) = listener.accept().await else {
            glommio::timer::sleep(ACCEPT_RETRY).await;
            continue;
        };
        let metrics = metrics.clone();
        let service = service.clone();
        glommio::spawn_local(async move {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < REQUEST_BYTES_MAX {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let line = String::from_utf8_lossy(buf.split(|&b| b == b'\r').next().unwrap_or_default()).into_owned();
            let mut parts = line.split_whitespace();
            let (status, ctype, body) = match (parts.next(), parts.next()) {
                (Some("GET"), Some("/metrics")) => {
                    let mut body = String::with_capacity(16 << 10);
                    metrics.render(&mut body);
                    service.render_metrics(&mut body);
                    ("200 OK", "text/plain; version=0.0.4", body)
                }
                (Some("GET"), Some("/health")) => {
                    let healthy = service.replicas().iter().any(|r| r.is_primary);
                    if healthy {
                        ("200 OK", "text/plain", "ok\n".to_string())
                    } else {
                        ("503 Service Unavailable", "text/plain", "no primary\n".to_string())
                    }
                }
                (Some(_), Some(_)) => ("404 Not Found", "text/plain", "try /metrics or /health\n".to_string()),
                _ => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.close().await;
        })
        .detach();
    }
}
