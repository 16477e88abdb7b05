// Spend to the micro-dollar and limits through the Node SDKs (openai, @anthropic-ai/sdk).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { Env, Mock, costMicros, price, usage } from './harness.mjs';

const words = (n, tag = 'n') => Array.from({ length: n }, (_, i) => `${tag}${i + 1}`).join(' ');
const FIELDS = ['input_tokens', 'output_tokens', 'cached_tokens', 'cache_write_tokens', 'reasoning_tokens'];

let mock;
before(async () => {
  mock = await Mock.start();
});
after(() => mock?.stop());

describe('spend and limits via the node sdks', () => {
  test('spend by model equals mock usage times table price, streams included', async () => {
    await mock.reset();
    const env = await new Env(mock).serve();
    try {
      const oa = new OpenAI({ baseURL: `${env.url}/openai/v1`, apiKey: env.alk, maxRetries: 0, timeout: 20_000 });
      const an = new Anthropic({ baseURL: `${env.url}/anthropic`, apiKey: env.alk, maxRetries: 0, timeout: 20_000 });
      const expected = {};
      const expect = (model, key, u) => {
        const e = (expected[model] ??= { requests: 0, cost_micros: 0, ...Object.fromEntries(FIELDS.map((f) => [f, 0])) });
        for (const f of FIELDS) e[f] += u[f];
        e.requests += 1;
        e.cost_micros += costMicros(u, price(key));
      };
      let t = words(12);
      await oa.chat.completions.create({ model: 'o3-mini', messages: [{ role: 'user', content: t }] },
        { headers: { 'x-mock-scenario': 'cached=300; reasoning=90' } });
      expect('o3-mini', 'o3-mini', usage(t, { cached: 300, reasoning: 90 }));

      t = words(16);
      const chunks = [];
      for await (const c of await oa.chat.completions.create({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: t }] })) chunks.push(c);
      assert.ok(chunks.every((c) => !c.usage && c.choices.length > 0), 'the SDK saw a usage chunk it did not ask for');
      expect('gpt-4o', 'gpt-4o', usage(t));

      t = words(8);
      const withUsage = [];
      for await (const c of await oa.chat.completions.create({
        model: 'gpt-4o', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: t }],
      })) if (c.usage) withUsage.push(c.usage);
      assert.equal(withUsage.length, 1);
      assert.equal(withUsage[0].completion_tokens, usage(t).output_tokens);
      expect('gpt-4o', 'gpt-4o', usage(t));

      t = words(10);
      await oa.responses.create({ model: 'gpt-4.1-mini', input: t });
      expect('gpt-4.1-mini', 'gpt-4.1-mini', usage(t));

      t = words(14);
      const s = an.messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 256, messages: [{ role: 'user', content: t }] },
        { headers: { 'x-mock-scenario': 'cached=700; cache_write=900' } });
      await s.finalMessage();
      expect('claude-sonnet-4-5', 'claude-sonnet-4-5', usage(t, { cached: 700, cacheWrite: 900 }));

      const token = env.airlock.adminToken();
      const api = await (await fetch(`${env.url}/_airlock/spend?by=model&since=all`, { headers: { authorization: `Bearer ${token}` } })).json();
      const cli = env.airlock.spendJson('--by', 'model', '--since', 'all');
      for (const [what, report] of [['cli', cli], ['api', api]]) {
        const rows = Object.fromEntries(report.rows.map((r) => [r.group, r]));
        assert.deepEqual(Object.keys(rows).sort(), Object.keys(expected).sort(), what);
        for (const [model, e] of Object.entries(expected)) {
          const got = Object.fromEntries(Object.keys(e).map((k) => [k, rows[model][k]]));
          assert.deepEqual(got, e, `${what} ${model}`);
        }
        const total = {};
        for (const e of Object.values(expected)) for (const [k, v] of Object.entries(e)) total[k] = (total[k] ?? 0) + v;
        assert.deepEqual(Object.fromEntries(Object.keys(total).map((k) => [k, report.total[k]])), total, `${what} total`);
      }
    } finally {
      env.stop();
    }
  });

  test('rpm=2: the third call is a RateLimitError with retry-after', async () => {
    await mock.reset();
    const env = new Env(mock);
    const key = env.airlock.issue('slow', '--rpm', '2');
    await env.serve();
    try {
      const oa = new OpenAI({ baseURL: `${env.url}/openai/v1`, apiKey: key, maxRetries: 0, timeout: 20_000 });
      const call = (t) => oa.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: t }] });
      await call('a');
      await call('b');
      await assert.rejects(call('c'), (e) => {
        assert.ok(e instanceof OpenAI.RateLimitError, e.constructor.name);
        assert.equal(e.code, 'airlock_rate_limited');
        assert.ok(Number(e.headers.get('retry-after')) >= 1);
        return true;
      });
      assert.equal((await mock.requests()).length, 2);
    } finally {
      env.stop();
    }
  });
});
