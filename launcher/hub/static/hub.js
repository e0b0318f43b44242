// The hub's pages: live through the JSON API and its event streams. Data from the server is only ever put in
// the page as text (textContent), never as HTML.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-Spottrain-CSRF": csrf()},
    body: JSON.stringify(body || {}),
  });
  const data = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
  if (!response.ok) throw Object.assign(new Error(data.error || `HTTP ${response.status}`), {fields: data.fields || {}});
  return data;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function showError(id, error) {
  const node = document.getElementById(id);
  node.textContent = error ? String(error.message || error) : "";
  node.hidden = !error;
}

const fmtTime = (t) => t ? new Date(t * 1000).toLocaleString() : "";
const fmtNum = (v) => v == null ? "" : Number(v).toPrecision(4);
// A run's step as people read it: `12/40`, `-` before the trainer reports one (the API gives integers).
const progress = (run) => run.step == null ? "-" : `${run.step}/${run.total_steps}`;

// --- Runs -----------------------------------------------------------------------------------------------
// Every run of every project, newest first; a sweep's cells under one collapsible row of the sweep, whose summary
// (state, cells finished, states) the server computes as `launch status` does. The filters are the page's query
// and apply to runs and cells; a sweep shows while any of its cells matches.
const FILTERED = {state: (r) => r.state, target: (r) => r.target, recipe: (r) => r.recipe, who: (r) => r.launched_by};

function fmtLedger(goodput, hours, unit) {
  const parts = [];
  if (goodput != null) parts.push(`goodput ${(goodput * 100).toFixed(1)}%`);
  if (hours != null) parts.push(`${hours.toFixed(2)} ${unit}-h`);
  return parts.join(" · ");
}

function stateBadge(state) {
  const badge = document.createElement("span");
  badge.className = "state state-" + state; badge.textContent = state;
  return badge;
}

