//! The document's part for routing managed at runtime (`providers.rs`, and the writes of
//! `models.rs` and `channels.rs`): providers, models and channels the operator adds beside
//! the config file's.

use serde_json::{Value, json};

use super::{body, error_ref, ok};

const WHO: &str = "Operator only (they apply to every organization); owners and admins may read.";

fn changed(summary: &str, id: &str, request: Option<&str>, answer: Option<(&str, &str)>) -> Value {
    let mut responses = json!({
        "400": error_ref("BadRequest"),
        "401": error_ref("Unauthorized"),
        "403": error_ref("Forbidden"),
        "404": error_ref("NotFound"),
        "409": error_ref("Conflict"),
        "503": error_ref("Unavailable"),
    });
    match answer {
        Some((status, schema)) => responses[status] = ok("The object as stored.", schema),
        None => responses["204"] = json!({ "description": "Deleted." }),
    }
    let mut op = json!({
        "tags": ["models"],
        "operationId": id,
        "summary": summary,
        "description": WHO,
        "responses": responses,
    });
    if let Some(schema) = request {
        op["requestBody"] = body(true, schema);
    }
    op
}

fn path_param(name: &str) -> Value {
    json!([{ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }])
}

/// `paths` with the managed-routing operations added (some share a path with the
/// read-only ones of `billing.rs`).
pub(super) fn added_to(mut paths: Value) -> Value {
    let mut add = |path: &str, method: &str, op: Value| {
        paths[path][method] = op;
    };
    add(
        "/providers",
        "get",
        json!({
            "tags": ["models"],
            "operationId": "listProviders",
            "summary": "The config file's providers and those added through the API, never their credentials.",
            "description": "Owners, admins and the operator; members get 403.",
            "responses": {
                "200": ok("The providers.", "ProviderList"),
                "401": error_ref("Unauthorized"),
                "403": error_ref("Forbidden"),
            },
        }),
    );
    add(
        "/providers",
        "post",
        changed(
            "Adds a provider. Its API key and header values are stored sealed (AES-256-GCM) and never shown \
         again; checked by the config file's rules. Audited as `provider.create`.",
            "createProvider",
            Some("ProviderRequest"),
            Some(("201", "Provider")),
        ),
    );
    let mut patch = changed(
        "Changes a provider added through the API (the config file's are read-only here): a field given \
         replaces the stored one, `null` clears it, `headers` replaces every header. Audited.",
        "updateProvider",
        Some("ProviderPatch"),
        Some(("200", "Provider")),
    );
    patch["parameters"] = path_param("name");
    add("/providers/{name}", "patch", patch);
    let mut delete = changed(
        "Deletes a provider added through the API; 400 while channels use it. Audited.",
        "deleteProvider",
        None,
        None,
    );
    delete["parameters"] = path_param("name");
    add("/providers/{name}", "delete", delete);
    add(
        "/models",
        "post",
        changed(
            "Adds a model with its first channels, in one change. Audited as `model.create`; served after the \
         change feed delivers it.",
            "createModel",
            Some("ModelRequest"),
            Some(("201", "ManagedModel")),
        ),
    );
    let mut delete = changed(
        "Deletes a model added through the API, with its channels. Audited as `model.delete`.",
        "deleteModel",
        None,
        None,
    );
    delete["parameters"] = path_param("id");
    add("/models/{id}", "delete", delete);
    add(
        "/channels",
        "post",
        changed(
            "Adds a channel to a model of the config file or of the API. Audited as `channel.create`.",
            "createChannel",
            Some("ChannelRequest"),
            Some(("201", "ManagedChannel")),
        ),
    );
    let mut patch = changed(
        "Changes a channel added through the API: upstream model, priority, weight, groups. Audited.",
        "updateChannel",
        Some("ChannelPatch"),
        Some(("200", "ManagedChannel")),
    );
    patch["parameters"] = path_param("id");
    add("/channels/{id}", "patch", patch);
    let mut delete = changed(
        "Deletes a channel added through the API (a managed model keeps at least one). Audited.",
        "deleteChannel",
        None,
        None,
    );
    delete["parameters"] = path_param("id");
    add("/channels/{id}", "delete", delete);
    paths
}

