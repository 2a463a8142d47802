// End-to-end test of tools/dreamwindow in a real headless Chromium (Debian chromium + playwright-core).
//   node tests/e2e/viewer.test.mjs path/to/dreamwindow
// Exit 0 = pass, 1 = fail, 77 = skipped (no chromium / playwright-core).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { summarize } from './gaps.mjs';

const SKIP = 77;
const appPath = process.argv[2] || process.env.DREAMWINDOW;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TOKEN = 's3cret';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required'];

if (!appPath || !fs.existsSync(appPath)) { console.log(`SKIP: app not found (${appPath})`); process.exit(SKIP); }
if (!fs.existsSync(CHROMIUM)) { console.log(`SKIP: ${CHROMIUM} missing (apt-get install chromium)`); process.exit(SKIP); }
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  console.log('SKIP: playwright-core missing (npm ci --prefix tests/e2e)'); process.exit(SKIP);
}

const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let failures = 0;
function check(ok, what) {
  log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
  return ok;
}
async function until(fn, timeoutMs, stepMs = 200) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = undefined; }
    await sleep(stepMs);
  }
  return last;
}

// ---- the app --------------------------------------------------------------------------------------
const app = spawn(appPath, ['--port', '0', '--token', TOKEN, '--max-viewers', '2', '--sim-latency-ms', '250',
  '--width', '256', '--height', '256', '--prompt', 'a quiet harbour at dusk'], { stdio: ['ignore', 'pipe', 'pipe'] });
let appOut = '';
let appExit = null;
app.stdout.on('data', (d) => { appOut += d; });
app.stderr.on('data', (d) => { appOut += d; });
app.on('exit', (code, signal) => { appExit = { code, signal, at: Date.now() }; });
const base = await until(() => (appOut.match(/open (http:\/\/\S+?\/)/) || [])[1], 15000);
if (!base) {
  console.log(appOut);
  console.log('FAIL: the app did not print its URL');
  app.kill('SIGKILL');
  process.exit(1);
}
log('app at', base);
const status = async () => (await fetch(`${base}api/status`)).json();

