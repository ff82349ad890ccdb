//! Email delivery: a small SMTP client (RFC 5321) and the plain-text message of each event.
//!
//! The exchange: greeting → `EHLO` (or `HELO` if refused) → `STARTTLS` and `EHLO` again
//! (when configured; a server that does not offer it gets nothing, not even the address)
//! → `AUTH PLAIN` (when configured) → `MAIL FROM` → `RCPT TO` → `DATA` with dot-stuffing →
//! `QUIT`. TLS is rustls with the webpki roots, verifying the configured host name.
//!
//! Invariants: the password is only ever written to the socket (after TLS when
//! `smtp_starttls` is on); errors carry the server's reply code and, except for `AUTH`, its
//! first line of text, never what was sent. Header values that come from users (key names)
//! are stripped of control characters, so they cannot add headers.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tollgate_core::time::{UnixMillis, to_rfc3339};

use super::DeliveryError;
use crate::config::SmtpConfig;

/// Longest reply line read (RFC 5321 allows 512; some servers send more).
const MAX_REPLY_LINE: u64 = 4096;
const MAX_REPLY_LINES: usize = 64;

pub(crate) struct SmtpSender {
    config: SmtpConfig,
    timeout: Duration,
    tls: tokio_rustls::TlsConnector,
}

impl SmtpSender {
    pub(crate) fn new(config: &SmtpConfig, timeout: Duration) -> anyhow::Result<Self> {
        use hyper_rustls::ConfigBuilderExt as _;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_webpki_roots()
            .with_no_client_auth();
        Ok(Self { config: config.clone(), timeout, tls: tokio_rustls::TlsConnector::from(Arc::new(tls)) })
    }

    /// Sends `message` (a complete RFC 5322 message, CRLF line ends) to `to`.
    pub(crate) async fn send(&self, to: &str, message: &str) -> Result<(), DeliveryError> {
        match tokio::time::timeout(self.timeout, self.exchange(to, message)).await {
            Ok(r) => r,
            Err(_) => Err(DeliveryError::retry(format!("SMTP: no answer within {:?}", self.timeout))),
        }
    }

    async fn exchange(&self, to: &str, message: &str) -> Result<(), DeliveryError> {
        let c = &self.config;
        let tcp = TcpStream::connect((c.host.as_str(), c.port))
            .await
            .map_err(|e| DeliveryError::retry(format!("SMTP connect failed: {e}")))?;
        let helo = match tcp.local_addr() {
            Ok(std::net::SocketAddr::V4(a)) => format!("[{}]", a.ip()),
            Ok(std::net::SocketAddr::V6(a)) => format!("[IPv6:{}]", a.ip()),
            Err(_) => "localhost".to_owned(),
        };
        let mut s = Session::new(tcp);
        s.reply().await?.expect("greeting", &[220])?;
        let caps = s.hello(&helo).await?;
        if !c.starttls {
            return self.transaction(&mut s, &caps, to, message).await;
        }
        if !caps.starttls {
            return Err(DeliveryError::retry("SMTP: the server does not offer STARTTLS (smtp_starttls = true)"));
        }
        s.command("STARTTLS").await?.expect("STARTTLS", &[220])?;
        // Anything the server sent after its 220 would be read as if it came over TLS.
        if !s.io.buffer().is_empty() {
            return Err(DeliveryError::retry("SMTP: data after the STARTTLS reply"));
        }
        let name = rustls::pki_types::ServerName::try_from(c.host.clone())
            .map_err(|_| DeliveryError::failed("SMTP: smtp_host is not a valid TLS server name"))?;
        let tls = self
            .tls
            .connect(name, s.io.into_inner())
            .await
            .map_err(|e| DeliveryError::retry(format!("SMTP TLS handshake failed: {e}")))?;
        let mut s = Session::new(tls);
        let caps = s.hello(&helo).await?;
        self.transaction(&mut s, &caps, to, message).await
    }

    async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut Session<S>,
        caps: &Capabilities,
        to: &str,
        message: &str,
    ) -> Result<(), DeliveryError> {
        if let Some((user, password)) = &self.config.credentials {
            if !caps.auth_plain {
                return Err(DeliveryError::retry("SMTP: the server does not offer AUTH PLAIN"));
            }
            let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{}", password.expose()));
            let reply = s.command(&format!("AUTH PLAIN {token}")).await?;
            if reply.code != 235 {
                // Only the code: some servers echo what they were sent.
                return Err(DeliveryError::retry(format!("SMTP AUTH rejected: {}", reply.code)));
            }
        }
        s.command(&format!("MAIL FROM:<{}>", self.config.from_address)).await?.expect("MAIL FROM", &[250])?;
        let reply = s.command(&format!("RCPT TO:<{to}>")).await?;
        if reply.code / 100 == 5 {
            return Err(DeliveryError::failed(reply.describe("RCPT TO")));
        }
        reply.expect("RCPT TO", &[250, 251])?;
        s.command("DATA").await?.expect("DATA", &[354])?;
        s.write(&dot_stuff(message)).await?;
        let reply = s.reply().await?;
        if reply.code / 100 == 5 {
            return Err(DeliveryError::failed(reply.describe("message")));
        }
        reply.expect("message", &[250])?;
        // Delivered: the answer to QUIT no longer matters.
        let _ = s.command("QUIT").await;
        Ok(())
    }
}

