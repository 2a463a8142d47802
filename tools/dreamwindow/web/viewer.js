// dreamwindow viewer: WebRTC (server offers, trickle ICE over /ws), a HUD fed by /api/status, and the
// prompt box posting to /api/control. Plain JS, nothing loaded from elsewhere.
'use strict';

const params = new URLSearchParams(location.search);
const token = params.get('token') || '';
const video = document.getElementById('video');
const stateEl = document.getElementById('state');
const HISTORY_S = 300;  // the plot shows the last 5 minutes

// Exposed for tests and curious users.
const dw = window.dw = {
  state: 'connecting', detail: '', viewerId: null, refused: null, connects: 0, frames: 0, lastStatus: null,
  ws: null, pc: null,
  async framesDecoded() {
    if (!dw.pc) return 0;
    let n = 0;
    (await dw.pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0; });
    return n;
  },
};

function setState(state, detail = '') {
  dw.state = state;
  dw.detail = detail;
  document.body.dataset.state = state;
  stateEl.textContent = detail ? `${state} ${detail}` : state;
}

function authHeaders(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

/* ---------------------------------------------------------------------------------------------- */
/* WebRTC                                                                                           */

let retryMs = 500;
let retryTimer = null;
let playing = false;

function scheduleReconnect(why) {
  if (retryTimer) return;
  const delay = dw.refused && dw.refused.code === 'max-viewers' ? 5000 : retryMs;
  retryMs = Math.min(retryMs * 2, 5000);
  if (dw.refused) setState('refused', `${dw.refused.message} (retrying in ${Math.round(delay / 1000)} s)`);
  else setState('reconnecting', why ? `(${why})` : '');
  retryTimer = setTimeout(() => { retryTimer = null; connect(); }, delay);
}

function closePeer() {
  if (dw.pc) { try { dw.pc.close(); } catch (e) { /* already closed */ } }
  dw.pc = null;
  playing = false;
}

function connect() {
  closePeer();
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${proto}//${location.host}/ws${token ? `?token=${encodeURIComponent(token)}` : ''}`;
  if (dw.state !== 'refused') setState(dw.connects ? 'reconnecting' : 'connecting');
  const ws = new WebSocket(url);
  dw.ws = ws;
  const pc = new RTCPeerConnection({ iceServers: [] });
  dw.pc = pc;
  const send = (obj) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj)); };
  pc.ontrack = (e) => {
    video.srcObject = e.streams && e.streams[0] ? e.streams[0] : new MediaStream([e.track]);
    video.play().catch(() => {});
  };
  pc.onicecandidate = (e) => {
    if (e.candidate && e.candidate.candidate) send({ type: 'ice', candidate: e.candidate.candidate, sdpMLineIndex: e.candidate.sdpMLineIndex });
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'failed' && dw.pc === pc) ws.close();
  };
  // One chain: nothing is added before the remote description is set.
  let chain = Promise.resolve();
  ws.onopen = () => { dw.connects++; retryMs = 500; };
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    chain = chain.then(() => handle(msg)).catch((err) => console.error('signalling:', err));
  };
  async function handle(msg) {
    if (dw.pc !== pc) return;
    if (msg.type === 'hello') {
      dw.viewerId = msg.id;
      dw.refused = null;
    } else if (msg.type === 'offer') {
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      send({ type: 'answer', sdp: answer.sdp });
    } else if (msg.type === 'ice') {
      if (msg.candidate) await pc.addIceCandidate({ candidate: msg.candidate, sdpMLineIndex: msg.sdpMLineIndex });
    } else if (msg.type === 'error') {
      dw.refused = msg;
      setState('refused', msg.message);
    }
  }
  ws.onclose = (ev) => {
    if (dw.ws !== ws) return;
    closePeer();
    if (ev.code === 1008 || ev.reason === 'unauthorized') dw.refused = { code: 'token', message: 'a valid token is required' };
    scheduleReconnect(ev.code === 1001 ? 'server went away' : `closed ${ev.code}`);
  };
  ws.onerror = () => { /* onclose follows */ };
}