function runsPage() {
  const table = document.getElementById("runs");
  const compare = document.getElementById("compare");
  const query = new URLSearchParams(location.search);
  const filters = {}, controls = {};
  for (const name of [...Object.keys(FILTERED), "q"]) {
    controls[name] = document.getElementById("filter-" + name);
    filters[name] = query.get(name) || "";
  }
  const picked = new Set(), collapsed = new Set(), jobsOf = new Map();  // run id → its eval and predict jobs
  let runs = JSON.parse(document.getElementById("initial-runs").textContent);
  let sweeps = JSON.parse(document.getElementById("initial-sweeps").textContent);
  // the sweeps a search explores (/api/sweeps), asked again when a sweep not asked about yet shows up
  let searched = new Set(), asked = new Set();
  async function learnSearches() {
    if (Object.keys(sweeps).every((id) => asked.has(id))) return;
    asked = new Set(Object.keys(sweeps));
    try { searched = new Set((await getJSON("/api/sweeps")).map((s) => s.sweep_id)); draw(); }
    catch (error) { asked.clear(); }  // unlinked until the next sweeps event asks again
  }
  controls.state.value = filters.state; controls.q.value = filters.q;

  function matches(run) {
    const text = filters.q.trim().toLowerCase();
    return Object.entries(FILTERED).every(([name, of]) => !filters[name] || of(run) === filters[name])
      && (!text || [run.name, run.id].some((value) => value.toLowerCase().includes(text)));
  }
  function offer() {  // each select offers the values the list has (and the one asked for), rebuilt when they change
    for (const name of ["target", "recipe", "who"]) {
      const values = [...new Set([...runs.map(FILTERED[name]), filters[name]].filter(Boolean))].sort();
      const select = controls[name], key = JSON.stringify(values);
      if (select.dataset.values !== key) {
        select.dataset.values = key;
        select.replaceChildren(...[["", "all"], ...values.map((v) => [v, v])].map(([value, label]) => {
          const option = document.createElement("option");
          option.value = value; option.textContent = label;
          return option;
        }));
        select.value = filters[name];
      }
    }
  }
  function groups() {  // launch order, a sweep's cells together where its first cell was launched, jobs apart
    const listed = [], cellsOf = new Map(), ids = new Set(runs.map((run) => run.id));
    jobsOf.clear();
    for (const run of runs) {
      if (run.job_of && ids.has(run.job_of)) {  // listed under the run whose weights it uses
        if (!jobsOf.has(run.job_of)) jobsOf.set(run.job_of, []);
        jobsOf.get(run.job_of).push(run);
      } else if (!run.sweep_id) listed.push([null, [run]]);
      else if (cellsOf.has(run.sweep_id)) cellsOf.get(run.sweep_id).push(run);
      else { cellsOf.set(run.sweep_id, [run]); listed.push([run.sweep_id, cellsOf.get(run.sweep_id)]); }
    }
    return listed;
  }
  function withJobs(body, run, sweepId) {  // a run's row, then its jobs' rows under it
    runRow(body, run, sweepId);
    for (const job of (jobsOf.get(run.id) || []).filter(matches)) runRow(body, job, null, run.id);
  }
  function runRow(body, run, sweepId, jobOf) {
    const row = body.insertRow();
    row.dataset.id = run.id; row.dataset.state = run.state;
    if (sweepId) { row.className = "cell"; row.dataset.sweep = sweepId; }
    if (jobOf) { row.className = "cell job"; row.dataset.jobOf = jobOf; }
    const box = document.createElement("input");
    box.type = "checkbox"; box.className = "pick"; box.value = run.id; box.checked = picked.has(run.id);
    box.addEventListener("change", () => { box.checked ? picked.add(run.id) : picked.delete(run.id); update(); });
    row.insertCell().append(box);
    const link = document.createElement("a");
    link.href = "/runs/" + encodeURIComponent(run.id);
    link.textContent = jobOf ? `${run.job} job` : sweepId ? run.cell : run.name;
    row.insertCell().append(link);
    cell(row, run.id, "mono"); cell(row, run.recipe); cell(row, run.task); cell(row, run.target);
    row.insertCell().append(stateBadge(run.state));
    cell(row, progress(run)); cell(row, fmtNum(run.loss));
    cell(row, fmtLedger(run.goodput, run.device_hours, run.device_unit));
    cell(row, fmtTime(run.started), "time"); cell(row, run.launched_by);
  }
  function sweepRow(body, sweep) {
    const row = body.insertRow();
    row.className = "sweep"; row.dataset.sweep = sweep.sweep_id; row.dataset.state = sweep.state;
    const toggle = document.createElement("button");
    toggle.type = "button"; toggle.className = "toggle"; toggle.title = "show or hide its cells";
    toggle.textContent = collapsed.has(sweep.sweep_id) ? "▸" : "▾";
    toggle.addEventListener("click", () => {
      collapsed.has(sweep.sweep_id) ? collapsed.delete(sweep.sweep_id) : collapsed.add(sweep.sweep_id); draw();
    });
    row.insertCell().append(toggle);
    const name = cell(row, searched.has(sweep.sweep_id) ? "" : sweep.sweep_id, "mono sweep-id");
    if (searched.has(sweep.sweep_id)) {  // a search explores it: its page (chart, rungs, decisions, money)
      const page = document.createElement("a");
      page.href = "/sweeps/" + encodeURIComponent(sweep.sweep_id); page.textContent = sweep.sweep_id;
      name.append(page);
    }
    const links = row.insertCell();
    if (sweep.cells.length > 1) {
      const link = document.createElement("a");
      link.href = "/compare-sweep/" + encodeURIComponent(sweep.sweep_id);
      link.className = "compare-sweep"; link.textContent = "compare sweep";
      links.append(link);
    }
    cell(row, sweep.recipe); cell(row, sweep.task); cell(row, sweep.target);
    const state = row.insertCell();
    const counts = document.createElement("span");
    counts.className = "hint states";
    counts.textContent = Object.entries(sweep.states).map(([name, n]) => `${n} ${name}`).join(", ");
    state.append(stateBadge(sweep.state), " ", counts);
    cell(row, `${sweep.finished}/${sweep.cells.length} cells`); cell(row, "");
    cell(row, fmtLedger(null, sweep.device_hours, sweep.device_unit));
    cell(row, fmtTime(sweep.started), "time"); cell(row, sweep.launched_by.join(", "));
  }
  function draw() {
    offer();
    const body = table.tBodies[0];
    body.replaceChildren();
    let shown = 0;
    for (const [sweepId, members] of groups().reverse()) {
      const matching = members.filter(matches);
      shown += matching.length;
      if (!matching.length) continue;
      if (!sweepId || !sweeps[sweepId]) { for (const run of matching) withJobs(body, run, sweepId); continue; }
      sweepRow(body, sweeps[sweepId]);
      if (!collapsed.has(sweepId)) for (const run of matching) withJobs(body, run, sweepId);
    }
    document.getElementById("empty").hidden = runs.length > 0;
    document.getElementById("no-match").hidden = runs.length === 0 || shown > 0;
  }
  function update() { compare.disabled = picked.size < 2; }
  for (const [name, control] of Object.entries(controls)) {
    control.addEventListener(name === "q" ? "input" : "change", () => {
      filters[name] = control.value;
      const url = new URL(location.href);
      filters[name] ? url.searchParams.set(name, filters[name]) : url.searchParams.delete(name);
      history.replaceState(null, "", url); draw();
    });
  }
  document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
  compare.addEventListener("click", () => {
    const query = new URLSearchParams();
    for (const id of picked) query.append("run", id);
    location.href = "/compare?" + query;
  });
  draw(); update(); learnSearches();
  const live = document.getElementById("live");
  const offset = Number(new URLSearchParams(location.search).get("offset")) || 0;  // this page's window
  const events = new EventSource("/api/events" + (offset ? `?offset=${offset}` : ""));
  events.addEventListener("sweeps", (e) => { sweeps = JSON.parse(e.data); learnSearches(); });
  events.addEventListener("runs", (e) => { runs = JSON.parse(e.data); draw(); live.textContent = "live"; });
  events.onerror = () => { live.textContent = "reconnecting…"; };
}

