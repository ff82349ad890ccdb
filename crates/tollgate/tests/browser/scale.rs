//! 10,000 keys: seeded in one statement (copies of a real key, each with its own id,
//! name, digest and request count), then the keys page pages, sorts and searches them on
//! the server. No timing assertions: the point is that it all works at that size.

use super::*;

const KEYS: u32 = 10_000;

/// `[name, requests]` of each row in the keys table, top to bottom.
async fn rows(b: &Browser) -> Vec<(String, i64)> {
    let v = b
        .client
        .execute(
            "return Array.from(document.querySelectorAll('#keys-table tr[data-key-id]')).map(r => \
               [r.dataset.keyName, Number(r.querySelector('td:nth-child(8)').textContent)])",
            Vec::new(),
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn ten_thousand_keys_page_sort_and_search() {
    let Some(b) = browser().await else { return };
    let app = TestApp::start().await.unwrap();
    let (template, _) = app.api_key(&json!({ "name": "bulk-00000" })).await.unwrap();
    let store = app.store().await.unwrap();
    // SQLite (the test app's database): one INSERT … SELECT over a counter.
    let sql = format!(
        "INSERT INTO api_keys (id, name, digest, preview, status, created_at, expires_at, last_used_at, request_count, \
         tokens_used, spend_micros, settings, updated_at, previous_digest, previous_expires_at, rotation_key, org_id, \
         team_id, owner_id, secret_sealed) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
         SELECT 'key_bulk_' || i, 'bulk-' || printf('%05d', i), randomblob(32), 'sk-tg-…' || printf('%04d', i % 10000), \
         'active', t.created_at + i, NULL, NULL, (i * 7919) % 10007, 0, 0, t.settings, t.updated_at, NULL, NULL, NULL, \
         t.org_id, t.team_id, t.owner_id, NULL FROM n, api_keys t WHERE t.id = '{template}'",
        last = KEYS - 1,
    );
    store.execute_admin(&sql).await.unwrap();
    store.close().await;

    b.sign_in(&app, OWNER_PASSWORD).await;
    b.find("svg.chart").await;
    b.goto(&app.url("/dashboard/keys")).await;
    b.find("#keys-table").await;
    let first = rows(&b).await;
    assert_eq!(first.len(), 50, "a page of 50");
    assert_eq!(first[0].0, "bulk-00000");
    assert_eq!(first[49].0, "bulk-00049");
    b.shot("keys-10k").await;

    // Paging: the next page carries on where the first stopped.
    b.click("#next-page").await;
    b.until("the second page", "return document.querySelector('#keys-table tr[data-key-id]')?.dataset.keyName", |v| {
        v == "bulk-00050"
    })
    .await;
    assert_eq!(rows(&b).await.len(), 50);

    // Sorting by requests, descending: the busiest keys first, across all 10,000.
    b.goto(&app.url("/dashboard/keys")).await;
    b.click("#keys-table th a.sort[href*='sort=requests']").await;
    b.until("ascending by requests", "return location.search", |v| {
        v.as_str().is_some_and(|s| s.contains("sort=requests") && s.contains("order=asc"))
    })
    .await;
    b.find("#keys-table tr[data-key-id]").await;
    let ascending = rows(&b).await;
    assert!(ascending.windows(2).all(|w| w[0].1 <= w[1].1), "{ascending:?}");
    b.click("#keys-table th a.sort[href*='sort=requests']").await;
    b.until("descending by requests", "return location.search", |v| {
        v.as_str().is_some_and(|s| s.contains("order=desc"))
    })
    .await;
    b.find("#keys-table tr[data-key-id]").await;
    let descending = rows(&b).await;
    assert!(descending.windows(2).all(|w| w[0].1 >= w[1].1), "{descending:?}");
    // 9,999 distinct values of (i * 7919) % 10007 (a prime): the largest is at least 9,999.
    assert!(descending[0].1 >= 9_999, "{descending:?}");
    b.click("#next-page").await;
    b.until("the next page, still descending", "return location.search", |v| {
        v.as_str().is_some_and(|s| s.contains("cursor="))
    })
    .await;
    b.find("#keys-table tr[data-key-id]").await;
    let page2 = rows(&b).await;
    assert!(page2[0].1 <= descending[49].1 && page2.windows(2).all(|w| w[0].1 >= w[1].1));

    // Search: only the matching names, on the server.
    b.goto(&app.url("/dashboard/keys")).await;
    b.fill("input[name=search]", "bulk-0420").await;
    b.click_reloading("form.toolbar button[type=submit]").await;
    b.until("the search results", "return location.search", |v| {
        v.as_str().is_some_and(|s| s.contains("search=bulk-0420"))
    })
    .await;
    b.find("#keys-table tr[data-key-id]").await;
    let found: Vec<String> = rows(&b).await.into_iter().map(|r| r.0).collect();
    let expected: Vec<String> = (4200..4210).map(|i| format!("bulk-{i:05}")).collect();
    assert_eq!(found, expected);
    assert!(b.client.find(Locator::Css("#next-page")).await.is_err(), "one page of results");
    b.shot("keys-10k-search").await;
    b.client.clone().close().await.unwrap();
}
