//! Keep-alive after a refused body, on a real socket (issue 11): a response
//! after which the server closes the connection says `Connection: close`;
//! otherwise the next request on the same connection works.

use std::time::Duration;

use crate::common::{BODY_LIMIT, KEY, SEND, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response read off the socket: status line, lower-cased headers.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn closes(&self) -> bool {
        self.headers.iter().any(|(name, value)| name == "connection" && value.eq_ignore_ascii_case("close"))
    }
}

/// Reads one response (headers and a `Content-Length` body) from `stream`.
async fn read_response(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await??;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a response"));
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buffer[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buffer.len() - end;
    while body < length {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await??;
        if n == 0 {
            break;
        }
        body += n;
    }
    Ok(Head { status, headers })
}

/// Sends `first` on a fresh keep-alive connection, then a `GET /healthz` on
/// the same one unless the first answer said `Connection: close`.
async fn first_then_second(addr: std::net::SocketAddr, first: &[u8], expected: u16) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(first).await.expect("first request");
    let head = read_response(&mut stream).await.expect("first response");
    assert_eq!(head.status, expected);
    if head.closes() {
        return;
    }
    let second = b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n";
    let sent = stream.write_all(second).await;
    let answer = match sent {
        Ok(()) => read_response(&mut stream).await.map(|h| h.status),
        Err(error) => Err(error),
    };
    assert!(
        matches!(answer, Ok(200)),
        "no Connection: close on the {expected}, yet the next request on the connection failed: {answer:?}"
    );
}

fn request(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes =
        format!("POST {SEND} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n{headers}\r\n")
            .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[tokio::test]
async fn keep_alive_clients_survive_refused_bodies() {
    let app = TestApp::start().await;
    let (addr, _server) = app.serve().await;
    // Well past the limit and past what hyper reads ahead, so it cannot drain it.
    let big = vec![b' '; BODY_LIMIT * 32];

    let declared = request(&format!("authorization: {KEY}\r\ncontent-length: {}\r\n", big.len()), &big);
    first_then_second(addr, &declared, 413).await;

    let mut chunked = request(&format!("authorization: {KEY}\r\ntransfer-encoding: chunked\r\n"), b"");
    chunked.extend_from_slice(format!("{:x}\r\n", big.len()).as_bytes());
    chunked.extend_from_slice(&big);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    first_then_second(addr, &chunked, 413).await;

    let unauthenticated = request(&format!("authorization: nope\r\ncontent-length: {}\r\n", big.len()), &big);
    first_then_second(addr, &unauthenticated, 401).await;

    // A small body read to its end keeps the connection without a close.
    let small = br#"{"eventType":"escalationFailed","platformConversationId":"ka"}"#;
    let ok = request(&format!("authorization: {KEY}\r\ncontent-length: {}\r\n", small.len()), small);
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(&ok).await.expect("write");
    let head = read_response(&mut stream).await.expect("response");
    assert_eq!(head.status, 200);
    assert!(!head.closes(), "a fully read body keeps the connection open");
}