// --- New run -------------------------------------------------------------------------------------------
function newRunPage() {
  const form = document.getElementById("run-form");
  const choose = document.getElementById("choose");
  for (const id of ["recipe", "target", "profile"]) {
    const select = document.getElementById(id);
    select.addEventListener("change", () => {
      if (id !== "profile") choose.querySelector("#profile").value = "";
      if (id === "target") choose.querySelector("#profile").disabled = true;  // the target's default profile
      choose.submit();
    });
  }
  function body(launch) {
    const overrides = {};
    for (const field of form.querySelectorAll(".field")) {
      if (field.value !== field.dataset.base) overrides[field.name] = field.value === "" ? null : field.value;
    }
    for (const line of document.getElementById("other").value.split("\n")) {
      const text = line.trim();
      if (!text) continue;
      const at = text.indexOf("=");
      if (at < 1) throw new Error(`other overrides: expected dotted.key=value, got ${text}`);
      overrides[text.slice(0, at).trim()] = text.slice(at + 1);
    }
    return {recipe: form.dataset.recipe, target: form.dataset.target, profile: form.dataset.profile || null,
            overrides, name: document.getElementById("name").value || null, launch};
  }
  // the loader's reasons beside the fields they name (a key not in the table: only in the line under the form)
  function showFieldErrors(fields) {
    for (const note of form.querySelectorAll(".field-error")) note.remove();
    for (const field of form.querySelectorAll(".field")) {
      const reason = (fields || {})[field.name];
      field.classList.toggle("invalid", reason != null);
      if (reason == null) continue;
      const note = document.createElement("div");
      note.className = "field-error error"; note.textContent = reason;
      field.parentNode.append(note);
    }
  }
  function fail(error) { showFieldErrors(error.fields); showError("form-error", error); }
  async function save(launch) {
    showError("form-error", null); showFieldErrors(null);
    try {
      const draft = form.dataset.draft;
      const made = draft ? await post(`/api/runs/${encodeURIComponent(draft)}/edit`, body(launch))
                         : await post("/api/runs", body(launch));
      location.href = "/runs/" + encodeURIComponent(made.id);
    } catch (error) { fail(error); }
  }
  document.getElementById("save").addEventListener("click", () => save(false));
  document.getElementById("launch").addEventListener("click", () => save(true));
  document.getElementById("dry-run").addEventListener("click", async () => {
    showError("form-error", null); showFieldErrors(null);
    const out = document.getElementById("dry-run-output");
    try {
      const {launch, name, ...request} = body(false);
      const plan = await post("/api/dry-run", request);
      out.textContent = plan.summary + "\n---\n" + plan.document;
      out.hidden = false;
    } catch (error) { out.hidden = true; fail(error); }
  });
}

