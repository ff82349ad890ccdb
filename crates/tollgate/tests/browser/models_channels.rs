//! The Models page's Channels and Providers sections: owners see every model's channels
//! with routing settings and live circuit state (a channel that refused its connection
//! shows open), which of them the API manages, each model's source, and the providers
//! without their credentials; members see the models only.

use tollgate_testkit::app::{ADMIN_TOKEN, UPSTREAM_KEY};

use super::*;

const MEMBER_PASSWORD: &str = "mona-password-0123";

async fn admin_post(app: &TestApp, path: &str, body: &Value) -> Value {
    let res = app.client.post_json(&app.url(&format!("/api/v1/{path}")), Some(ADMIN_TOKEN), body).await.unwrap();
    assert_eq!(res.status, 201, "POST {path}: {}", res.text());
    res.json()
}

/// The channel row of `model` through `provider`.
fn channel(model: &str, provider: &str) -> String {
    format!("#channels-table tr.channel[data-model='{model}'][data-provider='{provider}']")
}

#[tokio::test]
async fn owners_see_channels_with_their_circuits_and_members_do_not() {
    let Some(b) = browser().await else { return };
    // `routed`: a channel that refuses connections (priority 9), then the fake upstream.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let extra = format!(
        "[[providers]]\nname = \"dead\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n\
         api_key = \"{UPSTREAM_KEY}\"\n[[models]]\nid = \"routed\"\ntype = \"chat\"\n\
         channels = [{{ provider = \"dead\", model = \"up-dead\", priority = 9 }}, {{ provider = \"fake\" }}]\n"
    );
    let env = [
        ("TOLLGATE_UPSTREAM__BREAKER_FAILURES", "1"),
        ("TOLLGATE_UPSTREAM__BREAKER_OPEN_MS", "600000"),
        ("TOLLGATE_UPSTREAM__RETRY_BASE_MS", "1"),
    ];
    let app = TestApp::start_with_env("", &extra, &env).await.unwrap();
    let key = app.create_key("routed").await.unwrap();
    let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(&key), &chat("routed")).await.unwrap();
    assert_eq!(res.status, 200, "failed over to the fake upstream: {}", res.text());
    admin_post(
        &app,
        "models",
        &json!({ "id": "managed-chat", "type": "chat", "input_price_per_mtok": 1, "output_price_per_mtok": 2,
                 "channels": [{ "provider": "fake", "upstream_model": "fake-mini", "priority": 5, "weight": 3, "groups": ["beta"] }] }),
    )
    .await;
    admin_post(&app, "users", &json!({ "email": "mona@test.local", "password": MEMBER_PASSWORD, "role": "member" }))
        .await;
    let lab = json!({ "name": "lab", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                      "api_key": "sk-lab-secret-777", "headers": { "X-Lab": "lab-header-secret" } });
    admin_post(&app, "providers", &lab).await;

    b.sign_in(&app, OWNER_PASSWORD).await;
    b.find("svg.chart").await;
    // The managed model reaches the data plane through the change feed: reload until listed.
    let start = Instant::now();
    loop {
        b.goto(&app.url("/dashboard/models")).await;
        b.find("#models-table").await;
        if b.client.find(Locator::Css(&channel("managed-chat", "fake"))).await.is_ok() {
            break;
        }
        assert!(start.elapsed() < WAIT, "the managed model's channel on the page");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.text_of("#models-table tr[data-model='managed-chat'] .model-source").await, "API");
    assert_eq!(b.text_of("#models-table tr[data-model='routed'] .model-source").await, "config");

    // Each channel's settings and circuit: the refused one is open after its failure.
    let attr = |css: String, name: &str| format!("return document.querySelector({css:?})?.getAttribute({name:?})");
    let cell =
        |css: String, n: u8| format!("return document.querySelector({css:?} + ' td:nth-child({n})').textContent");
    let dead = channel("routed", "dead");
    assert_eq!(b.client.execute(&attr(dead.clone(), "data-state"), Vec::new()).await.unwrap(), json!("open"));
    assert_eq!(b.client.execute(&attr(dead.clone(), "data-source"), Vec::new()).await.unwrap(), json!("config"));
    assert_eq!(b.client.execute(&cell(dead.clone(), 2), Vec::new()).await.unwrap(), json!("up-dead"));
    assert_eq!(b.client.execute(&cell(dead.clone(), 4), Vec::new()).await.unwrap(), json!("9"));
    assert_eq!(b.client.execute(&cell(dead.clone(), 8), Vec::new()).await.unwrap(), json!("1"), "one failure");
    let fake = channel("routed", "fake");
    assert_eq!(b.client.execute(&attr(fake.clone(), "data-state"), Vec::new()).await.unwrap(), json!("closed"));
    assert_eq!(b.client.execute(&cell(fake.clone(), 7), Vec::new()).await.unwrap(), json!("1"), "one success");
    let managed = channel("managed-chat", "fake");
    assert_eq!(b.client.execute(&attr(managed.clone(), "data-source"), Vec::new()).await.unwrap(), json!("api"));
    let row = b.text_of(&managed).await;
    assert!(row.contains("fake-mini") && row.contains("beta") && row.contains('3') && row.contains('5'), "{row}");
    // Attempts go by priority: the refused channel heads its model's rows.
    let order = "return Array.from(document.querySelectorAll(\"#channels-table tr.channel[data-model='routed']\")).map(r => r.dataset.provider)";
    assert_eq!(b.client.execute(order, Vec::new()).await.unwrap(), json!(["dead", "fake"]));
    // Providers: the config file's and the managed one, credentials never on the page.
    let lab_row = b.text_of("#providers-table tr.provider[data-provider='lab']").await;
    assert!(
        lab_row.contains("http://127.0.0.1:9/v1") && lab_row.contains("Set") && lab_row.contains("X-Lab"),
        "{lab_row}"
    );
    assert!(lab_row.contains("API"), "{lab_row}");
    assert!(b.text_of("#providers-table tr.provider[data-provider='dead']").await.contains("config"));
    let source = b.client.source().await.unwrap();
    assert!(
        !source.contains("sk-lab-secret-777")
            && !source.contains("lab-header-secret")
            && !source.contains(UPSTREAM_KEY)
    );
    b.client.execute("document.querySelector('#providers').scrollIntoView()", Vec::new()).await.unwrap();
    b.shot("models-providers").await;
    let note = b.text_of("#channels > p").await;
    assert!(note.contains("config file") && note.contains("/api/v1/channels"), "{note}");
    b.client.execute("document.querySelector('#channels').scrollIntoView()", Vec::new()).await.unwrap();
    b.shot("models-channels").await;
    b.client.set_window_size(390, 844).await.unwrap();
    b.goto(&app.url("/dashboard/models")).await;
    b.find("#channels-table").await;
    b.shot("models-phone").await;
    b.client.execute("document.querySelector('#channels').scrollIntoView()", Vec::new()).await.unwrap();
    b.shot("models-channels-phone").await;
    b.client.set_window_size(1366, 900).await.unwrap();

    // A member sees the models, not the channels.
    b.client.delete_all_cookies().await.unwrap();
    b.sign_in_as(&app, "mona@test.local", MEMBER_PASSWORD).await;
    b.find("svg.chart, .empty").await;
    b.goto(&app.url("/dashboard/models")).await;
    b.find("#models-table tr[data-model='routed']").await;
    assert!(b.client.find(Locator::Css("#channels")).await.is_err(), "no channels for a member");
    assert!(b.client.find(Locator::Css("#providers")).await.is_err(), "no providers for a member");
    b.shot("models-member").await;
    b.client.clone().close().await.unwrap();
}
