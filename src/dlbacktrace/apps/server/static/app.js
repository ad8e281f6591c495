// dlbacktrace dashboard: plain JavaScript, no external resources. Every value from the server
// is inserted with textContent or as an attribute, never as HTML.
"use strict";

const $ = (sel) => document.querySelector(sel);
const tokenInput = $("#token");
tokenInput.value = sessionStorage.getItem("dlbacktrace-token") || "";
tokenInput.addEventListener("change", () => sessionStorage.setItem("dlbacktrace-token", tokenInput.value));

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (tokenInput.value) h["Authorization"] = "Bearer " + tokenInput.value;
  return h;
}

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fmt(x) {
  return typeof x === "number" ? Number(x).toPrecision(4) : String(x);
}

function setStatus(text, isError) {
  const s = $("#status");
  s.textContent = text;
  s.className = isError ? "error" : "muted";
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({}, options, { headers: headers((options || {}).headers) }));
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : body;
    throw new Error(response.status + ": " + (typeof detail === "string" ? detail : JSON.stringify(detail)));
  }
  return body;
}

// ---- tabs and forms --------------------------------------------------------------------
document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
  document.querySelectorAll(".panel").forEach((p) => { p.hidden = p.id !== "panel-" + tab.dataset.tab; });
  if (tab.dataset.tab === "audit") loadAudit();
}));

document.querySelectorAll(".options").forEach((div) => div.appendChild($("#options-template").content.cloneNode(true)));

function options(form) {
  const mode = form.querySelector("[name=mode]").value;
  const raw = form.querySelector("[name=target]").value.trim();
  let target = null;
  if (raw === "positive" || raw === "negative") target = raw;
  else if (raw !== "") target = parseInt(raw, 10);
  return { mode, target };
}

let featureNames = null;

async function loadModel() {
  try {
    const info = await api("/model");
    $("#model-name").textContent = info.description;
    featureNames = info.feature_names;
    buildTableForm();
  } catch (err) {
    $("#model-name").textContent = "model info unavailable (" + err.message + ")";
    buildTableForm();
  }
}

function buildTableForm() {
  const box = $("#table-fields");
  box.replaceChildren();
  if (featureNames && featureNames.length) {
    featureNames.forEach((name, i) => {
      const label = el("label", {}, name + " ");
      label.appendChild(el("input", { type: "number", step: "any", required: "", "data-index": i, name: "f" + i }));
      box.appendChild(label);
    });
  } else {
    const label = el("label", {}, "Values, comma-separated ");
    label.appendChild(el("input", { type: "text", id: "row-values", size: "60", required: "" }));
    box.appendChild(label);
  }
}

$("#form-image").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const file = $("#image-file").files[0];
  if (!file) return;
  const data = new FormData();
  data.append("file", file, file.name);
  data.append("kind", "image");
  const opt = options(form);
  data.append("mode", opt.mode);
  if (opt.target !== null) data.append("target", String(opt.target));
  await run(() => api("/explain", { method: "POST", body: data }));
});

$("#form-text").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = Object.assign({ kind: "text", text: $("#text-input").value }, options(ev.target));
  await run(() => api("/explain", { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } }));
});

$("#form-table").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  let row;
  const single = $("#row-values");
  if (single) row = single.value.split(",").map((v) => parseFloat(v.trim()));
  else row = Array.from(ev.target.querySelectorAll("#table-fields input")).map((i) => parseFloat(i.value));
  const body = Object.assign({ kind: "table", row }, options(ev.target));
  await run(() => api("/explain", { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } }));
});

async function run(call) {
  setStatus("Explaining…");
  $("#result").hidden = true;
  try {
    const result = await call();
    showResult(result);
    setStatus("Done.");
  } catch (err) {
    setStatus(err.message, true);
  }
}

// ---- results -----------------------------------------------------------------------------
function barTable(items, labelKey, valueKey) {
  const table = el("table");
  const scale = Math.max(0, ...items.map((x) => Math.abs(x[valueKey])));
  for (const item of items) {
    const tr = el("tr");
    tr.appendChild(el("td", {}, item[labelKey]));
    tr.appendChild(el("td", { class: "num" }, fmt(item[valueKey])));
    const td = el("td");
    const width = scale > 0 ? (160 * Math.abs(item[valueKey])) / scale : 0;
    td.appendChild(el("span", { class: "bar " + (item[valueKey] >= 0 ? "pos" : "neg"), style: "width:" + width + "px" }));
    tr.appendChild(td);
    table.appendChild(tr);
  }
  return table;
}

