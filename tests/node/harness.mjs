// Start the mock upstream and the real `airlock serve` for the Node SDK tests.
//
// Binaries: $AIRLOCK_BIN and $MOCK_UPSTREAM_BIN, else $CARGO_TARGET_DIR/debug/…, else
// <repo>/target/debug/…. Needs a Secret Service: run through scripts/with-keyring.sh.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, readFileSync, openSync, closeSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const STARTUP_MS = 30_000;

function targetBin(env, name) {
  if (process.env[env]) return process.env[env];
  const target = process.env.CARGO_TARGET_DIR || join(REPO, 'target');
  return join(target, 'debug', name);
}

export const airlockBin = () => targetBin('AIRLOCK_BIN', 'airlock');
export const mockBin = () => targetBin('MOCK_UPSTREAM_BIN', 'mock-upstream');

/** Wall-clock ms since the epoch, comparable with the mock's timestamps. */
export const nowMs = () => performance.timeOrigin + performance.now();

const URLSAFE = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const rand = (n) => Array.from({ length: n }, () => URLSAFE[randomInt(URLSAFE.length)]).join('');
export const fakeOpenAIKey = () => `sk-proj-${rand(74)}T3BlbkFJ${rand(74)}`;
export const fakeAnthropicKey = () => `sk-ant-api03-${rand(93)}AA`;
export const fakeGeminiKey = () => `AIza${rand(35)}`;
export const fakeCompatKey = () => `sk-${randomBytes(24).toString('hex')}`;

export const answer = (text) => `echo: ${text}`;