// What a viewer sees: every presented frame (requestVideoFrameCallback) as [epoch ms of its expected
// display time, media time, presentedFrames], for gap measurements (tests/e2e, bench/viewer_gaps).
// Bounded: the last ~10 minutes at 30 fps.
dw.presented = [];
dw.frameGaps = (sinceEpochMs = 0) => {
  const p = dw.presented.filter((f) => f[0] >= sinceEpochMs);
  const gaps = [];
  for (let i = 1; i < p.length; i++) gaps.push({ at: p[i][0], ms: p[i][0] - p[i - 1][0], skipped: p[i][2] - p[i - 1][2] - 1 });
  return gaps;
};
function countFrames() {
  if (!('requestVideoFrameCallback' in HTMLVideoElement.prototype)) return;
  const cb = (now, meta) => {
    dw.frames++;
    dw.presented.push([performance.timeOrigin + (meta.expectedDisplayTime || now), meta.mediaTime, meta.presentedFrames]);
    if (dw.presented.length > 20000) dw.presented.splice(0, 2000);
    video.requestVideoFrameCallback(cb);
  };
  video.requestVideoFrameCallback(cb);
}

/* ---------------------------------------------------------------------------------------------- */
/* HUD                                                                                              */

const hist = { t: [], fill: [], fps: [], cfps: [], kfps: [] };

// cfps: distinct frames per second (content rate; a repeated frame is not new), beside the output rate.
function pushSample(t, fill, fps, kfps, cfps) {
  hist.t.push(t); hist.fill.push(fill); hist.fps.push(fps); hist.kfps.push(kfps); hist.cfps.push(cfps);
  while (hist.t.length && t - hist.t[0] > HISTORY_S) { for (const k of Object.keys(hist)) hist[k].shift(); }
}

function draw() {
  const c = document.getElementById('plot');
  const g = c.getContext('2d');
  const w = c.width, h = c.height, pad = 18;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = '#333'; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) { const y = pad + (h - 2 * pad) * i / 4; g.beginPath(); g.moveTo(pad, y); g.lineTo(w - pad, y); g.stroke(); }
  if (hist.t.length < 2) return;
  const t1 = hist.t[hist.t.length - 1], t0 = t1 - HISTORY_S;
  const max = (a) => Math.max(1, ...a.filter((v) => v != null));
  const css = (v) => getComputedStyle(document.body).getPropertyValue(v);
  const rates = max(hist.fps.concat(hist.kfps, hist.cfps));
  const series = [[hist.fill, max(hist.fill), css('--fill')], [hist.fps, rates, css('--fps')],
    [hist.cfps, rates, css('--cfps')], [hist.kfps, rates, css('--kfps')]];
  for (const [data, top, color] of series) {
    g.strokeStyle = color.trim() || '#fff'; g.lineWidth = 1.5; g.beginPath();
    let started = false;
    data.forEach((v, i) => {
      if (v == null) { started = false; return; }
      const x = pad + (w - 2 * pad) * (hist.t[i] - t0) / HISTORY_S;
      const y = h - pad - (h - 2 * pad) * v / (top * 1.1);
      if (started) g.lineTo(x, y); else { g.moveTo(x, y); started = true; }
    });
    g.stroke();
  }
  g.fillStyle = '#888'; g.font = '10px system-ui';
  g.fillText(`fill ≤ ${max(hist.fill).toFixed(1)} s`, pad, 11);
  g.fillText(`fps ≤ ${rates.toFixed(1)}`, w - pad - 60, 11);
  g.fillText('-5 min', pad, h - 4); g.fillText('now', w - pad - 18, h - 4);
}

const fmt = (v, unit, digits = 1) => (v == null || Number.isNaN(v) ? '–' : `${Number(v).toFixed(digits)} ${unit}`);

async function loadHistory() {
  try {
    const r = await fetch('/api/history', { cache: 'no-store' });
    const h = await r.json();
    h.t.forEach((t, i) => pushSample(t, h.fill_s[i], h.output_fps[i], h.keyframe_fps[i], (h.content_fps || [])[i]));
  } catch (e) { /* the server is not up yet */ }
}

