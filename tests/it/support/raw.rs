//! Raw HTTP/1.1 over TCP, for what an HTTP client will not send: lying lengths, broken
//! request lines, dripped headers, connections from another loopback address.

use std::net::{IpAddr, SocketAddr};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::DEADLINE;

/// One response as it came off the wire.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The head, status line included, lower-cased.
    pub head: String,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body as JSON, failing the test when it is not.
    pub fn envelope(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "{} answered a body that is not JSON: {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A connection to `addr` from the loopback address `from` (loopback accepts the whole
/// 127.0.0.0/8, so tests can be several clients).
pub async fn connect_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind client");
    socket.connect(addr).await.expect("connect")
}

/// Sends `request` on a fresh connection and reads one response.
pub async fn send(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it has read everything (a head over
    // its limit): what it answered is still there to read.
    let _ = stream.write_all(request).await;
    read_response(&mut stream)
        .await
        .unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(request)))
}

/// Reads one response (its body by `Content-Length`), or `None` when the server closes
/// the connection first. Fails the test at the deadline.
pub async fn read_response(stream: &mut TcpStream) -> Option<RawResponse> {
    tokio::time::timeout(DEADLINE, async {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("a numeric content-length"));
        let mut body = buf[head_end..].to_vec();
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        body.truncate(length);
        Some(RawResponse { status, head, body })
    })
    .await
    .expect("an answer or a close before the deadline")
}

/// Waits until the server closes `stream` (end of file or reset), ignoring anything it
/// sends first. Fails the test at the deadline.
pub async fn wait_for_close(stream: &mut TcpStream) {
    tokio::time::timeout(DEADLINE, async {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                return;
            }
        }
    })
    .await
    .expect("the server closes the connection before the deadline");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A `POST /webhook` request with `body` and a correct `Content-Length`.
pub fn post(body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /webhook HTTP/1.1\r\nhost: ingest\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}
