// The official `openai` Node SDK through Airlock.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { Env, Mock, answer, assertNoLocalKey, expectError, fakeOpenAIKey, nowMs } from './harness.mjs';

const PROMPT = 'how vexingly quick daft zebras jump over fences';
const MODEL = 'gpt-4o-mini';

let mock;
let env;
before(async () => {
  mock = await Mock.start();
  env = await new Env(mock).serve();
});
after(() => {
  env?.stop();
  mock?.stop();
});

const client = (key = env.alk, url = env.url) =>
  new OpenAI({ baseURL: `${url}/openai/v1`, apiKey: key, maxRetries: 0, timeout: 20_000 });
const chat = (c, extra = {}, opts = {}) =>
  c.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: PROMPT }], ...extra }, opts);

async function checkUpstream(path) {
  const rec = await mock.last();
  assert.equal(rec.path, path);
  assert.equal(rec.headers.authorization, `Bearer ${env.keys.openai}`);
  assertNoLocalKey(assert, rec);
  return rec;
}

describe('openai sdk', () => {
  test('chat completion', async () => {
    const res = await chat(client());
    assert.equal(res.choices[0].message.content, answer(PROMPT));
    await checkUpstream('/v1/chat/completions');
  });

  test('chat completion stream: deltas in order, first before the mock finished', async () => {
    const stream = await chat(
      client(),
      { stream: true, stream_options: { include_usage: true } },
      { headers: { 'x-mock-scenario': 'gap_ms=80' } },
    );
    const deltas = [];
    let usage;
    for await (const chunk of stream) {
      const d = chunk.choices[0]?.delta?.content;
      if (d) deltas.push([d, nowMs()]);
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(deltas.map(([d]) => d).join(''), answer(PROMPT));
    assert.ok(deltas.length >= 3);
    assert.ok(usage && usage.completion_tokens === answer(PROMPT).split(' ').length);
    const rec = await checkUpstream('/v1/chat/completions');
    assert.ok(rec.stream.finished);
    assert.ok(deltas[0][1] < rec.stream.last_event_ms, 'first delta arrived only after the mock finished');
  });

  test('responses api', async () => {
    const res = await client().responses.create({ model: MODEL, input: PROMPT });
    assert.equal(res.output_text, answer(PROMPT));
    await checkUpstream('/v1/responses');
  });

  test('responses api stream', async () => {
    const stream = await client().responses.create(
      { model: MODEL, input: PROMPT, stream: true },
      { headers: { 'x-mock-scenario': 'gap_ms=60' } },
    );
    const deltas = [];
    let completed = false;
    for await (const ev of stream) {
      if (ev.type === 'response.output_text.delta') deltas.push([ev.delta, nowMs()]);
      if (ev.type === 'response.completed') completed = true;
    }
    assert.ok(completed);
    assert.equal(deltas.map(([d]) => d).join(''), answer(PROMPT));
    const rec = await checkUpstream('/v1/responses');
    assert.ok(deltas[0][1] < rec.stream.last_event_ms);
  });

  test('embeddings', async () => {
    const res = await client().embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
    assert.equal(res.data.length, 2);
    assert.equal(res.data[0].embedding.length, 8);
    await checkUpstream('/v1/embeddings');
  });

  test('unknown local key: AuthenticationError', async () => {
    await expectError(assert, chat(client(`alk_${'z'.repeat(40)}`)), OpenAI.AuthenticationError, 401);
  });

  test('real provider key: AuthenticationError naming airlock keys', async () => {
    const real = fakeOpenAIKey();
    const err = await expectError(assert, chat(client(real)), OpenAI.AuthenticationError, 401);
    assert.match(err.message, /airlock keys/);
    assert.ok(!err.message.includes(real));
  });

  test('out-of-scope provider: PermissionDeniedError', async () => {
    const scoped = env.airlock.issue(`anthropic-only-${Date.now()}`, '--provider', 'anthropic');
    // Keys issued while serving must work without a restart; if they do not, the 401 shows it.
    await expectError(assert, chat(client(scoped)), OpenAI.PermissionDeniedError, 403);
  });

  test('upstream timeout: InternalServerError 504', async () => {
    await expectError(
      assert,
      chat(client(), {}, { headers: { 'x-mock-scenario': 'delay_ms=6000' } }),
      OpenAI.InternalServerError,
      504,
    );
  });

  test('disallowed origin: PermissionDeniedError', async () => {
    await expectError(
      assert,
      chat(client(), {}, { headers: { origin: 'http://evil.example' } }),
      OpenAI.PermissionDeniedError,
      403,
    );
  });

  test('upstream unreachable: InternalServerError 502', async () => {
    const dead = new Env(mock, { upstream: 'http://127.0.0.1:9' });
    await dead.serve();
    try {
      await expectError(assert, chat(client(dead.alk, dead.url)), OpenAI.InternalServerError, 502);
    } finally {
      dead.stop();
    }
  });
});
