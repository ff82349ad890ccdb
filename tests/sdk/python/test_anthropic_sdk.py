"""The official Anthropic Python SDK, unchanged, against Tollgate's `POST /v1/messages`.

Run through the same harness as the OpenAI suite (see test_openai_sdk.py): the SDK's base
URL is the gateway's root and its key a Tollgate key. The demo model and the fake OpenAI
upstream answer deterministically: the demo replies with a fixed sentence echoing the
prompt (one token per word; a prompt costs its words plus 3 per message), the fake replies
"Hello from the fake upstream." (5 tokens; a prompt costs its words plus 1 per message).
`claude-fake` is served only by the harness's fake Anthropic, so its requests are relayed
natively: it replies "Hello from the fake Claude." (5 tokens, cut before a stop sequence's
word), a prompt costs its words plus 1 per message, and the words of system blocks marked
`cache_control` are reported as cache reads.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import anthropic
import pytest
from anthropic import Anthropic

GATEWAY_URL = os.environ["TOLLGATE_GATEWAY_URL"]
API_KEY = os.environ["TOLLGATE_API_KEY"]
ADMIN_TOKEN = os.environ["TOLLGATE_ADMIN_TOKEN"]

PROMPT = "Say hello to the SDK"  # 5 words
DEMO_REPLY = (
    "Hello! This is the Tollgate demo model, answering locally without any provider "
    "account. You said: Say hello to the SDK"
)
FAKE_REPLY = "Hello from the fake upstream."
# (reply, input tokens, output tokens) for PROMPT as one user message.
EXPECTED = {
    "demo-chat": (DEMO_REPLY, 5 + 3, 20),
    "gpt-4o-mini": (FAKE_REPLY, 5 + 1, 5),
    # Messages in, chat in the middle, Gemini's generateContent upstream, and back.
    "gemini-fake": ("Hello from the fake Gemini.", 5 + 1, 5),
}


@pytest.fixture(scope="module")
def client() -> Anthropic:
    # `api_key` is sent as `x-api-key`.
    return Anthropic(base_url=GATEWAY_URL, api_key=API_KEY, max_retries=0, timeout=30)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def usage_row(request_id: str) -> dict:
    """The gateway's usage row for a request (written in the background: polled)."""
    url = f"{GATEWAY_URL}/api/v1/usage/{request_id}"
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                return json.loads(res.read())
        except urllib.error.HTTPError as err:
            if err.code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_create_returns_a_message_and_is_billed_as_messages(client: Anthropic, model: str) -> None:
    reply, input_tokens, output_tokens = EXPECTED[model]
    raw = client.messages.with_raw_response.create(model=model, max_tokens=256, messages=user(PROMPT))
    message = raw.parse()
    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == ("message", "assistant", model)
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == reply
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (input_tokens, output_tokens)
    request_id = raw.headers["request-id"]
    assert message._request_id == request_id == raw.headers["x-request-id"]
    row = usage_row(request_id)
    assert row["endpoint"] == "/v1/messages"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (input_tokens, output_tokens)


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_stream_helper_accumulates_the_text_and_the_usage(client: Anthropic, model: str) -> None:
    reply, input_tokens, output_tokens = EXPECTED[model]
    with client.messages.stream(model=model, max_tokens=256, messages=user(PROMPT)) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == reply
    assert final.content[0].text == reply
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == output_tokens
    # A chat stream reports the prompt at its end: `message_delta` carries it.
    assert final.usage.input_tokens == input_tokens


def test_raw_stream_events_come_in_anthropic_order(client: Anthropic) -> None:
    events = list(client.messages.create(model="gpt-4o-mini", max_tokens=64, messages=user(PROMPT), stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == FAKE_REPLY


def test_max_tokens_truncates(client: Anthropic) -> None:
    message = client.messages.create(model="demo-chat", max_tokens=3, messages=user(PROMPT))
    assert message.content[0].text == "Hello! This is"
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 3)


def test_system_multi_turn_and_tool_history_are_accepted(client: Anthropic) -> None:
    message = client.messages.create(
        model="demo-chat",
        max_tokens=256,
        system=[{"type": "text", "text": "Be brief."}],
        tools=[
            {
                "name": "get_weather",
                "description": "Weather by city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Oslo"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "Rain"},
                    {"type": "text", "text": "thanks a lot"},
                ],
            },
        ],
    )
    assert message.content[0].text.endswith("You said: thanks a lot")


def test_bearer_auth_works_too() -> None:
    # `auth_token` is sent as `Authorization: Bearer`.
    bearer = Anthropic(base_url=GATEWAY_URL, auth_token=API_KEY, api_key=None, max_retries=0)
    message = bearer.messages.create(model="demo-chat", max_tokens=16, messages=user("hi"))
    assert message.content[0].text.startswith("Hello!")


def test_errors_are_the_sdks_typed_errors() -> None:
    bad = Anthropic(base_url=GATEWAY_URL, api_key="sk-tg-not-a-real-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        bad.messages.create(model="demo-chat", max_tokens=16, messages=user("hi"))
    assert err.value.body["type"] == "error"
    assert err.value.body["error"]["type"] == "authentication_error"
    assert err.value.request_id

    good = Anthropic(base_url=GATEWAY_URL, api_key=API_KEY, max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as err:
        good.messages.create(model="no-such-model", max_tokens=16, messages=user("hi"))
    assert err.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as err:
        good.messages.create(model="demo-chat", max_tokens=16, messages=user("hi"), extra_body={"top_k": 5})
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "top_k" in err.value.body["error"]["message"]


CLAUDE_REPLY = "Hello from the fake Claude."


def test_a_claude_model_is_relayed_natively_with_caching_stop_sequences_and_top_k(client: Anthropic) -> None:
    raw = client.messages.with_raw_response.create(
        model="claude-fake",
        max_tokens=256,
        extra_body={"top_k": 5},  # refused on the translated path; Anthropic takes it
        stop_sequences=["fake"],
        system=[{"type": "text", "text": "You are a terse assistant.", "cache_control": {"type": "ephemeral"}}],
        messages=user(PROMPT),
    )
    message = raw.parse()
    assert message.id.startswith("msg_fake"), "Anthropic's own message"
    assert (message.model, message.content[0].text) == ("claude-fake", "Hello from the")
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "fake")
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (5 + 1, 5, 3)
    row = usage_row(raw.headers["x-request-id"])
    assert (row["endpoint"], row["prompt_tokens"], row["completion_tokens"]) == ("/v1/messages", 11, 3)
    # $3 and $15 per million tokens: cache reads are billed as prompt tokens.
    assert row["cost_micros"] == 11 * 3 + 3 * 15


def test_a_claude_stream_is_anthropics_own_and_accumulates(client: Anthropic) -> None:
    with client.messages.stream(model="claude-fake", max_tokens=256, messages=user(PROMPT)) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == CLAUDE_REPLY
    assert (final.model, final.stop_reason) == ("claude-fake", "end_turn")
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5 + 1, 5)


def test_count_tokens_is_exact_for_claude_and_estimated_for_other_models(client: Anthropic) -> None:
    counted = client.messages.count_tokens(model="claude-fake", messages=user(PROMPT))
    assert counted.input_tokens == 5 + 1
    raw = client.messages.with_raw_response.count_tokens(model="demo-chat", messages=user(PROMPT))
    assert raw.headers["tollgate-token-count"] == "estimate"
    assert raw.parse().input_tokens > 0
