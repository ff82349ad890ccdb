//! The Playground: pick one of your active keys and a chat model, run a prompt, watch the
//! answer stream in, then copy the same call as curl, Python or JavaScript.
//!
//! The key's secret never reaches the browser (the store holds only digests anyway). A
//! run is a CSRF-checked `POST /dashboard/playground/run` with the session cookie: the
//! server mints a short ephemeral token for the chosen key through the service layer
//! (authorized exactly like `POST /api/v1/keys/{id}/ephemeral`, so members reach only
//! their own keys), narrowed to the chosen model, and calls the data plane in-process
//! with it; the SSE answer is relayed as it comes. The call is metered and billed to
//! that key like any other and appears in Usage Logs.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, header};
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tollgate_core::model::ModelType;
use tollgate_core::{ApiError, ErrorCode, PeerAddr};
use tollgate_service::{EphemeralRequest, ListKeys};

use super::{Ctx, Nav, alert, layout};
use crate::WebState;
use crate::error::{api_error, parse_json};
use crate::session::{session_cookie, source_ip};

/// An ephemeral token lives this long: enough for one slow streamed answer.
const RUN_TOKEN_TTL_SECS: u64 = 300;

pub(crate) async fn page(State(state): State<Arc<WebState>>, ctx: Ctx) -> Response {
    let services = &state.services;
    // "Your" keys: the ones you own, active, by name. Managers see the whole org's keys
    // elsewhere; here they run their own, as members do.
    let keys = services
        .list_keys(&ctx.actor, ListKeys { status: Some("active".into()), limit: Some(200), ..Default::default() })
        .await
        .map(|l| l.data.into_iter().filter(|k| k.owner_id == ctx.actor.id).collect::<Vec<_>>());
    let models = services
        .list_models(&ctx.actor)
        .await
        .map(|m| m.into_iter().filter(|m| m.model_type == ModelType::Chat).collect::<Vec<_>>());
    let body = html! {
        @match (&keys, &models) {
            (Err(e), _) | (_, Err(e)) => (alert(e)),
            (Ok(keys), _) if keys.is_empty() => div.empty {
                h2 { "You have no active API key" }
                p { "The Playground runs prompts with one of your own keys, billed to it like any other request." }
                a.btn.btn-primary href="/dashboard/keys" { "Create a key" }
            },
            (_, Ok(models)) if models.is_empty() => div.empty {
                h2 { "No chat models are configured" }
                p { "Declare a chat model under " code { "[[models]]" } " in the server's config, then come back." }
            },
            (Ok(keys), Ok(models)) => div.playground {
                form #pg-form .panel novalidate {
                    div.grid2 {
                        div.field data-field="pg-key" {
                            label for="pg-key" { "API key" }
                            select #pg-key name="key_id" {
                                @for k in keys { option value=(k.id) { (k.name) " (" (k.preview) ")" } }
                            }
                            p.hint { "Billed to this key. Its secret stays on the server." }
                            p.field-error hidden {}
                        }
                        div.field data-field="pg-model" {
                            label for="pg-model" { "Model" }
                            select #pg-model name="model" {
                                @for m in models { option value=(m.id) data-max=(m.max_output_tokens) { (m.id) } }
                            }
                            p.field-error hidden {}
                        }
                    }
                    div.field {
                        label for="pg-system" { "System message " span.muted { "(optional)" } }
                        textarea #pg-system name="system" rows="2" placeholder="You are a helpful assistant." {}
                    }
                    div.field data-field="pg-prompt" {
                        label for="pg-prompt" { "User prompt" }
                        textarea #pg-prompt name="prompt" rows="4" placeholder="Ask something…" {}
                        p.field-error hidden {}
                    }
                    div.grid3 {
                        div.field data-field="pg-temperature" {
                            label for="pg-temperature" { "Temperature" }
                            input #pg-temperature name="temperature" type="number" min="0" max="2" step="0.1" value="0.7";
                            p.field-error hidden {}
                        }
                        div.field data-field="pg-max-tokens" {
                            label for="pg-max-tokens" { "Max tokens" }
                            input #pg-max-tokens name="max_tokens" type="number" min="1" step="1" value="256";
                            p.field-error hidden {}
                        }
                        div.field.pg-run {
                            button.btn.btn-primary.btn-block #pg-run type="submit" { "Run" }
                        }
                    }
                    p.form-error.alert.alert-error role="alert" hidden {}
                }
                section.panel.pg-answer aria-live="polite" {
                    div.pg-answer-head {
                        h2 { "Response" }
                        span.muted #pg-meta {}
                    }
                    pre #pg-output .pg-output data-state="idle" { span.muted { "Run a prompt to see the answer stream in here." } }
                }
                section.panel.pg-code {
                    div.pg-answer-head {
                        h2 { "Use it in code" }
                        span.muted { "Set " code { "TOLLGATE_API_KEY" } " to your key's secret." }
                    }
                    div.tabs.pg-tabs role="tablist" aria-label="Language" {
                        button #snip-tab-curl role="tab" type="button" aria-selected="true" aria-controls="snip-curl" data-snip="curl" { "curl" }
                        button #snip-tab-python role="tab" type="button" aria-selected="false" tabindex="-1" aria-controls="snip-python" data-snip="python" { "Python" }
                        button #snip-tab-js role="tab" type="button" aria-selected="false" tabindex="-1" aria-controls="snip-js" data-snip="js" { "JavaScript" }
                    }
                    @for (id, label) in [("curl", "curl"), ("python", "Python"), ("js", "JavaScript")] {
                        div.snippet role="tabpanel" id=(format!("snip-{id}")) aria-label=(label) hidden[id != "curl"] {
                            button.btn.snip-copy type="button" { (super::icon_copy()) span { "Copy" } }
                            pre { code {} }
                        }
                    }
                }
            },
        }
    };
    layout(&ctx, Nav::Playground, "Playground", html! {}, body)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    key_id: String,
    model: String,
    #[serde(default)]
    system: Option<String>,
    prompt: String,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u64>,
}

