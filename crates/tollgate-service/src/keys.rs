//! Key lifecycle. Creation mints the secret, keeps only its digest, and returns the
//! secret to the caller this once.

use serde::Serialize;
use tollgate_core::MicroUsd;
use tollgate_core::ids::new_id;
use tollgate_core::key::{KeyRecord, KeyStatus, parse_expires_in};
use tollgate_core::time::{UnixMillis, now_millis, parse_rfc3339, to_rfc3339};
use tollgate_store::KeyListQuery;

use crate::{Result, ServiceError, Services};

const MAX_NAME_CHARS: usize = 128;
const MAX_PAGE: i64 = 1000;

/// A request to create a key.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    /// A preset: `never`, `30d`, `60d`, `90d`, `180d`, `365d`.
    pub expires_in: Option<String>,
    /// An RFC 3339 datetime in the future.
    pub expires_at: Option<String>,
}

/// The created key and its secret, which exists nowhere else.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: KeyView,
    pub secret: String,
}

/// A key as the API and CLI show it: never the secret.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub preview: String,
    pub status: KeyStatus,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub request_count: i64,
    pub tokens_used: i64,
    pub spend_usd: MicroUsd,
}

impl KeyView {
    pub fn new(k: &KeyRecord, now: UnixMillis) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            preview: k.preview.clone(),
            status: k.effective_status(now),
            created_at: to_rfc3339(k.created_at),
            expires_at: k.expires_at.map(to_rfc3339),
            last_used_at: k.last_used_at.map(to_rfc3339),
            request_count: k.request_count,
            tokens_used: k.tokens_used,
            spend_usd: k.spend,
        }
    }
}

/// Listing parameters as callers give them.
#[derive(Debug, Clone, Default)]
pub struct ListKeys {
    pub search: Option<String>,
    pub status: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct KeyList {
    pub data: Vec<KeyView>,
    pub next_cursor: Option<String>,
}

impl Services {
    pub async fn create_key(&self, new: NewKey) -> Result<CreatedKey> {
        let name = validate_name(&new.name)?;
        let now = now_millis();
        let expires_at = match (new.expires_in.as_deref(), new.expires_at.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(ServiceError::invalid(
                    "expires_at",
                    "give either expires_in or expires_at, not both",
                ));
            }
            (Some(preset), None) => parse_expires_in(preset)
                .map_err(|m| ServiceError::invalid("expires_in", m))?
                .map(|d| now + d),
            (None, Some(at)) => {
                let at = parse_rfc3339(at).ok_or_else(|| {
                    ServiceError::invalid("expires_at", "must be an RFC 3339 datetime")
                })?;
                if at <= now {
                    return Err(ServiceError::invalid("expires_at", "must be in the future"));
                }
                Some(at)
            }
            (None, None) => None,
        };
        let secret = self.key_format.generate();
        let record = KeyRecord {
            id: new_id("key"),
            name,
            digest: self.digester.digest(&secret),
            preview: self.key_format.preview(&secret),
            status: KeyStatus::Active,
            created_at: now,
            expires_at,
            last_used_at: None,
            request_count: 0,
            tokens_used: 0,
            spend: MicroUsd::ZERO,
        };
        self.store.insert_key(&record).await?;
        tracing::info!(key_id = %record.id, "key created");
        Ok(CreatedKey {
            key: KeyView::new(&record, now),
            secret,
        })
    }

