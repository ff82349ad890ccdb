//! The OpenAPI 3.1 document of the management API, served at `GET /api/v1/openapi.json`
//! without a token. Written by hand for the routes of `keys.rs` and the health endpoints
//! of `lib.rs` (the organizations routes are not described yet); `tests/openapi.rs` fails
//! when a route or a `KeyView` field changes without the document following. Built once.

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::{Value, json};

static DOCUMENT: LazyLock<Value> = LazyLock::new(build);
static DOCUMENT_BYTES: LazyLock<Bytes> = LazyLock::new(|| Bytes::from(DOCUMENT.to_string()));

/// The document as JSON, for tests and tools.
pub fn document_json() -> &'static Value {
    &DOCUMENT
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], DOCUMENT_BYTES.clone()).into_response()
}

fn build() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tollgate management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Keys and the audit log of a Tollgate gateway. JSON in and out; errors in OpenAI's \
                {\"error\":{…}} shape, with `param` naming the bad field. Money is a decimal USD number, \
                times are RFC 3339 UTC, ids are opaque strings. Objects the caller may not see answer 404; \
                fields the caller's role may not set answer 403.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "servers": [{ "url": "/api/v1", "description": "The management API, relative to this document's host." }],
        "security": [{ "bearerAuth": [] }],
        "tags": [
            { "name": "keys", "description": "API keys and their lifecycle." },
            { "name": "audit", "description": "Who changed what, and when." },
            { "name": "meta", "description": "Health and this document; no token needed." },
        ],
        "paths": paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token (`TOLLGATE_ADMIN_TOKEN`: the operator, who may do \
                        everything) or a personal access token (`tgp_…`: a user, with their current role).",
                },
            },
            "parameters": parameters(),
            "responses": responses(),
            "schemas": schemas(),
        },
    })
}

