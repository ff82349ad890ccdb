// The official OpenAI Node SDK, unchanged, against a running Tollgate.
//
// Run through the harness, which starts the gateway with the demo models, a fake OpenAI
// upstream (gpt-4o-mini, text-embedding-3-small, gpt-image-1), fake Anthropic and Gemini
// upstreams (claude-fake, gemini-fake) and `broken-model` on a provider whose port is closed:
//
//     target/debug/with-gateway -- node --test tests/sdk/node/
//
// Expected values come from the two deterministic providers: the demo model replies with
// a fixed sentence that echoes the prompt (one token per word, a prompt costs its words
// plus 3 per message); the fake upstream replies "Hello from the fake upstream." (5
// tokens, a chat prompt costs its words plus 1 per message).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import OpenAI from 'openai';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through with-gateway`);
  return value;
};
const BASE_URL = env('TOLLGATE_BASE_URL');
const API_KEY = env('TOLLGATE_API_KEY');

const PROMPT = 'Say hello to the SDK'; // 5 words
const DEMO_REPLY =
  'Hello! This is the Tollgate demo model, answering locally without any provider ' +
  'account. You said: Say hello to the SDK';
const FAKE_REPLY = 'Hello from the fake upstream.';
const CONFIGURED_MODELS = [
  'broken-model',
  'claude-fake',
  'demo-chat',
  'demo-embed',
  'gemini-fake',
  'gpt-4o-mini',
  'gpt-image-1',
  'text-embedding-3-small',
];
// Expected answers to PROMPT as one user message: content and token counts.
const CHAT = {
  'demo-chat': { content: DEMO_REPLY, prompt: 5 + 3, completion: 20 },
  'gpt-4o-mini': { content: FAKE_REPLY, prompt: 5 + 1, completion: 5 },
};
// Legacy completions: the prompt costs its words only.
const COMPLETIONS = {
  'demo-chat': { text: DEMO_REPLY, prompt: 5, completion: 20 },
  'gpt-4o-mini': { text: FAKE_REPLY, prompt: 5, completion: 5 },
};

const client = new OpenAI({ baseURL: BASE_URL, apiKey: API_KEY, maxRetries: 0, timeout: 30_000 });
const messages = (text) => [{ role: 'user', content: text }];
const norm = (v) => Math.sqrt(v.reduce((sum, x) => sum + x * x, 0));

async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

describe('chat completions', () => {
  for (const [model, want] of Object.entries(CHAT)) {
    test(`${model}: plain`, async () => {
      const res = await client.chat.completions.create({ model, messages: messages(PROMPT) });
      assert.equal(res.object, 'chat.completion');
      assert.equal(res.model, model);
      assert.equal(res.choices.length, 1);
      assert.equal(res.choices[0].message.role, 'assistant');
      assert.equal(res.choices[0].message.content, want.content);
      assert.equal(res.choices[0].finish_reason, 'stop');
      assert.equal(res.usage.prompt_tokens, want.prompt);
      assert.equal(res.usage.completion_tokens, want.completion);
      assert.equal(res.usage.total_tokens, want.prompt + want.completion);
    });

    test(`${model}: stream without include_usage has no usage chunk`, async () => {
      const chunks = await collect(
        await client.chat.completions.create({ model, messages: messages(PROMPT), stream: true }),
      );
      assert.ok(chunks.length >= 3);
      for (const chunk of chunks) {
        assert.equal(chunk.object, 'chat.completion.chunk');
        assert.equal(chunk.usage ?? null, null, `usage leaked: ${JSON.stringify(chunk)}`);
        assert.equal(chunk.choices.length, 1, `usage-only chunk leaked: ${JSON.stringify(chunk)}`);
      }
      assert.equal(chunks.map((c) => c.choices[0].delta.content ?? '').join(''), want.content);
      assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
    });

    test(`${model}: stream with include_usage ends with usage`, async () => {
      const chunks = await collect(
        await client.chat.completions.create({
          model,
          messages: messages(PROMPT),
          stream: true,
          stream_options: { include_usage: true },
        }),
      );
      const last = chunks.pop();
      assert.deepEqual(last.choices, []);
      assert.equal(last.usage.prompt_tokens, want.prompt);
      assert.equal(last.usage.completion_tokens, want.completion);
      assert.equal(last.usage.total_tokens, want.prompt + want.completion);
      for (const chunk of chunks) {
        assert.equal(chunk.usage ?? null, null);
        assert.equal(chunk.choices.length, 1);
      }
      assert.equal(chunks.map((c) => c.choices[0].delta.content ?? '').join(''), want.content);
    });
  }

  test('x-request-id: generated, and a valid caller id is echoed', async () => {
    const { data, response } = await client.chat.completions
      .create({ model: 'demo-chat', messages: messages(PROMPT) })
      .withResponse();
    assert.equal(data.choices[0].message.content, DEMO_REPLY);
    assert.match(response.headers.get('x-request-id') ?? '', /^[A-Za-z0-9._:-]{1,128}$/);

    const rid = `node-sdk.${Date.now()}:x_Y-1`;
    const echoed = await client.chat.completions
      .create({ model: 'gpt-4o-mini', messages: messages(PROMPT) }, { headers: { 'x-request-id': rid } })
      .withResponse();
    assert.equal(echoed.response.headers.get('x-request-id'), rid);
  });
});

