// Gaps between presented frames as a viewer sees them (requestVideoFrameCallback, recorded by the
// viewer page in window.dw.presented), their summary, and a heuristic attribution of long gaps to
// where they come from, from 1 s samples of WebRTC getStats (receiver) and /api/status (server).
// Used by tests/e2e/viewer.test.mjs (a short window) and bench/viewer_gaps.mjs (60 s).

export function quantile(sorted, q) {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

export function summarize(gaps, longMs = 100) {
  const ms = gaps.map((g) => g.ms).sort((a, b) => a - b);
  return {
    frames: ms.length + (ms.length ? 1 : 0),
    p50: quantile(ms, 0.5), p99: quantile(ms, 0.99), max: ms.length ? ms[ms.length - 1] : NaN,
    long: gaps.filter((g) => g.ms > longMs).length,
    skipped: gaps.reduce((n, g) => n + Math.max(0, g.skipped || 0), 0),
  };
}

// One sample: receiver counters from getStats() and the server's figures from /api/status.
export async function sample(page, base) {
  const rx = await page.evaluate(async () => {
    const out = {};
    if (!window.dw.pc) return out;
    (await window.dw.pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        for (const k of ['framesReceived', 'framesDecoded', 'framesDropped', 'jitterBufferDelay', 'jitterBufferEmittedCount',
          'totalInterFrameDelay', 'totalSquaredInterFrameDelay', 'packetsLost', 'nackCount', 'freezeCount',
          'totalFreezesDuration', 'totalDecodeTime', 'keyFramesDecoded']) out[k] = r[k] || 0;
      }
    });
    return out;
  });
  let server = {};
  try {
    const s = await (await fetch(`${base}api/status`)).json();
    const fb = (s.elements.flightbuffer || {}).stats || {};
    server = { underruns: fb['underruns'] || 0, lateTicks: fb['late-ticks'] || 0, repeated: fb['frames-repeated'] || 0,
      framesOut: fb['frames-out'] || 0, fill: s.buffer.fill_s, outputFps: s.output_fps, contentFps: s.content_fps,
      keyframeFps: s.keyframe_fps, state: s.buffer.state };
  } catch (e) { /* status unavailable: attribution falls back to the receiver's side */ }
  return { at: Date.now(), rx, server };
}

const delta = (a, b, k) => ((b && b[k]) || 0) - ((a && a[k]) || 0);

// Attributes each long gap to the first cause whose evidence shows in the samples around it.
export function attribute(gaps, samples, longMs = 100) {
  const causes = {};
  const rows = [];
  for (const g of gaps.filter((x) => x.ms > longMs)) {
    // The samples bracketing the gap (1 s apart): the last one before it began, the first after it.
    const before = samples.filter((s) => s.at <= g.at - g.ms);
    const after = samples.filter((s) => s.at >= g.at);
    const a = before.length ? before[before.length - 1] : samples[0];
    const b = after.length ? after[0] : samples[samples.length - 1];
    let cause = 'unattributed';
    if (a && b && a !== b) {
      const dt = (b.at - a.at) / 1000;
      const emitted = delta(a.rx, b.rx, 'jitterBufferEmittedCount');
      const jbPerFrame = emitted > 0 ? delta(a.rx, b.rx, 'jitterBufferDelay') / emitted * 1000 : 0;
      if (delta(a.server, b.server, 'underruns') > 0) cause = 'pacing: flightbuffer underrun (content starved)';
      else if (delta(a.server, b.server, 'lateTicks') > 0) cause = 'pacing: late flightbuffer ticks';
      else if (delta(a.rx, b.rx, 'packetsLost') > 0 || delta(a.rx, b.rx, 'nackCount') > 0) cause = 'network: loss/retransmission';
      else if (delta(a.rx, b.rx, 'framesDropped') > 0) cause = 'decoder: frames dropped';
      else if (delta(a.rx, b.rx, 'framesReceived') < 0.8 * dt * (b.server.outputFps || 0)) cause = 'encoder/sender: frames not received';
      else if (jbPerFrame > 150) cause = `network: jitter buffer ${jbPerFrame.toFixed(0)} ms/frame`;
      else if ((g.skipped || 0) > 0) cause = 'renderer: decoded frames skipped at presentation';
      else cause = 'renderer/compositor: no stall upstream';
    }
    causes[cause] = (causes[cause] || 0) + 1;
    rows.push({ ...g, cause });
  }
  return { causes, rows };
}

export function table(s, seconds) {
  const f = (v) => (Number.isFinite(v) ? v.toFixed(1) : '–');
  return [
    '| window | frames presented | fps | p50 gap ms | p99 gap ms | max gap ms | gaps > 100 ms | frames skipped |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    `| ${seconds} s | ${s.frames} | ${f(s.frames / seconds)} | ${f(s.p50)} | ${f(s.p99)} | ${f(s.max)} | ${s.long} | ${s.skipped} |`,
  ].join('\n');
}
