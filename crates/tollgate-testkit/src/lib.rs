//! Test support for Tollgate: the real server in process ([`app::TestApp`]), a fake
//! OpenAI-compatible upstream speaking the exact wire format ([`fake_openai`]), and a
//! small HTTP client ([`client`]). Used by the integration tests, the SDK harness
//! (`with-gateway`) and the benchmark (`fake-upstream`).

pub mod app;
pub mod client;
pub mod fake_openai;
pub mod redis_prefix;
pub mod relay;