/// What the server said it supports, from its `EHLO` reply.
#[derive(Debug, Default)]
struct Capabilities {
    starttls: bool,
    auth_plain: bool,
}

struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    fn describe(&self, what: &str) -> String {
        format!("SMTP {what} rejected: {} {}", self.code, self.text)
    }

    fn expect(self, what: &str, ok: &[u16]) -> Result<Self, DeliveryError> {
        if ok.contains(&self.code) { Ok(self) } else { Err(DeliveryError::retry(self.describe(what))) }
    }
}

struct Session<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    fn new(stream: S) -> Self {
        Self { io: BufReader::new(stream) }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), DeliveryError> {
        let io = self.io.get_mut();
        io.write_all(bytes).await.map_err(|e| DeliveryError::retry(format!("SMTP write failed: {e}")))?;
        io.flush().await.map_err(|e| DeliveryError::retry(format!("SMTP write failed: {e}")))
    }

    async fn command(&mut self, line: &str) -> Result<Reply, DeliveryError> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// `EHLO`, falling back to `HELO` (no extensions) for servers that refuse it.
    async fn hello(&mut self, name: &str) -> Result<Capabilities, DeliveryError> {
        self.write(format!("EHLO {name}\r\n").as_bytes()).await?;
        let (code, lines) = self.reply_lines().await?;
        if code == 250 {
            let mut caps = Capabilities::default();
            for l in lines.iter().skip(1) {
                let words: Vec<String> = l.split_whitespace().map(str::to_ascii_uppercase).collect();
                match words.first().map(String::as_str) {
                    Some("STARTTLS") => caps.starttls = true,
                    Some("AUTH") => caps.auth_plain |= words.iter().any(|w| w == "PLAIN"),
                    _ => {}
                }
            }
            return Ok(caps);
        }
        self.command(&format!("HELO {name}")).await?.expect("HELO", &[250])?;
        Ok(Capabilities::default())
    }

    async fn reply(&mut self) -> Result<Reply, DeliveryError> {
        let (code, lines) = self.reply_lines().await?;
        let text: String =
            lines.first().map(|l| l.chars().filter(|c| !c.is_control()).take(200).collect()).unwrap_or_default();
        Ok(Reply { code, text })
    }

    /// One reply: `ddd-text` lines then a `ddd text` line. Returns the code and each
    /// line's text.
    async fn reply_lines(&mut self) -> Result<(u16, Vec<String>), DeliveryError> {
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            (&mut self.io)
                .take(MAX_REPLY_LINE)
                .read_until(b'\n', &mut buf)
                .await
                .map_err(|e| DeliveryError::retry(format!("SMTP read failed: {e}")))?;
            if buf.is_empty() {
                return Err(DeliveryError::retry("SMTP: the server closed the connection"));
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok()).filter(|c| (200..600).contains(c));
            let Some(code) = code else {
                return Err(DeliveryError::retry("SMTP: not an SMTP reply"));
            };
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, lines));
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Err(DeliveryError::retry("SMTP: reply too long"));
            }
        }
    }
}

