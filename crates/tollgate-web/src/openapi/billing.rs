//! The document's part for `billing.rs`, `models.rs` and `channels.rs`: the organization's
//! balance and ledger, admin credits, the public models with their prices, and the
//! channels that serve them with their circuit health.

use serde_json::{Value, json};

use super::{body, error_ref, ok};

pub(super) fn paths() -> Value {
    let org = json!({ "name": "organization_id", "in": "query", "schema": { "type": "string" },
        "description": "The organization (the operator's choice; a user's own by default)." });
    let who = "Owners and admins of the organization, and the operator; members get 403.";
    json!({
        "/billing": { "get": {
            "tags": ["billing"],
            "operationId": "getBilling",
            "summary": "The organization's balance (the sum of its ledger), total credit and spend, and the \
                last 30 days' spend.",
            "description": who,
            "parameters": [org],
            "responses": {
                "200": ok("The summary.", "BillingSummary"),
                "401": error_ref("Unauthorized"),
                "403": error_ref("Forbidden"),
                "404": error_ref("NotFound"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/billing/credits": { "post": {
            "tags": ["billing"],
            "operationId": "addCredit",
            "summary": "Adds a ledger entry that moves the balance: a top-up, a refund, or an adjustment \
                (which alone may be negative). Audited as `billing.credit`; the gateway applies it within the \
                change feed's interval.",
            "description": who,
            "requestBody": body(true, "CreditRequest"),
            "responses": {
                "201": ok("The new ledger entry.", "LedgerEntry"),
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "403": error_ref("Forbidden"),
                "404": error_ref("NotFound"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/billing/ledger": { "get": {
            "tags": ["billing"],
            "operationId": "listLedger",
            "summary": "The ledger, newest first: top-ups, usage debits (one per usage batch), adjustments, \
                refunds.",
            "description": who,
            "parameters": [
                org,
                { "name": "kind", "in": "query",
                  "schema": { "type": "string", "enum": ["topup", "usage", "adjustment", "refund"] } },
                { "$ref": "#/components/parameters/Cursor" },
                { "$ref": "#/components/parameters/Limit" },
            ],
            "responses": {
                "200": ok("One page of entries.", "LedgerPage"),
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "403": error_ref("Forbidden"),
                "404": error_ref("NotFound"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/models": { "get": {
            "tags": ["models"],
            "operationId": "listModels",
            "summary": "The public models with the prices requests are billed at.",
            "responses": {
                "200": ok("Every model the configuration declares.", "ModelList"),
                "401": error_ref("Unauthorized"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/models/{id}": { "patch": {
            "tags": ["models"],
            "operationId": "setModelPrice",
            "summary": "Overrides a model's prices for every organization (operator only); fields left out \
                keep their value. Audited as `model.price`; applies to requests admitted after the change feed \
                delivers it.",
            "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
            "requestBody": body(true, "PriceRequest"),
            "responses": {
                "200": ok("The model with its new prices.", "Model"),
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "403": error_ref("Forbidden"),
                "404": error_ref("NotFound"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/channels": { "get": {
            "tags": ["models"],
            "operationId": "listChannels",
            "summary": "Every model's channels with their routing settings and circuit health, as this \
                instance sees them. Owners, admins and the operator; members get 403.",
            "responses": {
                "200": ok("The channels, by model.", "ChannelList"),
                "401": error_ref("Unauthorized"),
                "403": error_ref("Forbidden"),
            },
        }},
        "/models/{id}/price": { "delete": {
            "tags": ["models"],
            "operationId": "resetModelPrice",
            "summary": "Goes back to the configuration's prices (operator only). Audited as `model.price_reset`.",
            "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
            "responses": {
                "200": ok("The model with the configuration's prices.", "Model"),
                "401": error_ref("Unauthorized"),
                "403": error_ref("Forbidden"),
                "404": error_ref("NotFound"),
                "503": error_ref("Unavailable"),
            },
        }},
    })
}

pub(super) fn schemas() -> Value {
    let usd = |d: &str| json!({ "type": "number", "description": format!("{d} USD, exact to six decimals.") });
    let price = json!({ "type": "number", "minimum": 0, "description": "USD; at most six decimals." });
    json!({
        "BillingSummary": {
            "type": "object",
            "required": ["organization_id", "balance_usd", "balance_micros", "credit_usd", "spend_usd",
                "spend_30d_usd", "balance_enforced"],
            "properties": {
                "organization_id": { "type": "string" },
                "balance_usd": usd("Credit minus spend = the sum of the ledger;"),
                "balance_micros": { "type": "integer", "description": "The balance in micro-USD, exact." },
                "credit_usd": usd("Every top-up, adjustment and refund:"),
                "spend_usd": usd("Every usage debit:"),
                "spend_30d_usd": usd("Usage of the last 30 days:"),
                "balance_enforced": { "type": "boolean",
                    "description": "Whether requests the balance cannot cover are refused (`billing.enforce_balance`)." },
            },
        },
        "CreditRequest": {
            "type": "object",
            "required": ["amount_usd"],
            "additionalProperties": false,
            "properties": {
                "amount_usd": { "type": "number", "description": "Non-zero; negative only for an adjustment." },
                "kind": { "type": "string", "enum": ["topup", "adjustment", "refund"], "default": "topup" },
                "note": { "type": "string", "maxLength": 500 },
                "organization_id": { "type": "string", "description": "The operator's choice of organization." },
            },
        },
        "LedgerEntry": {
            "type": "object",
            "required": ["id", "kind", "amount_usd", "amount_micros", "balance_after_usd", "note", "actor",
                "created_at"],
            "properties": {
                "id": { "type": "string" },
                "kind": { "type": "string", "enum": ["topup", "usage", "adjustment", "refund"] },
                "amount_usd": usd("Signed (debits negative):"),
                "amount_micros": { "type": "integer" },
                "balance_after_usd": usd("The balance right after this entry:"),
                "note": { "type": ["string", "null"] },
                "actor": { "type": ["string", "null"], "description": "Who made it; `null` for usage debits." },
                "created_at": { "type": "string", "format": "date-time" },
            },
        },
        "LedgerPage": {
            "type": "object",
            "required": ["data", "next_cursor"],
            "properties": {
                "data": { "type": "array", "items": { "$ref": "#/components/schemas/LedgerEntry" } },
                "next_cursor": { "type": ["string", "null"], "description": "`null` on the last page." },
            },
        },
        "Model": {
            "type": "object",
            "required": ["id", "type", "input_price_per_mtok", "output_price_per_mtok", "price_per_image",
                "price_source", "source", "max_output_tokens"],
            "properties": {
                "id": { "type": "string" },
                "type": { "type": "string", "enum": ["chat", "embedding", "image"] },
                "input_price_per_mtok": usd("Per million prompt tokens,"),
                "output_price_per_mtok": usd("Per million completion tokens,"),
                "price_per_image": usd("Per generated image,"),
                "price_source": { "type": "string", "enum": ["config", "api"] },
                "source": { "type": "string", "enum": ["config", "api"],
                    "description": "Declared by the config file or added through the API." },
                "max_output_tokens": { "type": "integer", "minimum": 0,
                    "description": "What a request without `max_tokens` reserves." },
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["data"],
            "properties": { "data": { "type": "array", "items": { "$ref": "#/components/schemas/Model" } } },
        },
        "Channel": {
            "type": "object",
            "required": ["id", "source", "model", "provider", "upstream_model", "priority", "weight", "groups", "state",
                "consecutive_failures", "successes", "failures"],
            "properties": {
                "id": { "type": ["string", "null"],
                    "description": "A channel added through the API (`null`: the config file's)." },
                "source": { "type": "string", "enum": ["config", "api"] },
                "model": { "type": "string", "description": "The public model id." },
                "provider": { "type": "string" },
                "upstream_model": { "type": "string", "description": "The model's name at the provider." },
                "priority": { "type": "integer", "description": "Higher first." },
                "weight": { "type": "integer", "minimum": 1 },
                "groups": { "type": "array", "items": { "type": "string" } },
                "state": { "type": "string", "enum": ["closed", "open", "half_open"],
                    "description": "The circuit: `open` is skipped while another channel can serve." },
                "consecutive_failures": { "type": "integer", "minimum": 0 },
                "successes": { "type": "integer", "minimum": 0 },
                "failures": { "type": "integer", "minimum": 0 },
            },
        },
        "ChannelList": {
            "type": "object",
            "required": ["data"],
            "properties": { "data": { "type": "array", "items": { "$ref": "#/components/schemas/Channel" } } },
        },
        "PriceRequest": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "input_price_per_mtok": price,
                "output_price_per_mtok": price,
                "price_per_image": price,
            },
        },
    })
}
