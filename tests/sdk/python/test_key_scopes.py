"""Key lifecycle and scopes, seen through the official OpenAI Python SDK.

Each test makes its own key with the management API (bearer TOLLGATE_ADMIN_TOKEN), then
checks that the SDK raises the exception class, HTTP status, `type` and `code` of the
errors table in PRODUCT §3 — and that what the key *may* do still works.

A running gateway applies every key change within ~250 ms through its change feed, so a
change is observed by polling (deadline 2 s), never by a fixed sleep. The only waits on
the clock are for an expiry or a rotation grace that the test itself set.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

import httpx2
import openai
import pytest
from openai import OpenAI

BASE_URL = os.environ["TOLLGATE_BASE_URL"]
API_KEY = os.environ["TOLLGATE_API_KEY"]
GATEWAY_URL = os.environ["TOLLGATE_GATEWAY_URL"]
ADMIN_TOKEN = os.environ["TOLLGATE_ADMIN_TOKEN"]

PROMPT = "Say hello to the SDK"
DEMO_REPLY = (
    "Hello! This is the Tollgate demo model, answering locally without any provider "
    "account. You said: Say hello to the SDK"
)
FAKE_REPLY = "Hello from the fake upstream."

PROPAGATION = 2.0  # seconds a key change may take to reach the data plane (it should take ~0.25)
POLL = 0.05

# The errors table (PRODUCT §3): exception class, HTTP status, type, code.
INVALID_API_KEY = (openai.AuthenticationError, 401, "authentication_error", "invalid_api_key")
KEY_EXPIRED = (openai.AuthenticationError, 401, "authentication_error", "key_expired")
KEY_DISABLED = (openai.AuthenticationError, 401, "authentication_error", "key_disabled")
IP_NOT_ALLOWED = (openai.AuthenticationError, 401, "authentication_error", "ip_not_allowed")
ENDPOINT_NOT_ALLOWED = (openai.PermissionDeniedError, 403, "permission_error", "endpoint_not_allowed")
PROVIDER_NOT_ALLOWED = (openai.PermissionDeniedError, 403, "permission_error", "provider_not_allowed")
MODEL_NOT_FOUND = (openai.NotFoundError, 404, "invalid_request_error", "model_not_found")

OK = "ok"  # the outcome of a call that succeeded

_created: list[str] = []  # ids of the keys the running test made


@pytest.fixture(autouse=True)
def _delete_created_keys():
    """Leaves the gateway's key list as the other test files expect it."""
    yield
    while _created:
        status, body = admin("DELETE", f"/keys/{_created.pop()}")
        assert status in (204, 404), body


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def admin(
    method: str, path: str, payload: object | None = None, headers: dict[str, str] | None = None
) -> tuple[int, object]:
    """A management API call with the admin token: status and decoded JSON (None if empty)."""
    hdrs = {"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json", **(headers or {})}
    body = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(f"{GATEWAY_URL}/api/v1{path}", data=body, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            status, raw = res.status, res.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    return status, (json.loads(raw) if raw else None)


def create_key(**fields: object) -> dict:
    """Creates a key (a unique name is added) and returns the 201 body, with `key` the secret."""
    payload = {"name": f"scopes-{uuid.uuid4().hex[:8]}", **fields}
    status, body = admin("POST", "/keys", payload)
    assert status == 201, (payload, body)
    assert isinstance(body, dict) and body["key"].startswith("sk-tg-"), body
    _created.append(body["id"])
    return body


def rotate(key_id: str, grace_seconds: int, idempotency_key: str | None = None) -> dict:
    headers = {} if idempotency_key is None else {"idempotency-key": idempotency_key}
    status, body = admin("POST", f"/keys/{key_id}/rotate", {"grace_seconds": grace_seconds}, headers)
    assert status == 200, body
    assert isinstance(body, dict) and body["id"] == key_id and body["key"].startswith("sk-tg-"), body
    return body


def sdk(secret: str) -> OpenAI:
    """The SDK with its defaults (connection reuse included), except retries: off, so
    that every error is seen. A rejection before the request body has arrived answers
    `Connection: close`, so a pooled connection is never reused after one (the last
    test in this file checks that on a raw socket)."""
    return OpenAI(base_url=BASE_URL, api_key=secret, max_retries=0, timeout=30)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def chat(client: OpenAI, model: str = "demo-chat", stream: bool = False) -> str:
    """A chat completion; returns the assistant's text (a stream is read to its end)."""
    if stream:
        chunks = client.chat.completions.create(model=model, messages=user(PROMPT), stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return client.chat.completions.create(model=model, messages=user(PROMPT)).choices[0].message.content or ""


Outcome = object  # OK, or the openai.APIStatusError that the call raised


def outcome(call: Callable[[], object]) -> Outcome:
    try:
        call()
    except openai.APIStatusError as err:
        return err
    return OK


def shape(out: Outcome) -> object:
    """What an outcome looks like for comparison: OK, or (status, code)."""
    return OK if out == OK else (out.status_code, out.code)  # type: ignore[union-attr]


def await_change(call: Callable[[], object], before: object, timeout: float = PROPAGATION) -> Outcome:
    """Repeats `call` while its outcome still has the shape `before` (the state before a key
    change reached the gateway); returns the first other outcome, or the last at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        out = outcome(call)
        if shape(out) != before or time.monotonic() >= deadline:
            return out
        time.sleep(POLL)


def await_ok(call: Callable[[], object], before: object = (401, "invalid_api_key")) -> None:
    """Waits until `call` succeeds (a new or changed key has reached the data plane)."""
    out = await_change(call, before)
    assert out == OK, f"expected success, got {shape(out)}: {out}"


def assert_error(out: Outcome, expected: tuple[type, int, str, str]) -> None:
    cls, status, err_type, code = expected
    assert out != OK, f"expected {code}, but the call succeeded"
    assert isinstance(out, cls), f"expected {cls.__name__}, got {type(out).__name__}: {out}"
    assert out.status_code == status, out  # type: ignore[union-attr]
    assert out.code == code, out  # type: ignore[union-attr]
    assert out.type == err_type, out  # type: ignore[union-attr]
    assert isinstance(out.body, dict) and out.body["code"] == code, out.body  # type: ignore[union-attr]
    assert out.request_id, "an error must carry x-request-id"  # type: ignore[union-attr]


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------
# Status and expiry
# ---------------------------------------------------------------------------------------


def test_expired_key_is_key_expired() -> None:
    expires_at = (time.time_ns() // 1_000_000 + 2000) / 1000  # whole milliseconds, as stored
    created = create_key(expires_at=rfc3339(expires_at))
    assert created["expires_at"] is not None and created["status"] == "active", created
    client = sdk(created["key"])
    await_ok(lambda: chat(client))

    # Works until the expiry, then fails: the first failure may not come before it, and
    # no request started after it may succeed.
    last_ok_started = None
    deadline = expires_at + PROPAGATION
    while True:
        started = time.time()
        out = outcome(lambda: chat(client))
        if out != OK:
            failed_at = time.time()
            break
        last_ok_started = started
        assert time.time() < deadline, "the key still works 2 s after its expiry"
        time.sleep(POLL)
    assert last_ok_started is not None and last_ok_started < expires_at
    assert failed_at >= expires_at, f"failed {expires_at - failed_at:.3f} s before its expiry"
    assert_error(out, KEY_EXPIRED)
    # Streaming is refused the same way, at the create call.
    assert_error(outcome(lambda: chat(client, stream=True)), KEY_EXPIRED)

    status, body = admin("GET", f"/keys/{created['id']}")
    assert status == 200 and body["status"] == "expired", body  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_disabled_key_is_key_disabled_until_enabled(stream: bool) -> None:
    created = create_key()
    client = sdk(created["key"])
    await_ok(lambda: chat(client, stream=stream))

    status, body = admin("POST", f"/keys/{created['id']}/disable")
    assert status == 200 and body["status"] == "inactive", body  # type: ignore[index]
    assert_error(await_change(lambda: chat(client, stream=stream), OK), KEY_DISABLED)
    # Every endpoint, listing models included, is refused.
    assert_error(outcome(lambda: client.models.list()), KEY_DISABLED)
    assert_error(outcome(lambda: client.embeddings.create(model="demo-embed", input="hi")), KEY_DISABLED)

    status, body = admin("POST", f"/keys/{created['id']}/enable")
    assert status == 200 and body["status"] == "active", body  # type: ignore[index]
    await_ok(lambda: chat(client, stream=stream), before=(401, "key_disabled"))
    assert chat(client, stream=stream) == DEMO_REPLY


def test_revoked_key_is_invalid_api_key() -> None:
    created = create_key()
    client = sdk(created["key"])
    await_ok(lambda: chat(client))

    status, body = admin("POST", f"/keys/{created['id']}/revoke")
    assert status == 200 and body["status"] == "revoked", body  # type: ignore[index]
    assert_error(await_change(lambda: chat(client), OK), INVALID_API_KEY)
    assert_error(outcome(lambda: chat(client, stream=True)), INVALID_API_KEY)

    # Revocation is terminal: enabling it again is refused and changes nothing.
    status, body = admin("POST", f"/keys/{created['id']}/enable")
    assert status == 400, body
    assert body["error"]["param"] == "status", body  # type: ignore[index]
    assert_error(outcome(lambda: chat(client)), INVALID_API_KEY)


def test_deleted_key_is_invalid_api_key() -> None:
    created = create_key()
    client = sdk(created["key"])
    await_ok(lambda: chat(client))

    status, body = admin("DELETE", f"/keys/{created['id']}")
    assert status == 204, body
    assert_error(await_change(lambda: chat(client), OK), INVALID_API_KEY)
    assert_error(outcome(lambda: client.models.list()), INVALID_API_KEY)
    status, body = admin("GET", f"/keys/{created['id']}")
    assert status == 404, body


# ---------------------------------------------------------------------------------------
# IP allowlist
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_ip_outside_allowlist_is_ip_not_allowed(stream: bool) -> None:
    created = create_key(ip_allowlist=["10.11.12.0/24"])
    client = sdk(created["key"])
    out = await_change(lambda: chat(client, stream=stream), (401, "invalid_api_key"))
    assert_error(out, IP_NOT_ALLOWED)
    assert_error(outcome(lambda: client.models.list()), IP_NOT_ALLOWED)
    # The gateway trusts no proxy here, so a forged X-Forwarded-For changes nothing.
    forged = client.with_options(default_headers={"x-forwarded-for": "10.11.12.13"})
    assert_error(outcome(lambda: chat(forged, stream=stream)), IP_NOT_ALLOWED)


def test_ip_inside_allowlist_works() -> None:
    created = create_key(ip_allowlist=["10.11.12.0/24", "127.0.0.0/8", "::1"])
    client = sdk(created["key"])
    await_ok(lambda: chat(client))
    assert chat(client) == DEMO_REPLY


# ---------------------------------------------------------------------------------------
# Endpoint, provider and model scopes
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_endpoint_not_allowed(stream: bool) -> None:
    created = create_key(allowed_endpoints=["/v1/embeddings"])
    client = sdk(created["key"])
    embed = lambda: client.embeddings.create(model="demo-embed", input="the quick brown fox")  # noqa: E731
    await_ok(embed)

    res = embed()
    assert res.model == "demo-embed"
    assert len(res.data) == 1 and len(res.data[0].embedding) == 256

    assert_error(outcome(lambda: chat(client, stream=stream)), ENDPOINT_NOT_ALLOWED)
    assert_error(
        outcome(lambda: client.completions.create(model="demo-chat", prompt=PROMPT, stream=stream)),
        ENDPOINT_NOT_ALLOWED,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_provider_not_allowed(stream: bool) -> None:
    created = create_key(allowed_providers=["demo"])
    client = sdk(created["key"])
    await_ok(lambda: chat(client, stream=stream))
    assert chat(client, stream=stream) == DEMO_REPLY

    assert_error(outcome(lambda: chat(client, model="gpt-4o-mini", stream=stream)), PROVIDER_NOT_ALLOWED)
    assert_error(
        outcome(lambda: client.embeddings.create(model="text-embedding-3-small", input="hi")),
        PROVIDER_NOT_ALLOWED,
    )
    # Only what the key may use is listed.
    assert sorted(m.id for m in client.models.list()) == ["demo-chat", "demo-embed"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_model_outside_scope_is_not_found(stream: bool) -> None:
    created = create_key(model_scope="list", models=["demo-chat"])
    client = sdk(created["key"])
    await_ok(lambda: chat(client, stream=stream))
    assert chat(client, stream=stream) == DEMO_REPLY

    # Outside the scope, a model does not exist for this key: same answer as an unknown one.
    assert_error(outcome(lambda: chat(client, model="gpt-4o-mini", stream=stream)), MODEL_NOT_FOUND)
    assert_error(outcome(lambda: chat(client, model="no-such-model", stream=stream)), MODEL_NOT_FOUND)
    assert_error(outcome(lambda: client.embeddings.create(model="demo-embed", input="hi")), MODEL_NOT_FOUND)
    assert_error(outcome(lambda: client.models.retrieve("gpt-4o-mini")), MODEL_NOT_FOUND)

    assert [m.id for m in client.models.list()] == ["demo-chat"]
    assert client.models.retrieve("demo-chat").id == "demo-chat"


def test_unrestricted_key_still_reaches_every_provider() -> None:
    # The control for the scope tests above: the harness key is not restricted.
    client = sdk(API_KEY)
    assert chat(client, model="gpt-4o-mini") == FAKE_REPLY
    assert chat(client, model="demo-chat") == DEMO_REPLY


# ---------------------------------------------------------------------------------------
# Rotation
# ---------------------------------------------------------------------------------------


def test_rotation_without_grace_stops_the_old_secret_at_once() -> None:
    created = create_key()
    old = sdk(created["key"])
    await_ok(lambda: chat(old))

    rotated = rotate(created["id"], 0)
    assert rotated["key"] != created["key"]
    assert rotated["previous_secret_expires_at"] is None, rotated
    new = sdk(rotated["key"])

    await_ok(lambda: chat(new))
    # Once the new secret is accepted, the old one is already gone (same snapshot).
    assert_error(outcome(lambda: chat(old)), INVALID_API_KEY)
    assert_error(outcome(lambda: chat(old, stream=True)), INVALID_API_KEY)
    assert chat(new, stream=True) == DEMO_REPLY


def test_rotation_with_grace_keeps_the_old_secret_for_the_grace() -> None:
    created = create_key()
    old = sdk(created["key"])
    await_ok(lambda: chat(old))

    rotate_started = time.time()
    rotated = rotate(created["id"], 2)
    assert rotated["key"] != created["key"]
    assert rotated["previous_secret_expires_at"] is not None, rotated
    new = sdk(rotated["key"])

    await_ok(lambda: chat(new))
    # Both secrets work during the grace...
    assert time.time() < rotate_started + 2.0, "the rotation took the whole grace to apply"
    assert chat(old) == DEMO_REPLY
    # ...then the old one stops, not before the grace is over.
    out = await_change(lambda: chat(old), OK, timeout=2.0 + PROPAGATION)
    failed_at = time.time()
    assert_error(out, INVALID_API_KEY)
    assert failed_at >= rotate_started + 2.0, f"old secret stopped {rotate_started + 2.0 - failed_at:.3f} s early"
    assert chat(new) == DEMO_REPLY


def test_rotation_with_the_same_idempotency_key_returns_the_same_secret() -> None:
    created = create_key()
    original = sdk(created["key"])
    await_ok(lambda: chat(original))

    idem = f"rotate-{uuid.uuid4().hex}"
    first = rotate(created["id"], 0, idem)
    second = rotate(created["id"], 0, idem)
    assert first["key"] == second["key"]
    assert first["key"] != created["key"]

    new = sdk(first["key"])
    await_ok(lambda: chat(new))
    assert_error(outcome(lambda: chat(original)), INVALID_API_KEY)

    # The retry did not rotate again: one rotation in the audit log.
    query = urllib.parse.urlencode({"target": created["id"], "action": "key.rotate"})
    status, body = admin("GET", f"/audit?{query}")
    assert status == 200, body
    assert len(body["data"]) == 1, body  # type: ignore[index]

    # A different idempotency key is a different rotation with a different secret.
    third = rotate(created["id"], 0, f"rotate-{uuid.uuid4().hex}")
    assert third["key"] not in (created["key"], first["key"])
    newest = sdk(third["key"])
    await_ok(lambda: chat(newest))
    assert_error(outcome(lambda: chat(new)), INVALID_API_KEY)


# ---------------------------------------------------------------------------------------
# A rejected request must not leave the client a dead pooled connection
# ---------------------------------------------------------------------------------------


def _read_response(sock: socket.socket) -> tuple[http.client.HTTPResponse, bytes]:
    res = http.client.HTTPResponse(sock)
    res.begin()
    return res, res.read()


@pytest.mark.parametrize("rejection", ["invalid_api_key", "endpoint_not_allowed"])
def test_a_rejection_before_the_body_arrives_keeps_the_connection_usable(rejection: str) -> None:
    """The SDK (httpx) writes a request's headers and its body separately, and pools the
    connection. A key rejected before the body has arrived must leave that connection
    either usable for the next request or announced as closing (`Connection: close`);
    closing it silently makes the SDK's next call on it fail with "Server disconnected
    without sending a response" (an APIConnectionError when retries are off). Replayed
    here deterministically with a socket: the body is sent only after the answer."""
    if rejection == "invalid_api_key":
        secret, expected = "sk-tg-" + "A" * 36, 401
    else:
        created = create_key(allowed_endpoints=["/v1/embeddings"])
        secret, expected = created["key"], 403
        client = sdk(secret)
        await_ok(lambda: client.embeddings.create(model="demo-embed", input="hi"))

    url = urllib.parse.urlsplit(GATEWAY_URL)
    body = json.dumps({"model": "demo-chat", "messages": user(PROMPT)}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {secret}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    second = f"GET /v1/models HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {secret}\r\n\r\n".encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head)
        answered_early = select.select([sock], [], [], 1.0)[0] != []
        if not answered_early:  # a gateway that waits for the body: nothing to check here
            sock.sendall(body)
        first, raw = _read_response(sock)
        assert first.status == expected, (first.status, raw)
        assert json.loads(raw)["error"]["code"] == rejection, raw
        if first.will_close:
            return  # announced: a client opens a new connection for its next request
        try:
            if answered_early:
                sock.sendall(body)  # the rest of the first request, as the client sends it
            sock.sendall(second)
            res, raw = _read_response(sock)
        except (http.client.RemoteDisconnected, ConnectionError) as err:
            pytest.fail(
                f"after a {expected} sent before the request body arrived, without `Connection: close`, "
                f"the gateway closed the keep-alive connection: the next request got {err!r}"
            )
        # /v1/models is never endpoint-scoped: the restricted key may list.
        assert res.status == (401 if rejection == "invalid_api_key" else 200), (res.status, raw)