function firstLine(child, what) {
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${what}: no first stdout line within ${STARTUP_MS} ms`)), STARTUP_MS);
    const rl = createInterface({ input: child.stdout });
    let first = true;
    rl.on('line', (line) => {
      if (first) {
        first = false;
        clearTimeout(timer);
        res(line);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (first) rej(new Error(`${what} exited with ${code} before printing its address`));
    });
  });
}

export class Mock {
  static async start() {
    const bin = mockBin();
    if (!existsSync(bin)) throw new Error(`${bin} not found: run cargo build --workspace first`);
    const m = new Mock();
    m.child = spawn(bin, ['--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const line = await firstLine(m.child, 'mock-upstream');
    const prefix = 'mock-upstream listening on ';
    if (!line.startsWith(prefix)) throw new Error(`mock-upstream printed ${line}`);
    m.url = line.slice(prefix.length).trim();
    return m;
  }
  async requests() {
    return (await fetch(`${this.url}/_mock/requests`)).json();
  }
  async last() {
    const all = await this.requests();
    if (all.length === 0) throw new Error('the mock received no request');
    return all[all.length - 1];
  }
  async reset() {
    await fetch(`${this.url}/_mock/reset`, { method: 'POST' });
  }
  stop() {
    this.child.kill('SIGTERM');
  }
}

const q = (s) => JSON.stringify(s);

export class Airlock {
  constructor(upstream, overrides = {}) {
    this.dir = mkdtempSync(join(tmpdir(), 'airlock-node-'));
    this.keyringService = `airlock-test-node-${process.pid}-${randomBytes(5).toString('hex')}`;
    this.configPath = join(this.dir, 'airlock.toml');
    this.dataDir = join(this.dir, 'data');
    mkdirSync(this.dataDir);
    this.stderrPath = join(this.dir, 'serve.stderr');
    const s = {
      max_body: '1MiB', connect: '2s', first_byte: '2s', idle: '2s', shutdown_grace: '5s',
      allowed_origins: ['http://localhost:5173'], client_provider_keys: 'reject', upstream,
      ...overrides,
    };
    const up = q(s.upstream);
    writeFileSync(this.configPath, `listen = "127.0.0.1:0"
keyring_service = ${q(this.keyringService)}
max_body = ${q(s.max_body)}

[timeouts]
connect = ${q(s.connect)}
first_byte = ${q(s.first_byte)}
idle = ${q(s.idle)}
shutdown_grace = ${q(s.shutdown_grace)}

[security]
allowed_origins = [${s.allowed_origins.map(q).join(', ')}]
client_provider_keys = ${q(s.client_provider_keys)}

[providers.openai]
upstream = ${up}

[providers.anthropic]
upstream = ${up}

[providers.gemini]
upstream = ${up}

[providers.mycompat]
kind = "openai-compatible"
upstream = ${up}
auth = "bearer"
${s.extra ? `\n${s.extra}\n` : ''}`);
  }

  env() {
    const env = { ...process.env, AIRLOCK_CONFIG: this.configPath, AIRLOCK_DATA_DIR: this.dataDir };
    delete env.OPENAI_API_KEY;
    delete env.ANTHROPIC_API_KEY;
    delete env.GEMINI_API_KEY;
    return env;
  }

  run(args, input = '') {
    const out = spawnSync(airlockBin(), ['--config', this.configPath, ...args], {
      input, env: this.env(), encoding: 'utf8', timeout: 60_000,
    });
    if (out.status !== 0) {
      throw new Error(`airlock ${args.join(' ')} exited ${out.status}\nstdout: ${out.stdout}\nstderr: ${out.stderr}`);
    }
    return out.stdout;
  }

  spendJson(...args) {
    return JSON.parse(this.run(['spend', '--format', 'json', ...args]));
  }

  adminToken() {
    return this.run(['admin-token']).trim();
  }

  setKey(provider, key) {
    this.run(['keys', 'set', provider], `${key}\n`);
  }

  issue(name, ...args) {
    const key = this.run(['keys', 'issue', name, ...args]).trim();
    if (!key.startsWith('alk_') || /\s/.test(key)) throw new Error(`keys issue printed ${q(key)}`);
    return key;
  }

  async serve() {
    const fd = openSync(this.stderrPath, 'w');
    this.child = spawn(airlockBin(), ['--config', this.configPath, 'serve'], {
      env: this.env(), stdio: ['ignore', 'pipe', fd],
    });
    closeSync(fd);
    let line;
    try {
      line = await firstLine(this.child, 'airlock serve');
    } catch (e) {
      throw new Error(`${e.message}; stderr:\n${this.stderrTail()}`);
    }
    const prefix = 'airlock listening on ';
    if (!line.startsWith(prefix)) throw new Error(`airlock serve printed ${q(line)}; stderr:\n${this.stderrTail()}`);
    this.url = line.slice(prefix.length).trim();
  }

  stderrTail() {
    try {
      return readFileSync(this.stderrPath, 'utf8').slice(-4000);
    } catch {
      return '';
    }
  }

  stop() {
    if (this.child && this.child.exitCode === null) this.child.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Provider keys in a fresh keyring service, an unscoped local key; call serve() next. */
export class Env {
  constructor(mock, overrides = {}) {
    this.mock = mock;
    const { upstream = mock.url, ...rest } = overrides;
    this.airlock = new Airlock(upstream, rest);
    this.keys = {
      openai: fakeOpenAIKey(), anthropic: fakeAnthropicKey(), gemini: fakeGeminiKey(), mycompat: fakeCompatKey(),
    };
    for (const [p, k] of Object.entries(this.keys)) this.airlock.setKey(p, k);
    this.alk = this.airlock.issue('node-all');
  }
  async serve() {
    await this.airlock.serve();
    return this;
  }
  get url() {
    return this.airlock.url;
  }
  stop() {
    this.airlock.stop();
  }
}

export function assertNoLocalKey(assert, rec) {
  for (const [name, value] of Object.entries(rec.headers)) {
    assert.ok(!value.includes('alk_'), `upstream got an alk_ key in ${name}`);
  }
  assert.ok(!(rec.query ?? '').includes('alk_'), 'upstream got an alk_ key in the query');
  assert.ok(!(rec.body ?? '').includes('alk_'), 'upstream got an alk_ key in the body');
}

/** Await `promise`, expect it to reject with `type` and `status`; return the error. */
export async function expectError(assert, promise, type, status) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected ${type.name} (${status}), but the call succeeded`);
  assert.ok(err instanceof type, `expected ${type.name}, got ${err?.constructor?.name}: ${err?.message}`);
  assert.equal(err.status, status, `status: ${err.message}`);
  const rid = err.headers?.get ? err.headers.get('x-airlock-request-id') : err.headers?.['x-airlock-request-id'];
  assert.ok(rid, 'error response lacks x-airlock-request-id');
  return err;
}

// --- expected cost, from the shipped price table and the mock's usage formula ---------------

const PRICES = join(REPO, 'src-core', 'prices', 'model_prices.json');

/** Pico-dollars per token (USD per token x 10^12) for one table entry, as BigInt. */
export function price(key) {
  const entry = JSON.parse(readFileSync(PRICES, 'utf8'))[key];
  const pico = (f) => (entry[f] === undefined ? null : BigInt(Math.round(entry[f] * 1e12)));
  return { input: pico('input_cost_per_token'), output: pico('output_cost_per_token') ?? 0n,
    cacheRead: pico('cache_read_input_token_cost'), cacheWrite: pico('cache_creation_input_token_cost') };
}

