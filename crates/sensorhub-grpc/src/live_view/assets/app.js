// The live view's one script. It starts from /view/api/snapshot, then
// applies the ticks of /view/events (one a second). Everything it writes
// into the page goes through textContent or SVG attributes, never HTML
// strings. Memory stays constant however long the page is open: each chart
// keeps at most MAX_POINTS points and only its range, the alert feed at most
// MAX_ALERTS, and every other table is replaced on each tick.

const MAX_POINTS = 1800;
const MAX_ALERTS = 50;
const RANGES = { '15m': 15 * 60, '1h': 3600, '24h': 24 * 3600 };
const SVG = 'http://www.w3.org/2000/svg';

const state = {
  range: '15m',
  rows: new Map(), // sensor id -> row
  charted: [], // sensor ids with a chart, in order
  series: new Map(), // sensor id -> { seq, points: [[ts seconds, °C]] }
  alerts: [], // newest first
  alertNumbers: new Set(),
  moreSensors: false,
  clockOffsetMs: 0, // server time - local time
  ready: false,
  pending: [],
  selected: null, // { kind: 'cell', name, bucket } | { kind: 'trace', id }
  traces: null,
  source: null,
};

// ---- small helpers ---------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'text') node.textContent = value;
    else if (key === 'class') node.className = value;
    else if (key.startsWith('data-') || key.startsWith('aria-') || key === 'title' || key === 'href' || key === 'type' || key === 'colspan' || key === 'rel' || key === 'target') node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function fixed(value, digits = 2) {
  return value == null || Number.isNaN(value) ? '–' : Number(value).toFixed(digits);
}