fn paths() -> Value {
    let key_action = |op: &str, summary: &str| {
        json!({ "post": {
            "tags": ["keys"],
            "operationId": op,
            "summary": summary,
            "parameters": [{ "$ref": "#/components/parameters/KeyId" }],
            "responses": {
                "200": ok("The key after the change.", "Key"),
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "404": error_ref("NotFound"),
                "503": error_ref("Unavailable"),
            },
        }})
    };
    // `/healthz` and `/readyz` sit outside `/api/v1`.
    let root = json!([{ "url": "/", "description": "The server root." }]);
    json!({
        "/keys": {
            "get": {
                "tags": ["keys"],
                "operationId": "listKeys",
                "summary": "List keys, ordered by name, one page at a time.",
                "parameters": [
                    { "name": "search", "in": "query", "schema": { "type": "string" },
                      "description": "Part of the name or the preview, case-insensitive." },
                    { "name": "team_id", "in": "query", "schema": { "type": "string" },
                      "description": "Only the keys of this team." },
                    { "name": "status", "in": "query", "schema": {
                        "type": "string",
                        "enum": ["all", "active", "inactive", "expired", "revoked", "exhausted"],
                        "default": "all",
                    }},
                    { "$ref": "#/components/parameters/Cursor" },
                    { "$ref": "#/components/parameters/Limit" },
                ],
                "responses": {
                    "200": ok("One page of keys.", "KeyList"),
                    "400": error_ref("BadRequest"),
                    "401": error_ref("Unauthorized"),
                    "503": error_ref("Unavailable"),
                },
            },
            "post": {
                "tags": ["keys"],
                "operationId": "createKey",
                "summary": "Create a key. The answer carries the secret in `key`, this once.",
                "requestBody": body(true, "KeyCreate"),
                "responses": {
                    "201": ok("The new key and its secret.", "KeyWithSecret"),
                    "400": error_ref("BadRequest"),
                    "401": error_ref("Unauthorized"),
                    "403": error_ref("Forbidden"),
                    "404": error_ref("NotFound"),
                    "503": error_ref("Unavailable"),
                },
            },
        },
        "/keys/{id}": {
            "parameters": [{ "$ref": "#/components/parameters/KeyId" }],
            "get": {
                "tags": ["keys"],
                "operationId": "getKey",
                "summary": "One key.",
                "responses": {
                    "200": ok("The key.", "Key"),
                    "401": error_ref("Unauthorized"),
                    "404": error_ref("NotFound"),
                    "503": error_ref("Unavailable"),
                },
            },
            "patch": {
                "tags": ["keys"],
                "operationId": "updateKey",
                "summary": "Change any creatable field; fields left out keep their value, `null` clears.",
                "requestBody": body(true, "KeyPatch"),
                "responses": {
                    "200": ok("The key after the change.", "Key"),
                    "400": error_ref("BadRequest"),
                    "401": error_ref("Unauthorized"),
                    "403": error_ref("Forbidden"),
                    "404": error_ref("NotFound"),
                    "503": error_ref("Unavailable"),
                },
            },
            "delete": {
                "tags": ["keys"],
                "operationId": "deleteKey",
                "summary": "Delete the key permanently.",
                "responses": {
                    "204": { "description": "Deleted." },
                    "401": error_ref("Unauthorized"),
                    "404": error_ref("NotFound"),
                    "503": error_ref("Unavailable"),
                },
            },
        },
        "/keys/{id}/disable": key_action("disableKey", "Stop the key authenticating until it is enabled again."),
        "/keys/{id}/enable": key_action("enableKey", "Let a disabled key authenticate again."),
        "/keys/{id}/revoke": key_action("revokeKey", "Revoke the key. Revocation is permanent."),
        "/keys/{id}/rotate": { "post": {
            "tags": ["keys"],
            "operationId": "rotateKey",
            "summary": "Issue a new secret for the same key id.",
            "description": "The old secret stops at once, or after `grace_seconds`. A retry with the same \
                `Idempotency-Key` returns the same new secret without rotating again; reusing it after a \
                later rotation is a conflict.",
            "parameters": [
                { "$ref": "#/components/parameters/KeyId" },
                { "name": "Idempotency-Key", "in": "header", "required": false,
                  "schema": { "type": "string", "minLength": 1, "maxLength": 255 },
                  "description": "Printable ASCII, 1-255 characters." },
            ],
            "requestBody": body(false, "KeyRotate"),
            "responses": {
                "200": ok("The key and its new secret.", "KeyWithSecret"),
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "404": error_ref("NotFound"),
                "409": error_ref("Conflict"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/keys/{id}/duplicate": { "post": {
            "tags": ["keys"],
            "operationId": "duplicateKey",
            "summary": "A new key with the same scopes and limits (and expiry, if still ahead).",
            "parameters": [{ "$ref": "#/components/parameters/KeyId" }],
            "requestBody": body(false, "KeyDuplicate"),
            "responses": {
                "201": ok("The new key and its secret.", "KeyWithSecret"),
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "404": error_ref("NotFound"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/keys/{id}/ephemeral": { "post": {
            "tags": ["keys"],
            "operationId": "createEphemeralToken",
            "summary": "A short-lived token derived from an active key, with its scopes or narrower.",
            "description": "The token counts against the key and stops when the key is disabled, revoked or \
                expires. Nothing is stored; it is shown this once.",
            "parameters": [{ "$ref": "#/components/parameters/KeyId" }],
            "requestBody": body(false, "EphemeralCreate"),
            "responses": {
                "201": ok("The token.", "EphemeralToken"),
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "404": error_ref("NotFound"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/audit": { "get": {
            "tags": ["audit"],
            "operationId": "listAudit",
            "summary": "The audit log, newest first, one page at a time (owners and admins: their organization).",
            "parameters": [
                { "name": "actor", "in": "query", "schema": { "type": "string" },
                  "description": "`admin-token`, `cli` or a user id." },
                { "name": "action", "in": "query", "schema": { "type": "string" },
                  "description": "E.g. `key.create`, `key.rotate`." },
                { "name": "target", "in": "query", "schema": { "type": "string" },
                  "description": "The id of the object acted on." },
                { "name": "from", "in": "query", "schema": { "type": "string", "format": "date-time" },
                  "description": "Entries at or after this time." },
                { "name": "to", "in": "query", "schema": { "type": "string", "format": "date-time" },
                  "description": "Entries at or before this time." },
                { "$ref": "#/components/parameters/Cursor" },
                { "$ref": "#/components/parameters/Limit" },
            ],
            "responses": {
                "200": ok("One page of audit entries.", "AuditPage"),
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "403": error_ref("Forbidden"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/openapi.json": { "get": {
            "tags": ["meta"],
            "operationId": "getOpenApi",
            "summary": "This document.",
            "security": [],
            "responses": {
                "200": { "description": "An OpenAPI 3.1 document.",
                         "content": { "application/json": { "schema": { "type": "object" } } } },
            },
        }},
        "/healthz": {
            "servers": root,
            "get": {
                "tags": ["meta"],
                "operationId": "healthz",
                "summary": "The process is alive.",
                "security": [],
                "responses": { "200": ok("Alive.", "Health") },
            },
        },
        "/readyz": {
            "servers": root,
            "get": {
                "tags": ["meta"],
                "operationId": "readyz",
                "summary": "Ready: the snapshot is loaded, the server is not draining, and the store answers.",
                "security": [],
                "responses": {
                    "200": ok("Ready.", "Readiness"),
                    "503": ok("Not ready; the body says why.", "Readiness"),
                },
            },
        },
    })
}

fn parameters() -> Value {
    json!({
        "KeyId": { "name": "id", "in": "path", "required": true, "schema": { "type": "string" },
                   "description": "The key's id (`key_…`)." },
        "Cursor": { "name": "cursor", "in": "query", "schema": { "type": "string" },
                    "description": "The `next_cursor` of the previous page." },
        "Limit": { "name": "limit", "in": "query",
                   "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
    })
}

fn responses() -> Value {
    let error = |description: &str| json!({ "description": description, "content": json_content("Error") });
    json!({
        "BadRequest": error("Invalid input; `param` names the field."),
        "Unauthorized": error("Missing or invalid token."),
        "Forbidden": error("The caller's role may not do this."),
        "NotFound": error("No such object, or not visible to the caller."),
        "Conflict": error("Conflicts with the current state (an `Idempotency-Key` reused after a later rotation)."),
        "Unavailable": error("The database is unavailable; try again shortly."),
    })
}

fn schemas() -> Value {
    let time = json!({ "type": "string", "format": "date-time" });
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    let limit = json!({ "type": ["integer", "null"], "minimum": 1, "description": "`null`: no limit." });
    let error = json!({
        "type": "object",
        "required": ["error"],
        "properties": { "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": { "type": "string" },
                "type": { "type": "string", "examples": ["invalid_request_error", "authentication_error"] },
                "param": { "type": ["string", "null"], "description": "The field at fault, if one is." },
                "code": { "type": "string", "examples": ["invalid_request", "unauthorized", "not_found"] },
            },
        }},
    });
    let key_properties = json!({
        "id": { "type": "string" },
        "name": { "type": "string" },
        "org_id": { "type": "string" },
        "team_id": { "type": "string" },
        "owner_id": { "type": "string", "description": "The user the key belongs to." },
        "preview": { "type": "string", "description": "The prefix and the last four characters.",
                     "examples": ["sk-tg-…WXYZ"] },
        "status": { "type": "string", "enum": ["active", "inactive", "expired", "revoked", "exhausted"],
                    "description": "`expired` is derived from the clock." },
        "created_at": time,
        "updated_at": time,
        "expires_at": nullable_time(),
        "last_used_at": nullable_time(),
        "request_count": { "type": "integer", "format": "int64" },
        "tokens_used": { "type": "integer", "format": "int64" },
        "spend_usd": { "type": "number", "description": "USD, exact to the micro-dollar." },
        "budget_usd": { "type": ["number", "null"], "description": "Hard cap in USD; `null`: none." },
        "budget_alert_thresholds": { "type": "array", "items": { "type": "integer", "minimum": 1, "maximum": 100 },
                                     "description": "Percentages of the budget, ascending." },
        "token_quota": limit,
        "rpm": limit,
        "tpm": limit,
        "model_scope": { "type": "string", "enum": ["all", "chat", "list"] },
        "models": strings,
        "allowed_endpoints": strings,
        "allowed_providers": strings,
        "ip_allowlist": strings,
        "group": { "type": ["string", "null"] },
        "metadata": { "type": "object" },
        "mcp": { "$ref": "#/components/schemas/McpSettings" },
        "previous_secret_expires_at": {
            "type": ["string", "null"], "format": "date-time",
            "description": "While a rotated key's old secret still works: until when.",
        },
    });
    let key_required: Vec<&String> = key_properties.as_object().map(|m| m.keys().collect()).unwrap_or_default();
    let page = |item: &str, description: &str| {
        json!({
            "type": "object",
            "description": description,
            "required": ["data", "next_cursor"],
            "properties": {
                "data": { "type": "array", "items": { "$ref": format!("#/components/schemas/{item}") } },
                "next_cursor": { "type": ["string", "null"], "description": "`null` on the last page." },
            },
        })
    };
    json!({
        "Key": {
            "type": "object",
            "description": "A key as the API shows it: never the secret.",
            "required": key_required,
            "properties": key_properties,
        },
        "KeyWithSecret": {
            "allOf": [
                { "$ref": "#/components/schemas/Key" },
                { "type": "object", "required": ["key"],
                  "properties": { "key": { "type": "string", "description": "The secret, shown this once." } } },
            ],
        },
        "KeyCreate": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": key_fields("Absent or `null`: the default (none, unlimited, all)."),
        },
        "KeyPatch": {
            "type": "object",
            "additionalProperties": false,
            "description": "Fields left out keep their value; `null` clears a nullable field.",
            "properties": key_fields("Absent: unchanged; `null`: cleared."),
        },
        "KeyRotate": {
            "type": "object",
            "additionalProperties": false,
            "description": "An empty body is the same as `{}`.",
            "properties": { "grace_seconds": {
                "type": "integer", "minimum": 0, "maximum": 604_800, "default": 0,
                "description": "How long the old secret keeps working (at most 7 days).",
            }},
        },
        "KeyDuplicate": {
            "type": "object",
            "additionalProperties": false,
            "description": "An empty body is the same as `{}`.",
            "properties": { "name": {
                "type": "string", "minLength": 1, "maxLength": 128,
                "description": "Default: the source key's name plus ` (copy)`.",
            }},
        },
        "EphemeralCreate": {
            "type": "object",
            "additionalProperties": false,
            "description": "An empty body is the same as `{}`. Each list narrows the key's own; empty: as the key.",
            "properties": {
                "ttl_seconds": { "type": "integer", "minimum": 1, "maximum": 86_400, "default": 3600,
                                 "description": "Never beyond the key's own expiry." },
                "models": strings,
                "allowed_endpoints": strings,
                "allowed_providers": strings,
                "ip_allowlist": strings,
            },
        },
        "EphemeralToken": {
            "type": "object",
            "required": ["token", "expires_at", "key_id"],
            "properties": {
                "token": { "type": "string", "description": "`sk-tg-eph_…`, shown this once." },
                "expires_at": time,
                "key_id": { "type": "string" },
            },
        },
        "McpSettings": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "enabled": { "type": "boolean" },
                "mode": { "type": "string", "enum": ["allow_all", "deny_all", "allow_list", "deny_list"] },
                "servers": strings,
                "tools": { "type": "object", "additionalProperties": strings,
                           "description": "Server name to tool names." },
            },
        },
        "KeyList": page("Key", "One page of keys."),
        "AuditEntry": {
            "type": "object",
            "required": [
                "id", "at", "actor", "action", "target_type", "target_id", "before", "after", "source_ip", "org_id",
            ],
            "properties": {
                "id": { "type": "string" },
                "org_id": { "type": ["string", "null"], "description": "The organization of the target." },
                "at": time,
                "actor": { "type": "string", "description": "`admin-token`, `cli` or a user id." },
                "action": { "type": "string", "examples": ["key.create", "key.rotate"] },
                "target_type": { "type": "string", "examples": ["key"] },
                "target_id": { "type": "string" },
                "before": { "type": ["object", "null"], "description": "The object before; never a secret." },
                "after": { "type": ["object", "null"], "description": "The object after; never a secret." },
                "source_ip": { "type": ["string", "null"] },
            },
        },
        "AuditPage": page("AuditEntry", "One page of the audit log, newest first."),
        "Error": error,
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": { "status": { "const": "ok" } },
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "snapshot_loaded_and_serving", "store"],
            "properties": {
                "status": { "type": "string", "enum": ["ready", "not_ready"] },
                "snapshot_loaded_and_serving": { "type": "boolean" },
                "store": { "type": "string", "enum": ["ok", "unreachable"] },
            },
        },
    })
}

/// The creatable fields, shared by `KeyCreate` and `KeyPatch` (one Rust struct parses both).
fn key_fields(null_means: &str) -> Value {
    let with = |mut schema: Value| {
        schema["description"] = json!(match schema["description"].as_str() {
            Some(d) => format!("{d} {null_means}"),
            None => null_means.to_owned(),
        });
        schema
    };
    let names = |description: &str| {
        with(json!({
            "type": ["array", "null"], "maxItems": 256,
            "items": { "type": "string", "minLength": 1, "maxLength": 256 },
            "description": description,
        }))
    };
    let limit =
        |description: &str| with(json!({ "type": ["integer", "null"], "minimum": 1, "description": description }));
    json!({
        "name": { "type": "string", "minLength": 1, "maxLength": 128, "description": "Trimmed; no control characters." },
        "team_id": { "type": "string", "description": "On create, default: the caller's team (the organization's \
            `default` team for the operator). Members may only use their own teams; moving a key is for owners \
            and admins." },
        "owner_id": { "type": "string", "description": "On create, default: the caller (an owner of the \
            organization for the operator). Only owners and admins may set another user; the key is then theirs." },
        "expires_in": { "type": "string", "enum": ["never", "30d", "60d", "90d", "180d", "365d", "1y"],
                        "description": "A preset counted from now; give this or `expires_at`, not both." },
        "expires_at": with(json!({ "type": ["string", "null"], "format": "date-time",
                                   "description": "A future time; `null` means never." })),
        "budget_usd": with(json!({ "type": ["number", "null"], "minimum": 0,
                                   "description": "Hard cap in USD, at most six decimals." })),
        "budget_alert_thresholds": with(json!({
            "type": ["array", "null"], "items": { "type": "integer", "minimum": 1, "maximum": 100 },
            "description": "Percentages of the budget, e.g. [50, 80, 100].",
        })),
        "token_quota": limit("Total tokens."),
        "rpm": limit("Requests per minute."),
        "tpm": limit("Tokens per minute."),
        "model_scope": with(json!({ "type": ["string", "null"], "enum": ["all", "chat", "list", null],
                                    "description": "`list` needs `models`; `models` alone implies `list`." })),
        "models": names("Model ids, for the `list` scope."),
        "allowed_endpoints": names("Paths such as `/v1/embeddings`; empty: all."),
        "allowed_providers": names("Provider names; empty: all."),
        "ip_allowlist": names("IPs and CIDRs, v4 or v6; empty: any."),
        "group": with(json!({ "type": ["string", "null"], "maxLength": 64 })),
        "metadata": with(json!({ "type": ["object", "null"], "description": "At most 16 KiB of JSON." })),
        "mcp": with(json!({ "anyOf": [{ "$ref": "#/components/schemas/McpSettings" }, { "type": "null" }] })),
    })
}

fn nullable_time() -> Value {
    json!({ "type": ["string", "null"], "format": "date-time" })
}

fn json_content(schema: &str) -> Value {
    json!({ "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } })
}

fn ok(description: &str, schema: &str) -> Value {
    json!({ "description": description, "content": json_content(schema) })
}

fn body(required: bool, schema: &str) -> Value {
    json!({ "required": required, "content": json_content(schema) })
}

fn error_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}
