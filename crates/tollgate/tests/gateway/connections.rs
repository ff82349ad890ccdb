//! Slow and idle clients over real sockets (`[server]`): a silent socket, trickled
//! headers, an idle keep-alive connection and a trickled body are closed; more connections
//! than the cap get a `503` and the gateway keeps accepting; a stream that outlives every
//! timeout is never cut.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// Small timeouts so that each test takes about a second.
const FAST: &str = "[server]\nheader_read_timeout_ms = 300\nidle_timeout_ms = 300\nbody_idle_timeout_ms = 300\n";

/// Generous: a loaded 2-core CI box.
const WITHIN: Duration = Duration::from_secs(15);

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.base_url.trim_start_matches("http://");
    TcpStream::connect(addr).await.unwrap()
}

/// Reads until the server closes the connection (EOF or reset); what it sent before.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WITHIN, read).await.expect("the server closed the connection");
    String::from_utf8_lossy(&out).into_owned()
}

/// A `GET /healthz` on a fresh connection answers 200 (the gateway still accepts).
async fn healthz_answers(app: &TestApp) -> bool {
    let Ok(mut s) = TcpStream::connect(app.base_url.trim_start_matches("http://")).await else {
        return false;
    };
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.is_err() {
        return false;
    }
    read_until_closed(&mut s).await.starts_with("HTTP/1.1 200")
}

#[tokio::test]
async fn a_silent_socket_and_trickled_headers_are_closed() {
    let app = TestApp::start_with(FAST).await.unwrap();
    let mut silent = connect(&app).await;
    let mut trickle = connect(&app).await;
    let (mut rd, mut wr) = trickle.split();
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer sk-x\r\n";
    let writer = async {
        for b in head {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let reader = async {
        let mut buf = [0u8; 1024];
        tokio::time::timeout(WITHIN, async {
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("trickled headers closed")
    };
    // The head takes 3.5 s to trickle: the connection must close long before it is whole.
    tokio::select! {
        () = reader => {}
        () = writer => panic!("the whole head trickled in without the connection being closed"),
    }
    assert_eq!(read_until_closed(&mut silent).await, "", "a silent socket is closed unanswered");
    assert!(healthz_answers(&app).await);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_response() {
    let app = TestApp::start_with(FAST).await.unwrap();
    let mut s = connect(&app).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let seen = read_until_closed(&mut s).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(!seen.to_ascii_lowercase().contains("connection: close"), "kept alive until idle: {seen}");
}

#[tokio::test]
async fn a_trickled_body_is_cut() {
    let app = TestApp::start_with(FAST).await.unwrap();
    let key = app.create_key("slow-body").await.unwrap();
    let mut s = connect(&app).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = s.split();
    // One byte every 100 ms: never silent for the 300 ms allowed, but far below 1 KiB/s.
    let writer = async {
        for _ in 0..200 {
            if wr.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let reader = async {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let answer = tokio::time::timeout(WITHIN, async {
        tokio::select! {
            text = reader => text,
            () = writer => panic!("the trickled body was read to its end"),
        }
    })
    .await
    .expect("the trickled body was cut");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(answer.contains("invalid_request"), "{answer}");
}

#[tokio::test]
async fn over_the_connection_cap_a_client_gets_503_and_the_gateway_keeps_accepting() {
    let cap = "[server]\nmax_connections = 3\nheader_read_timeout_ms = 60000\n";
    let app = TestApp::start_with(cap).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&app).await);
    }
    // The accept loop counts a connection once it has taken it: give it a moment to do so.
    let mut refused = String::new();
    for _ in 0..100 {
        let mut extra = connect(&app).await;
        refused = read_until_closed(&mut extra).await;
        if !refused.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let lower = refused.to_ascii_lowercase();
    assert!(lower.contains("connection: close") && lower.contains("retry-after: 1"), "{refused}");
    let body = refused.split("\r\n\r\n").nth(1).unwrap();
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "unavailable", "{v}");

    drop(held);
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !healthz_answers(&app).await {
        assert!(tokio::time::Instant::now() < deadline, "the gateway accepts again once connections close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_stream_longer_than_every_timeout_is_not_cut() {
    let slow = format!(
        "{FAST}[[providers]]\nname = \"slow-demo\"\nkind = \"demo\"\nword_delay_ms = 60\n\
         [[models]]\nid = \"slow-chat\"\ntype = \"chat\"\nchannels = [{{ provider = \"slow-demo\" }}]\n"
    );
    let app = TestApp::start_with(&slow).await.unwrap();
    let key = app.create_key("long-stream").await.unwrap();
    let req = json!({ "model": "slow-chat", "stream": true, "messages": [{ "role": "user", "content": "hi" }] });
    let started = std::time::Instant::now();
    let mut s = app.client.open_stream(&app.url("/v1/chat/completions"), &key, &req).await.unwrap();
    let text = read_to_end(&mut s.body).await.unwrap();
    let took = started.elapsed();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // Otherwise the test proves nothing: the stream outlived the idle and header timeouts.
    assert!(took > Duration::from_millis(600), "{took:?}");
}
