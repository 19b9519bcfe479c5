// The status page's refresh: fetch /status, redraw the tables in place (no build step, no library).
const COLORS = __COLORS__;
const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
const fmt = (v, d, suf) => v === null || v === undefined ? '-' : Number(v).toFixed(d) + (suf || '');
const restarts = u => u.restarts + (Object.keys(u.restarts_by_reason).length
  ? ' (' + Object.entries(u.restarts_by_reason).sort().map(([k, v]) => k + ' ' + v).join(', ') + ')' : '');
const state = s => `<span class=state style="color:${COLORS[s] || '#000'}">${esc(s)}</span>`;
function spark(points) {
  if (!points.length) return '';
  const w = 120, h = 22, max = Math.max(1, ...points.map(p => p.requests)), step = w / Math.max(1, points.length - 1);
  const line = key => points.map((p, i) => `${(i * step).toFixed(1)},${(h - 2 - (h - 4) * p[key] / max).toFixed(1)}`).join(' ');
  return `<svg width=${w} height=${h} viewBox="0 0 ${w} ${h}"><title>requests (grey) and answered (green) per scrape, newest right</title>`
    + `<polyline fill=none stroke="#8c959f" stroke-width=1.5 points="${line('requests')}"/>`
    + `<polyline fill=none stroke="#1a7f37" stroke-width=1.5 points="${line('answered')}"/></svg>`;
}
function row(cells, name) { return `<tr data-unit="${esc(name)}">` + cells.map(c => `<td>${c}</td>`).join('') + '</tr>'; }
async function refresh() {
  let snap;
  try {
    const r = await fetch('/status', {cache: 'no-store'});
    snap = await r.json();
  } catch (e) {
    document.getElementById('updated').textContent = 'cannot reach the status API: ' + e;
    return;
  }
  document.getElementById('miners').innerHTML = snap.miners.map(m => {
    const p = m.last_probe || {}, t = m.traffic || {};
    return row([esc(m.name), esc(m.backend), m.port, state(m.state), esc(restarts(m)), esc(p.verdict || '-'),
      fmt(p.first_chunk_after, 2, 's'), fmt(t.requests, 0),
      fmt(t.answered_fraction === null || t.answered_fraction === undefined ? null : 100 * t.answered_fraction, 0, '%'),
      fmt(t.first_chunk_p90, 2, 's'), spark(t.history || []), esc(t.validators_line || '-'),
      esc(t.validator_alarm || m.detail || m.reason || t.error || '')], m.name);
  }).join('');
  document.getElementById('servers').innerHTML = (snap.model_servers || []).map(s => {
    const c = s.last_check || {}, t = s.traffic || {};
    return row([esc(s.name), s.port, state(s.state), esc(restarts(s)), esc(c.verdict || '-'),
      fmt(t.requests_processing, 0), fmt(t.tokens_predicted_total, 0), esc(s.detail || s.reason || t.error || '')], s.name);
  }).join('');
  const held = document.getElementById('held');
  held.hidden = !snap.fleet_changed;
  held.textContent = snap.fleet_changed ? `held: ${snap.fleet_changed}; no restarts until the watch runs on it` : '';
  const rollout = document.getElementById('rollout'), r = snap.rollout;
  rollout.hidden = !r;
  rollout.textContent = r ? `${r.kind || 'rollout'} (${r.state}): ${r.message}` : '';
  const running = snap.miners.filter(m => m.state === 'RUNNING').length;
  document.getElementById('updated').textContent =
    `${running}/${snap.miners.length} miners running, runtime ${snap.runtime}, updated ${new Date().toLocaleTimeString()}`;
}
refresh();
setInterval(refresh, __REFRESH_MS__);
