// The sweep page (/sweeps/ID): each cell's metric against its budget with the rungs marked, pruned cells grey and
// the best one highlighted, the decisions and the money, asked of /api/sweeps/ID again while the sweep runs. Uses
// hub.js's helpers (getJSON, post, cell, showError, colour); data from the server goes in as text, never as HTML.
"use strict";

const LIVE_SWEEP = ["running", "stopping"];
const PRUNED_GREY = "#9ca3af";
const VERDICT_MARKERS = {
  promoted: {symbol: "circle-open", size: 11, color: "#15803d", line: {width: 2}},
  pruned: {symbol: "x", size: 10, color: "#b91c1c"},
};

const fmtG = (v, digits = 4) => v == null ? "-" : String(Number(Number(v).toPrecision(digits)));
// as launcher.views.ledger.dollars: `$1,234.50`, and under a cent two significant digits (never `$0.00`)
const fmtDollars = (v) => v === 0 || Math.abs(v) >= 0.01
  ? "$" + v.toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2})
  : "$" + Number(v.toPrecision(2));

// What the buttons may do in this state: stop a running sweep (or a stopping one nobody carries out); resume a
// stopped one, one whose controller is gone, or a finished one with cells a person stopped.
function sweepActions(sweep) {
  const alive = sweep.controller_alive, live = LIVE_SWEEP.includes(sweep.state);
  return {
    stop: sweep.state === "running" || (sweep.state === "stopping" && !alive),
    resume: sweep.state === "stopped" || (live && !alive)
      || (sweep.state === "finished" && sweep.cells.some((c) => c.state === "stopped")),
  };
}

function controllerLine(sweep) {
  if (sweep.controller_alive) return `controller ${sweep.controller}`;
  return LIVE_SWEEP.includes(sweep.state) ? "no controller — Resume starts one" : "";
}

function moneyLines(sweep) {
  const pruned = sweep.cells.filter((c) => c.state === "pruned").length;
  return {
    "sweep-steps": `${sweep.steps_computed} steps computed`
      + (sweep.steps_full_grid ? ` of ${sweep.steps_full_grid} for the full grid` : ""),
    "sweep-hours": sweep.device_hours == null ? "device-hours unknown"
      : `${fmtG(sweep.device_hours, 3)} ${sweep.device_unit}-hours`,
    "sweep-spent": sweep.dollars_spent == null ? "dollars spent unknown" : `${fmtDollars(sweep.dollars_spent)} spent`,
    "sweep-not-spent": !pruned ? "no cell pruned"
      : sweep.dollars_not_spent == null ? "not spent by pruned cells: unknown"
      : `${fmtDollars(sweep.dollars_not_spent)} not spent by the ${pruned} pruned cells`,
  };
}

function cellDollars(c) {
  if (c.cost == null) return "-";
  return c.cost.dollars_used == null ? "unknown" : fmtDollars(c.cost.dollars_used);
}

function cellRow(body, c, sweep) {
  const row = body.insertRow();
  row.dataset.cell = c.cell;
  row.className = [c.state === "pruned" ? "pruned" : "", c.cell === sweep.best ? "best" : ""].filter(Boolean).join(" ");
  cell(row, c.cell, "mono");
  const run = row.insertCell();
  run.className = "mono";
  if (c.run_id) {
    const link = document.createElement("a");
    link.href = "/runs/" + encodeURIComponent(c.run_id); link.textContent = c.run_id;
    run.append(link);
  } else run.textContent = "-";
  row.insertCell().append(stateBadge(c.state || "waiting"));
  cell(row, c.run_id ? `${c.step == null ? "-" : c.step}/${c.total_steps || "-"}` : "-");
  cell(row, fmtG(c.metric));
  cell(row, c.judgements.map((j) => `${j.verdict} at ${fmtG(j.budget, 6)}`).join(", ") || "-", "judged");
  cell(row, cellDollars(c));
  cell(row, c.state !== "pruned" ? "" : c.dollars_not_spent == null ? "unknown" : fmtDollars(c.dollars_not_spent));
  cell(row, Object.entries(c.overrides).map(([key, value]) => `${key}=${value}`).join(" "), "mono");
}

// One line per cell that logged its metric (x: the budget's unit); the pruned ones grey under one legend entry and
// drawn first (under the others), the best one thick and drawn last; a marker at each judgement (pruned: an x).
function sweepTraces(sweep) {
  const traces = [], judged = {promoted: [], pruned: []};
  const layer = (c) => c.state === "pruned" ? 0 : c.cell === sweep.best ? 2 : 1;
  let coloured = 0, prunedShown = false;
  for (const c of [...sweep.cells].sort((a, b) => layer(a) - layer(b))) {
    for (const j of c.judgements) if (j.value != null && judged[j.verdict]) judged[j.verdict].push([j, c.cell]);
    if (!c.points.length) continue;
    const trace = {
      x: c.points.map((p) => p[0]), y: c.points.map((p) => p[1]), mode: "lines+markers", name: c.cell,
      text: c.points.map(() => c.cell), hovertemplate: `%{text}<br>%{x}: %{y:.4g}<extra></extra>`,
    };
    if (c.state === "pruned") {
      Object.assign(trace, {name: "pruned", legendgroup: "pruned", showlegend: !prunedShown, opacity: 0.8,
                            line: {color: PRUNED_GREY, width: 1.5}, marker: {color: PRUNED_GREY, size: 4}});
      prunedShown = true;
    } else {
      const best = c.cell === sweep.best, shade = colour(coloured++);
      Object.assign(trace, {name: best ? `${c.cell} (best)` : c.cell, line: {color: shade, width: best ? 4 : 2},
                            marker: {color: shade, size: best ? 7 : 4}});
    }
    traces.push(trace);
  }
  for (const [verdict, found] of Object.entries(judged)) {
    if (!found.length) continue;
    traces.push({x: found.map(([j]) => j.budget), y: found.map(([j]) => j.value), mode: "markers",
                 name: `judged: ${verdict}`, marker: VERDICT_MARKERS[verdict], text: found.map(([, name]) => name),
                 hovertemplate: `%{text}: ${verdict} at %{x}<br>%{y:.4g}<extra></extra>`});
  }
  return traces;
}

