"""The official OpenAI Python SDK, unchanged, against a running Tollgate.

Run through the harness, which starts the gateway with the demo models, a fake OpenAI
upstream (gpt-4o-mini, text-embedding-3-small, gpt-image-1) and `broken-model` on a
provider whose port is closed:

    target/debug/with-gateway -- target/sdk-venv/bin/python -m pytest -q tests/sdk/python

Expected values come from the two deterministic providers: the demo model replies with a
fixed sentence that echoes the prompt (one token per word, a prompt costs its words plus
3 per message), and the fake upstream replies "Hello from the fake upstream." (5 tokens,
a chat prompt costs its words plus 1 per message).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import struct
import time
import urllib.error
import urllib.request

import openai
import pytest
from openai import OpenAI

BASE_URL = os.environ["TOLLGATE_BASE_URL"]
API_KEY = os.environ["TOLLGATE_API_KEY"]
GATEWAY_URL = os.environ["TOLLGATE_GATEWAY_URL"]
ADMIN_TOKEN = os.environ["TOLLGATE_ADMIN_TOKEN"]

PROMPT = "Say hello to the SDK"  # 5 words
DEMO_REPLY = (
    "Hello! This is the Tollgate demo model, answering locally without any provider "
    "account. You said: Say hello to the SDK"
)  # 15 fixed words + the 5 echoed
FAKE_REPLY = "Hello from the fake upstream."
PNG_1X1_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
CONFIGURED_MODELS = {
    "demo-chat",
    "demo-embed",
    "gpt-4o-mini",
    "text-embedding-3-small",
    "gpt-image-1",
    "broken-model",
    "claude-fake",
    "gemini-fake",
}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Expected chat answers for PROMPT as one user message: (content, prompt, completion tokens).
# `claude-fake` and `gemini-fake` go through the Anthropic and Gemini adapters (translated
# both ways): their fakes count a prompt as its words plus 1 per message, too.
CHAT = {
    "demo-chat": (DEMO_REPLY, 5 + 3, 20),
    "gpt-4o-mini": (FAKE_REPLY, 5 + 1, 5),
    "claude-fake": ("Hello from the fake Claude.", 5 + 1, 5),
    "gemini-fake": ("Hello from the fake Gemini.", 5 + 1, 5),
}
# `model` in an answer is the provider's name for it (the channel's upstream model).
ANSWER_MODEL = {"claude-fake": "claude-fake-1", "gemini-fake": "gemini-2.5-flash"}
# Expected legacy completions for PROMPT: the prompt costs its words only.
COMPLETIONS = {
    "demo-chat": (DEMO_REPLY, 5, 20),
    "gpt-4o-mini": (FAKE_REPLY, 5, 5),
}


@pytest.fixture(scope="module")
def client() -> OpenAI:
    return OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=30)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A raw request (standard library only): status, lower-cased headers, body."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, {k.lower(): v for k, v in res.headers.items()}, res.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def admin(method: str, path: str, payload: object | None = None, token: str | None = ADMIN_TOKEN):
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    body = None if payload is None else json.dumps(payload).encode()
    status, _, raw = http(method, f"{GATEWAY_URL}/api/v1{path}", body, headers)
    return status, raw


def error_of(raw: bytes) -> dict:
    return json.loads(raw)["error"]


def as_f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


# ---------------------------------------------------------------------------------------
# Chat completions
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(CHAT))
def test_chat_plain(client: OpenAI, model: str) -> None:
    content, prompt_tokens, completion_tokens = CHAT[model]
    res = client.chat.completions.create(model=model, messages=user(PROMPT))
    assert res.object == "chat.completion"
    assert res.model == ANSWER_MODEL.get(model, model)
    assert len(res.choices) == 1
    choice = res.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == content
    assert choice.finish_reason == "stop"
    assert res.usage is not None
    assert res.usage.prompt_tokens == prompt_tokens
    assert res.usage.completion_tokens == completion_tokens
    assert res.usage.total_tokens == prompt_tokens + completion_tokens


def test_chat_demo_echoes_at_most_twelve_words(client: OpenAI) -> None:
    words = [f"w{i}" for i in range(14)]
    res = client.chat.completions.create(model="demo-chat", messages=user(" ".join(words)))
    assert res.choices[0].message.content.endswith("You said: " + " ".join(words[:12]))
    assert res.usage is not None
    assert res.usage.prompt_tokens == 14 + 3
    assert res.usage.completion_tokens == 15 + 12


@pytest.mark.parametrize(
    ("model", "content"),
    [("demo-chat", "Hello! This is the"), ("gpt-4o-mini", "Hello from the fake")],
)
def test_chat_max_tokens_truncates(client: OpenAI, model: str, content: str) -> None:
    res = client.chat.completions.create(model=model, messages=user(PROMPT), max_tokens=4)
    assert res.choices[0].message.content == content
    assert res.choices[0].finish_reason == "length"
    assert res.usage is not None
    assert res.usage.completion_tokens == 4


@pytest.mark.parametrize("model", sorted(CHAT))
def test_chat_stream_without_usage_hides_the_usage_chunk(client: OpenAI, model: str) -> None:
    content, _, _ = CHAT[model]
    chunks = list(client.chat.completions.create(model=model, messages=user(PROMPT), stream=True))
    assert len(chunks) >= 3
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        assert chunk.usage is None, f"usage leaked to a client that did not ask: {chunk}"
        assert len(chunk.choices) == 1, f"usage-only chunk leaked: {chunk}"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1


@pytest.mark.parametrize("model", sorted(CHAT))
def test_chat_stream_with_usage_ends_with_the_usage_chunk(client: OpenAI, model: str) -> None:
    content, prompt_tokens, completion_tokens = CHAT[model]
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=user(PROMPT),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == prompt_tokens
    assert last.usage.completion_tokens == completion_tokens
    assert last.usage.total_tokens == prompt_tokens + completion_tokens
    for chunk in body:
        assert chunk.usage is None
        assert len(chunk.choices) == 1
    assert "".join(c.choices[0].delta.content or "" for c in body) == content
    assert body[-1].choices[0].finish_reason == "stop"


LOOKUP_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look something up.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


@pytest.mark.parametrize("model", ["claude-fake", "gemini-fake"])
def test_tool_calls_round_trip_through_the_anthropic_and_gemini_adapters(client: OpenAI, model: str) -> None:
    # Both fakes call the tool when the last user text mentions the weather.
    ask = user("what is the weather")
    first = client.chat.completions.create(model=model, messages=ask, tools=[LOOKUP_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "lookup"
    assert isinstance(json.loads(call.function.arguments), dict)
    # The call and its result go back (as the SDK hands them over); the model answers.
    turn = choice.message.model_dump(exclude_none=True)
    result = {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees."}
    second = client.chat.completions.create(model=model, messages=[*ask, turn, result], tools=[LOOKUP_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == CHAT[model][0]
    assert second.usage is not None and second.usage.prompt_tokens > first.usage.prompt_tokens


# ---------------------------------------------------------------------------------------
# Legacy completions
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(COMPLETIONS))
def test_completions_plain(client: OpenAI, model: str) -> None:
    text, prompt_tokens, completion_tokens = COMPLETIONS[model]
    res = client.completions.create(model=model, prompt=PROMPT)
    assert res.object == "text_completion"
    assert res.model == model
    assert [c.text for c in res.choices] == [text]
    assert res.choices[0].finish_reason == "stop"
    assert res.usage is not None
    assert res.usage.prompt_tokens == prompt_tokens
    assert res.usage.completion_tokens == completion_tokens
    assert res.usage.total_tokens == prompt_tokens + completion_tokens


@pytest.mark.parametrize("model", sorted(COMPLETIONS))
def test_completions_stream(client: OpenAI, model: str) -> None:
    text, _, _ = COMPLETIONS[model]
    chunks = list(client.completions.create(model=model, prompt=PROMPT, stream=True))
    for chunk in chunks:
        assert chunk.usage is None
        assert len(chunk.choices) == 1
    assert "".join(c.choices[0].text for c in chunks) == text
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", sorted(COMPLETIONS))
def test_completions_stream_with_usage(client: OpenAI, model: str) -> None:
    text, prompt_tokens, completion_tokens = COMPLETIONS[model]
    chunks = list(
        client.completions.create(
            model=model,
            prompt=PROMPT,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == prompt_tokens
    assert last.usage.completion_tokens == completion_tokens
    assert "".join(c.choices[0].text for c in body) == text


# ---------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------


def test_embeddings_demo_sdk_default_base64(client: OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model="demo-embed", input="the quick brown fox")
    # The SDK asks for base64 unless told otherwise, and decodes it to floats itself.
    assert json.loads(raw.http_request.content)["encoding_format"] == "base64"
    res = raw.parse()
    assert res.model == "demo-embed"
    assert len(res.data) == 1
    vector = list(res.data[0].embedding)
    assert len(vector) == 256
    assert all(isinstance(x, float) for x in vector)
    assert abs(norm(vector) - 1.0) < 1e-5
    assert res.usage.prompt_tokens == 4
    assert res.usage.total_tokens == 4


def test_embeddings_demo_float_equals_base64(client: OpenAI) -> None:
    text = "the quick brown fox"
    b64 = list(client.embeddings.create(model="demo-embed", input=text).data[0].embedding)
    floats = client.embeddings.create(model="demo-embed", input=text, encoding_format="float")
    vector = floats.data[0].embedding
    assert len(vector) == 256
    # JSON carries each f32 in its shortest form; rounding back to f32 must give the
    # exact value that base64 carried.
    assert [as_f32(x) for x in vector] == b64


def test_embeddings_demo_batch_dimensions_and_determinism(client: OpenAI) -> None:
    res = client.embeddings.create(model="demo-embed", input=["alpha", "beta", "alpha"], dimensions=64)
    assert [d.index for d in res.data] == [0, 1, 2]
    vectors = [list(d.embedding) for d in res.data]
    assert all(len(v) == 64 for v in vectors)
    assert all(abs(norm(v) - 1.0) < 1e-5 for v in vectors)
    assert vectors[0] == vectors[2]
    assert vectors[0] != vectors[1]
    assert res.usage.prompt_tokens == 3


@pytest.mark.parametrize("encoding_format", ["base64", "float"])
def test_embeddings_via_fake_upstream(client: OpenAI, encoding_format: str) -> None:
    res = client.embeddings.create(
        model="text-embedding-3-small",
        input=["one two three", "four"],
        encoding_format=encoding_format,  # type: ignore[arg-type]
    )
    assert res.model == "text-embedding-3-small"
    assert [d.index for d in res.data] == [0, 1]
    for i, item in enumerate(res.data):
        if encoding_format == "base64":
            # An explicit format is returned as sent: the caller decodes it.
            packed = base64.b64decode(item.embedding)  # type: ignore[arg-type]
            vector = list(struct.unpack(f"<{len(packed) // 4}f", packed))
        else:
            vector = item.embedding
        # The fake's value j of input i is ((7i + j) % 64) / 64 - 0.5, exact in f32.
        assert vector == [((7 * i + j) % 64) / 64 - 0.5 for j in range(1536)]
    assert res.usage.prompt_tokens == 4
    assert res.usage.total_tokens == 4


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------


def test_models_list_and_retrieve(client: OpenAI) -> None:
    models = list(client.models.list())
    assert {m.id for m in models} == CONFIGURED_MODELS
    assert all(m.object == "model" for m in models)
    one = client.models.retrieve("gpt-4o-mini")
    assert one.id == "gpt-4o-mini"
    assert one.object == "model"


def test_models_retrieve_unknown(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert err.value.status_code == 404
    assert err.value.code == "model_not_found"


# ---------------------------------------------------------------------------------------
# Responses and images (passed through to the fake upstream)
# ---------------------------------------------------------------------------------------


def test_responses_passthrough(client: OpenAI) -> None:
    res = client.responses.create(model="gpt-4o-mini", input="hi")
    assert res.object == "response"
    assert res.status == "completed"
    assert res.model == "gpt-4o-mini"
    assert res.output_text == FAKE_REPLY
    assert res.usage is not None
    assert res.usage.input_tokens == 1
    assert res.usage.output_tokens == 5
    assert res.usage.total_tokens == 6


def test_responses_stream_passthrough(client: OpenAI) -> None:
    events = list(client.responses.create(model="gpt-4o-mini", input="hi", stream=True))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == FAKE_REPLY
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == FAKE_REPLY
    assert events[-1].response.usage is not None
    assert events[-1].response.usage.output_tokens == 5


def test_responses_on_demo_is_rejected(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="demo-chat", input="hi")
    assert err.value.status_code == 400


def test_images_generate(client: OpenAI) -> None:
    res = client.images.generate(model="gpt-image-1", prompt="a red circle", n=2)
    assert res.data is not None
    assert [d.b64_json for d in res.data] == [PNG_1X1_B64, PNG_1X1_B64]
    assert base64.b64decode(res.data[0].b64_json or "").startswith(b"\x89PNG\r\n\x1a\n")
    assert res.usage is not None
    assert res.usage.input_tokens == 3
    assert res.usage.output_tokens == 200


# ---------------------------------------------------------------------------------------
# Errors, in OpenAI's shape so that the SDK raises the right class
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_key",
    ["not-a-tollgate-key", "sk-tg-" + "A" * 40, API_KEY[:-1] + ("A" if API_KEY[-1] != "A" else "B")],
    ids=["garbage", "bad-checksum", "one-char-off"],
)
def test_bad_key_is_authentication_error(bad_key: str) -> None:
    bad = OpenAI(base_url=BASE_URL, api_key=bad_key, max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model="demo-chat", messages=user(PROMPT))
    assert err.value.status_code == 401
    assert err.value.code == "invalid_api_key"
    assert err.value.type == "authentication_error"
    assert err.value.request_id


def test_missing_key_is_401() -> None:
    status, headers, raw = http(
        "POST",
        f"{BASE_URL}/chat/completions",
        json.dumps({"model": "demo-chat", "messages": user(PROMPT)}).encode(),
        {"content-type": "application/json"},
    )
    assert status == 401
    assert error_of(raw)["code"] == "invalid_api_key"
    assert headers.get("x-request-id")


def test_unknown_model_is_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=user(PROMPT))
    assert err.value.status_code == 404
    assert err.value.code == "model_not_found"
    assert err.value.type == "invalid_request_error"


def test_wrong_model_type_is_bad_request(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="gpt-4o-mini", input="hi")
    assert err.value.status_code == 400
    assert err.value.code == "invalid_request"


def test_malformed_json_is_invalid_request() -> None:
    status, headers, raw = http(
        "POST",
        f"{BASE_URL}/chat/completions",
        b'{"model": "demo-chat", "messages": [',
        {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
    )
    assert status == 400
    error = error_of(raw)
    assert error["code"] == "invalid_request"
    assert error["type"] == "invalid_request_error"
    assert headers.get("x-request-id")


def test_oversized_body_is_413(client: OpenAI) -> None:
    big = "x" * (100 * 1024)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="demo-chat", messages=user(big))
    assert err.value.status_code == 413
    assert err.value.code == "request_too_large"
    assert err.value.type == "invalid_request_error"


@pytest.mark.parametrize("stream", [False, True])
def test_unreachable_upstream_is_502(client: OpenAI, stream: bool) -> None:
    # A stream fails at the call too: the gateway answers before any event is sent.
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="broken-model", messages=user(PROMPT), stream=stream)
    assert err.value.status_code == 502
    assert err.value.code == "upstream_error"
    assert err.value.type == "upstream_error"
    # 5xx bodies carry no internal detail such as the upstream's address.
    assert "127.0.0.1" not in err.value.message


# ---------------------------------------------------------------------------------------
# Request ids
# ---------------------------------------------------------------------------------------


def test_request_id_is_generated(client: OpenAI) -> None:
    first = client.chat.completions.with_raw_response.create(model="demo-chat", messages=user(PROMPT))
    second = client.chat.completions.with_raw_response.create(model="demo-chat", messages=user(PROMPT))
    ids = [first.headers.get("x-request-id"), second.headers.get("x-request-id")]
    assert all(i and REQUEST_ID.match(i) for i in ids), ids
    assert ids[0] != ids[1]
    assert first.parse().choices[0].message.content == DEMO_REPLY


def test_caller_request_id_is_echoed(client: OpenAI) -> None:
    rid = f"sdk-test.{time.time_ns()}:abc_DEF-1"
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=user(PROMPT), extra_headers={"x-request-id": rid}
    )
    assert raw.headers.get("x-request-id") == rid
    stream = client.chat.completions.with_raw_response.create(
        model="demo-chat", messages=user(PROMPT), stream=True, extra_headers={"x-request-id": rid + "s"}
    )
    assert stream.headers.get("x-request-id") == rid + "s"
    assert "".join(c.choices[0].delta.content or "" for c in stream.parse()) == DEMO_REPLY


def test_invalid_caller_request_id_is_replaced(client: OpenAI) -> None:
    bad = "has spaces and / slashes"
    raw = client.chat.completions.with_raw_response.create(
        model="demo-chat", messages=user(PROMPT), extra_headers={"x-request-id": bad}
    )
    rid = raw.headers.get("x-request-id")
    assert rid and rid != bad and REQUEST_ID.match(rid)


def test_error_responses_carry_the_caller_request_id(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(
            model="no-such-model", messages=user(PROMPT), extra_headers={"x-request-id": "sdk-err-1"}
        )
    assert err.value.request_id == "sdk-err-1"


# ---------------------------------------------------------------------------------------
# Management API
# ---------------------------------------------------------------------------------------


def test_management_requires_the_admin_token() -> None:
    for token in (None, "wrong-token", API_KEY):
        status, raw = admin("GET", "/keys", token=token)
        assert status == 401, (token, raw)
        assert "error" in json.loads(raw)


def test_management_lists_keys_without_secrets() -> None:
    status, raw = admin("GET", "/keys")
    assert status == 200, raw
    assert API_KEY.encode() not in raw
    keys = json.loads(raw)["data"]
    assert "with-gateway" in {k["name"] for k in keys}
    for k in keys:
        assert "key" not in k and "secret" not in k, k


def test_management_created_key_works_within_two_seconds() -> None:
    status, raw = admin("POST", "/keys", {"name": "py"})
    assert status == 201, raw
    created = json.loads(raw)
    secret = created["key"]
    assert secret.startswith("sk-tg-")
    assert created["name"] == "py"

    fresh = OpenAI(base_url=BASE_URL, api_key=secret, max_retries=0, timeout=30)
    deadline = time.monotonic() + 2.0
    while True:
        try:
            res = fresh.chat.completions.create(model="demo-chat", messages=user(PROMPT))
            break
        except openai.AuthenticationError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    assert res.choices[0].message.content == DEMO_REPLY

    status, raw = admin("GET", "/keys")
    assert status == 200
    assert secret.encode() not in raw
    assert "py" in {k["name"] for k in json.loads(raw)["data"]}