function showResult(result) {
  const rows = $("#rows");
  rows.replaceChildren();
  const record = $("#record");
  record.replaceChildren();
  if (result.record_id) {
    record.appendChild(document.createTextNode("audit record #" + result.record_id + " · "));
    const link = el("a", { href: "#", class: "report-link" }, "open report");
    link.addEventListener("click", (e) => { e.preventDefault(); openReport(result.record_id); });
    record.appendChild(link);
  }
  for (const row of result.rows) {
    const box = el("div", { class: "row" });
    box.appendChild(el("h3", {}, row.name + " → " + row.prediction.label + " (target " + row.target + ")"));
    box.appendChild(el("h4", {}, "Probabilities"));
    box.appendChild(barTable(row.prediction.probabilities, "label", "p"));
    if (row.heatmap_png) box.appendChild(el("img", { class: "figure heatmap", alt: "heat map", src: row.heatmap_png }));
    if (row.contrast_png) box.appendChild(el("img", { class: "figure contrast", alt: "contrast maps", src: row.contrast_png }));
    if (row.tokens) {
      const p = el("p", { class: "tokens" });
      const scale = Math.max(0, ...row.tokens.map((t) => Math.abs(t.relevance)));
      for (const t of row.tokens) {
        const a = scale > 0 ? (0.85 * Math.abs(t.relevance)) / scale : 0;
        const rgb = t.relevance >= 0 ? "220,40,40" : "40,90,220";
        p.appendChild(el("span", { title: fmt(t.relevance), style: "background: rgba(" + rgb + "," + a.toFixed(3) + ")" }, t.token));
      }
      box.appendChild(p);
    }
    if (row.features) {
      box.appendChild(el("h4", {}, "Feature relevance"));
      const chart = barTable(row.features, "name", "relevance");
      chart.classList.add("feature-chart");
      box.appendChild(chart);
    } else {
      box.appendChild(el("h4", {}, "Top features"));
      box.appendChild(barTable(row.top_features, "feature", "relevance"));
    }
    rows.appendChild(box);
  }
  const ledger = $("#ledger");
  ledger.replaceChildren();
  const l = result.ledger;
  for (const [k, v] of [["seed total", l.seed_total], ["reached the inputs", l.input_total], ["absorbed", l.absorbed_total], ["conservation error", l.conservation_error]]) {
    const tr = el("tr");
    tr.appendChild(el("th", {}, k));
    tr.appendChild(el("td", { class: "num" }, fmt(v)));
    ledger.appendChild(tr);
  }
  $("#result").hidden = false;
}

async function openReport(id) {
  const response = await fetch("/explanations/" + id + "/report", { headers: headers() });
  if (!response.ok) { setStatus("report: " + response.status, true); return; }
  const url = URL.createObjectURL(await response.blob());
  window.open(url, "_blank");
}

// ---- audit log -----------------------------------------------------------------------------
async function loadAudit() {
  const body = $("#audit-table tbody");
  body.replaceChildren();
  try {
    const data = await api("/explanations?limit=100");
    for (const r of data.records) {
      const tr = el("tr", { "data-id": r.id });
      for (const v of [r.id, (r.created_at || "").slice(0, 19), r.source, (r.input_kind || "") + " " + (r.input_names || []).join(", "), r.mode, JSON.stringify(r.target), JSON.stringify(r.prediction), fmt(r.conservation_error)]) {
        tr.appendChild(el("td", {}, v));
      }
      const td = el("td");
      const view = el("button", { type: "button" }, "view");
      view.addEventListener("click", async () => { try { showResult(Object.assign(await api("/explanations/" + r.id + "?figures=true"), { record_id: r.id })); } catch (e) { setStatus(e.message, true); } });
      const report = el("button", { type: "button" }, "report");
      report.addEventListener("click", () => openReport(r.id));
      const verify = el("button", { type: "button" }, "verify");
      verify.addEventListener("click", async () => {
        $("#verify-result").textContent = "verifying #" + r.id + "…";
        try { $("#verify-result").textContent = (await api("/explanations/" + r.id + "/verify", { method: "POST" })).message; }
        catch (e) { $("#verify-result").textContent = e.message; }
      });
      td.append(view, report, verify);
      tr.appendChild(td);
      body.appendChild(tr);
    }
  } catch (err) {
    setStatus(err.message, true);
  }
}
$("#audit-refresh").addEventListener("click", loadAudit);

loadModel();
