//! The OpenAPI 3.1 document of the management API, served at `GET /api/v1/openapi.json`
//! without a token. Written by hand for the routes of `keys.rs`, `tenancy.rs`, `session.rs`,
//! `usage.rs` and `lib.rs` (and, in `billing.rs` here, for `billing.rs` and `models.rs`);
//! `tests/openapi.rs` fails when a route, or a field of a view the API answers with
//! (`KeyView`, `TeamView`, `MemberView`, `TokenView`, `MeView`, `OrganizationView`,
//! `UsageView`, `DailyView`, `BillingSummary`, `LedgerView`, `ModelView`, the sign-in
//! answer), changes without the document following.
//! Built once.

mod billing;
mod invites;
mod routing;

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::{Value, json};
use tollgate_service::SESSION_TTL_MS;

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
            "description": "Keys, organizations, users, teams, personal access tokens, the usage log and the \
                audit log of a Tollgate gateway. JSON in and out; errors in OpenAI's {\"error\":{…}} shape, with `param` \
                naming the bad field. Money is a decimal USD number, times are RFC 3339 UTC, ids are opaque \
                strings. Owners and admins manage their organization; members manage their own keys in their \
                own teams; the admin token acts as the operator, who may do everything. Objects the caller may \
                not see answer 404; what the caller's role may not do, on objects it sees, answers 403. \
                Authenticate with a bearer token, or with the dashboard's session cookie from \
                `POST /auth/login`; with the cookie, every request that changes something (any method but \
                GET, HEAD and OPTIONS) must also send the session's CSRF token in `x-csrf-token`, or it \
                answers 403.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "servers": [{ "url": "/api/v1", "description": "The management API, relative to this document's host." }],
        // Either scheme: a bearer token, or else the session cookie.
        "security": [{ "bearerAuth": [] }, { "sessionCookie": [] }],
        "tags": [
            { "name": "keys", "description": "API keys and their lifecycle." },
            { "name": "audit", "description": "Who changed what, and when." },
            { "name": "usage", "description": "One row per `/v1` request, succeeded or failed; CSV exports; daily totals." },
            { "name": "billing", "description": "The organization's balance, its ledger, and admin credits." },
            { "name": "models", "description": "The public models and their prices." },
            { "name": "organizations", "description": "Organizations; creating them is for the operator." },
            { "name": "users", "description": "The caller, and the members of their organization with their roles." },
            { "name": "teams", "description": "Teams group members and keys, and may narrow the models served." },
            { "name": "tokens", "description": "Personal access tokens (`tgp_…`) for this API, and signing in for one." },
            { "name": "sessions", "description": "Dashboard sign-in: a session cookie and its CSRF token." },
            { "name": "invites", "description": "Invitations into an organization, used by `POST /auth/signup`." },
            { "name": "meta", "description": "Health and this document; no token needed." },
        ],
        "paths": csrf_guarded(merged(
            merged(merged(merged(paths(), tenancy_paths()), session_paths()), usage_paths()),
            routing::added_to(merged(billing::paths(), invites::paths())),
        )),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token (`TOLLGATE_ADMIN_TOKEN`: the operator, who may do \
                        everything) or a personal access token (`tgp_…`: a user, with their current role and \
                        teams; get one from `POST /auth/token` with an email and password, or `POST /tokens`). \
                        When a bearer token is sent, the session cookie is not looked at.",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "tg_session",
                    "description": format!("A dashboard session, set by `POST /auth/login` (`HttpOnly`, \
                        `SameSite=Strict`, `Path=/`, {hours} hours; `Secure` over TLS): the user, with their \
                        current role and teams. A request that changes something (any method but GET, HEAD and \
                        OPTIONS) must also send the session's `csrf_token` in the `x-csrf-token` header, or it \
                        answers 403. Logging out or changing the password ends the session.",
                        hours = SESSION_TTL_MS / 3_600_000),
                },
            },
            "parameters": parameters(),
            "responses": responses(),
            "schemas": merged(
                merged(merged(schemas(), tenancy_schemas()), usage_schemas()),
                merged(merged(billing::schemas(), invites::schemas()), routing::schemas()),
            ),
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
                "summary": "List keys, in `sort` order (ties by id), one page at a time.",
                "description": "Owners and admins see their organization's keys; members, their own.",
                "parameters": [
                    { "name": "sort", "in": "query", "schema": {
                        "type": "string",
                        "enum": ["name", "owner", "status", "requests", "created"],
                        "default": "name",
                      },
                      "description": "`owner` orders by owner id, `status` by the stored status (an expired \
                        key sorts as `active`), `requests` by request count, `created` by creation time." },
                    { "name": "order", "in": "query",
                      "schema": { "type": "string", "enum": ["asc", "desc"], "default": "asc" } },
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
                later rotation is a conflict. A dashboard session must give the person's `password`; \
                too many wrong ones answer 429.",
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
                "403": error_ref("Forbidden"),
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
        "/keys/{id}/reveal": { "post": {
            "tags": ["keys"],
            "operationId": "revealKey",
            "summary": "The key's secret, when the deployment keeps secrets sealed (`keys.reveal = true`).",
            "description": "Users give their password again; the operator need not. Audited as `key.reveal`. \
                400 with `param` `reveal` when reveal is off (whatever the key), or when the key was created \
                before reveal was turned on and not rotated since (rotate it to reveal it); 400 with `param` \
                `password` when a user leaves the password out; 403 for a wrong password.",
            "parameters": [{ "$ref": "#/components/parameters/KeyId" }],
            "requestBody": body(false, "KeyReveal"),
            "responses": {
                "200": ok("The secret.", "RevealedKey"),
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "403": error_ref("WrongPassword"),
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
                "description": "200 `ready`, or 200 `degraded` while Redis (the shared limits) is unreachable: \
                    the instance still serves, enforcing its own share of the rate limits. 503 `not_ready` while \
                    loading, draining, or when the store does not answer.",
                "security": [],
                "responses": {
                    "200": ok("Ready, or degraded (Redis unreachable) and still serving.", "Readiness"),
                    "503": ok("Not ready; the body says why.", "Readiness"),
                },
            },
        },
    })
}

