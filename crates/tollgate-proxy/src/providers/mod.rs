//! The provider adapters that translate between the OpenAI wire format the gateway speaks
//! and a provider's own API, in both directions.

pub mod anthropic;
pub mod azure;
pub mod gemini;