pub(super) fn schemas() -> Value {
    let text = json!({ "type": "string" });
    let optional = json!({ "type": ["string", "null"] });
    let price = json!({ "type": "number", "minimum": 0, "description": "USD; at most six decimals." });
    let headers = json!({ "type": "object", "additionalProperties": { "type": "string" },
        "description": "Extra headers sent upstream (`openai` and `azure`); values are stored sealed." });
    let channel_fields = json!({
        "upstream_model": { "type": "string", "description": "The model's name at the provider (default: the id)." },
        "priority": { "type": "integer", "description": "Higher first." },
        "weight": { "type": "integer", "minimum": 1, "maximum": 1000 },
        "groups": { "type": "array", "items": { "type": "string" } },
    });
    let mut channel_request = json!({
        "type": "object", "additionalProperties": false, "required": ["model", "provider"],
        "properties": { "model": text, "provider": text },
    });
    let mut model_channel = json!({
        "type": "object", "additionalProperties": false, "required": ["provider"],
        "properties": { "provider": text },
    });
    for (k, v) in channel_fields.as_object().into_iter().flatten() {
        channel_request["properties"][k] = v.clone();
        model_channel["properties"][k] = v.clone();
    }
    json!({
        "Provider": {
            "type": "object",
            "required": ["name", "kind", "header_names", "api_key_set", "source"],
            "properties": {
                "name": text, "kind": { "type": "string", "enum": ["openai", "azure", "anthropic", "gemini", "demo"] },
                "base_url": optional, "api_version": optional, "anthropic_version": optional,
                "organization": optional, "project": optional,
                "header_names": { "type": "array", "items": { "type": "string" } },
                "api_key_set": { "type": "boolean" },
                "source": { "type": "string", "enum": ["config", "api"] },
                "created_at": { "type": ["integer", "null"] }, "updated_at": { "type": ["integer", "null"] },
            },
        },
        "ProviderList": {
            "type": "object", "required": ["data"],
            "properties": { "data": { "type": "array", "items": { "$ref": "#/components/schemas/Provider" } } },
        },
        "ProviderRequest": {
            "type": "object", "additionalProperties": false, "required": ["name", "kind"],
            "properties": {
                "name": text, "kind": { "type": "string", "enum": ["openai", "azure", "anthropic", "gemini"] },
                "base_url": text, "api_key": text, "api_version": text, "anthropic_version": text,
                "organization": text, "project": text, "headers": headers,
            },
        },
        "ProviderPatch": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "base_url": optional, "api_key": optional, "api_version": optional,
                "anthropic_version": optional, "organization": optional, "project": optional, "headers": headers,
            },
        },
        "ModelRequest": {
            "type": "object", "additionalProperties": false, "required": ["id", "type", "channels"],
            "properties": {
                "id": text, "type": { "type": "string", "enum": ["chat", "embedding", "image"] },
                "input_price_per_mtok": price, "output_price_per_mtok": price, "price_per_image": price,
                "max_output_tokens": { "type": "integer", "minimum": 0 },
                "channels": { "type": "array", "minItems": 1, "items": model_channel },
            },
        },
        "ManagedModel": {
            "type": "object", "required": ["id", "type", "channels"],
            "properties": {
                "id": text, "type": text,
                "channels": { "type": "array", "items": { "$ref": "#/components/schemas/ManagedChannel" } },
            },
        },
        "ChannelRequest": channel_request,
        "ChannelPatch": {
            "type": "object", "additionalProperties": false,
            "properties": channel_fields,
        },
        "ManagedChannel": {
            "type": "object",
            "required": ["id", "model", "provider", "upstream_model", "priority", "weight", "groups", "source"],
            "properties": {
                "id": optional, "model": text, "provider": text, "upstream_model": text,
                "priority": { "type": "integer" }, "weight": { "type": "integer" },
                "groups": { "type": "array", "items": { "type": "string" } },
                "source": { "type": "string", "enum": ["config", "api"] },
            },
        },
    })
}
