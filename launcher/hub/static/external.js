// Runs logged elsewhere (MLflow, read-only): their table on the Runs page and each one's page. Built on hub.js
// (cell, drawCharts, showCounts, getJSON, fmtTime, fmtNum); data from the server only ever goes in as text
// (textContent).
"use strict";

const EXTERNAL_REFRESH_MS = 5000;  // about as long as the hub keeps its list before asking MLflow again

function externalRunsTable() {
  const section = document.getElementById("external");
  const table = document.getElementById("external-runs");
  const warning = document.getElementById("external-warning");
  const filter = document.getElementById("filter-state");  // the Runs page's state filter applies here too
  let listed = {runs: [], warning: null};

  function draw() {
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const run of listed.runs) {
      if (filter.value && run.state !== filter.value) continue;
      const row = body.insertRow();
      row.dataset.id = run.id;
      const link = document.createElement("a");
      link.href = "/mlflow-runs/" + encodeURIComponent(run.mlflow_run_id); link.textContent = run.name;
      row.insertCell().append(link);
      cell(row, run.mlflow_run_id, "mono"); cell(row, run.experiment); cell(row, run.recipe);
      const state = document.createElement("span");
      state.className = "state state-" + run.state; state.textContent = run.state;
      row.insertCell().append(state);
      cell(row, run.step); cell(row, fmtNum(run.loss)); cell(row, run.user); cell(row, fmtTime(run.started), "time");
    }
    warning.textContent = listed.warning || "";
    warning.hidden = !listed.warning;
    section.hidden = listed.runs.length === 0 && !listed.warning;  // no server watched: nothing to say
  }
  async function refresh() {
    try { listed = await getJSON("/api/external-runs"); } catch (error) { return; }  // the next refresh tries again
    draw();
  }
  filter.addEventListener("change", draw);
  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, EXTERNAL_REFRESH_MS);
}

function externalRunPage() {
  const run = JSON.parse(document.getElementById("external-run-data").textContent);
  document.getElementById("run-started").textContent = fmtTime(run.started);
  async function drawCurves() {
    const metrics = await getJSON(`/api/external-runs/${encodeURIComponent(run.mlflow_run_id)}/metrics`);
    showCounts("counts", drawCharts(document.getElementById("curves"), [{metrics}]));
  }
  const redraw = () => drawCurves().catch(() => {});
  redraw();
  if (run.state === "running") setInterval(() => { if (!document.hidden) redraw(); }, EXTERNAL_REFRESH_MS);
}

window.addEventListener("load", () => {
  if (document.getElementById("external-runs")) externalRunsTable();
  if (document.getElementById("external-run-data")) externalRunPage();
});
