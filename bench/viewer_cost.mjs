// CPU cost per WebRTC viewer of the dreamwindow app: the app on its built-in simulator, 0, 1, 2 and
// 4 headless Chromium viewers, the app's own CPU time (utime + stime from /proc) over a fixed window
// for each count, side by side in one run. Prints a table; no assertions (a benchmark).
//   node bench/viewer_cost.mjs build/tools/dreamwindow/dreamwindow [window-seconds] [size]
// Needs /usr/bin/chromium and `npm ci --prefix tests/e2e` (playwright-core).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

const appPath = process.argv[2];
const windowS = Number(process.argv[3] || 15);
const size = String(process.argv[4] || 512);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const require = createRequire(path.resolve('tests/e2e/package.json'));
let chromium;
try { ({ chromium } = require('playwright-core')); } catch (e) {
  console.log('SKIP: playwright-core missing (npm ci --prefix tests/e2e)'); process.exit(0);
}
if (!appPath || !fs.existsSync(appPath) || !fs.existsSync(CHROMIUM)) { console.log('SKIP: app or chromium missing'); process.exit(0); }
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns', '--autoplay-policy=no-user-gesture-required'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const hz = 100;  // USER_HZ on Linux
const cpuTicks = (pid) => { const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return Number(f[11]) + Number(f[12]); };

const app = spawn(appPath, ['--port', '0', '--max-viewers', '4', '--sim-latency-ms', '300', '--width', size, '--height', size],
  { stdio: ['ignore', 'pipe', 'pipe'] });
let out = '';
app.stdout.on('data', (d) => { out += d; });
app.stderr.on('data', (d) => { out += d; });
let base;
for (let i = 0; i < 150 && !base; i++) { base = (out.match(/open (http:\/\/\S+?\/)/) || [])[1]; await sleep(100); }
if (!base) { console.log(out); console.log('the app did not start'); app.kill('SIGKILL'); process.exit(1); }

const viewers = [];
async function addViewer() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dw-cost-'));
  const ctx = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, headless: true, args: ARGS });
  const page = ctx.pages()[0] || await ctx.newPage();
  await page.goto(base);
  for (let i = 0; i < 100; i++) {
    const f = await page.evaluate(async () => (window.dw && window.dw.framesDecoded) ? window.dw.framesDecoded() : 0).catch(() => 0);
    if (f > 10) break;
    await sleep(200);
  }
  viewers.push({ ctx, dir });
}
async function measure() {
  await sleep(3000);  // settle after a change
  const a = cpuTicks(app.pid), t0 = Date.now();
  const s0 = await (await fetch(`${base}api/status`)).json();
  await sleep(windowS * 1000);
  const b = cpuTicks(app.pid), secs = (Date.now() - t0) / 1000;
  const s1 = await (await fetch(`${base}api/status`)).json();
  return { cpu: (b - a) / hz / secs * 100, viewers: (s1.viewers && s1.viewers.length) ?? s1.viewer_count ?? '?', s0, s1 };
}

console.log(`CPU of the app process (percent of one core) over ${windowS} s per row; 2-core machine, ${size}x${size}, sim 300 ms (the browsers run on the same 2 cores)`);
console.log('viewers | app CPU % | delta vs 0 viewers | per viewer');
let baseCpu = null;
for (const n of [0, 1, 2, 4]) {
  while (viewers.length < n) await addViewer();
  const m = await measure();
  if (baseCpu === null) baseCpu = m.cpu;
  const d = m.cpu - baseCpu;
  console.log(`${String(n).padStart(7)} | ${m.cpu.toFixed(1).padStart(9)} | ${d.toFixed(1).padStart(18)} | ${n ? (d / n).toFixed(1).padStart(10) : '         -'}`);
}
for (const v of viewers) { await v.ctx.close().catch(() => {}); fs.rmSync(v.dir, { recursive: true, force: true }); }
app.kill('SIGTERM');
