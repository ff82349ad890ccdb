#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The dashboard end to end in headless Chromium (Debian `chromium` + `chromium-driver`),
//! driven over WebDriver with fantoccini, against the real server on 127.0.0.1:0. Each
//! test starts its own chromedriver on a free port with a fresh profile directory.
//!
//! Without `/usr/bin/chromium` or `/usr/bin/chromedriver` the tests print a skip note,
//! unless `TOLLGATE_BROWSER_TESTS=required` (as in CI), where they fail. Every page
//! visited is saved as `target/screenshots/<page>.png` for people to look at.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tollgate_testkit::app::{OWNER_PASSWORD, TestApp};

mod keys_actions;
mod members;
mod models_channels;
mod playground;
mod scale;
mod signup;
mod teams_roles;
mod usage_overview;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(10);

/// A headless Chromium session; the driver process dies with it.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A browser, or `None` (with a note) when Chromium is not installed and not required.
async fn browser() -> Option<Browser> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER].into_iter().filter(|p| !Path::new(p).exists()).collect();
    if !missing.is_empty() {
        let required = std::env::var("TOLLGATE_BROWSER_TESTS").is_ok_and(|v| v == "required");
        assert!(
            !required,
            "TOLLGATE_BROWSER_TESTS=required but {missing:?} missing: apt-get install chromium chromium-driver"
        );
        eprintln!("SKIPPED: browser test needs {missing:?} (apt-get install chromium chromium-driver)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--window-size=1366,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    // chromedriver takes a moment to listen: retry the session until it answers.
    let start = Instant::now();
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
            Ok(c) => break c,
            Err(e) if start.elapsed() > Duration::from_secs(20) => panic!("chromedriver at {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    Some(Browser { client, driver, _profile: profile })
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client.wait().at_most(WAIT).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    /// Clicks the element after scrolling it to the middle of its scroll area, clear of
    /// sticky headers and dialog footers.
    /// An element that went stale (the page was re-rendered between finding and clicking
    /// it) is found again, a few times.
    async fn click(&self, css: &str) {
        for attempt in 1.. {
            let el = self.find(css).await;
            let arg = serde_json::to_value(&el).unwrap();
            let clicked = match self.client.execute("arguments[0].scrollIntoView({block: 'center'})", vec![arg]).await {
                Ok(_) => el.click().await,
                Err(e) => Err(e),
            };
            match clicked {
                Ok(()) => return,
                Err(e) if attempt < 5 && is_stale(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Clicks an element whose action reloads the page, then waits for the new page: a find
    /// right after the click would race the reload and could catch the page that is going.
    async fn click_reloading(&self, css: &str) {
        self.client.execute("window.__beforeReload = true", Vec::new()).await.unwrap();
        self.click(css).await;
        let reloaded = "return !window.__beforeReload && document.readyState === 'complete'";
        self.until(&format!("the reload after clicking {css}"), reloaded, |v| v == true).await;
    }

    async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    /// Runs `script` (which returns a value) until `done` holds for its answer.
    async fn until(&self, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let v = self.client.execute(script, Vec::new()).await.unwrap();
            if done(&v) {
                return v;
            }
            assert!(start.elapsed() < WAIT, "waited {WAIT:?} for {what}; last: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the first element matching `css` reads `text` (for text a script sets
    /// after an `await`, which a read right after the click could miss).
    async fn wait_text(&self, css: &str, text: &str) {
        let script = format!("const e = document.querySelector({css:?}); return e ? e.textContent.trim() : ''");
        self.until(css, &script, |v| v.as_str() == Some(text)).await;
    }

    /// The trimmed text of the first element matching `css` once it is non-empty.
    async fn text_of(&self, css: &str) -> String {
        let script = format!("const e = document.querySelector({css:?}); return e ? e.textContent.trim() : ''");
        self.until(css, &script, |v| v.as_str().is_some_and(|s| !s.is_empty())).await.as_str().unwrap().to_owned()
    }

    async fn sign_in(&self, app: &TestApp, password: &str) {
        self.sign_in_as(app, "owner@test.local", password).await;
    }

    async fn sign_in_as(&self, app: &TestApp, email: &str, password: &str) {
        self.goto(&app.url("/dashboard/login")).await;
        self.fill("#email", email).await;
        self.fill("#password", password).await;
        self.click("#login-form button[type=submit]").await;
    }

    /// Creates a key named `name` through the Create Key dialog (the keys page must be
    /// open) and returns the secret from the one-shot box, which it then closes.
    async fn create_key_in_dialog(&self, name: &str) -> String {
        self.click("#open-create").await;
        self.fill("#key-name", name).await;
        self.click("#key-submit").await;
        let secret = self.text_of("#secret-value").await;
        self.click_reloading("#secret-done").await;
        self.find(&format!("#keys-table tr[data-key-name={name:?}]")).await;
        secret
    }

    /// Runs `script` in the page with a `done` callback (its last argument) and returns
    /// what it passes to it: for `fetch` and other promises.
    async fn run_async(&self, script: &str) -> Value {
        self.client.execute_async(script, Vec::new()).await.unwrap()
    }

    /// Sets a `<select>` (or input) to `value` as a user would, with a change event.
    async fn select(&self, css: &str, value: &str) {
        self.find(css).await;
        let script = format!(
            "const e = document.querySelector({css:?}); e.value = {value:?}; e.dispatchEvent(new Event('change', {{bubbles: true}})); return e.value"
        );
        let v = self.client.execute(&script, Vec::new()).await.unwrap();
        assert_eq!(v, json!(value), "{css} has an option {value}");
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }
}

fn chat(model: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": "hello from the dashboard test" }] })
}

/// Polls until `key` gets `status` from `/v1/chat/completions` (the change feed carries
/// key changes to the data plane within milliseconds).
async fn chat_status_becomes(app: &TestApp, key: &str, status: u16) {
    let start = Instant::now();
    loop {
        let res = app.client.post_json(&app.url("/v1/chat/completions"), Some(key), &chat("demo-chat")).await.unwrap();
        if res.status.as_u16() == status {
            return;
        }
        assert!(start.elapsed() < WAIT, "expected {status}, still {} {}", res.status, res.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sign_in_then_create_use_rotate_and_revoke_a_key() {
    let Some(b) = browser().await else { return };
    let app = TestApp::start().await.unwrap();

    // No session: every page sends you to sign in, and back afterwards.
    b.goto(&app.url("/dashboard/keys")).await;
    assert_eq!(b.path().await, "/dashboard/login");
    b.fill("#email", "owner@test.local").await;
    b.fill("#password", OWNER_PASSWORD).await;
    b.click("#login-form button[type=submit]").await;
    b.find("#keys-table, .empty").await;
    assert_eq!(b.path().await, "/dashboard/keys");
    assert!(b.text_of(".empty h2").await.contains("No API keys yet"));
    b.shot("keys-empty").await;

    // Create through the dialog; the secret appears once, in the one-shot box.
    b.click("#open-create").await;
    b.fill("#key-name", "Production API").await;
    b.click("label.chip:has(input[name=budget][value='20'])").await;
    b.click("#tab-advanced").await;
    b.fill("#key-metadata", "{\"env\": ").await;
    assert!(b.text_of("[data-field=key-metadata] .field-error").await.contains("Not valid JSON"));
    b.fill("#key-metadata", "{\"env\": \"production\"}").await;
    b.until(
        "metadata accepted",
        "return document.querySelector('[data-field=key-metadata] .field-error').hidden",
        |v| v == &json!(true),
    )
    .await;
    b.click("#tab-basic").await;
    b.shot("keys-create-dialog").await;
    b.click("#key-submit").await;
    assert_eq!(b.text_of("#secret-title").await, "API Key created! Copy it now");
    let secret = b.text_of("#secret-value").await;
    assert!(secret.starts_with("sk-tg-"), "{secret}");
    assert!(b.text_of("#secret-dialog .warning").await.contains("will not be shown again"));
    b.click("#secret-copy").await;
    b.wait_text("#secret-copy span", "Copied!").await;
    b.shot("keys-one-shot").await;
    b.click_reloading("#secret-done").await;

    // The table lists it, masked, never with the secret.
    b.find("#keys-table tbody tr").await;
    let row_text = b.text_of("#keys-table tbody tr").await;
    assert!(row_text.contains("Production API") && row_text.contains("active"), "{row_text}");
    let page = b.client.source().await.unwrap();
    assert!(!page.contains(&secret), "the secret must not be in the page after Done");
    assert!(page.contains(&format!("sk-tg-…{}", &secret[secret.len() - 4..])), "masked preview shown");

    // Use it, then find the request in Usage Logs, filtered by its id.
    app.key_accepted(&secret, WAIT).await.unwrap();
    chat_status_becomes(&app, &secret, 200).await;
    let rows = {
        let start = Instant::now();
        loop {
            let rows = app.all_usage().await.unwrap();
            if rows.iter().any(|r| r.endpoint.contains("chat")) || start.elapsed() > WAIT {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let request_id = rows.iter().find(|r| r.endpoint.contains("chat")).expect("a usage row").request_id.clone();
    b.goto(&app.url("/dashboard/usage")).await;
    b.find("#usage-table").await;
    assert!(b.text_of("#usage-table tbody").await.contains("Production API"));
    b.fill("input[name=request_id]", &request_id).await;
    b.click_reloading("form.filters button[type=submit]").await;
    b.find(&format!("tr[data-request-id='{request_id}']")).await;
    let csv_href = b.find("#export-csv").await.attr("href").await.unwrap().unwrap();
    assert!(csv_href.starts_with("/api/v1/usage.csv?") && csv_href.contains(&request_id), "{csv_href}");
    b.shot("usage").await;

    // Overview and Billing render for the owner; the credit button says what it does.
    b.goto(&app.url("/dashboard")).await;
    b.find("svg.chart").await;
    b.shot("overview").await;
    // Billing: packages of $5, $20 and $100 fill the amount; any other is a custom one.
    b.goto(&app.url("/dashboard/billing")).await;
    let button = b.text_of("#credit-form button[type=submit]").await;
    assert!(button.contains("admin credit") && button.contains("no payment is taken"), "{button}");
    let packages = "return Array.from(document.querySelectorAll('#credit-form input[name=package]')).map(r => r.value)";
    assert_eq!(b.client.execute(packages, Vec::new()).await.unwrap(), json!(["5", "20", "100", "custom"]));
    let amount = "return document.querySelector('#credit-amount').value";
    b.click("label.chip:has(input[name=package][value='20'])").await;
    b.until("the $20 package in the amount", amount, |v| v == "20").await;
    b.fill("#credit-amount", "25").await;
    let picked = "return document.querySelector('#credit-form input[name=package]:checked')?.value";
    b.until("a custom amount picks Custom", picked, |v| v == "custom").await;
    b.click_reloading("#credit-form button[type=submit]").await;
    b.find("#ledger-table").await;
    assert!(b.text_of("#balance").await.starts_with("$25"), "balance after the credit");
    b.click("label.chip:has(input[name=package][value='5'])").await;
    b.until("the $5 package in the amount", amount, |v| v == "5").await;
    b.shot("billing-package").await;
    b.click_reloading("#credit-form button[type=submit]").await;
    b.wait_text("#balance", "$30.00").await;
    b.shot("billing").await;

    // Rotate from the detail dialog: it asks for the password again (none, then a wrong
    // one, are refused next to the field); a new secret in the same box; the old one refused.
    b.goto(&app.url("/dashboard/keys")).await;
    b.click("#keys-table .open-detail").await;
    b.find("#detail-dialog[open]").await;
    b.shot("keys-detail").await;
    let rotate_error = "[data-field=rotate-password] .field-error";
    b.click("#act-rotate").await;
    b.wait_text(rotate_error, "Enter your password to rotate the key.").await;
    b.fill("#rotate-password", "not my password").await;
    b.click("#act-rotate").await;
    b.wait_text(rotate_error, "That is not your password.").await;
    b.shot("keys-rotate-password").await;
    b.fill("#rotate-password", OWNER_PASSWORD).await;
    b.click("#act-rotate").await;
    b.until("the one-shot box after rotation", "return document.querySelector('#secret-title').textContent", |v| {
        v == "API Key rotated! Copy it now"
    })
    .await;
    let rotated = b.text_of("#secret-value").await;
    assert_ne!(rotated, secret);
    b.click_reloading("#secret-done").await;
    chat_status_becomes(&app, &secret, 401).await;
    chat_status_becomes(&app, &rotated, 200).await;

    // Revoke from the detail dialog: the status shows it, and the secret is refused.
    b.find("#keys-table tbody tr").await;
    b.click("#keys-table .open-detail").await;
    b.find("#detail-dialog[open]").await;
    b.click("#act-revoke").await;
    b.click("#confirm-dialog[open] #confirm-ok").await;
    b.until("the revoked badge", "return document.querySelector('#detail-body .badge')?.textContent", |v| {
        v == "revoked"
    })
    .await;
    chat_status_becomes(&app, &rotated, 401).await;
    b.click("#detail-dialog [data-close]").await;
    b.until(
        "the table to show revoked",
        "return document.querySelector('#keys-table tbody .badge')?.textContent",
        |v| v == "revoked",
    )
    .await;
    b.shot("keys").await;

    // Phone width: the navigation collapses behind the menu button.
    b.client.set_window_size(390, 844).await.unwrap();
    b.goto(&app.url("/dashboard/keys")).await;
    let nav_left = "return document.querySelector('#sidenav').getBoundingClientRect().left";
    b.until("the navigation off screen", nav_left, |v| v.as_f64().is_some_and(|x| x < -100.0)).await;
    b.shot("keys-phone").await;
    b.goto(&app.url("/dashboard/billing")).await;
    b.find("#credit-form").await;
    b.shot("billing-phone").await;
    b.goto(&app.url("/dashboard/keys")).await;
    b.until("the navigation off screen", nav_left, |v| v.as_f64().is_some_and(|x| x < -100.0)).await;
    b.click(".nav-toggle").await;
    b.until("the navigation on screen", nav_left, |v| v.as_f64().is_some_and(|x| x >= 0.0)).await;
    b.shot("nav-phone").await;

    // Sign out ends the session: pages send you back to sign in.
    b.client.set_window_size(1366, 900).await.unwrap();
    b.click(".usermenu summary").await;
    b.click("#sign-out").await;
    b.until("the sign-in page", "return location.pathname", |v| v == "/dashboard/login").await;
    b.goto(&app.url("/dashboard/usage")).await;
    assert_eq!(b.path().await, "/dashboard/login");
    b.client.clone().close().await.unwrap();
}

#[tokio::test]
async fn a_bad_sign_in_shows_an_error() {
    let Some(b) = browser().await else { return };
    let app = TestApp::start().await.unwrap();
    b.goto(&app.url("/dashboard/login")).await;
    b.click("#login-form button[type=submit]").await;
    assert_eq!(b.text_of("[data-field] .field-error, .field .field-error").await, "Enter your email.");
    b.sign_in(&app, "not the password").await;
    b.wait_text("#login-error", "Wrong email or password.").await;
    assert_eq!(b.path().await, "/dashboard/login");
    b.shot("login-error").await;
    // Still signed out: the API refuses the browser.
    b.goto(&app.url("/dashboard/keys")).await;
    assert_eq!(b.path().await, "/dashboard/login");
    b.shot("login").await;
    // After five failures the throttle answers, and the page says so.
    for _ in 0..5 {
        b.sign_in(&app, "still wrong").await;
        b.text_of("#login-error").await;
    }
    b.until("the throttle message", "return document.querySelector('#login-error').textContent", |v| {
        v.as_str().is_some_and(|s| s.contains("Too many failed sign-ins"))
    })
    .await;
    b.client.clone().close().await.unwrap();
}

/// Whether WebDriver says the element is no longer in the page.
fn is_stale(e: &fantoccini::error::CmdError) -> bool {
    matches!(e, fantoccini::error::CmdError::Standard(w) if w.error == fantoccini::error::ErrorStatus::StaleElementReference)
}