const contexts = [];
async function openViewer(name, { withToken = true } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `dw-e2e-${name}-`));
  const ctx = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, headless: true, args: ARGS });
  contexts.push({ ctx, dir });
  const page = ctx.pages()[0] || await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') log(`[${name} console] ${m.text()}`); });
  await page.goto(withToken ? `${base}?token=${TOKEN}` : base);
  return { name, ctx, page, dir };
}
const playing = (page) => page.evaluate(async () => {
  const v = document.getElementById('video');
  return { frames: await window.dw.framesDecoded(), paused: v.paused, t: v.currentTime, state: window.dw.state };
});
async function waitPlaying(v, ms = 20000) {
  const start = Date.now();
  let last = null;
  const r = await until(async () => {
    const p = last = await playing(v.page);
    return p.frames > 0 && !p.paused && p.t > 0 ? p : null;
  }, ms);
  if (!r) log(`${v.name}: last seen ${JSON.stringify(last)}`);
  check(!!r, `${v.name}: decoding and playing within ${ms / 1000} s` + (r ? ` (${r.frames} frames, ${((Date.now() - start) / 1000).toFixed(1)} s, state ${r.state})` : ''));
  return r;
}
async function stillDecoding(v, ms = 3000) {
  const a = await playing(v.page);
  await sleep(ms);
  const b = await playing(v.page);
  return check(b.frames > a.frames && !b.paused && b.t > a.t, `${v.name}: keeps decoding (${a.frames} -> ${b.frames} frames)`);
}
function wsStatus(query) {  // the HTTP status of a websocket handshake on /ws
  return new Promise((resolve) => {
    const u = new URL(`${base}ws${query}`);
    const req = http.get({ host: u.hostname, port: u.port, path: u.pathname + u.search, headers: {
      Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' } });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(101); });
    req.on('response', (res) => { res.resume(); resolve(res.statusCode); });
    req.on('error', () => resolve(0));
  });
}

try {
  // Token.
  check(await wsStatus('') === 401, '/ws without a token -> 401');
  check(await wsStatus('?token=wrong') === 401, '/ws with a wrong token -> 401');
  const post = (q, body) => fetch(`${base}api/control${q}`, { method: 'POST', body: JSON.stringify(body) });
  check((await post('', { prompt: 'x' })).status === 401, '/api/control without a token -> 401');
  check((await post('?token=nope', { prompt: 'x' })).status === 401, '/api/control with a wrong token -> 401');

  // First viewer.
  const A = await openViewer('A');
  await waitPlaying(A);

  // Prompt change from the page reaches the simulator.
  const newPrompt = `a lighthouse in a storm ${Date.now()}`;
  await A.page.fill('#prompt-input', newPrompt);
  await A.page.click('#prompt-send');
  const applied = await until(async () => (await status()).prompt.prompt === newPrompt, 5000);
  check(!!applied, '/api/status shows the prompt typed in the page');
  const reached = await until(async () => {
    const r = await (await fetch(`${base}api/sim/prompts`)).json();
    return r.last.some((p) => p.body.includes(newPrompt));
  }, 10000);
  check(!!reached, 'the simulator received a job with the new prompt');
  const kfPrompt = await until(async () => (await status()).prompt.latest_keyframe_prompt === newPrompt, 10000);
  check(!!kfPrompt, 'a keyframe made with the new prompt came back');

  // Second viewer, separate context.
  const B = await openViewer('B');
  await waitPlaying(B);
  check((await status()).viewers.count === 2, 'status shows 2 viewers');
  await stillDecoding(A, 2000);

  // A third one is refused clearly (max-viewers 2).
  const C = await openViewer('C');
  const refused = await until(async () => C.page.evaluate(() => window.dw.state === 'refused' && window.dw.detail), 8000);
  check(!!refused, `third viewer refused: "${refused}"`);
  const cText = await C.page.textContent('#state');
  check(/too many viewers/.test(cText), `refusal shown on the page ("${cText}")`);
  await C.ctx.close();

  // Close A (tab and browser): B keeps decoding, A's branch is gone.
  await A.page.close();
  await A.ctx.close();
  check(!!await until(async () => (await status()).viewers.count === 1, 5000), 'A left: 1 viewer');
  await stillDecoding(B);

  // A viewer whose browser is killed.
  const server = await chromium.launchServer({ executablePath: CHROMIUM, headless: true, args: ARGS });
  const kb = await chromium.connect(server.wsEndpoint());
  const kctx = await kb.newContext();
  const K = { name: 'K', page: await kctx.newPage() };
  await K.page.goto(`${base}?token=${TOKEN}`);
  await waitPlaying(K);
  check((await status()).viewers.count === 2, 'K connected: 2 viewers');
  server.process().kill('SIGKILL');
  const killedAt = Date.now();
  check(!!await until(async () => (await status()).viewers.count === 1, 5000),
    `browser killed: its branch removed (${((Date.now() - killedAt) / 1000).toFixed(1)} s)`);
  check(appExit === null, 'the app survived the browser dying');
  await stillDecoding(B);

  // And takes a new viewer.
  const D = await openViewer('D');
  await waitPlaying(D);

  // What the viewer sees: gaps between presented frames (requestVideoFrameCallback) over 5 s. The
  // figures are printed, not asserted (a shared machine); bench/viewer_gaps.mjs runs 60 s.
  const since = await B.page.evaluate(() => performance.timeOrigin + performance.now());
  await sleep(5000);
  const g = summarize(await B.page.evaluate((t) => window.dw.frameGaps(t), since));
  check(g.frames > 10, `B: ${g.frames} frames presented in 5 s (gaps p50 ${g.p50.toFixed(0)} ms, ` +
    `p99 ${g.p99.toFixed(0)} ms, max ${g.max.toFixed(0)} ms, ${g.long} > 100 ms)`);

  // Status while playing.
  const s = await status();
  check(typeof s.content_fps === 'number' && s.content_fps > 0 && s.content_fps <= s.output_fps * 1.2 + 0.5,
    `content rate ${s.content_fps && s.content_fps.toFixed(1)} distinct fps beside output ${s.output_fps.toFixed(1)} fps`);
  const hud = await B.page.textContent('#f-cfps');
  check(/distinct/.test(hud), `the HUD shows the content rate ("${hud}")`);
  check(s.health.comfykeyframesrc === 'ok', `source health ok (${s.health.comfykeyframesrc})`);
  check(s.output_fps > 0, `output fps ${s.output_fps.toFixed(1)}`);
  log('status figures:', JSON.stringify({ output_fps: s.output_fps, content_fps: s.content_fps, keyframe_fps: s.keyframe_fps,
    generation_ms: s.generation_time.mean_ms, buffer: s.buffer, viewers: s.viewers.count }));
} catch (e) {
  check(false, `exception: ${e.stack || e}`);
} finally {
  for (const { ctx, dir } of contexts) {
    try { await ctx.close(); } catch (e) { /* closed */ }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// SIGINT: clean exit within 2 s.
if (appExit === null) {
  const sent = Date.now();
  app.kill('SIGINT');
  const exited = await until(() => appExit, 3000, 20);
  const took = exited ? (exited.at - sent) / 1000 : null;
  check(!!exited && exited.code === 0 && took <= 2.0, `SIGINT -> exit code ${exited && exited.code} in ${took} s`);
  if (!exited) app.kill('SIGKILL');
}
if (failures) console.log(`--- app output ---\n${appOut}`);
log(failures ? `${failures} check(s) failed` : 'all checks passed');
process.exit(failures ? 1 : 0);