/// The routes of `tenancy.rs`, and `POST /auth/token` of `lib.rs`.
fn tenancy_paths() -> Value {
    let managers = "Owners and admins (and the operator) only: 403 for members.";
    json!({
        "/auth/token": { "post": {
            "tags": ["tokens"],
            "operationId": "signIn",
            "summary": "Exchange an email and password for a personal access token (shown this once).",
            "description": "No bearer token. The token acts as the user in their organization. Every failed \
                attempt answers the same 401, slowed by the password check itself; after 5 failures in 15 \
                minutes for one email from one address (counted together with `POST /auth/login`), attempts \
                answer 429 until the window passes.",
            "security": [],
            "requestBody": body(true, "SignIn"),
            "responses": {
                "201": ok("The new token and its secret.", "TokenWithSecret"),
                "400": error_ref("BadRequest"),
                "401": error_ref("WrongCredentials"),
                "429": error_ref("TooManySignIns"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/me": { "get": {
            "tags": ["users"],
            "operationId": "getMe",
            "summary": "Who the token acts as: a user with their organization, role and teams, or the operator.",
            "responses": {
                "200": ok("The caller.", "Me"),
                "401": error_ref("Unauthorized"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/organizations": {
            "get": {
                "tags": ["organizations"],
                "operationId": "listOrganizations",
                "summary": "Organizations: all of them for the operator, the caller's own for a user.",
                "responses": {
                    "200": ok("The organizations, oldest first.", "OrganizationList"),
                    "401": error_ref("Unauthorized"),
                    "503": error_ref("Unavailable"),
                },
            },
            "post": {
                "tags": ["organizations"],
                "operationId": "createOrganization",
                "summary": "Create an organization with a `default` team and its owner (the operator only).",
                "requestBody": body(true, "OrganizationCreate"),
                "responses": {
                    "201": ok("The organization, and the owner's password if it was generated.",
                              "OrganizationCreated"),
                    "400": error_ref("BadRequest"),
                    "401": error_ref("Unauthorized"),
                    "403": error_ref("Forbidden"),
                    "409": error_ref("Taken"),
                    "503": error_ref("Unavailable"),
                },
            },
        },
        "/users": {
            "get": {
                "tags": ["users"],
                "operationId": "listUsers",
                "summary": "The members of the caller's organization (the first one for the operator), by email.",
                "description": managers,
                "responses": {
                    "200": ok("The members.", "MemberList"),
                    "401": error_ref("Unauthorized"),
                    "403": error_ref("Forbidden"),
                    "503": error_ref("Unavailable"),
                },
            },
            "post": {
                "tags": ["users"],
                "operationId": "createUser",
                "summary": "Add a user to the caller's organization (the first one for the operator).",
                "description": "Owners and admins (and the operator) only. Admins may add members; only \
                    owners and the operator may add admins and owners (403 otherwise). Without `password`, one is generated and \
                    returned this once.",
                "requestBody": body(true, "UserCreate"),
                "responses": {
                    "201": ok("The member, and their password if it was generated.", "MemberCreated"),
                    "400": error_ref("BadRequest"),
                    "401": error_ref("Unauthorized"),
                    "403": error_ref("Forbidden"),
                    "404": error_ref("NotFound"),
                    "409": error_ref("Taken"),
                    "503": error_ref("Unavailable"),
                },
            },
        },
        "/users/{id}": {
            "parameters": [{ "$ref": "#/components/parameters/UserId" }],
            "patch": {
                "tags": ["users"],
                "operationId": "updateUser",
                "summary": "Change a member's role (owners and the operator only).",
                "description": "An organization needs at least one owner: demoting the last one answers 400 \
                    with `param` `role`.",
                "requestBody": body(true, "UserPatch"),
                "responses": {
                    "204": { "description": "Changed." },
                    "400": error_ref("BadRequest"),
                    "401": error_ref("Unauthorized"),
                    "403": error_ref("Forbidden"),
                    "404": error_ref("NotFound"),
                    "503": error_ref("Unavailable"),
                },
            },
        },
        "/teams": {
            "get": {
                "tags": ["teams"],
                "operationId": "listTeams",
                "summary": "Teams by name: the organization's for owners and admins, a member's own, every \
                    organization's for the operator.",
                "responses": {
                    "200": ok("The teams.", "TeamList"),
                    "401": error_ref("Unauthorized"),
                    "503": error_ref("Unavailable"),
                },
            },
            "post": {
                "tags": ["teams"],
                "operationId": "createTeam",
                "summary": "Create a team in the caller's organization (the first one for the operator).",
                "description": managers,
                "requestBody": body(true, "TeamCreate"),
                "responses": {
                    "201": ok("The team.", "Team"),
                    "400": error_ref("BadRequest"),
                    "401": error_ref("Unauthorized"),
                    "403": error_ref("Forbidden"),
                    "409": error_ref("Taken"),
                    "503": error_ref("Unavailable"),
                },
            },
        },
        "/teams/{id}": {
            "parameters": [{ "$ref": "#/components/parameters/TeamId" }],
            "get": {
                "tags": ["teams"],
                "operationId": "getTeam",
                "summary": "One team (members see only their own teams).",
                "responses": {
                    "200": ok("The team.", "Team"),
                    "401": error_ref("Unauthorized"),
                    "404": error_ref("NotFound"),
                    "503": error_ref("Unavailable"),
                },
            },
            "patch": {
                "tags": ["teams"],
                "operationId": "updateTeam",
                "summary": "Rename a team or change its models; fields left out keep their value.",
                "description": managers,
                "requestBody": body(true, "TeamPatch"),
                "responses": {
                    "200": ok("The team after the change.", "Team"),
                    "400": error_ref("BadRequest"),
                    "401": error_ref("Unauthorized"),
                    "403": error_ref("Forbidden"),
                    "404": error_ref("NotFound"),
                    "409": error_ref("Taken"),
                    "503": error_ref("Unavailable"),
                },
            },
        },
        "/teams/{id}/members": { "post": {
            "tags": ["teams"],
            "operationId": "addTeamMember",
            "summary": "Add a member of the organization to the team (already in it: no change).",
            "description": managers,
            "parameters": [{ "$ref": "#/components/parameters/TeamId" }],
            "requestBody": body(true, "TeamMemberAdd"),
            "responses": {
                "204": { "description": "The user is in the team." },
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "403": error_ref("Forbidden"),
                "404": error_ref("NotFound"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/teams/{id}/members/{user_id}": { "delete": {
            "tags": ["teams"],
            "operationId": "removeTeamMember",
            "summary": "Remove a member of the organization from the team (not in it: no change).",
            "description": managers,
            "parameters": [
                { "$ref": "#/components/parameters/TeamId" },
                { "$ref": "#/components/parameters/MemberId" },
            ],
            "responses": {
                "204": { "description": "The user is not in the team." },
                "401": error_ref("Unauthorized"),
                "403": error_ref("Forbidden"),
                "404": error_ref("NotFound"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/tokens": {
            "get": {
                "tags": ["tokens"],
                "operationId": "listTokens",
                "summary": "The caller's personal access tokens, never their secrets (none for the admin token).",
                "responses": {
                    "200": ok("The tokens.", "TokenList"),
                    "401": error_ref("Unauthorized"),
                    "503": error_ref("Unavailable"),
                },
            },
            "post": {
                "tags": ["tokens"],
                "operationId": "createToken",
                "summary": "Create a personal access token for the caller (shown this once).",
                "description": "For users only: the admin token answers 400 with `param` `actor`.",
                "requestBody": body(true, "TokenCreate"),
                "responses": {
                    "201": ok("The new token and its secret.", "TokenWithSecret"),
                    "400": error_ref("BadRequest"),
                    "401": error_ref("Unauthorized"),
                    "503": error_ref("Unavailable"),
                },
            },
        },
        "/tokens/{id}": { "delete": {
            "tags": ["tokens"],
            "operationId": "deleteToken",
            "summary": "Delete one of the caller's tokens; it stops working at once.",
            "parameters": [{ "$ref": "#/components/parameters/TokenId" }],
            "responses": {
                "204": { "description": "Deleted." },
                "401": error_ref("Unauthorized"),
                "404": error_ref("NotFound"),
                "503": error_ref("Unavailable"),
            },
        }},
    })
}

/// The routes of `session.rs`: dashboard sign-in, sign-out and password changes.
fn session_paths() -> Value {
    let max_age = SESSION_TTL_MS / 1000;
    let cleared = json!({
        "description": "Clears the cookie.",
        "schema": { "type": "string" },
        "example": "tg_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
    });
    json!({
        "/auth/login": { "post": {
            "tags": ["sessions"],
            "operationId": "logIn",
            "summary": "Sign in to the dashboard: a session cookie, and the CSRF token that goes with it.",
            "description": format!("No credentials needed. Sets the `tg_session` cookie for {hours} hours; \
                send the answer's `csrf_token` in `x-csrf-token` with every request made with the cookie \
                that changes something. Every failed attempt answers the same 401, slowed by the password \
                check itself; after 5 failures in 15 minutes for one email from one address (counted \
                together with `POST /auth/token`), attempts answer 429 until the window passes.",
                hours = SESSION_TTL_MS / 3_600_000),
            "security": [],
            "requestBody": body(true, "LogIn"),
            "responses": {
                "200": {
                    "description": "Signed in.",
                    "headers": { "Set-Cookie": {
                        "description": "The session cookie: `HttpOnly`, `SameSite=Strict`, `Path=/`, \
                            `Max-Age` in seconds, and `Secure` when served over TLS (or behind a trusted \
                            proxy that says `X-Forwarded-Proto: https`).",
                        "schema": { "type": "string" },
                        "example": format!("tg_session=…; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"),
                    }},
                    "content": json_content("Session"),
                },
                "400": error_ref("BadRequest"),
                "401": error_ref("WrongCredentials"),
                "429": error_ref("TooManySignIns"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/auth/logout": { "post": {
            "tags": ["sessions"],
            "operationId": "logOut",
            "summary": "End the session the cookie names, if any, and clear the cookie.",
            "description": "Needs no credentials and no CSRF token, and answers 204 whether or not a live \
                session was sent. No body.",
            "security": [],
            "parameters": [{ "name": "tg_session", "in": "cookie", "required": false,
                             "schema": { "type": "string" }, "description": "The session to end." }],
            "responses": {
                "204": { "description": "Signed out.", "headers": { "Set-Cookie": cleared } },
                "503": error_ref("Unavailable"),
            },
        }},
        "/me/password": { "post": {
            "tags": ["users"],
            "operationId": "changePassword",
            "summary": "Change the caller's password; ends every dashboard session of theirs.",
            "description": "For users only: the admin token answers 400 with `param` `actor`. A wrong \
                `current_password` answers 403. Every session of the user ends, this one included, and the \
                answer clears the cookie; personal access tokens keep working.",
            "requestBody": body(true, "PasswordChange"),
            "responses": {
                "204": { "description": "Changed.", "headers": { "Set-Cookie": cleared } },
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "403": error_ref("WrongPassword"),
                "503": error_ref("Unavailable"),
            },
        }},
    })
}

/// The routes of `usage.rs`: the usage log, its CSV export and daily totals.
fn usage_paths() -> Value {
    let who = "The operator sees every row; owners and admins, their organization's; members, the rows of \
        their own keys.";
    let filters = json!([
        { "name": "request_id", "in": "query", "schema": { "type": "string" },
          "description": "The request's `x-request-id`." },
        { "name": "model", "in": "query", "schema": { "type": "string" }, "description": "A public model id." },
        { "name": "key_id", "in": "query", "schema": { "type": "string" } },
        { "name": "team_id", "in": "query", "schema": { "type": "string" } },
        { "name": "user_id", "in": "query", "schema": { "type": "string" },
          "description": "The key's owner when the request was made." },
        { "name": "status", "in": "query", "schema": {
            "type": "string", "enum": ["all", "success", "error"], "default": "all" },
          "description": "`success`: HTTP status below 400; `error`: 400 and above." },
        { "name": "from", "in": "query", "schema": { "type": "string" },
          "description": "Rows at or after this time: RFC 3339, a `YYYY-MM-DD` date (midnight UTC) or Unix \
            milliseconds." },
        { "name": "to", "in": "query", "schema": { "type": "string" },
          "description": "Rows before this time (exclusive), in the forms `from` takes; not before `from`." },
    ]);
    let mut page_params = filters.as_array().cloned().unwrap_or_default();
    page_params.push(json!({ "$ref": "#/components/parameters/Cursor" }));
    page_params.push(json!({ "$ref": "#/components/parameters/Limit" }));
    json!({
        "/usage": { "get": {
            "tags": ["usage"],
            "operationId": "listUsage",
            "summary": "The usage log, newest first, one page at a time.",
            "description": who,
            "parameters": page_params,
            "responses": {
                "200": ok("One page of usage rows.", "UsagePage"),
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/usage.csv": { "get": {
            "tags": ["usage"],
            "operationId": "exportUsageCsv",
            "summary": "Every row the filters select, as CSV, newest first, streamed.",
            "description": format!("{who} A header row, then one record per row (RFC 4180: CRLF line ends, \
                fields with commas, quotes or line breaks quoted, quotes doubled). Text cells that a \
                spreadsheet would take for a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage \
                return) are prefixed with `'`. Money is `cost_usd` (six decimals) and `cost_micros`; times \
                RFC 3339. Filters are checked before the body starts; a failure after that cuts the body \
                short."),
            "parameters": filters,
            "responses": {
                "200": {
                    "description": format!("The export; columns: {}.", tollgate_service::CSV_COLUMNS.join(", ")),
                    "headers": { "Content-Disposition": {
                        "schema": { "type": "string" },
                        "example": "attachment; filename=\"usage.csv\"",
                    }},
                    "content": { "text/csv": { "schema": { "type": "string" } } },
                },
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/usage/daily": { "get": {
            "tags": ["usage"],
            "operationId": "usageDaily",
            "summary": "Totals per day (UTC), oldest first, every day of the range present: for charts.",
            "description": format!("{who} At most {max} days per call.", max = tollgate_service::MAX_DAILY_DAYS),
            "parameters": [
                { "name": "from", "in": "query", "schema": { "type": "string" },
                  "description": "The first day, `YYYY-MM-DD` (an RFC 3339 time or Unix milliseconds names its \
                    day); default: 29 days before `to`." },
                { "name": "to", "in": "query", "schema": { "type": "string" },
                  "description": "The last day, included; default: today." },
                { "name": "key_id", "in": "query", "schema": { "type": "string" } },
                { "name": "model", "in": "query", "schema": { "type": "string" } },
            ],
            "responses": {
                "200": ok("The days.", "UsageDayList"),
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/usage/{request_id}": { "get": {
            "tags": ["usage"],
            "operationId": "getUsage",
            "summary": "The row of one request: by the gateway's request id, or by the caller's own \
                `x-request-id` when one row carries it (400 naming the `request_id` filter when several do).",
            "description": who,
            "parameters": [{ "name": "request_id", "in": "path", "required": true, "schema": { "type": "string" },
                             "description": "The row's `request_id`, or the caller's `x-request-id`." }],
            "responses": {
                "200": ok("The row.", "UsageRow"),
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "404": error_ref("NotFound"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/auth-failures": { "get": {
            "tags": ["usage"],
            "operationId": "listAuthFailures",
            "summary": "Requests that named no known key, counted per source address and minute, newest minute \
                first, busiest address first (the usage log keeps only the first of each address and minute).",
            "description": format!("The operator only (they belong to no organization). Counts reach the database \
                within about 5 s. At most {max} rows per call.", max = tollgate_service::MAX_AUTH_FAILURE_ROWS),
            "parameters": [
                { "name": "from", "in": "query", "schema": { "type": "string" },
                  "description": "Inclusive: RFC 3339, `YYYY-MM-DD` or Unix milliseconds; default: 24 h before `to`." },
                { "name": "to", "in": "query", "schema": { "type": "string" },
                  "description": "Exclusive; default: now." },
                { "name": "limit", "in": "query",
                  "schema": { "type": "integer", "minimum": 1, "maximum": tollgate_service::MAX_AUTH_FAILURE_ROWS } },
            ],
            "responses": {
                "200": ok("The counts.", "AuthFailureList"),
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "403": error_ref("Forbidden"),
                "503": error_ref("Unavailable"),
            },
        }},
    })
}

fn usage_schemas() -> Value {
    let text = json!({ "type": ["string", "null"] });
    let count = json!({ "type": "integer", "minimum": 0 });
    let usd = json!({ "type": "number", "minimum": 0, "description": "USD, exact to six decimals." });
    let micros = json!({ "type": "integer", "minimum": 0, "description": "The same amount in micro-USD, exact." });
    json!({
        "UsageRow": {
            "type": "object",
            "description": "One `/v1` request.",
            "required": ["id", "request_id", "created_at", "org_id", "team_id", "user_id", "key_id", "key_name",
                "model", "provider", "endpoint", "status", "error_code", "error", "prompt_tokens",
                "completion_tokens", "total_tokens", "cost_usd", "cost_micros", "latency_ms", "ttft_ms", "stream",
                "client_ip", "billing_reason", "key_metadata", "attempts", "channel", "client_request_id",
                "excess_micros"],
            "properties": {
                "id": { "type": "string", "description": "The row's id." },
                "request_id": { "type": "string", "description": "The gateway's id of the request, unique per row." },
                "client_request_id": { "type": ["string", "null"],
                    "description": "The caller's own `x-request-id`, when it sent one (clients may reuse it)." },
                "created_at": { "type": "string", "format": "date-time" },
                "org_id": text,
                "team_id": text,
                "user_id": { "type": ["string", "null"], "description": "The key's owner." },
                "key_id": { "type": ["string", "null"],
                            "description": "`null` when the request was rejected before a key was identified." },
                "key_name": text,
                "model": text,
                "provider": text,
                "endpoint": { "type": "string", "examples": ["/v1/chat/completions"] },
                "status": { "type": "integer", "description": "The HTTP status the client got." },
                "error_code": { "type": ["string", "null"], "examples": ["rate_limit_exceeded"] },
                "error": { "type": ["string", "null"], "description": "The error message, when the request failed." },
                "prompt_tokens": count,
                "completion_tokens": count,
                "total_tokens": count,
                "cost_usd": usd,
                "cost_micros": micros,
                "excess_micros": { "type": "integer", "minimum": 0,
                    "description": "What the provider billed above the request's reservation, in micro-USD \
                                    (charged all the same; 0 within it)." },
                "latency_ms": count,
                "ttft_ms": { "type": ["integer", "null"], "minimum": 0, "description": "Time to first token (streams)." },
                "stream": { "type": "boolean" },
                "client_ip": text,
                "billing_reason": { "type": "string", "enum": ["completed", "estimated", "client_disconnected",
                    "upstream_interrupted", "not_billed", "shutdown_cut"] },
                "key_metadata": { "type": ["object", "null"],
                                  "description": "The key's metadata when the request was made." },
                "attempts": { "type": "integer", "minimum": 0,
                              "description": "Channels tried (failover); 0 when no upstream was called." },
                "channel": { "type": ["string", "null"], "examples": ["anthropic/claude-sonnet-4-5,openai/gpt-4o"],
                             "description": "The channels tried, in order, as `provider/upstream_model`, \
                                             comma-separated; the last answered (or failed last)." },
            },
        },
        "UsagePage": {
            "type": "object",
            "description": "One page of the usage log, newest first.",
            "required": ["data", "next_cursor"],
            "properties": {
                "data": { "type": "array", "items": { "$ref": "#/components/schemas/UsageRow" } },
                "next_cursor": { "type": ["string", "null"], "description": "`null` on the last page." },
            },
        },
        "UsageDay": {
            "type": "object",
            "required": ["day", "requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd", "cost_micros"],
            "properties": {
                "day": { "type": "string", "format": "date" },
                "requests": count,
                "errors": { "type": "integer", "minimum": 0, "description": "Requests answered 400 or above." },
                "prompt_tokens": count,
                "completion_tokens": count,
                "cost_usd": usd,
                "cost_micros": micros,
            },
        },
        "UsageDayList": {
            "type": "object",
            "required": ["data"],
            "properties": { "data": { "type": "array", "items": { "$ref": "#/components/schemas/UsageDay" } } },
        },
        "AuthFailure": {
            "type": "object",
            "required": ["minute", "client_ip", "failures"],
            "properties": {
                "minute": { "type": "string", "format": "date-time", "description": "The minute's start (UTC)." },
                "client_ip": { "type": "string", "description": "The source address; `other` for addresses past \
                    the data plane's bound (`[limits] auth_failure_addresses`), `unknown` for in-process calls." },
                "failures": { "type": "integer", "minimum": 1 },
            },
        },
        "AuthFailureList": {
            "type": "object",
            "required": ["data"],
            "properties": { "data": { "type": "array", "items": { "$ref": "#/components/schemas/AuthFailure" } } },
        },
    })
}

/// Every operation that takes credentials and changes something may answer 403 to a
/// session-cookie request without the right `x-csrf-token`: `CsrfRejected` where the
/// operation documents no 403 of its own (the other 403 answers say so too).
fn csrf_guarded(mut paths: Value) -> Value {
    for item in paths.as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
        for method in ["post", "put", "patch", "delete"] {
            let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) else { continue };
            if op.contains_key("security") {
                continue;
            }
            if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
                responses.entry("403").or_insert_with(|| error_ref("CsrfRejected"));
            }
        }
    }
    paths
}

fn parameters() -> Value {
    json!({
        "KeyId": { "name": "id", "in": "path", "required": true, "schema": { "type": "string" },
                   "description": "The key's id (`key_…`)." },
        "Cursor": { "name": "cursor", "in": "query", "schema": { "type": "string" },
                    "description": "The `next_cursor` of the previous page, with the same filters and order." },
        "TeamId": { "name": "id", "in": "path", "required": true, "schema": { "type": "string" },
                    "description": "The team's id (`team_…`)." },
        "UserId": { "name": "id", "in": "path", "required": true, "schema": { "type": "string" },
                    "description": "The user's id (`usr_…`)." },
        "MemberId": { "name": "user_id", "in": "path", "required": true, "schema": { "type": "string" },
                      "description": "The user's id (`usr_…`)." },
        "TokenId": { "name": "id", "in": "path", "required": true, "schema": { "type": "string" },
                     "description": "The token's id (`pat_…`)." },
        "Limit": { "name": "limit", "in": "query",
                   "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
    })
}

fn responses() -> Value {
    let error = |description: &str| json!({ "description": description, "content": json_content("Error") });
    json!({
        "BadRequest": error("Invalid input; `param` names the field."),
        "Unauthorized": error("Missing or invalid token, or no live session cookie."),
        "Forbidden": error("The caller's role may not do this; or a write with the session cookie lacks the \
            session's `x-csrf-token`."),
        "WrongPassword": error("The password given is wrong; or a write with the session cookie lacks the \
            session's `x-csrf-token`."),
        "CsrfRejected": error("A write with the session cookie lacks the session's `x-csrf-token`."),
        "NotFound": error("No such object, or not visible to the caller."),
        "Conflict": error("Conflicts with the current state (an `Idempotency-Key` reused after a later rotation)."),
        "Taken": error("An object with these values already exists (an email, a team name in the organization)."),
        "WrongCredentials": error("Wrong email or password, or a user without an organization."),
        "TooManySignIns": {
            "description": "Too many failed sign-ins for this email from this address; wait `Retry-After` seconds.",
            "headers": { "Retry-After": { "schema": { "type": "integer", "minimum": 1 } } },
            "content": json_content("Error"),
        },
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
            "properties": {
                "grace_seconds": {
                    "type": "integer", "minimum": 0, "maximum": 604_800, "default": 0,
                    "description": "How long the old secret keeps working (at most 7 days).",
                },
                "password": {
                    "type": "string",
                    "description": "Required with the session cookie (the dashboard asks the person for it again): \
                        missing is a 400, wrong a 403, both with `param` `password`; failures are throttled like \
                        sign-ins. Tokens need none.",
                },
            },
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
        "KeyReveal": {
            "type": "object",
            "additionalProperties": false,
            "description": "An empty body is the same as `{}`.",
            "properties": { "password": {
                "type": ["string", "null"],
                "description": "The caller's own password: required of users, ignored for the operator.",
            }},
        },
        "RevealedKey": {
            "type": "object",
            "required": ["key"],
            "properties": { "key": { "type": "string", "description": "The key's current secret." } },
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
            "required": ["status", "snapshot_loaded_and_serving", "store", "redis"],
            "properties": {
                "status": { "type": "string", "enum": ["ready", "degraded", "not_ready"],
                            "description": "`degraded` (still 200): Redis is unreachable and this instance \
                                enforces its own share of the rate limits." },
                "snapshot_loaded_and_serving": { "type": "boolean" },
                "store": { "type": "string", "enum": ["ok", "unreachable"] },
                "redis": { "type": "string", "enum": ["ok", "unreachable", "not_configured"] },
            },
        },
    })
}

/// The views and bodies of `tenancy.rs`.
fn tenancy_schemas() -> Value {
    let time = json!({ "type": "string", "format": "date-time" });
    let role = json!({ "$ref": "#/components/schemas/Role" });
    let list = |item: &str, description: &str| {
        json!({
            "type": "object",
            "description": description,
            "required": ["data"],
            "properties": { "data": { "type": "array", "items": { "$ref": format!("#/components/schemas/{item}") } } },
        })
    };
    let with_secret = |schema: &str, field: &str, description: &str| {
        json!({ "allOf": [
            { "$ref": format!("#/components/schemas/{schema}") },
            { "type": "object", "properties": { field: { "type": "string", "description": description } } },
        ]})
    };
    let expires_in = json!({
        "type": ["string", "null"], "enum": ["never", "30d", "60d", "90d", "180d", "365d", "1y", null],
        "description": "A preset counted from now. Absent, `null` or `never`: the token does not expire.",
    });
    let email = json!({ "type": "string", "format": "email", "maxLength": 254,
                        "description": "Trimmed and lower-cased; unique across the deployment." });
    let password = |description: &str| {
        json!({ "type": ["string", "null"], "minLength": 12,
                "description": format!("At least 12 characters. {description}") })
    };
    let token_name = json!({ "type": "string", "minLength": 1, "maxLength": 128, "description": "Trimmed." });
    let team_name = json!({ "type": "string", "minLength": 1, "maxLength": 64,
                            "description": "Trimmed; unique in the organization." });
    let models = |description: &str| {
        json!({ "type": ["array", "null"], "items": { "type": "string", "minLength": 1, "maxLength": 256 },
                "description": format!("Model ids (trimmed, duplicates dropped); empty: every model the \
                    organization serves. {description}") })
    };
    json!({
        "Role": {
            "type": "string",
            "enum": ["owner", "admin", "member"],
            "description": "Owners and admins manage the organization; only owners change roles and grant \
                `owner`; members manage their own keys in their own teams.",
        },
        "Me": {
            "type": "object",
            "required": ["actor", "org_id", "role", "team_ids"],
            "properties": {
                "actor": { "type": "string", "description": "The user's id, or `admin-token` for the operator." },
                "org_id": { "type": ["string", "null"], "description": "`null` for the operator." },
                "role": { "anyOf": [role, { "type": "null" }], "description": "`null` for the operator." },
                "team_ids": { "type": "array", "items": { "type": "string" },
                              "description": "The user's teams; empty for the operator." },
            },
        },
        "Organization": {
            "type": "object",
            "required": ["id", "name", "created_at"],
            "properties": {
                "id": { "type": "string" },
                "name": { "type": "string" },
                "created_at": time,
            },
        },
        "OrganizationList": list("Organization", "All the organizations the caller sees."),
        "OrganizationCreate": {
            "type": "object",
            "required": ["name", "owner_email"],
            "additionalProperties": false,
            "properties": {
                "name": { "type": "string", "minLength": 1, "maxLength": 128, "description": "Trimmed." },
                "owner_email": email,
                "owner_password": password("Absent or `null`: generated, and returned this once."),
            },
        },
        "OrganizationCreated": with_secret("Organization", "owner_password",
            "Only when the password was generated: the owner's password, shown this once."),
        "Member": {
            "type": "object",
            "description": "A user as a member of an organization.",
            "required": ["id", "email", "role", "created_at"],
            "properties": {
                "id": { "type": "string" },
                "email": { "type": "string" },
                "role": role,
                "created_at": time,
            },
        },
        "MemberList": list("Member", "All the members, by email."),
        "MemberCreated": with_secret("Member", "password",
            "Only when the password was generated: the user's password, shown this once."),
        "UserCreate": {
            "type": "object",
            "required": ["email"],
            "additionalProperties": false,
            "properties": {
                "email": email,
                "password": password("Absent or `null`: generated, and returned this once."),
                "role": { "anyOf": [role, { "type": "null" }], "description": "Absent or `null`: `member`." },
                "team_ids": { "type": "array", "items": { "type": "string" },
                              "description": "Teams of the organization to join; default: none." },
            },
        },
        "UserPatch": {
            "type": "object",
            "required": ["role"],
            "additionalProperties": false,
            "properties": { "role": role },
        },
        "Team": {
            "type": "object",
            "required": ["id", "org_id", "name", "allowed_models", "budget_usd", "rpm", "tpm", "token_quota", "created_at"],
            "properties": {
                "id": { "type": "string" },
                "org_id": { "type": "string", "description": "The team's organization." },
                "name": { "type": "string" },
                "allowed_models": { "type": "array", "items": { "type": "string" },
                                    "description": "Empty: every model the organization serves." },
                "budget_usd": { "type": ["number", "null"], "minimum": 0,
                                "description": "The team's budget in USD (a pool shared by its keys); no key of the team may have a larger one." },
                "rpm": { "type": ["integer", "null"], "minimum": 1, "description": "Team-wide requests per minute; caps every key's rpm." },
                "tpm": { "type": ["integer", "null"], "minimum": 1, "description": "Team-wide tokens per minute; caps every key's tpm." },
                "token_quota": { "type": ["integer", "null"], "minimum": 1, "description": "Team-wide token quota; caps every key's quota." },
                "created_at": time,
            },
        },
        "TeamList": list("Team", "The teams the caller sees."),
        "TeamCreate": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": {
                "name": team_name,
                "allowed_models": models("Absent or `null`: empty."),
                "budget_usd": { "type": ["number", "null"], "minimum": 0,
                                "description": "The team's budget in USD (a pool shared by its keys); no key of the team may have a larger one." },
                "rpm": { "type": ["integer", "null"], "minimum": 1, "description": "Team-wide requests per minute; caps every key's rpm." },
                "tpm": { "type": ["integer", "null"], "minimum": 1, "description": "Team-wide tokens per minute; caps every key's tpm." },
                "token_quota": { "type": ["integer", "null"], "minimum": 1, "description": "Team-wide token quota; caps every key's quota." },
            },
        },
        "TeamPatch": {
            "type": "object",
            "additionalProperties": false,
            "description": "Fields left out, or `null`, keep their value.",
            "properties": {
                "name": { "type": ["string", "null"], "minLength": 1, "maxLength": 64,
                          "description": "Trimmed; unique in the organization." },
                "allowed_models": models("Replaces the list."),
                "budget_usd": { "type": ["number", "null"], "minimum": 0,
                                "description": "`null` clears. The team's budget in USD (a pool shared by its keys); no key of the team may have a larger one." },
                "rpm": { "type": ["integer", "null"], "minimum": 1, "description": "`null` clears. Team-wide requests per minute; caps every key's rpm." },
                "tpm": { "type": ["integer", "null"], "minimum": 1, "description": "`null` clears. Team-wide tokens per minute; caps every key's tpm." },
                "token_quota": { "type": ["integer", "null"], "minimum": 1, "description": "`null` clears. Team-wide token quota; caps every key's quota." },
            },
        },
        "TeamMemberAdd": {
            "type": "object",
            "required": ["user_id"],
            "additionalProperties": false,
            "properties": { "user_id": { "type": "string", "description": "A member of the team's organization." } },
        },
        "Token": {
            "type": "object",
            "description": "A personal access token as the API shows it: never the secret.",
            "required": ["id", "name", "preview", "created_at", "expires_at"],
            "properties": {
                "id": { "type": "string" },
                "name": { "type": "string" },
                "preview": { "type": "string", "description": "The prefix and the last four characters.",
                             "examples": ["tgp_…WXYZ"] },
                "created_at": time,
                "expires_at": { "type": ["string", "null"], "format": "date-time", "description": "`null`: never." },
            },
        },
        "TokenList": list("Token", "The caller's tokens."),
        "TokenWithSecret": {
            "allOf": [
                { "$ref": "#/components/schemas/Token" },
                { "type": "object", "required": ["token"],
                  "properties": { "token": { "type": "string", "description": "The secret (`tgp_…`), shown this once." } } },
            ],
        },
        "TokenCreate": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": { "name": token_name, "expires_in": expires_in },
        },
        "LogIn": {
            "type": "object",
            "required": ["email", "password"],
            "additionalProperties": false,
            "properties": { "email": { "type": "string" }, "password": { "type": "string" } },
        },
        "Session": {
            "type": "object",
            "description": "The signed-in user; the session itself is in the cookie.",
            "required": ["user_id", "org_id", "role", "csrf_token"],
            "properties": {
                "user_id": { "type": "string" },
                "org_id": { "type": "string" },
                "role": role,
                "csrf_token": { "type": "string", "description": "Send it in `x-csrf-token` with every request \
                    made with the cookie that changes something; it lasts as long as the session." },
            },
        },
        "PasswordChange": {
            "type": "object",
            "required": ["current_password", "new_password"],
            "additionalProperties": false,
            "properties": {
                "current_password": { "type": "string" },
                "new_password": { "type": "string", "minLength": 12, "description": "At least 12 characters." },
            },
        },
        "SignIn": {
            "type": "object",
            "required": ["email", "password", "name"],
            "additionalProperties": false,
            "properties": {
                "email": { "type": "string" },
                "password": { "type": "string" },
                "name": { "type": "string", "minLength": 1, "maxLength": 128,
                          "description": "A name for the new token, trimmed (e.g. the machine it is for)." },
                "expires_in": expires_in,
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

/// `a` with the entries of `b` added (both JSON objects).
fn merged(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
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
