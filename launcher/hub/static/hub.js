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
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
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

// --- Runs -----------------------------------------------------------------------------------------------
function runsPage() {
  const table = document.getElementById("runs");
  const filter = document.getElementById("state-filter");
  const compare = document.getElementById("compare");
  const picked = new Set();
  let runs = JSON.parse(document.getElementById("initial-runs").textContent);

  function draw() {
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const run of runs.slice().reverse()) {
      if (filter.value && run.state !== filter.value) continue;
      const row = body.insertRow();
      row.dataset.id = run.id; row.dataset.state = run.state;
      const box = document.createElement("input");
      box.type = "checkbox"; box.className = "pick"; box.value = run.id; box.checked = picked.has(run.id);
      box.addEventListener("change", () => { box.checked ? picked.add(run.id) : picked.delete(run.id); update(); });
      row.insertCell().append(box);
      const link = document.createElement("a");
      link.href = "/runs/" + encodeURIComponent(run.id); link.textContent = run.name;
      row.insertCell().append(link);
      cell(row, run.id, "mono"); cell(row, run.recipe); cell(row, run.target);
      const state = document.createElement("span");
      state.className = "state state-" + run.state; state.textContent = run.state;
      row.insertCell().append(state);
      cell(row, run.step); cell(row, fmtNum(run.loss)); cell(row, fmtTime(run.started), "time");
    }
    const empty = document.getElementById("empty");
    if (empty) empty.hidden = runs.length > 0;
  }
  function update() { compare.disabled = picked.size < 2; }
  filter.addEventListener("change", () => {
    const url = new URL(location.href);
    filter.value ? url.searchParams.set("state", filter.value) : url.searchParams.delete("state");
    history.replaceState(null, "", url); draw();
  });
  compare.addEventListener("click", () => {
    const query = new URLSearchParams();
    for (const id of picked) query.append("run", id);
    location.href = "/compare?" + query;
  });
  draw(); update();
  const live = document.getElementById("live");
  const events = new EventSource("/api/events");
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
  async function save(launch) {
    showError("form-error", null);
    try {
      const draft = form.dataset.draft;
      const made = draft ? await post(`/api/runs/${encodeURIComponent(draft)}/edit`, body(launch))
                         : await post("/api/runs", body(launch));
      location.href = "/runs/" + encodeURIComponent(made.id);
    } catch (error) { showError("form-error", error); }
  }
  document.getElementById("save").addEventListener("click", () => save(false));
  document.getElementById("launch").addEventListener("click", () => save(true));
  document.getElementById("dry-run").addEventListener("click", async () => {
    showError("form-error", null);
    const out = document.getElementById("dry-run-output");
    try {
      const {launch, name, ...request} = body(false);
      const plan = await post("/api/dry-run", request);
      out.textContent = plan.summary + "\n---\n" + plan.document;
      out.hidden = false;
    } catch (error) { out.hidden = true; showError("form-error", error); }
  });
}

// --- Charts --------------------------------------------------------------------------------------------
const GROUPS = {
  loss: (k) => /loss/.test(k) && !/^(val|eval|test)\//.test(k),
  lr: (k) => /(learning_rate|(^|\/)lr$)/.test(k),
  eval: (k) => /^(val|eval|test)\//.test(k),
  val: (k) => /^(val|eval)\//.test(k) && /loss/.test(k),
};

function plot(id, title, traces) {
  const node = document.getElementById(id);
  if (!node || !window.Plotly) return;
  node.hidden = traces.length === 0;  // no empty frames for metrics this task does not log
  Plotly.react(node, traces, {title: {text: title, font: {size: 14}}, margin: {t: 36, r: 8, b: 36, l: 48},
                              xaxis: {title: {text: "step"}}, legend: {orientation: "h"}},
               {displayModeBar: false, responsive: true});
  node.dataset.points = String(traces.reduce((n, t) => n + t.x.length, 0));
}

function traces(metrics, group, label) {
  return Object.keys(metrics).filter(GROUPS[group]).map((key) => ({
    x: metrics[key].map((p) => p[0]), y: metrics[key].map((p) => p[1]), mode: "lines+markers",
    name: label ? `${label} ${key}` : key, marker: {size: 3},
  }));
}

async function getJSON(url) {
  const response = await fetch(url, {credentials: "same-origin"});
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

// --- Run -----------------------------------------------------------------------------------------------
function runPage() {
  let run = JSON.parse(document.getElementById("run-data").textContent);
  const id = encodeURIComponent(run.id);
  const log = document.getElementById("log");
  let shownStep = null;

  async function drawCurves() {
    const metrics = await getJSON(`/api/runs/${id}/metrics`);
    plot("chart-loss", "loss", traces(metrics, "loss"));
    plot("chart-lr", "learning rate", traces(metrics, "lr"));
    plot("chart-eval", "evaluation", traces(metrics, "eval"));
  }
  function show(view) {
    run = view;
    const state = document.getElementById("run-state");
    state.textContent = view.state; state.className = "state state-" + view.state;
    document.getElementById("run-step").textContent = view.step;
    document.getElementById("run-failure").textContent = view.failure || "";
    document.getElementById("stop").disabled = ["draft", "finished", "failed", "stopped"].includes(view.state);
    if (view.step !== shownStep || ["finished", "failed", "stopped"].includes(view.state)) {
      shownStep = view.step;
      drawCurves().catch(() => {});
    }
  }
  const events = new EventSource(`/api/runs/${id}/events`);
  events.addEventListener("run", (e) => show(JSON.parse(e.data)));
  events.addEventListener("log", (e) => {
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(document.createTextNode(JSON.parse(e.data).lines.join("")));
    if (atEnd) log.scrollTop = log.scrollHeight;
  });
  events.addEventListener("end", () => { events.close(); drawCurves().catch(() => {}); });

  document.getElementById("stop").addEventListener("click", async (e) => {
    e.target.disabled = true; showError("action-error", null);
    try { await post(`/api/runs/${id}/stop`); } catch (error) { showError("action-error", error); }
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
  drawCurves().catch(() => {});
}

// --- Compare -------------------------------------------------------------------------------------------
async function comparePage() {
  const runs = JSON.parse(document.getElementById("compare-data").textContent);
  const all = await Promise.all(runs.map((r) => getJSON(`/api/runs/${encodeURIComponent(r.id)}/metrics`)));
  const label = (r) => `${r.name} (${r.id.slice(-4)})`;
  plot("chart-loss", "train loss", runs.flatMap((r, i) => traces(all[i], "loss", label(r))));
  plot("chart-val", "validation loss", runs.flatMap((r, i) => traces(all[i], "val", label(r))));
}

window.addEventListener("load", () => {
  if (document.getElementById("runs")) runsPage();
  if (document.getElementById("run-form")) newRunPage();
  if (document.getElementById("run-data")) runPage();
  if (document.getElementById("compare-data")) comparePage();
});