    pub async fn list_keys(&self, q: ListKeys) -> Result<KeyList> {
        let limit = q.limit.unwrap_or(100);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ServiceError::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        let status = match q.status.as_deref() {
            None | Some("" | "all") => None,
            Some(s) => Some(KeyStatus::parse(s).ok_or_else(|| {
                ServiceError::invalid(
                    "status",
                    "must be one of all, active, inactive, expired, revoked, exhausted",
                )
            })?),
        };
        let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
        // `expired` is derived from the clock, not stored: filter it after reading.
        let stored_status = match status {
            Some(KeyStatus::Expired) => Some(KeyStatus::Active),
            s => s,
        };
        let query = KeyListQuery {
            search: q.search.filter(|s| !s.is_empty()),
            status: stored_status,
            after,
            limit,
        };
        let now = now_millis();
        let mut data = Vec::new();
        let mut page = self.store.list_keys(&query).await?;
        let mut last = page.last().map(|k| (k.name.clone(), k.id.clone()));
        // Derived statuses can thin a page out; keep reading until it is full or done.
        loop {
            let full_page = page.len() as i64 == limit;
            data.extend(
                page.iter()
                    .map(|k| KeyView::new(k, now))
                    .filter(|v| status.is_none_or(|s| v.status == s)),
            );
            if data.len() as i64 >= limit || !full_page {
                break;
            }
            page = self
                .store
                .list_keys(&KeyListQuery {
                    after: last.clone(),
                    ..query.clone()
                })
                .await?;
            last = page.last().map(|k| (k.name.clone(), k.id.clone())).or(last);
        }
        data.truncate(limit as usize);
        let next_cursor = if data.len() as i64 == limit {
            data.last().map(|k| encode_cursor(&k.name, &k.id))
        } else {
            None
        };
        Ok(KeyList { data, next_cursor })
    }
}

fn validate_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ServiceError::invalid("name", "is required"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ServiceError::invalid(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// Cursors are opaque to callers: hex of `name \0 id`.
fn encode_cursor(name: &str, id: &str) -> String {
    format!("{name}\0{id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(c: &str) -> Result<(String, String)> {
    let bad = || ServiceError::invalid("cursor", "is not a cursor this server issued");
    if !c.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..c.len())
        .step_by(2)
        .map(|i| {
            c.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)
        })
        .collect::<Result<_>>()?;
    let s = String::from_utf8(bytes).map_err(|_| bad())?;
    let (name, id) = s.split_once('\0').ok_or_else(bad)?;
    Ok((name.to_owned(), id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::key::Digester;
    use tollgate_store::Store;

    async fn services() -> (Services, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&Store::sqlite_url(&dir.path().join("s.db")))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let s = Services {
            store,
            key_format: Default::default(),
            digester: Digester::new(b"pepper"),
        };
        (s, dir)
    }

    #[tokio::test]
    async fn create_keeps_only_the_digest() {
        let (s, _dir) = services().await;
        let created = s
            .create_key(NewKey {
                name: " dev ".into(),
                expires_in: Some("30d".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(created.key.name, "dev");
        assert!(s.key_format.is_well_formed(&created.secret));
        let stored = s.store.get_key(&created.key.id).await.unwrap();
        assert_eq!(stored.digest, s.digester.digest(&created.secret));
        assert_eq!(stored.preview, s.key_format.preview(&created.secret));
        assert!(stored.expires_at.unwrap() > stored.created_at + 29 * 86_400_000);
    }

    #[tokio::test]
    async fn bad_input_names_the_field() {
        let (s, _dir) = services().await;
        let field = |r: Result<CreatedKey>| match r {
            Err(ServiceError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        };
        assert_eq!(
            field(
                s.create_key(NewKey {
                    name: "  ".into(),
                    ..Default::default()
                })
                .await
            ),
            "name"
        );
        assert_eq!(
            field(
                s.create_key(NewKey {
                    name: "a".into(),
                    expires_in: Some("7d".into()),
                    ..Default::default()
                })
                .await
            ),
            "expires_in"
        );
        let past = NewKey {
            name: "a".into(),
            expires_at: Some("2001-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(field(s.create_key(past).await), "expires_at");
        assert!(matches!(
            s.list_keys(ListKeys {
                limit: Some(0),
                ..Default::default()
            })
            .await,
            Err(ServiceError::Invalid { field: "limit", .. })
        ));
        assert!(matches!(
            s.list_keys(ListKeys {
                cursor: Some("zz".into()),
                ..Default::default()
            })
            .await,
            Err(ServiceError::Invalid {
                field: "cursor",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn list_pages_with_cursors() {
        let (s, _dir) = services().await;
        for name in ["c", "a", "b"] {
            s.create_key(NewKey {
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let p1 = s
            .list_keys(ListKeys {
                limit: Some(2),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            p1.data.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let p2 = s
            .list_keys(ListKeys {
                limit: Some(2),
                cursor: p1.next_cursor,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            p2.data.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(p2.next_cursor, None);
    }
}