/// `POST /dashboard/playground/run`: session cookie and `x-csrf-token` required; answers
/// with the data plane's own response (an SSE stream, or its OpenAI-shaped error).
pub(crate) async fn run(State(state): State<Arc<WebState>>, req: Request) -> Response {
    match run_inner(&state, req).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn run_inner(state: &WebState, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let unauthorized = || ApiError::new(ErrorCode::Unauthorized, "Sign in again: the session has ended.");
    let secret = session_cookie(&parts.headers).ok_or_else(unauthorized)?;
    let peer = parts.extensions.get::<PeerAddr>().cloned();
    let ip = source_ip(state, peer.as_ref(), &parts.headers);
    let (actor, csrf) = state.services.session_actor(&secret, ip).await.map_err(api_error)?.ok_or_else(unauthorized)?;
    let presented = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !bool::from(presented.as_bytes().ct_eq(csrf.as_bytes())) {
        return Err(ApiError::new(ErrorCode::Forbidden, "Missing or wrong x-csrf-token for a session request."));
    }
    let bytes: Bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|_| ApiError::invalid_request("The request body is too large or unreadable."))?;
    let b: RunBody = parse_json(&bytes)?;
    if b.prompt.trim().is_empty() {
        return Err(ApiError::invalid_request("prompt: is required").with_param("prompt"));
    }
    if b.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(ApiError::invalid_request("temperature: must be from 0 to 2").with_param("temperature"));
    }
    if b.max_tokens == Some(0) {
        return Err(ApiError::invalid_request("max_tokens: must be at least 1").with_param("max_tokens"));
    }
    let Some(data_plane) = state.data_plane.clone() else {
        return Err(ApiError::new(ErrorCode::Unavailable, "The Playground is not available on this server."));
    };
    let token = state
        .services
        .create_ephemeral(
            &actor,
            &b.key_id,
            EphemeralRequest {
                ttl_seconds: Some(RUN_TOKEN_TTL_SECS),
                models: vec![b.model.clone()],
                ..Default::default()
            },
        )
        .await
        .map_err(|e| {
            let e = api_error(e);
            if e.param.as_deref() == Some("models") { e.with_param("model") } else { e }
        })?;
    let mut messages = Vec::new();
    if let Some(system) = b.system.as_deref().filter(|s| !s.trim().is_empty()) {
        messages.push(serde_json::json!({ "role": "system", "content": system }));
    }
    messages.push(serde_json::json!({ "role": "user", "content": b.prompt }));
    let mut chat = serde_json::json!({
        "model": b.model,
        "messages": messages,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    if let Some(t) = b.temperature {
        chat["temperature"] = t.into();
    }
    if let Some(m) = b.max_tokens {
        chat["max_tokens"] = m.into();
    }
    let mut inner = http::Request::builder()
        .method(http::Method::POST)
        .uri("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {}", token.token))
        .body(axum::body::Body::from(chat.to_string()))
        .map_err(|_| ApiError::internal())?;
    // The data plane sees the browser's address (a key's IP allowlist still applies).
    if let Some(peer) = peer {
        inner.extensions_mut().insert(peer);
    }
    if let Some(xff) = parts.headers.get("x-forwarded-for") {
        inner.headers_mut().insert("x-forwarded-for", xff.clone());
    }
    let mut res = data_plane(inner).await;
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}
