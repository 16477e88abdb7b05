// Prompt protection through the official `openai` and `@anthropic-ai/sdk` Node SDKs: the mock
// receives secrets redacted and PII as placeholders; the SDK gets the PII back (whole answers,
// streams cut mid-placeholder, tool calls) and never the secrets. Plus a brotli body.

import assert from 'node:assert/strict';
import { brotliCompressSync } from 'node:zlib';
import { after, before, beforeEach, describe, test } from 'node:test';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { Env, Mock, Sensitive, answer } from './harness.mjs';

const OPENAI_MODEL = 'gpt-4o-mini';
const ANTHROPIC_MODEL = 'claude-haiku-4-5';
// Streams cut every 3 chars, so `<EMAIL_1>` and `<CARD_1>` straddle events.
const SPLIT = 'chunk_chars=3; gap_ms=1';
const TOOL_SCHEMA = { type: 'object', properties: { text: { type: 'string' } } };

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
beforeEach(async () => mock.reset());

const oai = () => new OpenAI({ baseURL: `${env.url}/openai/v1`, apiKey: env.alk, maxRetries: 0, timeout: 20_000 });
const ant = () => new Anthropic({ baseURL: `${env.url}/anthropic`, apiKey: env.alk, maxRetries: 0, timeout: 20_000 });

async function upstreamBody() {
  const recs = await mock.requests();
  assert.equal(recs.length, 1, JSON.stringify(recs));
  return recs[0].body;
}

describe('prompt protection, openai sdk', () => {
  for (const stream of [false, true]) {
    test(`chat redacts, pseudonymizes and restores (stream=${stream})`, async () => {
      const s = new Sensitive();
      const messages = [{ role: 'user', content: s.prompt() }];
      let text = '';
      if (stream) {
        const st = await oai().chat.completions.create(
          { model: OPENAI_MODEL, messages, stream: true }, { headers: { 'x-mock-scenario': SPLIT } });
        for await (const ch of st) text += ch.choices[0]?.delta?.content ?? '';
      } else {
        const { data, response } = await oai().chat.completions.create({ model: OPENAI_MODEL, messages }).withResponse();
        assert.equal(response.headers.get('x-airlock-findings'), 'secret=3, pii=2');
        text = data.choices[0].message.content;
      }
      s.assertUpstreamProtected(assert, await upstreamBody());
      assert.equal(text, answer(s.restoredPrompt()));
    });

    test(`tool call arguments are restored (stream=${stream})`, async () => {
      const s = new Sensitive();
      const params = {
        model: OPENAI_MODEL,
        messages: [{ role: 'user', content: s.prompt() }],
        tools: [{ type: 'function', function: { name: 'lookup', parameters: TOOL_SCHEMA } }],
      };
      const opts = { headers: { 'x-mock-scenario': `tool_call; ${SPLIT}` } };
      let args = '';
      if (stream) {
        const st = await oai().chat.completions.create({ ...params, stream: true }, opts);
        for await (const ch of st) {
          for (const tc of ch.choices[0]?.delta?.tool_calls ?? []) args += tc.function?.arguments ?? '';
        }
      } else {
        const res = await oai().chat.completions.create(params, opts);
        args = res.choices[0].message.tool_calls[0].function.arguments;
      }
      assert.deepEqual(JSON.parse(args), { text: s.restoredPrompt() });
      s.assertUpstreamProtected(assert, await upstreamBody());
    });
  }

  test('a brotli body is decoded, redacted and forwarded decoded', async () => {
    const s = new Sensitive();
    const body = JSON.stringify({ model: OPENAI_MODEL, messages: [{ role: 'user', content: s.prompt() }] });
    const res = await fetch(`${env.url}/openai/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${env.alk}`, 'content-type': 'application/json', 'content-encoding': 'br' },
      body: brotliCompressSync(Buffer.from(body)),
    });
    assert.equal(res.status, 200, await res.clone().text());
    const rec = (await mock.requests())[0];
    assert.equal(rec.headers['content-encoding'], undefined);
    s.assertUpstreamProtected(assert, rec.body);
    assert.equal((await res.json()).choices[0].message.content, answer(s.restoredPrompt()));
  });
});

describe('prompt protection, anthropic sdk', () => {
  for (const stream of [false, true]) {
    test(`messages redact, pseudonymize and restore (stream=${stream})`, async () => {
      const s = new Sensitive();
      const params = { model: ANTHROPIC_MODEL, max_tokens: 256, messages: [{ role: 'user', content: s.prompt() }] };
      let text = '';
      if (stream) {
        const st = ant().messages.stream(params, { headers: { 'x-mock-scenario': SPLIT } });
        st.on('text', (t) => { text += t; });
        await st.finalMessage();
      } else {
        text = (await ant().messages.create(params)).content[0].text;
      }
      s.assertUpstreamProtected(assert, await upstreamBody());
      assert.equal(text, answer(s.restoredPrompt()));
    });

    test(`tool_use input is restored (stream=${stream})`, async () => {
      const s = new Sensitive();
      const params = {
        model: ANTHROPIC_MODEL,
        max_tokens: 256,
        messages: [{ role: 'user', content: s.prompt() }],
        tools: [{ name: 'lookup', input_schema: TOOL_SCHEMA }],
      };
      const opts = { headers: { 'x-mock-scenario': `tool_call; ${SPLIT}` } };
      const final = stream
        ? await ant().messages.stream(params, opts).finalMessage()
        : await ant().messages.create(params, opts);
      assert.equal(final.content[0].type, 'tool_use');
      assert.deepEqual(final.content[0].input, { text: s.restoredPrompt() });
      s.assertUpstreamProtected(assert, await upstreamBody());
    });
  }
});
