//! Requests that name no known key are counters per address and minute, not rows: the
//! first of each address and minute keeps its row, the rest are counted (table and
//! metrics), and past `[limits] auth_failures_per_minute` the address's failing requests
//! get `429` while a valid key from the same address still passes. A known key refused
//! keeps its row, attributed to it.

use http_body_util::BodyExt;
use tollgate_service::{Actor, NewKey, SettingsInput};

use super::*;

const FLOODER: &str = "203.0.113.7";
const CHAT: &str = "/v1/chat/completions";

/// One chat request as if from `addr` (the test's peer is a trusted proxy).
async fn chat_from(app: &TestApp, addr: &str, auth: Option<&str>) -> (u16, http::HeaderMap, Value) {
    let mut headers = vec![("x-forwarded-for", addr.to_owned()), ("content-type", "application/json".to_owned())];
    if let Some(a) = auth {
        headers.push(("authorization", a.to_owned()));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = app.client.send(Method::POST, &app.url(CHAT), &headers, chat("gpt-4o-mini").to_string()).await.unwrap();
    let status = res.status().as_u16();
    let head = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, head, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

#[tokio::test]
async fn unknown_keys_are_counted_sampled_and_throttled_while_known_keys_keep_rows() {
    let top = "trusted_proxies = [\"127.0.0.1/32\"]";
    let mut app = TestApp::start_with_top(top, "[limits]\nauth_failures_per_minute = 20\n").await.unwrap();
    let good = app.create_key("good").await.unwrap();
    let fenced = NewKey {
        name: "fenced".into(),
        settings: SettingsInput { ip_allowlist: Some(Some(vec!["10.9.9.9/32".into()])), ..Default::default() },
        ..Default::default()
    };
    let fenced = app.services().unwrap().create_key(&Actor::cli(), fenced).await.unwrap();
    // A known key refused for its address: the row names the key (polled until the feed has it).
    let bearer = format!("Bearer {}", fenced.secret);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, v) = chat_from(&app, "198.51.100.1", Some(&bearer)).await;
        if v["error"]["code"] == "ip_not_allowed" {
            assert_eq!(status, 401);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the fenced key never reached the snapshot: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The flood must not straddle a minute (the counts are per minute).
    let into_minute = tollgate_core::time::now_millis().rem_euclid(60_000);
    if into_minute > 50_000 {
        tokio::time::sleep(Duration::from_millis((60_500 - into_minute) as u64)).await;
    }
    let bogus = [
        None,
        Some("Bearer not-a-key".to_owned()),
        Some("Bearer sk-tg-0000000000000000000000000000000000000000".to_owned()),
        Some(format!("Bearer {}x", &good)),
        Some("Basic abc".to_owned()),
    ];
    let mut unauthorized = 0;
    let mut throttled = 0;
    for i in 0..30 {
        let (status, headers, v) = chat_from(&app, FLOODER, bogus[i % bogus.len()].as_deref()).await;
        match status {
            401 => {
                assert_eq!(v["error"]["code"], "invalid_api_key", "{v}");
                unauthorized += 1;
            }
            429 => {
                assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
                let secs: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&secs), "{secs}");
                throttled += 1;
            }
            other => panic!("{other}: {v}"),
        }
    }
    assert_eq!((unauthorized, throttled), (20, 10));
    // A valid key from the throttled address still works.
    let (status, _, v) = chat_from(&app, FLOODER, Some(&format!("Bearer {good}"))).await;
    assert_eq!(status, 200, "{v}");

    let metrics = app.client.get(&app.url("/metrics"), None).await.unwrap().text();
    assert_eq!(metric(&metrics, "tollgate_auth_failures_throttled_total"), 10);
    assert!(metric(&metrics, "tollgate_auth_failures_total") >= 30);

    app.stop().await;
    let store = app.store().await.unwrap();
    let rows = store.list_usage(&tollgate_store::UsageQuery { limit: 10_000, ..Default::default() }).await.unwrap();
    let flood: Vec<_> = rows.iter().filter(|r| r.client_ip.as_deref() == Some(FLOODER)).collect();
    assert_eq!(flood.iter().filter(|r| r.key_id.is_none()).count(), 1, "one sampled row of 30 failures");
    assert_eq!(flood.iter().filter(|r| r.status == 200).count(), 1);
    let fenced_rows: Vec<_> = rows.iter().filter(|r| r.key_id.as_deref() == Some(fenced.key.id.as_str())).collect();
    assert!(!fenced_rows.is_empty() && fenced_rows.iter().all(|r| r.status == 401), "{fenced_rows:?}");
    let counted = store.list_auth_failures(0, i64::MAX, 1000).await.unwrap();
    let flood_failures: i64 = counted.iter().filter(|(_, ip, _)| ip == FLOODER).map(|(_, _, n)| n).sum();
    assert_eq!(flood_failures, 30, "{counted:?}");
}