// --- Charts --------------------------------------------------------------------------------------------
// Whatever a run logs is charted, grouped by prefix (train/loss and train/learning_rate: `train`; an unprefixed
// metric: `other`), the groups and their metrics in the compare order (`launcher.compare.metric_order`: training,
// then val/eval, then test, then the rest; losses first). One scale a chart: a group whose series differ in size by
// more than SCALE_RATIO is split. Counts (integer bookkeeping such as val/total_pairs) are no curves: their latest
// values are listed; nor are spottrain's own books (launcher.compare's BOOKKEEPING_PREFIXES: the store's traffic,
// speed, checkpoints, the ledger, system). A chart shows once one of its series has two points; each series in a
// chart has its own colour.
const SCALE_RATIO = 10;
const NO_CURVES = /^(perf|transfer|checkpoint|ledger|system)\//;
const IS_LR = (k) => /(learning_rate|(^|\/)lr$)/.test(k);
const IS_LOSS = (k) => /loss/.test(k);
const COUNT_NAME = /(^|[/_])(count|counts|total|num|pairs|predictions|samples|examples|tokens)($|[/_])/;
const PROGRESS = /(^|[/_])(epoch|epochs|step|steps)$/;  // where the run is (train/epoch): bookkeeping, never a curve
const OTHER = "other";  // the group of the unprefixed metrics
const groupOf = (key) => key.includes("/") ? key.slice(0, key.indexOf("/")) : OTHER;
const GROUP_RANK = {train: 0, val: 1, eval: 1, test: 2};
const groupRank = (group) => [group === OTHER ? 4 : GROUP_RANK[group] ?? 3, group];
const keyRank = (key) => [!IS_LOSS(key.slice(key.lastIndexOf("/") + 1)), key];
const byRank = (rank) => (a, b) => {
  const [x, y] = [rank(a), rank(b)];
  return x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
};
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                 "#17becf"];
const colour = (i) => i < PALETTE.length ? PALETTE[i] : `hsl(${Math.round(i * 137.5) % 360}, 65%, 40%)`;
const finiteValues = (points) => points.map((p) => p[1]).filter((v) => v != null && Number.isFinite(v));

// a count: no loss or learning rate, every value a whole number, and named as one or past 1 (0/1: an accuracy);
// or the run's progress (its epoch, fractional or not)
function isCount(key, points) {
  if (IS_LOSS(key) || IS_LR(key)) return false;
  const values = finiteValues(points);
  return values.length > 0 && (PROGRESS.test(key) || values.every(Number.isInteger)
    && (COUNT_NAME.test(key) || values.some((v) => Math.abs(v) > 1)));
}

// `series` ([{key, points, ...}]) in parts of one scale: sorted by size (the largest |value|), a part ends where the
// next series is more than SCALE_RATIO times its smallest; series all zero go with the smallest part. The parts, and
// the series in each, keep the order `series` came in (the part of its first series first).
function byScale(series) {
  const size = (s) => Math.max(0, ...finiteValues(s.points).map(Math.abs));
  const sized = series.map((s, order) => ({s, order, size: size(s)})).sort((a, b) => a.size - b.size);
  const parts = [];
  for (const item of sized.filter((i) => i.size > 0)) {
    const last = parts[parts.length - 1];
    if (last && item.size <= SCALE_RATIO * last.floor) last.items.push(item);
    else parts.push({floor: item.size, items: [item]});
  }
  const zeros = sized.filter((i) => i.size === 0);
  if (zeros.length) parts.length ? parts[0].items.push(...zeros) : parts.push({floor: 0, items: zeros});
  for (const part of parts) part.items.sort((a, b) => a.order - b.order);
  return parts.sort((a, b) => a.items[0].order - b.items[0].order).map((part) => part.items.map((i) => i.s));
}

function axisTicks(traces, date) {  // no tick between two steps, none finer than a second
  const xs = traces.flatMap((t) => t.x.map(Number));
  if (xs.length === 0) return {};
  const span = Math.max(...xs) - Math.min(...xs);
  if (date) return span < 60_000 ? {dtick: 1000 * Math.max(1, Math.ceil(span / 5000))} : {};
  return span < 10 ? {dtick: 1} : {tickformat: "d"};
}

