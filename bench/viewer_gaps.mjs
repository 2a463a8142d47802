// What a browser viewer sees: gaps between presented frames (requestVideoFrameCallback) over a
// window (default 60 s) in headless Chromium, p50/p99/max, the count of gaps > 100 ms, and where
// each long gap comes from (server pacing, network, decoder, encoder/sender, renderer) from 1 s
// samples of WebRTC getStats() and the app's /api/status (docs/app.md, "Frame gaps").
//   node bench/viewer_gaps.mjs path/to/dreamwindow [SECONDS] [-- extra app options]
// Needs /usr/bin/chromium and `npm ci --prefix tests/e2e` (playwright-core). Prints figures only.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const e2e = path.join(here, '..', 'tests', 'e2e');
const { summarize, sample, attribute, table } = await import(pathToFileURL(path.join(e2e, 'gaps.mjs')));
let chromium;
try {
  const req = createRequire(path.join(e2e, 'package.json'));
  const pw = await import(pathToFileURL(req.resolve('playwright-core')));
  chromium = pw.chromium || (pw.default && pw.default.chromium);
  if (!chromium) throw new Error('no chromium export');
} catch (e) {
  console.log('SKIP: playwright-core missing (npm ci --prefix tests/e2e)');
  process.exit(77);
}
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const appPath = process.argv[2];
const seconds = Number(process.argv[3] || 60);
const dash = process.argv.indexOf('--');
const extra = dash > 0 ? process.argv.slice(dash + 1) : [];
if (!appPath || !fs.existsSync(appPath) || !fs.existsSync(CHROMIUM)) {
  console.log(`usage: node bench/viewer_gaps.mjs path/to/dreamwindow [SECONDS] [-- app options] (chromium: ${CHROMIUM})`);
  process.exit(2);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const app = spawn(appPath, ['--port', '0', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
let out = '';
app.stdout.on('data', (d) => { out += d; });
app.stderr.on('data', (d) => { out += d; });
let base = null;
for (let i = 0; i < 150 && !base; i++) { base = (out.match(/open (http:\/\/\S+?\/)/) || [])[1]; await sleep(100); }
if (!base) { console.log(out); app.kill('SIGKILL'); process.exit(1); }

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dw-gaps-'));
const ctx = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, headless: true, args: ['--headless',
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns', '--autoplay-policy=no-user-gesture-required'] });
const page = ctx.pages()[0] || await ctx.newPage();
await page.goto(base);
// Warm up: playing, and the buffer past its prebuffer.
for (let i = 0; i < 60; i++) {
  const p = await page.evaluate(() => ({ n: window.dw.frames, t: document.getElementById('video').currentTime }));
  if (p.n > 50 && p.t > 2) break;
  await sleep(500);
}
const start = Date.now();
const samples = [await sample(page, base)];
while (Date.now() - start < seconds * 1000) {
  await sleep(1000);
  samples.push(await sample(page, base));
}
const gaps = await page.evaluate((since) => window.dw.frameGaps(since), start);
const s = summarize(gaps);
const { causes, rows } = attribute(gaps, samples);
const first = samples[0], last = samples[samples.length - 1];
const d = (k) => (last.rx[k] || 0) - (first.rx[k] || 0);
const emitted = d('jitterBufferEmittedCount');

console.log(`viewer gaps over ${seconds} s (app ${extra.join(' ') || 'defaults'}; headless Chromium, loopback)`);
console.log(table(s, seconds));
console.log('\n| receiver (getStats) | value |\n| --- | --- |');
console.log(`| frames received / decoded / dropped | ${d('framesReceived')} / ${d('framesDecoded')} / ${d('framesDropped')} |`);
console.log(`| mean jitter-buffer delay | ${emitted ? (d('jitterBufferDelay') / emitted * 1000).toFixed(1) : '–'} ms |`);
console.log(`| mean inter-frame delay (decode side) | ${d('framesDecoded') ? (d('totalInterFrameDelay') / d('framesDecoded') * 1000).toFixed(1) : '–'} ms |`);
console.log(`| packets lost / NACKs / freezes | ${d('packetsLost')} / ${d('nackCount')} / ${d('freezeCount')} |`);
console.log(`| mean decode time | ${d('framesDecoded') ? (d('totalDecodeTime') / d('framesDecoded') * 1000).toFixed(1) : '–'} ms |`);
const sd = (k) => (last.server[k] || 0) - (first.server[k] || 0);
console.log('\n| server (flightbuffer, /api/status) | value |\n| --- | --- |');
console.log(`| underruns / late ticks / repeated frames | ${sd('underruns')} / ${sd('lateTicks')} / ${sd('repeated')} |`);
console.log(`| output fps / content fps / keyframes/s (last) | ${(last.server.outputFps || 0).toFixed(1)} / ${(last.server.contentFps || 0).toFixed(1)} / ${(last.server.keyframeFps || 0).toFixed(2)} |`);
console.log('\n| long gap cause (heuristic) | count |\n| --- | --- |');
for (const [c, n] of Object.entries(causes)) console.log(`| ${c} | ${n} |`);
if (!rows.length) console.log('| (no gap > 100 ms) | 0 |');
for (const r of rows.slice(0, 10)) console.log(`  gap ${r.ms.toFixed(0)} ms at +${((r.at - start) / 1000).toFixed(1)} s: ${r.cause}`);

await ctx.close();
fs.rmSync(dir, { recursive: true, force: true });
app.kill('SIGINT');
await sleep(1500);
process.exit(0);
