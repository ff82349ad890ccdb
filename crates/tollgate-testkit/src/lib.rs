//! Test support for Tollgate: the real server in process ([`app::TestApp`]), fakes that
//! speak each provider's exact wire format — OpenAI-compatible ([`fake_openai`]), the
//! Anthropic Messages API ([`fake_anthropic`]), the Gemini API ([`fake_gemini`]) — and a
//! small HTTP client ([`client`]). Used by the integration tests, the SDK harness
//! (`with-gateway`) and the benchmark (`fake-upstream`).

pub mod app;
pub mod client;
pub mod fake_anthropic;
pub mod fake_gemini;
pub mod fake_openai;
mod fake_server;
pub mod redis_prefix;
pub mod relay;