// `traces` drawn into the chart `id` (with this x and y axis): hidden until a series has two points; a legend where
// there are several series, or where even one must say whose it is (`legend`: Compare's runs)
function plot(id, title, traces, {xaxis = {title: {text: "step"}}, yaxis = {}, legend = traces.length > 1} = {}) {
  const node = document.getElementById(id);
  if (!node) return;
  const points = traces.reduce((n, t) => n + t.x.length, 0);
  node.dataset.points = String(points);
  node.hidden = !traces.some((t) => finiteValues(t.x.map((x, i) => [x, t.y[i]])).length >= 2);
  if (node.hidden || !window.Plotly) return;
  traces.forEach((t, i) => { t.line = {...t.line, color: colour(i)}; t.marker = {size: 4, ...t.marker, color: colour(i)}; });
  Plotly.react(node, traces, {
    title: {text: title, font: {size: 14}, x: 0.01, xanchor: "left", y: 0.98, yanchor: "top"},
    margin: {t: 32, r: 12, b: 40, l: 56},
    xaxis: {...xaxis, ...axisTicks(traces, xaxis.type === "date"), automargin: true},
    yaxis: {automargin: true, ...yaxis},
    showlegend: legend,
    legend: {orientation: "h", x: 0, xanchor: "left", yref: "container", y: 0, yanchor: "bottom", font: {size: 11}},
  }, {displayModeBar: false, responsive: true});
}

// The curve charts of `runs` ([{metrics, label}]: one run on its page, several compared) in `container`: a group's
// parts in order (chart-train, chart-train-2, ...); the counts' latest values, for the caller to list.
function drawCharts(container, runs) {
  const counts = [], groups = new Map();  // group → its series
  const keys = [...new Set(runs.flatMap(({metrics}) => Object.keys(metrics)))].filter((k) => !NO_CURVES.test(k));
  for (const group of [...new Set(keys.map(groupOf))].sort(byRank(groupRank))) groups.set(group, []);
  for (const key of keys.sort(byRank(keyRank))) {
    for (const {metrics, label} of runs) {
      if (!metrics[key]) continue;
      if (isCount(key, metrics[key])) {
        const last = Number(finiteValues(metrics[key]).pop().toPrecision(4));
        if (!label) counts.push([key, last]);
        continue;
      }
      groups.get(groupOf(key)).push({key, label, points: metrics[key]});
    }
  }
  const wanted = [];
  for (const [group, series] of groups) {
    byScale(series).forEach((part, n) => {
      const id = `chart-${group.replace(/[^A-Za-z0-9_-]/g, "_")}${n === 0 ? "" : `-${n + 1}`}`;
      const names = [...new Set(part.map((s) => s.key))];
      const traces = part.map((s) => ({
        x: s.points.map((p) => p[0]), y: s.points.map((p) => p[1]), mode: "lines+markers",
        name: !s.label ? s.key : names.length === 1 ? s.label : `${s.label} ${s.key}`,
      }));
      wanted.push([id, names.length === 1 ? names[0] : group, traces]);
    });
  }
  const nodes = wanted.map(([id]) => document.getElementById(id) || Object.assign(document.createElement("div"),
    {id, className: "chart", hidden: true}));
  if (nodes.some((node, i) => container.children[i] !== node)) container.prepend(...nodes);
  for (const node of container.querySelectorAll(".chart")) {
    if (!nodes.includes(node)) { node.hidden = true; node.dataset.points = "0"; }
  }
  const labelled = runs.some((r) => r.label);
  for (const [id, title, traces] of wanted) plot(id, title, traces, {legend: labelled || traces.length > 1});
  return counts;
}

function showCounts(id, counts) {
  const node = document.getElementById(id);
  if (!node) return;
  node.textContent = counts.length ? "latest: " + counts.map(([key, value]) => `${key} ${value}`).join(" · ") : "";
  node.hidden = counts.length === 0;
}

async function getJSON(url) {
  const response = await fetch(url, {credentials: "same-origin"});
  const data = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
  if (!response.ok) throw Object.assign(new Error(data.error || `HTTP ${response.status}`), {fields: data.fields || {}});
  return data;
}

// System metrics per node (`/api/runs/ID/system`): one trace per node, and per GPU, against time; percentages on
// 0-100, sizes from 0.
const PERCENT = {range: [0, 100]}, FROM_ZERO = {rangemode: "tozero"};
const SYSTEM = {
  "chart-gpu-util": ["GPU utilisation %", /^gpu_(\d+)_utilization_percentage$/, PERCENT],
  "chart-gpu-memory": ["GPU memory MB", /^gpu_(\d+)_memory_usage_megabytes$/, FROM_ZERO],
  "chart-cpu": ["CPU %", /^cpu_utilization_percentage$/, PERCENT],
  "chart-ram": ["RAM MB", /^system_memory_usage_megabytes$/, FROM_ZERO],
};

