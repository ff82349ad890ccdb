//! A private corner of the test Redis: a random key prefix whose keys are deleted when
//! the fixture drops. `TOLLGATE_TEST_REDIS_URL` names the server (default
//! `redis://127.0.0.1:6379`); `off` skips the tests that need it.

pub struct RedisPrefix {
    pub url: String,
    pub prefix: String,
}

impl RedisPrefix {
    pub fn new() -> Option<Self> {
        let url = std::env::var("TOLLGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        if url == "off" {
            eprintln!("TOLLGATE_TEST_REDIS_URL=off: skipping a Redis test");
            return None;
        }
        let prefix = tollgate_core::ids::new_id("tgtest").to_lowercase() + ":";
        Some(Self { url, prefix })
    }

    /// `[limits]` settings that point an instance at this prefix.
    pub fn limits_toml(&self) -> String {
        format!("[limits]\nredis_prefix = \"{}\"\n", self.prefix)
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let Ok(mut conn) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) else { return };
        let mut cursor = 0u64;
        loop {
            let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
            else {
                return;
            };
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut conn);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}