let editing = false;
document.getElementById('prompt-input').addEventListener('focus', () => { editing = true; });
document.getElementById('prompt-input').addEventListener('blur', () => { editing = false; });

function updateState(s) {
  if (dw.state === 'refused' || !dw.ws || dw.ws.readyState !== WebSocket.OPEN) return;
  const advancing = !video.paused && video.currentTime > 0 && video.readyState >= 2;
  const buf = s.buffer || {};
  const bufState = String(buf.state || '');
  if (/buffer|underrun|prefill|fill/i.test(bufState) && !/playing|steady|ok/i.test(bufState)) {
    setState('buffering', `${fmt(buf.fill_s, '', 1).trim()} / ${fmt(buf.prebuffer_s != null ? buf.prebuffer_s : buf.target_s, 's', 1)}`);
  } else if (advancing) {
    playing = true;
    setState(s.paused ? 'paused' : 'playing');
  } else if (!playing) {
    setState('connecting', '(waiting for video)');
  }
}

async function poll() {
  try {
    const r = await fetch('/api/status', { cache: 'no-store' });
    const s = await r.json();
    dw.lastStatus = s;
    pushSample(s.uptime_s, s.buffer.fill_s, s.output_fps, s.keyframe_fps, s.content_fps);
    document.getElementById('f-fps').textContent = fmt(s.output_fps, 'fps');
    document.getElementById('f-cfps').textContent = fmt(s.content_fps, 'fps distinct');
    document.getElementById('f-kfps').textContent = fmt(s.keyframe_fps, '/s', 2);
    document.getElementById('f-gen').textContent = `${fmt(s.generation_time.last_ms, 'ms', 0)} (mean ${fmt(s.generation_time.mean_ms, 'ms', 0)})`;
    document.getElementById('f-interp').textContent = s.health.vaeinterp === 'absent' ? 'off' : fmt(s.interpolation_fps, 'fps');
    document.getElementById('f-buffer').textContent = s.health.flightbuffer === 'absent' ? 'off'
      : `${fmt(s.buffer.fill_s, 's')} ${s.buffer.state || ''}`;
    document.getElementById('f-underruns').textContent = s.buffer.underruns == null ? '–' : String(s.buffer.underruns);
    document.getElementById('f-viewers').textContent = `${s.viewers.count} / ${s.viewers.max}`;
    document.getElementById('f-health').textContent = Object.entries(s.health).filter(([, v]) => v !== 'absent')
      .map(([k, v]) => `${k}: ${v}`).join(', ');
    document.getElementById('prompt-current').textContent = s.prompt.prompt || '–';
    if (!editing && !document.getElementById('prompt-input').value) document.getElementById('prompt-input').placeholder = s.prompt.prompt || '';
    document.getElementById('pause').textContent = s.paused ? 'Resume' : 'Pause';
    updateState(s);
  } catch (e) {
    if (dw.state === 'playing') setState('reconnecting', '(status unavailable)');
  }
  draw();
}

async function control(body) {
  const out = document.getElementById('control-result');
  try {
    const r = await fetch(`/api/control${token ? `?token=${encodeURIComponent(token)}` : ''}`, {
      method: 'POST', headers: authHeaders({ 'Content-Type': 'application/json' }), body: JSON.stringify(body),
    });
    const j = await r.json();
    out.textContent = r.ok ? `applied: ${j.applied.join(', ')}` : `refused (${r.status}): ${j.error}`;
    dw.lastControl = { status: r.status, body: j };
    poll();
    return r.status;
  } catch (e) {
    out.textContent = 'server unreachable';
    return 0;
  }
}

document.getElementById('prompt-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = document.getElementById('prompt-input').value.trim();
  if (text) control({ prompt: text });
});
document.getElementById('pause').addEventListener('click', () => {
  control({ pause: !(dw.lastStatus && dw.lastStatus.paused) });
});

setState('connecting');
countFrames();
loadHistory().then(poll);
setInterval(poll, 1000);
connect();
