//! Removing a provider's credentials from text it sends back. A provider may echo what it
//! was sent — an API key in a 400's message, a custom header's value — and that text is
//! relayed to the client and kept in the usage row. Every configured or managed secret of
//! the provider (its key and every extra header value) is replaced by [`REDACTED`] before
//! any upstream error text leaves the data plane. The work happens only on error answers.

use std::borrow::Cow;

use memchr::memmem;

/// What a secret is replaced with.
pub(crate) const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not searched for: a short value (a header such as
/// `X-Tenant: eu`) would redact ordinary words, and is no credential.
const MIN_SECRET_LEN: usize = 8;

/// `text` with every occurrence of every secret replaced; borrowed when none occurs.
pub(crate) fn redact<'t>(text: &'t [u8], secrets: &[&[u8]]) -> Cow<'t, [u8]> {
    let mut out: Cow<'t, [u8]> = Cow::Borrowed(text);
    for secret in secrets.iter().filter(|s| s.len() >= MIN_SECRET_LEN) {
        let finder = memmem::Finder::new(secret);
        if finder.find(&out).is_none() {
            continue;
        }
        let mut replaced = Vec::with_capacity(out.len());
        let mut rest: &[u8] = &out;
        while let Some(at) = finder.find(rest) {
            replaced.extend_from_slice(&rest[..at]);
            replaced.extend_from_slice(REDACTED.as_bytes());
            rest = &rest[at + secret.len()..];
        }
        replaced.extend_from_slice(rest);
        out = Cow::Owned(replaced);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_of_every_secret_goes() {
        let text = br#"{"error":{"message":"Incorrect API key provided: sk-live-0123456789. Header x: tenant-secret-77; again sk-live-0123456789"}}"#;
        let out = redact(text, &[b"sk-live-0123456789", b"tenant-secret-77"]);
        let out = String::from_utf8(out.into_owned()).unwrap();
        assert!(!out.contains("sk-live") && !out.contains("tenant-secret"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 3);
    }

    #[test]
    fn untouched_text_is_borrowed_and_short_values_are_not_secrets() {
        let text = b"model not found: eu";
        assert!(matches!(redact(text, &[b"sk-live-0123456789", b"eu"]), Cow::Borrowed(_)));
    }
}
