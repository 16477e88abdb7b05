// The official `@anthropic-ai/sdk` Node SDK through Airlock.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { Env, Mock, answer, assertNoLocalKey, expectError, fakeAnthropicKey, nowMs } from './harness.mjs';

const PROMPT = 'the five boxing wizards jump quickly at dawn';
const MODEL = 'claude-haiku-4-5';

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

const client = (key = env.alk) =>
  new Anthropic({ baseURL: `${env.url}/anthropic`, apiKey: key, maxRetries: 0, timeout: 20_000 });
const params = (extra = {}) => ({
  model: MODEL, max_tokens: 256, messages: [{ role: 'user', content: PROMPT }], ...extra,
});

async function checkUpstream() {
  const rec = await mock.last();
  assert.equal(rec.path, '/v1/messages');
  assert.equal(rec.headers['x-api-key'], env.keys.anthropic);
  assert.ok(rec.headers['anthropic-version'], 'anthropic-version not passed through');
  assertNoLocalKey(assert, rec);
  return rec;
}

describe('anthropic sdk', () => {
  test('message', async () => {
    const msg = await client().messages.create(params());
    assert.equal(msg.content[0].text, answer(PROMPT));
    assert.equal(msg.stop_reason, 'end_turn');
    await checkUpstream();
  });

  test('message stream: deltas in order, first before the mock finished', async () => {
    const stream = client().messages.stream(params(), { headers: { 'x-mock-scenario': 'gap_ms=80' } });
    const deltas = [];
    stream.on('text', (t) => deltas.push([t, nowMs()]));
    const final = await stream.finalMessage();
    assert.equal(deltas.map(([d]) => d).join(''), answer(PROMPT));
    assert.ok(deltas.length >= 3);
    assert.equal(final.usage.output_tokens, answer(PROMPT).split(' ').length);
    const rec = await checkUpstream();
    assert.ok(deltas[0][1] < rec.stream.last_event_ms, 'first delta arrived only after the mock finished');
  });

  test('tool use stream', async () => {
    const stream = client().messages.stream(
      params({ tools: [{ name: 'lookup', input_schema: { type: 'object', properties: { text: { type: 'string' } } } }] }),
      { headers: { 'x-mock-scenario': 'tool_call' } },
    );
    const final = await stream.finalMessage();
    assert.equal(final.stop_reason, 'tool_use');
    assert.deepEqual(final.content[0].input, { text: PROMPT });
  });

  test('unknown local key: AuthenticationError', async () => {
    const err = await expectError(assert, client(`alk_${'q'.repeat(40)}`).messages.create(params()), Anthropic.AuthenticationError, 401);
    assert.equal(err.error?.type, 'error', `not Anthropic's error format: ${JSON.stringify(err.error)}`);
  });

  test('real provider key: AuthenticationError naming airlock keys', async () => {
    const err = await expectError(assert, client(fakeAnthropicKey()).messages.create(params()), Anthropic.AuthenticationError, 401);
    assert.match(err.message, /airlock keys/);
  });

  test('body over limit: 413', async () => {
    const big = params({ messages: [{ role: 'user', content: 'x'.repeat(1024 * 1024 + 100) }] });
    const err = await expectError(assert, client().messages.create(big), Anthropic.APIError, 413);
    assert.equal(err.error?.type, 'error', `not Anthropic's error format: ${JSON.stringify(err.error)}`);
  });

  test('upstream 500 passes through: InternalServerError', async () => {
    const err = await expectError(
      assert,
      client().messages.create(params(), { headers: { 'x-mock-scenario': 'status=500' } }),
      Anthropic.InternalServerError,
      500,
    );
    assert.match(err.message, /mock upstream/);
  });

  test('disallowed origin: PermissionDeniedError in Anthropic format', async () => {
    const err = await expectError(
      assert,
      client().messages.create(params(), { headers: { origin: 'http://evil.example' } }),
      Anthropic.PermissionDeniedError,
      403,
    );
    assert.equal(err.error?.type, 'error', `not Anthropic's error format: ${JSON.stringify(err.error)}`);
  });
});
