//! Usage-writer throughput: how many usage rows per second the store takes, written the
//! way the server's writer writes them (one transaction per batch: the rows, the key, team
//! and organization counters, the ledger debit and the daily aggregates).
//!
//! `usage-writer [--database-url URL] [--rows N] [--batch N]`; SQLite in a temporary
//! directory by default. Prints one line: `rows batch seconds rows_per_second`.

use std::time::Instant;

use tollgate_core::key::{Digester, KeyFormat};
use tollgate_core::usage::{BillingReason, UsageEvent};
use tollgate_service::{Actor, NewKey, Services};
use tollgate_store::Store;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = arg("--database-url").unwrap_or_else(|| Store::sqlite_url(&dir.path().join("bench.db")));
    let rows: usize = arg("--rows").map_or(Ok(200_000), |v| v.parse())?;
    let batch: usize = arg("--batch").map_or(Ok(500), |v| v.parse())?;
    let store = Store::connect(&url).await?;
    store.migrate().await?;
    // `--drop-index a,b`: measure what an index costs the writer.
    for index in arg("--drop-index").iter().flat_map(|s| s.split(',').map(str::to_owned).collect::<Vec<_>>()) {
        store.execute_admin(&format!("DROP INDEX {index}")).await?;
    }
    let services = Services::new(store.clone(), KeyFormat::default(), Digester::new(b"bench"));
    services.bootstrap("bench@localhost", Some("bench-password-0123")).await?;
    let key = services.create_key(&Actor::cli(), NewKey { name: "bench".into(), ..Default::default() }).await?.key;
    let now = tollgate_core::time::now_millis();
    let event = |i: usize| {
        let mut e = UsageEvent::new(format!("req_{i}"), now, "/v1/chat/completions".into());
        e.key_id = Some(key.id.clone());
        e.key_name = Some(key.name.clone());
        e.org_id = Some(key.org_id.clone());
        e.team_id = Some(key.team_id.clone());
        e.user_id = Some(key.owner_id.clone());
        e.model = Some(if i.is_multiple_of(2) { "gpt-4o-mini" } else { "gpt-4o" }.into());
        e.provider = Some("openai".into());
        e.prompt_tokens = 12;
        e.completion_tokens = 40;
        e.cost = tollgate_core::MicroUsd(26);
        e.latency_ms = 400;
        e.ttft_ms = Some(120);
        e.stream = i.is_multiple_of(3);
        e.client_ip = Some("10.0.0.1".into());
        e.billing_reason = BillingReason::Completed;
        e
    };
    let events: Vec<UsageEvent> = (0..rows).map(event).collect();
    let start = Instant::now();
    for chunk in events.chunks(batch.max(1)) {
        store.insert_usage(chunk).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{rows} {batch} {secs:.3} {:.0}", rows as f64 / secs);
    store.close().await;
    Ok(())
}