function millis(value) {
  if (value == null) return '–';
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

function micros(us) {
  if (us >= 1e6) return `${(us / 1e6).toFixed(2)} s`;
  if (us >= 1e3) return `${(us / 1e3).toFixed(2)} ms`;
  return `${us} µs`;
}

function age(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function clock(ms, seconds = true) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, '0');
  return seconds ? `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` : `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function percent(rate) {
  return rate > 0 ? `${(rate * 100).toFixed(rate < 0.01 ? 2 : 1)} %` : '0';
}

function serverNow() {
  return Date.now() + state.clockOffsetMs;
}

function setStatus(text, kind) {
  const status = document.getElementById('status');
  status.textContent = text;
  status.dataset.kind = kind;
}

// ---- data in ---------------------------------------------------------------

async function getJson(url) {
  const response = await fetch(url, { credentials: 'same-origin', cache: 'no-store' });
  if (response.status === 401) {
    location.reload(); // the session ended: the server shows the login form
    throw new Error('logged out');
  }
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function loadSnapshot() {
  state.ready = false;
  const snapshot = await getJson('/view/api/snapshot');
  state.clockOffsetMs = snapshot.server_time_ms - Date.now();
  state.rows = new Map(snapshot.sensors.map((row) => [row.id, row]));
  state.moreSensors = snapshot.more_sensors;
  state.series = new Map();
  for (const series of snapshot.series) state.series.set(series.sensor, { seq: series.seq, points: series.points });
  state.charted = snapshot.series.map((s) => s.sensor);
  state.alerts = [];
  state.alertNumbers = new Set();
  addAlerts([...snapshot.alerts].reverse());
  state.traces = snapshot.traces;
  // Calls and traces show every caller's: only for a token that may read every sensor.
  for (const id of ['calls', 'in-flight', 'traces']) document.getElementById(id).hidden = !snapshot.sees_calls;
  renderSensors();
  renderCharts();
  renderAlerts();
  renderCalls(snapshot.calls);
  renderInFlight(snapshot.in_flight);
  renderTraces();
  renderStore(snapshot.store);
  state.ready = true;
  for (const tick of state.pending.splice(0)) applyTick(tick);
  if (state.range !== '15m') await loadRange(state.range);
}

async function loadRange(range) {
  const ids = [...state.charted];
  const all = await Promise.all(ids.map((id) => getJson(`/view/api/series?sensor=${encodeURIComponent(id)}&range=${range}`)));
  if (range !== state.range) return;
  for (const series of all) state.series.set(series.sensor, { seq: series.seq, points: series.points });
  renderCharts();
}

function addAlerts(alerts) {
  for (const alert of alerts) {
    if (state.alertNumbers.has(alert.number)) continue;
    state.alertNumbers.add(alert.number);
    state.alerts.unshift(alert);
  }
  state.alerts.sort((a, b) => b.number - a.number);
  while (state.alerts.length > MAX_ALERTS) state.alertNumbers.delete(state.alerts.pop().number);
}

function applyTick(tick) {
  state.clockOffsetMs = tick.server_time_ms - Date.now();
  for (const row of tick.sensors) {
    const known = state.rows.get(row.id);
    if (!known || row.count >= known.count) state.rows.set(row.id, row);
    if (!state.charted.includes(row.id) && state.charted.length < 16) {
      state.charted.push(row.id);
      state.charted.sort();
    }
  }
  state.moreSensors = tick.more_sensors;
  const horizon = serverNow() / 1000 - RANGES[state.range];
  for (const [id, points] of Object.entries(tick.points)) {
    let series = state.series.get(id);
    if (!series) {
      series = { seq: 0, points: [] };
      state.series.set(id, series);
    }
    for (const [ts, value, seq] of points) {
      if (seq <= series.seq) continue;
      series.seq = seq;
      series.points.push([ts, value]);
    }
    series.points.sort((a, b) => a[0] - b[0]);
    while (series.points.length > MAX_POINTS || (series.points.length && series.points[0][0] < horizon)) series.points.shift();
  }
  addAlerts(tick.alerts);
  if (tick.traces) state.traces = tick.traces;
  renderSensors();
  renderCharts();
  if (tick.alerts.length) renderAlerts();
  renderCalls(tick.calls);
  renderInFlight(tick.in_flight);
  if (tick.traces) renderTraces();
  renderStore(tick.store);
  setStatus(`live · ${clock(tick.server_time_ms)}`, 'live');
}

function connect() {
  if (state.source) state.source.close();
  const source = new EventSource('/view/events');
  state.source = source;
  source.addEventListener('hello', () => {
    setStatus('live', 'live');
    loadSnapshot().catch((e) => setStatus(`error: ${e.message}`, 'error'));
  });
  source.addEventListener('tick', (event) => {
    const tick = JSON.parse(event.data);
    if (state.ready) applyTick(tick);
    else if (state.pending.length < 10) state.pending.push(tick);
  });
  source.addEventListener('logout', () => location.reload());
  source.addEventListener('bye', () => {
    setStatus('the server is shutting down', 'warn');
    source.close();
    setTimeout(connect, 5000);
  });
  source.onerror = () => {
    setStatus('reconnecting…', 'warn');
    // An ended session makes the stream fail: find out, and show the form.
    fetch('/view/api/snapshot', { credentials: 'same-origin', method: 'HEAD' })
      .then((r) => { if (r.status === 401) location.reload(); })
      .catch(() => {});
  };
}

// ---- rendering -------------------------------------------------------------

function renderSensors() {
  const body = document.querySelector('#sensor-table tbody');
  const rows = [...state.rows.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  body.replaceChildren(...rows.map((row) => el('tr', { 'data-sensor': row.id },
    el('th', { scope: 'row', text: row.id }),
    el('td', { class: 'num', text: String(row.count) }),
    el('td', { class: 'num last', text: fixed(row.last) }),
    el('td', { class: 'time', text: row.count ? clock(row.last_ts * 1000) : '–' }),
    el('td', { class: 'num', text: fixed(row.min) }),
    el('td', { class: 'num', text: fixed(row.max) }),
    el('td', { class: 'num', text: fixed(row.mean) }),
    el('td', { class: 'num', text: fixed(row.rolling_mean) }),
    el('td', { class: row.alerts ? 'num alerting' : 'num', text: String(row.alerts) }),
  )));
  if (!rows.length) body.replaceChildren(el('tr', {}, el('td', { colspan: '9', class: 'note', text: 'No readings stored yet: start a sensor (sensorhub sensor) or sensorhub demo.' })));
  document.getElementById('more-sensors').hidden = !state.moreSensors;
}

function renderCharts() {
  const box = document.getElementById('charts');
  const now = serverNow() / 1000;
  const from = now - RANGES[state.range];
  box.replaceChildren(...state.charted.map((id) => chart(id, from, now)));
}

function chart(id, from, to) {
  // About the size it is drawn at, so the axis text stays readable.
  const W = 360, H = 150, L = 38, R = 8, T = 8, B = 20;
  const series = state.series.get(id) || { points: [] };
  const points = series.points.filter(([ts]) => ts >= from - 1);
  const row = state.rows.get(id);
  const values = points.map(([, v]) => v);
  let lo = values.length ? Math.min(...values) : 0;
  let hi = values.length ? Math.max(...values) : 1;
  if (hi - lo < 1) { const mid = (hi + lo) / 2; lo = mid - 0.5; hi = mid + 0.5; }
  const pad = (hi - lo) * 0.1; lo -= pad; hi += pad;
  const x = (ts) => L + ((ts - from) / (to - from)) * (W - L - R);
  const y = (v) => T + ((hi - v) / (hi - lo)) * (H - T - B);
  const grid = [];
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    grid.push(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }));
    grid.push(svg('text', { x: L - 5, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' }, document.createTextNode(v.toFixed(1))));
  }
  for (let i = 0; i <= 3; i++) {
    const ts = from + ((to - from) * i) / 3;
    grid.push(svg('text', { x: x(ts), y: H - 5, class: 'axis', 'text-anchor': i === 0 ? 'start' : i === 3 ? 'end' : 'middle' }, document.createTextNode(clock(ts * 1000, false))));
  }
  const line = points.map(([ts, v]) => `${x(ts).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
  const alerts = state.alerts.filter((a) => a.sensor === id && a.timestamp >= from)
    .map((a) => svg('circle', { cx: x(a.timestamp), cy: y(Math.min(Math.max(a.temperature, lo), hi)), r: 4, class: 'alert-dot' }, svg('title', {}, document.createTextNode(a.message))));
  const last = points.length ? points[points.length - 1] : null;
  const figure = el('figure', { class: 'chart' },
    el('figcaption', {},
      el('span', { class: 'name', text: id }),
      el('span', { class: 'value', text: row && row.count ? `${fixed(row.last)} °C` : 'no readings' })),
    svg('svg', {
      viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${id}: temperature over the last ${state.range}`,
      'data-sensor': id, 'data-points': points.length, 'data-last': last ? last[1] : '',
    },
    ...grid,
    svg('polyline', { points: line, class: 'line' }),
    last ? svg('circle', { cx: x(last[0]), cy: y(last[1]), r: 3, class: 'last-dot' }) : null,
    ...alerts));
  return figure;
}

function renderAlerts() {
  const feed = document.getElementById('alert-feed');
  feed.replaceChildren(...state.alerts.map((a) => el('li', { class: `alert ${a.rule}`, 'data-number': String(a.number) },
    el('time', { text: clock(a.raised_ms) }),
    el('span', { class: 'rule', text: a.rule.replace('_', ' ') }),
    el('span', { class: 'text', text: a.message }))));
  document.getElementById('no-alerts').hidden = state.alerts.length > 0;
}

function renderCalls(rows) {
  const body = document.querySelector('#call-table tbody');
  let previous = null;
  body.replaceChildren(...rows.map((row) => {
    const first = row.method !== previous;
    previous = row.method;
    const w = (win, errors) => [
      el('td', { class: 'num', text: win.calls ? win.rate.toFixed(win.rate < 10 ? 2 : 0) : '–' }),
      el('td', { class: errors > 0 ? 'num alerting' : 'num', text: first ? percent(errors) : '' }),
      el('td', { class: 'num', text: millis(win.p50_ms) }),
      el('td', { class: 'num', text: millis(win.p90_ms) }),
      el('td', { class: 'num', text: millis(win.p99_ms) }),
    ];
    return el('tr', { class: first ? 'first' : 'more', 'data-method': row.method, 'data-status': row.status },
      el('th', { scope: 'row', text: first ? row.method.replace(/^SensorService\//, '') : '', title: row.method }),
      el('td', { class: row.status === 'OK' ? 'status ok' : 'status bad', text: row.status }),
      ...w(row.minute, row.method_error_rate_minute),
      ...w(row.hour, row.method_error_rate_hour));
  }));
  if (!rows.length) body.replaceChildren(el('tr', {}, el('td', { colspan: '12', class: 'note', text: 'No calls yet.' })));
}

function renderInFlight(view) {
  document.getElementById('in-flight-count').textContent = view.untracked ? `${view.total} (+${view.untracked} untracked)` : String(view.total);
  const body = document.querySelector('#in-flight-table tbody');
  const now = serverNow();
  body.replaceChildren(...view.calls.map((call) => el('tr', { 'data-method': call.method, 'data-trace': call.trace_id || '' },
    el('th', { scope: 'row', text: call.method.replace(/^SensorService\//, ''), title: call.method }),
    el('td', { text: call.peer || '–' }),
    el('td', { class: 'num age', text: age(Math.max(call.age_ms, now - call.started_ms)) }),
    el('td', { class: 'num received', text: String(call.received) }),
    el('td', { class: 'num sent', text: String(call.sent) }),
    el('td', { class: 'trace-id', text: call.trace_id ? call.trace_id.slice(0, 16) : '–', title: call.trace_id || 'no trace id' }))));
  if (!view.calls.length) body.replaceChildren(el('tr', {}, el('td', { colspan: '6', class: 'note', text: 'No calls in progress.' })));
}

function renderTraces() {
  const traces = state.traces;
  if (!traces) return;
  const table = document.getElementById('tracez-table');
  table.tHead.replaceChildren(el('tr', {}, el('th', { text: 'span' }), ...traces.buckets.map((b) => el('th', { class: 'num', text: b })), el('th', { class: 'num', text: 'errors' })));
  table.tBodies[0].replaceChildren(...traces.rows.map((row) => el('tr', { 'data-name': row.name },
    el('th', { scope: 'row', text: row.name.replace(/^SensorService\//, ''), title: row.name }),
    ...row.buckets.map((samples, bucket) => {
      const cell = el('td', { class: 'num' });
      if (samples.length) {
        cell.append(el('button', { type: 'button', class: 'link', text: String(samples.length), title: `${row.name}, ${traces.buckets[bucket]}`, onclick: () => select({ kind: 'cell', name: row.name, bucket }) }));
      }
      return cell;
    }),
    el('td', { class: row.errors ? 'num alerting' : 'num', text: String(row.errors) }))));
  if (!traces.rows.length) table.tBodies[0].replaceChildren(el('tr', {}, el('td', { colspan: String(traces.buckets.length + 2), class: 'note', text: 'No traces kept yet.' })));
  const errors = document.getElementById('trace-errors');
  errors.replaceChildren(...traces.errors.slice(0, 20).map((t) => el('li', { class: 'trace-error', 'data-trace-id': t.trace_id || '' },
    el('time', { text: clock(t.start_ms) }),
    el('button', { type: 'button', class: 'link', text: t.name.replace(/^SensorService\//, ''), onclick: () => select({ kind: 'trace', id: t.id }) }),
    el('span', { class: 'status bad', text: t.status || 'error' }),
    el('span', { class: 'duration', text: micros(t.duration_us) }))));
  document.getElementById('no-errors').hidden = traces.errors.length > 0;
  if (state.selected && state.selected.kind === 'cell') renderCell();
}

function select(selection) {
  state.selected = selection;
  if (selection.kind === 'cell') renderCell();
  else openTrace(selection.id);
}

function renderCell() {
  const { name, bucket } = state.selected;
  const row = state.traces.rows.find((r) => r.name === name);
  const samples = row ? row.buckets[bucket] : [];
  const detail = document.getElementById('trace-detail');
  detail.hidden = false;
  detail.replaceChildren(
    el('h3', { text: `${name} · ${state.traces.buckets[bucket]}` }),
    el('ol', { class: 'feed' }, ...samples.map((t) => el('li', {},
      el('time', { text: clock(t.start_ms) }),
      el('button', { type: 'button', class: 'link', text: micros(t.duration_us), onclick: () => select({ kind: 'trace', id: t.id }) }),
      el('span', { class: 'note', text: `${t.spans} spans` })))));
}

async function openTrace(id) {
  const detail = document.getElementById('trace-detail');
  detail.hidden = false;
  let trace;
  try {
    trace = await getJson(`/view/api/trace/${id}`);
  } catch (e) {
    detail.replaceChildren(el('p', { class: 'note', text: 'That trace is no longer kept.' }));
    return;
  }
  const total = Math.max(1, ...trace.spans.map((s) => s.offset_us + s.duration_us));
  const s = trace.summary;
  const head = el('div', { class: 'trace-head' },
    el('h3', { text: s.name }),
    el('span', { class: s.error ? 'status bad' : 'status ok', text: s.status || (s.error ? 'error' : 'ok') }),
    el('span', { text: micros(s.duration_us) }),
    el('code', { class: 'trace-id', text: s.trace_id || 'no trace id' }),
    s.jaeger ? el('a', { href: s.jaeger, target: '_blank', rel: 'noopener noreferrer', text: 'open in Jaeger' }) : null,
    el('button', { type: 'button', class: 'link', text: 'close', onclick: () => { detail.hidden = true; state.selected = null; } }));
  const rows = trace.spans.map((span) => {
    const bar = svg('svg', { viewBox: '0 0 1000 10', preserveAspectRatio: 'none', class: 'bar', 'aria-hidden': 'true' },
      svg('rect', { x: (span.offset_us / total) * 1000, y: 1, width: Math.max(2, (span.duration_us / total) * 1000), height: 8, class: span.error ? 'bad' : span.kind }));
    const attrs = el('dl', { class: 'attributes', hidden: true }, ...span.attributes.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
    const name = el('button', { type: 'button', class: `span-name depth-${Math.min(span.depth, 8)}`, text: `${span.name}`, title: `${span.kind}${span.span_id ? `, span ${span.span_id}` : ''}`, onclick: () => { attrs.hidden = !attrs.hidden; } });
    return el('li', { class: span.error ? 'span failed' : 'span' },
      el('div', { class: 'span-row' }, name, bar, el('span', { class: 'duration', text: micros(span.duration_us) }), el('span', { class: span.error ? 'status bad' : 'status', text: span.status || '' })),
      attrs);
  });
  const notes = [];
  if (trace.root_only) notes.push(el('p', { class: 'note', text: 'Only this call was kept: its trace was not sampled when it began, or tracing is off.' }));
  if (trace.dropped_spans) notes.push(el('p', { class: 'note', text: `${trace.dropped_spans} more spans of this trace were not kept.` }));
  detail.replaceChildren(head, el('ol', { class: 'span-tree' }, ...rows), ...notes);
}

function renderStore(store) {
  const list = document.getElementById('store-stats');
  const item = (label, value) => [el('dt', { text: label }), el('dd', { text: value })];
  list.replaceChildren(
    ...item('commit queue', `${store.queued_writes} / ${store.queue_capacity} writes`),
    ...item('group commits', `${store.commits_per_s.toFixed(1)} /s`),
    ...item('readings committed', `${store.readings_per_s.toFixed(1)} /s`),
    ...item('mean group size', store.mean_group == null ? '–' : store.mean_group.toFixed(1)),
    ...item('mean commit time', store.mean_commit_ms == null ? '–' : `${millis(store.mean_commit_ms)} ms`),
    ...item('indexer lag', `${store.indexer_lag} readings`));
}

// ---- controls --------------------------------------------------------------

for (const button of document.querySelectorAll('.ranges button')) {
  button.addEventListener('click', () => {
    state.range = button.dataset.range;
    for (const b of document.querySelectorAll('.ranges button')) b.setAttribute('aria-pressed', String(b === button));
    loadRange(state.range).catch((e) => setStatus(`error: ${e.message}`, 'error'));
  });
}

connect();