/// The message as `DATA` carries it: lines starting with `.` get another `.`, and the
/// terminating `<CRLF>.<CRLF>` is appended.
fn dot_stuff(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    for line in message.strip_suffix("\r\n").unwrap_or(message).split("\r\n") {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A subject and plain-text body for the event in `payload` (the webhook body).
pub(crate) fn compose(kind: &str, payload: &Value) -> (String, String) {
    let data = &payload["data"];
    let name = one_line(payload["key"]["name"].as_str().unwrap_or(""), 80);
    let key_id = payload["key"]["id"].as_str().unwrap_or("");
    let usd = |v: &Value| v.as_f64().map(|n| format!("${n:.2}")).unwrap_or_default();
    let (subject, what) = match kind {
        super::triggers::BUDGET_THRESHOLD => (
            format!("Key \"{name}\" has used {}% of its budget", data["threshold_percent"]),
            format!(
                "The API key \"{name}\" has spent {} of its {} budget ({}% or more).",
                usd(&data["spend_usd"]),
                usd(&data["budget_usd"]),
                data["threshold_percent"]
            ),
        ),
        super::triggers::BUDGET_EXHAUSTED => (
            format!("Key \"{name}\" has spent its budget"),
            format!(
                "The API key \"{name}\" has spent {} of its {} budget. Requests with it are refused \
                 until the budget is raised.",
                usd(&data["spend_usd"]),
                usd(&data["budget_usd"])
            ),
        ),
        super::triggers::QUOTA_EXHAUSTED => (
            format!("Key \"{name}\" has used its token quota"),
            format!(
                "The API key \"{name}\" has used {} of its {} tokens. Requests with it are refused \
                 until the quota is raised.",
                data["tokens_used"], data["token_quota"]
            ),
        ),
        super::triggers::KEY_EXPIRING => {
            let at = data["expires_at"].as_str().unwrap_or("");
            match data["reminder"].as_str() {
                Some("expired") => (
                    format!("Key \"{name}\" has expired"),
                    format!("The API key \"{name}\" expired at {at}. Requests with it are refused."),
                ),
                Some("1d") => (
                    format!("Key \"{name}\" expires within a day"),
                    format!("The API key \"{name}\" expires at {at}. Rotate or extend it before then."),
                ),
                _ => (
                    format!("Key \"{name}\" expires within 7 days"),
                    format!("The API key \"{name}\" expires at {at}. Rotate or extend it before then."),
                ),
            }
        }
        other => (format!("Key \"{name}\": {other}"), format!("Event {other} for the API key \"{name}\".")),
    };
    let body = format!(
        "{what}\n\nKey id: {key_id}\nOrganization: {}\nEvent: {kind} ({})\nTime: {}\n\n\
         You receive this because you own this key in Tollgate.\n",
        payload["organization_id"].as_str().unwrap_or(""),
        payload["id"].as_str().unwrap_or(""),
        payload["created_at"].as_str().unwrap_or(""),
    );
    (format!("[Tollgate] {subject}"), body)
}

/// The whole message: headers, blank line, body, CRLF line ends. Non-ASCII subjects are
/// RFC 2047 encoded, non-ASCII bodies base64.
pub(crate) fn render(
    from: &str,
    to: &str,
    subject: &str,
    body: &str,
    message_id: &str,
    kind: &str,
    at: UnixMillis,
) -> String {
    let domain = from.rsplit_once('@').map_or("tollgate.invalid", |(_, d)| d.trim_end_matches('>'));
    let mut m = String::with_capacity(body.len() + 512);
    for (name, value) in [
        ("From", from.to_owned()),
        ("To", format!("<{to}>")),
        ("Subject", encode_header(subject)),
        ("Date", rfc5322_date(at)),
        ("Message-ID", format!("<{message_id}@{domain}>")),
        ("MIME-Version", "1.0".to_owned()),
        ("Content-Type", "text/plain; charset=utf-8".to_owned()),
        ("Auto-Submitted", "auto-generated".to_owned()),
        ("X-Tollgate-Event", one_line(kind, 64)),
    ] {
        m.push_str(name);
        m.push_str(": ");
        m.push_str(&value);
        m.push_str("\r\n");
    }
    let body = body.replace("\r\n", "\n");
    if body.is_ascii() {
        m.push_str("Content-Transfer-Encoding: 7bit\r\n\r\n");
        for line in body.lines() {
            m.push_str(line);
            m.push_str("\r\n");
        }
    } else {
        m.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
        let encoded = base64::engine::general_purpose::STANDARD.encode(body.as_bytes());
        for chunk in encoded.as_bytes().chunks(76) {
            m.push_str(&String::from_utf8_lossy(chunk));
            m.push_str("\r\n");
        }
    }
    m
}

/// Control characters (CR, LF…) become spaces; at most `max` characters.
fn one_line(s: &str, max: usize) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect()
}

/// ASCII as is; otherwise RFC 2047 `=?UTF-8?B?…?=` words of at most 45 bytes each
/// (75 characters encoded), folded onto continuation lines.
fn encode_header(value: &str) -> String {
    let value = one_line(value, 200);
    if value.is_ascii() {
        return value;
    }
    let mut words = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (i, c) in value.char_indices() {
        if i + c.len_utf8() - start > 45 {
            words.push(&value[start..end]);
            start = i;
        }
        end = i + c.len_utf8();
    }
    words.push(&value[start..end]);
    words
        .iter()
        .map(|w| format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(w.as_bytes())))
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// `Thu, 01 Jan 1970 00:00:00 +0000`.
fn rfc5322_date(at: UnixMillis) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    // `YYYY-MM-DDTHH:MM:SS.mmmZ`
    let iso = to_rfc3339(at);
    let weekday = usize::try_from(at.div_euclid(86_400_000).rem_euclid(7)).unwrap_or(0);
    let month = iso.get(5..7).and_then(|m| m.parse::<usize>().ok()).unwrap_or(1);
    format!(
        "{}, {} {} {} {} +0000",
        DAYS[weekday],
        iso.get(8..10).unwrap_or("01"),
        MONTHS[month.clamp(1, 12) - 1],
        iso.get(0..4).unwrap_or("1970"),
        iso.get(11..19).unwrap_or("00:00:00"),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_terminates() {
        assert_eq!(dot_stuff("a\r\n.b\r\n..c\r\n"), b"a\r\n..b\r\n...c\r\n.\r\n");
        assert_eq!(dot_stuff("a\r\n."), b"a\r\n..\r\n.\r\n");
        assert_eq!(dot_stuff(".\r\n"), b"..\r\n.\r\n");
    }

    #[test]
    fn key_names_cannot_inject_headers() {
        let payload = json!({
            "id": "ntf_1", "created_at": "2030-01-01T00:00:00.000Z", "organization_id": "org_1",
            "key": { "id": "key_1", "name": "evil\r\nBcc: victim@example.com", "owner_id": "usr_1" },
            "data": { "reminder": "expired", "expires_at": "2030-01-01T00:00:00.000Z" },
        });
        let (subject, body) = compose("key.expiring", &payload);
        assert_eq!(subject, "[Tollgate] Key \"evil  Bcc: victim@example.com\" has expired");
        let m = render("Tollgate <a@x.test>", "o@x.test", &subject, &body, "ntf_1", "key.expiring", 0);
        assert!(!m.contains("\r\nBcc:"), "{m}");
        assert!(m.starts_with("From: Tollgate <a@x.test>\r\nTo: <o@x.test>\r\nSubject: [Tollgate] Key"));
        assert!(m.contains("Message-ID: <ntf_1@x.test>\r\n"));
        assert!(
            m.contains("\r\n\r\nThe API key \"evil  Bcc: victim@example.com\" expired at 2030-01-01T00:00:00.000Z.")
        );
    }

    #[test]
    fn non_ascii_is_encoded() {
        assert_eq!(encode_header("ab"), "ab");
        let long = "ключ для продакшена и ещё немного текста";
        let encoded = encode_header(long);
        assert!(encoded.lines().all(|l| l.trim_start().starts_with("=?UTF-8?B?") && l.len() <= 76), "{encoded}");
        let decoded: String = encoded
            .split("\r\n ")
            .map(|w| {
                let b64 = w.trim_start_matches("=?UTF-8?B?").trim_end_matches("?=");
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
            })
            .collect();
        assert_eq!(decoded, long);
        let m = render("a@x.test", "o@x.test", "s", "Schlüssel\n", "ntf_1", "k", 0);
        assert!(m.contains("Content-Transfer-Encoding: base64\r\n\r\nU2NobMO8c3NlbAo=\r\n"), "{m}");
    }

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400_000), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc5322_date(1_700_000_000_000), "Tue, 14 Nov 2023 22:13:20 +0000");
    }

    #[test]
    fn every_event_has_a_subject() {
        let payload = |data: Value| json!({ "id": "ntf_1", "key": { "id": "key_1", "name": "svc" }, "data": data });
        let cases = [
            ("budget.threshold", json!({ "threshold_percent": 80, "budget_usd": 10.0, "spend_usd": 8.5 })),
            ("budget.exhausted", json!({ "budget_usd": 10.0, "spend_usd": 10.2 })),
            ("quota.exhausted", json!({ "token_quota": 100, "tokens_used": 104 })),
            ("key.expiring", json!({ "reminder": "7d", "expires_at": "x" })),
            ("key.expiring", json!({ "reminder": "1d", "expires_at": "x" })),
        ];
        let subjects: Vec<String> = cases.iter().map(|(k, d)| compose(k, &payload(d.clone())).0).collect();
        assert_eq!(
            subjects,
            [
                "[Tollgate] Key \"svc\" has used 80% of its budget",
                "[Tollgate] Key \"svc\" has spent its budget",
                "[Tollgate] Key \"svc\" has used its token quota",
                "[Tollgate] Key \"svc\" expires within 7 days",
                "[Tollgate] Key \"svc\" expires within a day",
            ]
        );
        assert!(
            compose("budget.threshold", &payload(cases[0].1.clone())).1.contains("spent $8.50 of its $10.00 budget")
        );
    }
}
