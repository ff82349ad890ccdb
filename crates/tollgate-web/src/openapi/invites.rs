//! The document's part for `invites.rs`: invitations (`/invites`) and the public sign-up
//! (`POST /auth/signup`) with the sign-up policy that governs it.

use serde_json::{Value, json};
use tollgate_service::{DEFAULT_INVITE_TTL_HOURS, MAX_INVITE_TTL_HOURS, SESSION_TTL_MS};

use super::{body, error_ref, ok};

pub(super) fn paths() -> Value {
    let managers = "Owners and admins of the organization, and the operator (for the first organization); \
        members get 403.";
    json!({
        "/invites": {
            "get": {
                "tags": ["invites"],
                "operationId": "listInvites",
                "summary": "The organization's pending invitations (not used, not expired), newest first; never \
                    their tokens.",
                "description": managers,
                "responses": {
                    "200": ok("The invitations.", "InviteList"),
                    "401": error_ref("Unauthorized"),
                    "403": error_ref("Forbidden"),
                    "503": error_ref("Unavailable"),
                },
            },
            "post": {
                "tags": ["invites"],
                "operationId": "createInvite",
                "summary": "Invite someone into the caller's organization with a role and optionally a team; the \
                    token is shown this once.",
                "description": format!("{managers} The role is `member` (default) or `admin`; only owners (and \
                    the operator) invite admins, others get 403; `owner` answers 400. An invitation works once \
                    and expires after `ttl_hours` (default {DEFAULT_INVITE_TTL_HOURS}). With `email`, only that \
                    address may use it. A team of another organization answers 404."),
                "requestBody": body(true, "InviteCreate"),
                "responses": {
                    "201": ok("The invitation, its token and the dashboard's sign-up link.", "InviteWithToken"),
                    "400": error_ref("BadRequest"),
                    "401": error_ref("Unauthorized"),
                    "403": error_ref("Forbidden"),
                    "404": error_ref("NotFound"),
                    "503": error_ref("Unavailable"),
                },
            },
        },
        "/invites/{id}": { "delete": {
            "tags": ["invites"],
            "operationId": "revokeInvite",
            "summary": "Revoke a pending invitation: its token stops working at once.",
            "description": format!("{managers} A used invitation, or another organization's, answers 404."),
            "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" },
                             "description": "The invitation's id (`inv_…`)." }],
            "responses": {
                "204": { "description": "Revoked." },
                "401": error_ref("Unauthorized"),
                "403": error_ref("Forbidden"),
                "404": error_ref("NotFound"),
                "503": error_ref("Unavailable"),
            },
        }},
        "/auth/signup": { "post": {
            "tags": ["sessions"],
            "operationId": "signUp",
            "summary": "Create an account under the server's sign-up policy, and sign it in.",
            "description": format!("No credentials needed. The policy is the server's `[auth] signup`: \
                `closed` (the default) has no public sign-up (403 without an invitation) but invitations still \
                work; `invite` needs an invitation (400 with `param` `invite` without one); `open` gives \
                someone without an invitation a workspace of their own (a new organization named `name`, with \
                a `default` team) as its owner. With a valid invitation the user joins its organization with \
                its role and team, under every policy; an invitation naming an email accepts only that email \
                (400, `param` `email`). An unknown, expired, revoked or used invitation answers 400 with \
                `param` `invite`; an email already registered answers 409. Those two failures count against \
                the sign-in throttle of the caller's address (429 after 5 in 15 minutes). On success, as \
                `POST /auth/login`: the `tg_session` cookie for {hours} hours and the `csrf_token`.",
                hours = SESSION_TTL_MS / 3_600_000),
            "security": [],
            "requestBody": body(true, "SignUp"),
            "responses": {
                "201": {
                    "description": "Signed up and signed in.",
                    "headers": { "Set-Cookie": {
                        "description": "The session cookie, as `POST /auth/login` sets it.",
                        "schema": { "type": "string" },
                    }},
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/SignedUp" } } },
                },
                "400": error_ref("BadRequest"),
                "403": error_ref("Forbidden"),
                "409": error_ref("Taken"),
                "429": error_ref("TooManySignIns"),
                "503": error_ref("Unavailable"),
            },
        }},
    })
}

pub(super) fn schemas() -> Value {
    let time = json!({ "type": "string", "format": "date-time" });
    let role = json!({ "$ref": "#/components/schemas/Role" });
    json!({
        "Invite": {
            "type": "object",
            "description": "A pending invitation (never its token).",
            "required": ["id", "org_id", "email", "role", "team_id", "created_by", "created_at", "expires_at"],
            "properties": {
                "id": { "type": "string", "description": "`inv_…`." },
                "org_id": { "type": "string" },
                "email": { "type": ["string", "null"], "description": "Only this address may use it; `null`: \
                    anyone with the token." },
                "role": role,
                "team_id": { "type": ["string", "null"], "description": "The team the new user joins." },
                "created_by": { "type": "string", "description": "The inviter: a user id, or `admin-token`." },
                "created_at": time,
                "expires_at": time,
            },
        },
        "InviteWithToken": {
            "allOf": [
                { "$ref": "#/components/schemas/Invite" },
                { "type": "object", "required": ["token", "url"], "properties": {
                    "token": { "type": "string", "description": "`tgi_…`: shown this once, stored as a digest." },
                    "url": { "type": "string", "description": "The dashboard's sign-up page with the token \
                        filled in (a path on this server): `/dashboard/signup?invite=…`." },
                }},
            ],
        },
        "InviteList": {
            "type": "object",
            "required": ["data"],
            "properties": { "data": { "type": "array", "items": { "$ref": "#/components/schemas/Invite" } } },
        },
        "InviteCreate": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "email": { "type": ["string", "null"], "format": "email",
                           "description": "Trimmed and lower-cased; absent: anyone holding the token." },
                "role": { "type": ["string", "null"], "enum": ["admin", "member", null],
                          "description": "Default `member`; `admin` only from owners and the operator." },
                "team_id": { "type": ["string", "null"], "description": "A team of the organization to join." },
                "ttl_hours": { "type": ["integer", "null"], "minimum": 1, "maximum": MAX_INVITE_TTL_HOURS,
                               "description": format!("Default {DEFAULT_INVITE_TTL_HOURS} (7 days).") },
            },
        },
        "SignUp": {
            "type": "object",
            "additionalProperties": false,
            "required": ["email", "password"],
            "properties": {
                "email": { "type": "string", "format": "email", "maxLength": 254,
                           "description": "Trimmed and lower-cased; unique across the deployment." },
                "password": { "type": "string", "minLength": 12, "description": "At least 12 characters." },
                "name": { "type": ["string", "null"], "maxLength": 128, "description": "The new workspace's name \
                    (open sign-up without an invitation; default `<name>'s workspace` from the email). Not used \
                    with an invitation." },
                "invite": { "type": ["string", "null"], "description": "An invitation token (`tgi_…`)." },
            },
        },
        "SignedUp": {
            "type": "object",
            "description": "The new user, signed in; the session itself is in the cookie.",
            "required": ["user_id", "email", "org_id", "role", "team_ids", "csrf_token"],
            "properties": {
                "user_id": { "type": "string" },
                "email": { "type": "string" },
                "org_id": { "type": "string" },
                "role": role,
                "team_ids": { "type": "array", "items": { "type": "string" } },
                "csrf_token": { "type": "string", "description": "Send it in `x-csrf-token` with every request \
                    made with the cookie that changes something." },
            },
        },
    })
}