function drawSweepChart(sweep) {
  const node = document.getElementById("chart-sweep");
  const traces = sweepTraces(sweep);
  const points = sweep.cells.reduce((n, c) => n + c.points.length, 0);
  Object.assign(node.dataset, {points: String(points), rungs: String(sweep.rungs.length),
                               traces: String(traces.length)});
  node.hidden = points === 0;
  document.getElementById("no-points").hidden = points > 0;
  if (node.hidden || !window.Plotly) return;
  const rung = (r) => ({type: "line", xref: "x", yref: "paper", x0: r, x1: r, y0: 0, y1: 1,
                        line: {dash: "dash", width: 1, color: "#6b7280"}});
  const label = (r) => ({xref: "x", yref: "paper", x: r, y: 1, yanchor: "bottom", showarrow: false,
                         text: `rung ${fmtG(r, 6)}`, font: {size: 10, color: "#6b7280"}});
  Plotly.react(node, traces, {
    margin: {t: 24, r: 12, b: 40, l: 56},
    xaxis: {title: {text: sweep.budget}, automargin: true, rangemode: "tozero"},
    yaxis: {title: {text: sweep.metric}, automargin: true},
    shapes: sweep.rungs.map(rung), annotations: sweep.rungs.map(label),
    legend: {orientation: "h", x: 0, xanchor: "left", yref: "container", y: 0, yanchor: "bottom", font: {size: 11}},
  }, {displayModeBar: false, responsive: true});
}

function sweepPage() {
  const data = JSON.parse(document.getElementById("sweep-data").textContent);
  let sweep = data.sweep;
  const id = encodeURIComponent(sweep.sweep_id), live = document.getElementById("live");
  const stop = document.getElementById("stop-sweep"), resume = document.getElementById("resume-sweep");
  let timer = null;

  function enable(view) {
    const allowed = sweepActions(view);
    stop.disabled = !allowed.stop; resume.disabled = !allowed.resume;
  }
  function show(view) {
    sweep = view;
    const state = document.getElementById("sweep-state");
    state.textContent = view.state; state.className = "state state-" + view.state;
    document.getElementById("sweep-controller").textContent = controllerLine(view);
    enable(view);
    const best = view.cells.find((c) => c.cell === view.best), line = document.getElementById("sweep-best");
    line.replaceChildren("best ");
    if (best) {
      const link = document.createElement("a");
      link.href = "/runs/" + encodeURIComponent(best.run_id); link.textContent = best.cell;
      line.append(link, ` (${view.metric} ${fmtG(best.metric)})`);
    } else {
      const none = document.createElement("span");
      none.className = "hint"; none.textContent = `none yet: no cell has logged ${view.metric}`;
      line.append(none);
    }
    for (const [spanId, text] of Object.entries(moneyLines(view))) document.getElementById(spanId).textContent = text;
    const body = document.getElementById("sweep-cells").tBodies[0];
    body.replaceChildren();
    for (const c of view.cells) cellRow(body, c, view);
    drawSweepChart(view);
  }
  function schedule() {  // again while it runs: one request waiting at a time
    clearTimeout(timer);
    if (LIVE_SWEEP.includes(sweep.state)) timer = setTimeout(refresh, data.refresh_seconds * 1000);
  }
  async function refresh() {
    try {
      show(await getJSON(`/api/sweeps/${id}`));
      live.textContent = LIVE_SWEEP.includes(sweep.state) ? "live" : "";
    } catch (error) { live.textContent = `not refreshed: ${error.message}`; }
    schedule();
  }
  async function act(button, action) {
    button.disabled = true; showError("action-error", null);
    try { await post(`/api/sweeps/${id}/${action}`); } catch (error) { showError("action-error", error); }
    await refresh();
  }
  stop.addEventListener("click", () => act(stop, "stop"));
  resume.addEventListener("click", () => act(resume, "resume"));
  enable(sweep);  // the rest came rendered by the server: the buttons and the chart are the script's
  drawSweepChart(sweep);
  live.textContent = LIVE_SWEEP.includes(sweep.state) ? "live" : "";
  schedule();
}

window.addEventListener("load", () => {
  if (document.getElementById("sweep-data")) sweepPage();
});
