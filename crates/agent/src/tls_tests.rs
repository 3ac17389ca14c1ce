//! The HTTP exchanges of `tls` over an in-memory pipe to a scripted server.

use super::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

const ADDRESS: &str = "127.0.0.2:6443";

/// A server that reads each request head and writes the next of `answers`, then closes;
/// how many requests it read.
async fn serve(mut stream: DuplexStream, answers: Vec<&[u8]>) -> usize {
    let mut requests = 0;
    for answer in answers {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return requests,
            }
        }
        requests += 1;
        if stream.write_all(answer).await.is_err() {
            return requests;
        }
    }
    requests
}

async fn fetched(answer: &[u8]) -> Result<Vec<u8>, TlsError> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (fetched, _) = tokio::join!(
        fetch(client, ADDRESS, "/cacerts"),
        serve(server, vec![answer])
    );
    fetched
}

#[tokio::test]
async fn answers_are_read_with_length_or_chunks() {
    let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\npongextra";
    assert_eq!(fetched(plain).await.expect("a plain answer"), b"pong");
    let chunked =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\npo\r\n2\r\nng\r\n0\r\n\r\n";
    assert_eq!(fetched(chunked).await.expect("a chunked answer"), b"pong");
}

#[tokio::test]
async fn answers_not_200_not_http_or_too_large_are_refused() {
    let missing = fetched(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await;
    assert!(
        matches!(&missing, Err(TlsError::Status { status: 404, path, .. }) if path == "/cacerts"),
        "{missing:?}"
    );
    let garbage = fetched(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
    assert!(
        matches!(garbage, Err(TlsError::Garbled { .. })),
        "{garbage:?}"
    );
    let bad_chunks = fetched(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").await;
    assert!(
        matches!(bad_chunks, Err(TlsError::Garbled { .. })),
        "{bad_chunks:?}"
    );
    let mut huge = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
        MAX_ANSWER + 1
    )
    .into_bytes();
    huge.resize(huge.len() + MAX_ANSWER + 1, b'x');
    let huge = fetched(&huge).await;
    assert!(matches!(huge, Err(TlsError::Garbled { .. })), "{huge:?}");
    let silent = fetched(b"").await;
    let error = silent.expect_err("a server closing without an answer fails the request");
    assert!(matches!(error, TlsError::Io { .. }), "{error:?}");
    assert!(error.to_string().starts_with(ADDRESS), "{error}");
}

#[tokio::test]
async fn pings_reuse_the_connection_until_the_server_closes_it() {
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\npong".as_slice();
    let closing =
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 4\r\n\r\npong".as_slice();
    let (client, server) = tokio::io::duplex(64 * 1024);
    let pings = async {
        let kept = keep(client, ADDRESS, "/ping").await.expect("a connection");
        let kept = ping_on(kept, ADDRESS, "/ping")
            .await
            .expect("the first ping");
        let kept = kept.expect("the connection is kept after the first ping");
        let kept = ping_on(kept, ADDRESS, "/ping")
            .await
            .expect("the second ping");
        let kept = kept.expect("the connection is kept after the second ping");
        let last = ping_on(kept, ADDRESS, "/ping")
            .await
            .expect("the third ping");
        // The server said it closes: either the connection is not kept, or the next ping on
        // it fails (and the pinger then opens a fresh one).
        if let Some(kept) = last {
            assert!(ping_on(kept, ADDRESS, "/ping").await.is_err());
        }
    };
    let ((), requests) = tokio::join!(pings, serve(server, vec![ok, ok, closing]));
    assert_eq!(requests, 3, "three pings on one connection");
}

#[tokio::test]
async fn a_ping_answered_other_than_200_fails() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let ping = async {
        let kept = keep(client, ADDRESS, "/ping").await.expect("a connection");
        ping_on(kept, ADDRESS, "/ping")
            .await
            .map(|kept| kept.is_some())
    };
    let unavailable = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".as_slice();
    let (outcome, _) = tokio::join!(ping, serve(server, vec![unavailable]));
    assert!(
        matches!(outcome, Err(TlsError::Status { status: 503, .. })),
        "{outcome:?}"
    );
}

#[test]
fn hosts_come_out_of_addresses() {
    assert_eq!(host_of("127.0.0.2:6443"), Some("127.0.0.2"));
    assert_eq!(host_of("[::1]:6443"), Some("::1"));
    assert_eq!(host_of("example.org:x"), None);
    assert_eq!(host_of(":6443"), None);
}
