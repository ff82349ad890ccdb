//! The Playground in the browser: with no key it says what to do; with one, a run streams
//! into the page and is metered like any request, and the snippets follow the form. Then
//! the read-only Models and Audit Log pages, and a team created through the dialog.

use super::*;

#[tokio::test]
async fn playground_streams_with_a_key_then_models_audit_and_teams() {
    let Some(b) = browser().await else { return };
    let app = TestApp::start().await.unwrap();
    b.sign_in(&app, OWNER_PASSWORD).await;
    b.find("svg.chart, .empty").await;

    // No key yet: the Playground says what to do next.
    b.goto(&app.url("/dashboard/playground")).await;
    assert!(b.text_of(".empty h2").await.contains("no active API key"));

    // A key of the owner's, made through the dialog.
    b.goto(&app.url("/dashboard/keys")).await;
    b.click("#open-create").await;
    b.fill("#key-name", "Playground key").await;
    b.click("#key-submit").await;
    let secret = b.text_of("#secret-value").await;
    b.click_reloading("#secret-done").await;
    b.find("#keys-table tbody tr").await;
    app.key_accepted(&secret, WAIT).await.unwrap();

    // Run with demo-chat: the answer streams into the page, the snippets follow the form.
    b.goto(&app.url("/dashboard/playground")).await;
    b.find("#pg-key option").await;
    b.client
        .execute("document.querySelector('#pg-model').value = 'demo-chat'; document.querySelector('#pg-model').dispatchEvent(new Event('change', {bubbles: true}))", Vec::new())
        .await
        .unwrap();
    b.fill("#pg-system", "You are terse.").await;
    b.fill("#pg-prompt", "Say hello to the dashboard").await;
    b.fill("#pg-temperature", "0.3").await;
    b.fill("#pg-max-tokens", "64").await;
    b.click("#pg-run").await;
    b.until(
        "the streamed answer",
        "const o = document.querySelector('#pg-output'); return [o.dataset.state, o.textContent]",
        |v| v[0] == "done" && v[1].as_str().is_some_and(|s| !s.trim().is_empty()),
    )
    .await;
    assert!(b.text_of("#pg-meta").await.contains("req_"), "the request id is shown");
    let base = app.url("/v1");
    for (tab, snippet) in [
        ("#snip-tab-curl", "#snip-curl code"),
        ("#snip-tab-python", "#snip-python code"),
        ("#snip-tab-js", "#snip-js code"),
    ] {
        b.click(tab).await;
        let code = b.text_of(snippet).await;
        assert!(code.contains(&base), "{snippet} names the base URL {base}: {code}");
        assert!(code.contains("demo-chat") && code.contains("TOLLGATE_API_KEY"), "{snippet}: {code}");
        assert!(code.contains("0.3") && code.contains("64") && code.contains("You are terse."), "{snippet}: {code}");
    }
    b.click("#snip-tab-python").await;
    let page = b.client.source().await.unwrap();
    assert!(!page.contains(&secret), "the key's secret never reaches the page");
    b.client.execute("window.scrollTo(0, 0)", Vec::new()).await.unwrap();
    b.shot("playground").await;
    b.client.execute("document.querySelector('.pg-code').scrollIntoView()", Vec::new()).await.unwrap();
    b.shot("playground-snippets").await;

    // The run is metered to that key like any other request.
    let start = Instant::now();
    loop {
        b.goto(&app.url("/dashboard/usage")).await;
        b.find("#usage-table, .empty").await;
        let text: Value = b
            .client
            .execute("return document.querySelector('#usage-table tbody')?.textContent || ''", Vec::new())
            .await
            .unwrap();
        if text.as_str().is_some_and(|t| t.contains("Playground key") && t.contains("demo-chat")) {
            break;
        }
        assert!(start.elapsed() < WAIT, "the Playground run in Usage Logs; saw {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.shot("usage-playground").await;

    // Models: read-only, with prices.
    b.goto(&app.url("/dashboard/models")).await;
    let row = b.text_of("#models-table tr[data-model='demo-chat']").await;
    assert!(row.contains("chat") && row.contains('$'), "{row}");
    assert!(b.text_of("#models-table tr[data-model='gpt-4o-mini']").await.contains("$0.15"));
    b.shot("models").await;

    // Audit Log: the key's creation, filterable by action.
    b.goto(&app.url("/dashboard/audit")).await;
    assert!(b.text_of("#audit-table tr[data-action='key.create']").await.contains("owner@test.local"));
    b.shot("audit").await;
    b.fill("input[name=action]", "key.create").await;
    b.click_reloading("form.filters button[type=submit]").await;
    b.until(
        "only key.create rows",
        "return Array.from(document.querySelectorAll('#audit-table tbody tr')).map(r => r.dataset.action)",
        |v| v.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(|x| x == "key.create")),
    )
    .await;

    // Teams: create one through the dialog, add the owner, then remove them.
    b.goto(&app.url("/dashboard/teams")).await;
    b.click("#open-team-create").await;
    b.click("#team-submit").await;
    assert_eq!(b.text_of("[data-field=team-name] .field-error").await, "Give the team a name.");
    b.fill("#team-name", "Platform").await;
    b.fill("#team-models", "demo-chat").await;
    b.fill("#team-budget", "50").await;
    b.fill("#team-rpm", "120").await;
    b.shot("teams-create-dialog").await;
    b.click("#team-submit").await;
    let team = b.text_of("section.team[data-team-name='Platform']").await;
    assert!(team.contains("demo-chat") && team.contains("$50.00") && team.contains("120"), "{team}");
    b.click("section.team[data-team-name='Platform'] form.add-member button[type=submit]").await;
    b.find("section.team[data-team-name='Platform'] .member-list li").await;
    assert!(b.text_of("section.team[data-team-name='Platform'] .member-list").await.contains("owner@test.local"));
    b.shot("teams").await;
    b.click("section.team[data-team-name='Platform'] .remove-member").await;
    b.find("section.team[data-team-name='Platform'] .team-none").await;
    b.client.clone().close().await.unwrap();
}