function systemTraces(nodes, pattern) {
  return Object.entries(nodes).flatMap(([node, metrics]) => Object.keys(metrics).sort().flatMap((key) => {
    const gpu = pattern.exec(key);
    if (!gpu) return [];
    return [{x: metrics[key].map((p) => new Date(p[0] * 1000)), y: metrics[key].map((p) => p[1]),
             mode: "lines+markers", name: gpu[1] === undefined ? node : `${node} gpu ${gpu[1]}`}];
  }));
}

// One request at a time per panel (a fast run's steps outpace a slow store); a call made meanwhile runs once after.
function coalesced(work) {
  let running = false, again = false;
  return async function run() {
    if (running) { again = true; return; }
    running = true;
    try { do { again = false; await work(); } while (again); } finally { running = false; }
  };
}

const fmtBytes = (n) => n == null ? "" : n < 1e3 ? `${n} B` : n < 1e6 ? `${(n / 1e3).toFixed(1)} kB`
  : n < 1e9 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e9).toFixed(2)} GB`;
const fmtSeconds = (s) => s == null ? "-" : s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;

// The log as a terminal shows it: a carriage return starts its line again, so of tqdm's frames (`\r 10%|#  |`)
// only the last shows; `\r\n` ends a line. What `pre` holds: the ended lines, then the line being written.
function terminal(pre) {
  const ended = document.createTextNode(""), current = document.createTextNode("");
  pre.append(ended, current);
  let returned = false;  // a `\r` came last: the next text (not a `\n`) writes the line anew
  return function write(text) {
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    for (const piece of text.split(/(\r\n|\n|\r)/)) {
      if (piece === "\r") returned = true;
      else if (piece === "\n" || piece === "\r\n") { ended.appendData(current.data + "\n"); current.data = ""; returned = false; }
      else if (piece) { current.data = returned ? piece : current.data + piece; returned = false; }
    }
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  };
}