export const inputTokens = (text) => 8 + Math.ceil(Buffer.byteLength(text) / 4);

/** Normalised usage the mock reports for a generation answering `text`. */
export function usage(text, { cached = 0, cacheWrite = 0, reasoning = 0 } = {}) {
  return {
    input_tokens: inputTokens(text) + cached + cacheWrite,
    output_tokens: answer(text).split(/\s+/).length + reasoning,
    cached_tokens: cached, cache_write_tokens: cacheWrite, reasoning_tokens: reasoning,
  };
}

export function costMicros(u, p) {
  const uncached = BigInt(u.input_tokens - u.cached_tokens - u.cache_write_tokens);
  const pico = uncached * p.input + BigInt(u.cached_tokens) * (p.cacheRead ?? p.input)
    + BigInt(u.cache_write_tokens) * (p.cacheWrite ?? p.input) + BigInt(u.output_tokens) * p.output;
  return Number((pico + 500000n) / 1000000n);
}

// --- fake secrets and personal data for the prompt-protection tests -------------------------
// Generated at run time in the shapes Airlock's rules accept (GitHub CRC32 checksum, Luhn-valid
// card, high-entropy AWS secret); nothing key-shaped is committed.

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const pick = (alphabet, n) => Array.from({ length: n }, () => alphabet[randomInt(alphabet.length)]).join('');

function crc32(s) {
  let crc = 0xffffffff;
  for (const b of Buffer.from(s)) {
    crc ^= b;
    for (let i = 0; i < 8; i++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function entropy(s) {
  const counts = {};
  for (const c of s) counts[c] = (counts[c] ?? 0) + 1;
  return -Object.values(counts).reduce((a, c) => a + (c / s.length) * Math.log2(c / s.length), 0);
}

export const fakeAwsAccessKeyId = () => `AKIA${pick(B32, 16)}`;
export function fakeAwsSecretAccessKey() {
  for (;;) {
    const s = pick(B64, 40);
    if (entropy(s) > 4.5) return s;
  }
}
export function fakeGithubPat() {
  const body = pick(BASE62, 30);
  let n = crc32(body);
  let sum = '';
  for (let i = 0; i < 6; i++) {
    sum = BASE62[n % 62] + sum;
    n = Math.floor(n / 62);
  }
  return `ghp_${body}${sum}`;
}
export const fakeEmail = () => `${pick(LOWER, 6)}.${pick(LOWER, 8)}@gmail.com`;
export function fakeCard() {
  const d = [4, ...Array.from({ length: 14 }, () => randomInt(10))];
  let total = 0;
  [...d].reverse().forEach((x, i) => {
    const y = i % 2 === 0 ? x * 2 : x;
    total += y > 9 ? y - 9 : y;
  });
  d.push((10 - (total % 10)) % 10);
  return d.join('');
}

/** One prompt's worth of values, as in the Rust suite's `support::fakes::Sensitive`. */
export class Sensitive {
  constructor() {
    this.awsId = fakeAwsAccessKeyId();
    this.awsSecret = fakeAwsSecretAccessKey();
    this.github = fakeGithubPat();
    this.email = fakeEmail();
    this.card = fakeCard();
  }
  static fill(awsId, awsSecret, github, email, card) {
    return `deploy with aws_access_key_id = ${awsId} and aws_secret_access_key = ${awsSecret} ` +
      `then GITHUB_TOKEN=${github} ; mail the receipt to ${email} and charge card ${card} today`;
  }
  prompt() {
    return Sensitive.fill(this.awsId, this.awsSecret, this.github, this.email, this.card);
  }
  static REDACTED = ['[REDACTED:aws-access-key-id]', '[REDACTED:aws-secret-access-key]', '[REDACTED:github-pat]'];
  upstreamPrompt() {
    return Sensitive.fill(...Sensitive.REDACTED, '<EMAIL_1>', '<CARD_1>');
  }
  restoredPrompt() {
    return Sensitive.fill(...Sensitive.REDACTED, this.email, this.card);
  }
  secrets() {
    return [this.awsId, this.awsSecret, this.github];
  }
  all() {
    return [...this.secrets(), this.email, this.card];
  }
  assertUpstreamProtected(assert, body) {
    for (const v of this.all()) assert.ok(!body.includes(v), `upstream received a raw value: ${body}`);
    assert.ok(body.includes(this.upstreamPrompt()), `upstream body: ${body}`);
  }
}