describe('completions (legacy)', () => {
  for (const [model, want] of Object.entries(COMPLETIONS)) {
    test(`${model}: plain`, async () => {
      const res = await client.completions.create({ model, prompt: PROMPT });
      assert.equal(res.object, 'text_completion');
      assert.deepEqual(
        res.choices.map((c) => c.text),
        [want.text],
      );
      assert.equal(res.choices[0].finish_reason, 'stop');
      assert.equal(res.usage.prompt_tokens, want.prompt);
      assert.equal(res.usage.completion_tokens, want.completion);
    });

    test(`${model}: stream`, async () => {
      const chunks = await collect(await client.completions.create({ model, prompt: PROMPT, stream: true }));
      for (const chunk of chunks) {
        assert.equal(chunk.usage ?? null, null);
        assert.equal(chunk.choices.length, 1);
      }
      assert.equal(chunks.map((c) => c.choices[0].text).join(''), want.text);
      assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
    });
  }
});

describe('embeddings', () => {
  test('demo-embed: the SDK default (base64) decodes to a 256-dim unit vector', async () => {
    const res = await client.embeddings.create({ model: 'demo-embed', input: 'the quick brown fox' });
    assert.equal(res.model, 'demo-embed');
    assert.equal(res.data.length, 1);
    const vector = Array.from(res.data[0].embedding);
    assert.equal(vector.length, 256);
    assert.ok(vector.every((x) => typeof x === 'number' && Number.isFinite(x)));
    assert.ok(Math.abs(norm(vector) - 1) < 1e-5, `norm ${norm(vector)}`);
    assert.equal(res.usage.prompt_tokens, 4);

    // The same vector as JSON floats: each rounds back to the exact f32 base64 carried.
    const floats = await client.embeddings.create({
      model: 'demo-embed',
      input: 'the quick brown fox',
      encoding_format: 'float',
    });
    assert.deepEqual(floats.data[0].embedding.map(Math.fround), vector);
  });

  test('text-embedding-3-small via the fake upstream', async () => {
    const res = await client.embeddings.create({
      model: 'text-embedding-3-small',
      input: ['one two three', 'four'],
      encoding_format: 'float',
    });
    assert.equal(res.model, 'text-embedding-3-small');
    assert.deepEqual(
      res.data.map((d) => d.index),
      [0, 1],
    );
    res.data.forEach((item, i) => {
      const want = Array.from({ length: 1536 }, (_, j) => ((7 * i + j) % 64) / 64 - 0.5);
      assert.deepEqual(item.embedding, want);
    });
    assert.equal(res.usage.prompt_tokens, 4);
  });
});

describe('models', () => {
  test('list holds exactly the configured models; retrieve one', async () => {
    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    assert.deepEqual(ids.sort(), CONFIGURED_MODELS);
    const one = await client.models.retrieve('gpt-4o-mini');
    assert.equal(one.id, 'gpt-4o-mini');
    assert.equal(one.object, 'model');
  });
});

describe('responses and images via the fake upstream', () => {
  test('responses.create', async () => {
    const res = await client.responses.create({ model: 'gpt-4o-mini', input: 'hi' });
    assert.equal(res.status, 'completed');
    assert.equal(res.output_text, FAKE_REPLY);
    assert.equal(res.usage.input_tokens, 1);
    assert.equal(res.usage.output_tokens, 5);
  });

  test('images.generate', async () => {
    const res = await client.images.generate({ model: 'gpt-image-1', prompt: 'a red circle' });
    assert.equal(res.data.length, 1);
    const png = Buffer.from(res.data[0].b64_json, 'base64');
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  });
});

describe('errors', () => {
  // Asserts the promise rejects with `klass`, the status and the OpenAI error code.
  async function rejects(promise, klass, status, code) {
    await assert.rejects(promise, (err) => {
      assert.ok(err instanceof klass, `expected ${klass.name}, got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, status);
      assert.equal(err.code, code);
      assert.ok(err.requestID, 'x-request-id on the error');
      return true;
    });
  }

  test('bad key → AuthenticationError 401 invalid_api_key', async () => {
    for (const apiKey of ['not-a-tollgate-key', `sk-tg-${'A'.repeat(40)}`]) {
      const bad = new OpenAI({ baseURL: BASE_URL, apiKey, maxRetries: 0 });
      await rejects(
        bad.chat.completions.create({ model: 'demo-chat', messages: messages(PROMPT) }),
        OpenAI.AuthenticationError,
        401,
        'invalid_api_key',
      );
    }
  });

  test('unknown model → NotFoundError 404 model_not_found', async () => {
    await rejects(
      client.chat.completions.create({ model: 'no-such-model', messages: messages(PROMPT) }),
      OpenAI.NotFoundError,
      404,
      'model_not_found',
    );
    await rejects(client.models.retrieve('no-such-model'), OpenAI.NotFoundError, 404, 'model_not_found');
  });

  test('oversized body → APIError 413 request_too_large', async () => {
    await rejects(
      client.chat.completions.create({ model: 'demo-chat', messages: messages('x'.repeat(100 * 1024)) }),
      OpenAI.APIError,
      413,
      'request_too_large',
    );
  });

  test('malformed JSON → 400 invalid_request', async () => {
    const res = await fetch(`${BASE_URL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: '{"model": "demo-chat", "messages": [',
    });
    assert.equal(res.status, 400);
    const body = await res.json();
    assert.equal(body.error.code, 'invalid_request');
    assert.equal(body.error.type, 'invalid_request_error');
  });

  for (const stream of [false, true]) {
    test(`unreachable upstream → InternalServerError 502 upstream_error (stream: ${stream})`, async () => {
      await rejects(
        client.chat.completions.create({ model: 'broken-model', messages: messages(PROMPT), stream }),
        OpenAI.InternalServerError,
        502,
        'upstream_error',
      );
    });
  }
});