// --- Run -----------------------------------------------------------------------------------------------
function runPage() {
  let run = JSON.parse(document.getElementById("run-data").textContent);
  const id = encodeURIComponent(run.id);
  const write = terminal(document.getElementById("log"));
  let shownStep = null;

  async function drawCurves() {
    const metrics = await getJSON(`/api/runs/${id}/metrics`);
    showCounts("counts", drawCharts(document.getElementById("curves"), [{metrics}]));
  }
  const drawSystem = coalesced(async () => {
    const nodes = await getJSON(`/api/runs/${id}/system`).catch(() => ({}));
    for (const [chart, [title, pattern, yaxis]] of Object.entries(SYSTEM)) {
      const traces = systemTraces(nodes, pattern);
      const peak = Math.max(0, ...traces.flatMap((t) => finiteValues(t.x.map((x, i) => [x, t.y[i]]))));
      plot(chart, title, traces, {xaxis: {type: "date", title: {text: "time"}},
                                  yaxis: yaxis.range ? {range: [0, Math.max(100, peak * 1.05)]} : yaxis});
    }
    document.getElementById("system-title").hidden = Object.keys(SYSTEM).every((c) => document.getElementById(c).hidden);
  });
  // a panel's data, its error shown in one line under it (null when it could not be read)
  async function panelData(path, errorId) {
    try { const data = await getJSON(`/api/runs/${id}/${path}`); showError(errorId, null); return data; }
    catch (error) { showError(errorId, error); return null; }
  }
  function fillRows(tableId, items, fill) {
    const table = document.getElementById(tableId), body = table.tBodies[0];
    body.replaceChildren();
    for (const item of items) fill(body.insertRow(), item);
    table.hidden = items.length === 0;
  }
  const drawCheckpoints = coalesced(async () => {
    const found = await panelData("checkpoints", "checkpoints-error");
    if (!found) return;
    fillRows("checkpoints", found.checkpoints, (row, c) => {
      row.dataset.step = String(c.step);
      cell(row, c.step); cell(row, fmtBytes(c.bytes)); cell(row, c.complete ? "complete" : "incomplete");
      cell(row, [c.best ? "best" : "", c.final ? "final" : ""].filter(Boolean).join(", "));
    });
    const exported = found.export_files ? `final weights in final-hf/ (${found.export_files} files)` : "";
    document.getElementById("checkpoints-note").textContent = found.checkpoints.length === 0 ? "No checkpoint yet."
      : exported + (exported && found.completed ? "; run complete" : "");
  });
  const drawLedger = coalesced(async () => {
    const ledger = await panelData("ledger", "ledger-error");
    if (!ledger) return;
    fillRows("ledger", ledger.attempts, (row, a) => {
      cell(row, a.number); cell(row, fmtTime(a.started), "time"); cell(row, fmtSeconds(a.wall_seconds));
      cell(row, a.ended_as); cell(row, a.ranks); cell(row, a.device); cell(row, `${a.start_step}→${a.last_step}`);
      cell(row, a.computed); cell(row, a.recomputed); cell(row, fmtSeconds(a.startup_seconds));
    });
    document.getElementById("ledger-totals").textContent = ledger.summary || "No attempt recorded yet.";
    const cost = document.getElementById("ledger-cost");
    cost.textContent = ledger.cost ? `cost: ${ledger.cost.summary}` : "";
    cost.hidden = !ledger.cost;
  });
  function drawAll() {
    drawCurves().catch(() => {});
    drawSystem(); drawCheckpoints(); drawLedger();
  }
  function show(view) {
    run = view;
    const state = document.getElementById("run-state");
    state.textContent = view.state; state.className = "state state-" + view.state;
    document.getElementById("run-step").textContent = progress(view);
    document.getElementById("run-failure").textContent = view.failure || "";
    document.getElementById("stop").disabled = ["draft", "finished", "failed", "stopped", "pruned"].includes(view.state);
    document.getElementById("resume").disabled = Boolean(view.job_of) || !["failed", "stopped", "pruned"].includes(view.state);
    if (view.step !== shownStep || ["finished", "failed", "stopped", "pruned"].includes(view.state)) {
      shownStep = view.step;
      drawAll();
    }
  }
  const events = new EventSource(`/api/runs/${id}/events`);
  events.addEventListener("run", (e) => show(JSON.parse(e.data)));
  events.addEventListener("metrics", () => drawCurves().catch(() => {}));  // new points logged to MLflow
  events.addEventListener("log", (e) => write(JSON.parse(e.data).lines.join("")));
  events.addEventListener("end", () => { events.close(); drawAll(); });

  document.getElementById("stop").addEventListener("click", async (e) => {
    e.target.disabled = true; showError("action-error", null);
    try { await post(`/api/runs/${id}/stop`); } catch (error) { showError("action-error", error); }
  });
  document.getElementById("resume").addEventListener("click", async (e) => {
    e.target.disabled = true; showError("action-error", null);
    try { await post(`/api/runs/${id}/resume`); location.reload(); }  // a new attempt: a new event stream
    catch (error) { showError("action-error", error); e.target.disabled = false; }
  });
  document.getElementById("clone").addEventListener("click", async () => {
    showError("action-error", null);
    try {
      const made = await post(`/api/runs/${id}/clone`, {overrides: {}});
      location.href = "/new?draft=" + encodeURIComponent(made.id);
    } catch (error) { showError("action-error", error); }
  });
  const launch = document.getElementById("launch-draft");
  if (launch) launch.addEventListener("click", async () => {
    showError("action-error", null);
    try { await post(`/api/runs/${id}/launch`); location.reload(); } catch (error) { showError("action-error", error); }
  });
  drawAll();
}

// --- Compare -------------------------------------------------------------------------------------------
async function comparePage() {
  const runs = JSON.parse(document.getElementById("compare-data").textContent);
  const showAll = document.getElementById("show-all");  // the bookkeeping metrics: hidden unless ticked (?all=true)
  if (showAll) showAll.addEventListener("change", () => {
    for (const row of document.querySelectorAll("#finals tr.bookkeeping")) row.hidden = !showAll.checked;
    const url = new URL(location.href);
    if (showAll.checked) url.searchParams.set("all", "true"); else url.searchParams.delete("all");
    history.replaceState(null, "", url);
  });
  const all = await Promise.all(runs.map((r) => getJSON(`/api/runs/${encodeURIComponent(r.id)}/metrics`)));
  const label = (r) => `${r.name} (${r.id.slice(-4)})`;
  drawCharts(document.getElementById("curves"), runs.map((r, i) => ({metrics: all[i], label: label(r)})));
}

window.addEventListener("load", () => {
  if (document.getElementById("runs")) runsPage();
  if (document.getElementById("run-form")) newRunPage();
  if (document.getElementById("run-data")) runPage();
  if (document.getElementById("compare-data")) comparePage();
});
