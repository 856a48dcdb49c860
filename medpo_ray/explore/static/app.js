// The explorer page. Every text from the run (answers, reports, critic output, notes) is inserted with
// textContent or as a text node: it is shown, never interpreted as markup.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");

function api(path, options) {
  const headers = Object.assign({}, (options && options.headers) || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  return fetch(path, Object.assign({}, options || {}, { headers })).then(r => {
    if (!r.ok) return r.text().then(t => { throw new Error(r.status + " " + t); });
    return r.json();
  });
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function fmt(v) { return typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3)) : String(v); }

function chart(name, points) {
  const box = el("div", null, "chart");
  box.appendChild(el("h4", name));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 300 120");
  svg.setAttribute("data-curve", name);
  if (points.length) {
    const xs = points.map(p => p[0]), ys = points.map(p => p[1]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    const sx = x => 30 + 260 * (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5);
    const sy = y => 105 - 95 * (y1 > y0 ? (y - y0) / (y1 - y0) : 0.5);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map(p => sx(p[0]) + "," + sy(p[1])).join(" "));
    svg.appendChild(line);
    for (const [x, y, label] of [[2, 12, fmt(y1)], [2, 108, fmt(y0)], [30, 119, "step " + x0], [250, 119, "step " + x1]]) {
      const t = document.createElementNS(ns, "text");
      t.setAttribute("x", x); t.setAttribute("y", y); t.textContent = label;
      svg.appendChild(t);
    }
  }
  box.appendChild(svg);
  return box;
}

function highlighted(target, text, spans, cls) {
  target.replaceChildren();
  if (text === null || text === undefined) { target.textContent = "—"; return; }
  let pos = 0;
  const sorted = (spans || []).slice().sort((a, b) => a[0] - b[0]);
  for (const [a, b] of sorted) {
    if (a > pos) target.appendChild(document.createTextNode(text.slice(pos, a)));
    target.appendChild(el("mark", text.slice(Math.max(a, pos), b), cls));
    pos = Math.max(pos, b);
  }
  target.appendChild(document.createTextNode(text.slice(pos)));
}

function imgUrl(step, which, id) {
  return "/img/" + step + "/" + which + "/" + id.split("/").map(encodeURIComponent).join("/") + (token ? "?token=" + encodeURIComponent(token) : "");
}

let current = null;

function showPair(step, id) {
  api("/api/pair/" + step + "/" + id.split("/").map(encodeURIComponent).join("/")).then(p => {
    current = p;
    const view = document.getElementById("pair-view");
    view.hidden = false;
    document.getElementById("pv-title").textContent = "step " + p.step + " · " + p.record_id;
    const x = document.getElementById("pv-x"), xt = document.getElementById("pv-xt");
    document.getElementById("pv-noimage").hidden = p.has_image;
    x.hidden = xt.hidden = !p.has_image;
    if (p.has_image) { x.src = imgUrl(p.step, "x", p.record_id); xt.src = imgUrl(p.step, "xt", p.record_id); }
    document.getElementById("pv-corruption").textContent = (p.corruption_mode || "none") + ", region " + (p.corruption_region || "–");
    const meta = document.getElementById("pv-meta");
    meta.replaceChildren();
    const m = p.step_margins || {};
    for (const [k, v] of [["branch", p.branch || "no pair"], ["verdict", p.verdict], ["critic", p.critic],
                          ["critic's reason", p.critic_reason], ["rejection", p.rejection || "none"],
                          ["trained", p.trained], ["policy version", p.policy_version], ["edit kinds", p.edit_kinds],
                          ["reference", p.reference],
                          ["margins", "per pair not logged; step means: preference " + fmt(m.delta_pref) + ", visual " + fmt(m.delta_vis)]]) {
      meta.appendChild(el("dt", k)); meta.appendChild(el("dd", v === null || v === undefined ? "–" : v));
    }
    document.getElementById("pv-prompt").textContent = p.prompt || "–";
    document.getElementById("pv-y0").textContent = p.y0 || "–";
    highlighted(document.getElementById("pv-yplus"), p.y_plus, p.spans_plus, "plus");
    highlighted(document.getElementById("pv-yminus"), p.y_minus, p.spans_minus, "minus");
    document.getElementById("pv-raw").textContent = p.critic_raw || "–";
    showMarks(p.marks);
  });
}

function showMarks(marks) {
  const list = document.getElementById("pv-marks");
  list.replaceChildren();
  for (const m of marks || []) list.appendChild(el("li", m.reviewer + ": " + m.mark.replace("_", " ") + (m.note ? " — " + m.note : "")));
}

function loadPairs() {
  const form = document.getElementById("filters");
  const q = new URLSearchParams();
  for (const s of form.querySelectorAll("select, input")) if (s.value) q.set(s.name, s.value);
  api("/api/pairs?" + q).then(data => {
    for (const [name, values] of [["step", data.options.steps], ["branch", data.options.branches],
                                  ["kind", data.options.kinds], ["reason", data.options.reasons]]) {
      const select = form.querySelector("select[name=" + name + "]");
      if (select.options.length === 1) for (const v of values) select.appendChild(new Option(String(v), String(v)));
    }
    const body = document.querySelector("#pair-list tbody");
    body.replaceChildren();
    for (const r of data.rows) {
      const tr = document.createElement("tr");
      tr.dataset.step = r.step; tr.dataset.record = r.record_id;
      for (const v of [r.step, r.record_id, r.branch || "–", r.verdict || "–", r.edit_kinds || "", r.rejection || "", r.marks.join(" ")])
        tr.appendChild(el("td", v));
      tr.addEventListener("click", () => {
        for (const o of body.querySelectorAll("tr.selected")) o.classList.remove("selected");
        tr.classList.add("selected");
        showPair(r.step, r.record_id);
      });
      body.appendChild(tr);
    }
  });
}

function loadOverview() {
  api("/api/overview").then(o => {
    document.getElementById("run-name").textContent = o.run;
    const s = o.summary;
    document.getElementById("run-summary").textContent = s ? ("steps " + s.steps + " · pairs trained " + s.trained +
      " · prompts issued " + s.issued + " · " + s.seconds + " s") : "running (no summary yet)";
    const curves = document.getElementById("curves");
    curves.replaceChildren();
    for (const [name, points] of Object.entries(o.curves)) if (points.length) curves.appendChild(chart(name, points));
    const table = document.getElementById("rejections");
    table.replaceChildren();
    const reasons = [...new Set(o.rejections.flatMap(([, r]) => Object.keys(r)))].sort();
    const head = document.createElement("tr");
    for (const h of ["step", ...reasons]) head.appendChild(el("th", h));
    table.appendChild(head);
    for (const [step, r] of o.rejections) {
      const tr = document.createElement("tr");
      tr.appendChild(el("td", step));
      for (const k of reasons) tr.appendChild(el("td", r[k] || 0));
      table.appendChild(tr);
    }
    document.getElementById("config").textContent = JSON.stringify(o.config, null, 1);
    const links = document.getElementById("step-links");
    links.replaceChildren();
    for (const step of o.audit_steps) {
      const a = el("a", "step " + step + " pairs");
      a.href = "#pairs";
      a.dataset.step = step;
      a.addEventListener("click", () => {
        document.querySelector("#filters select[name=step]").value = String(step);
        loadPairs();
      });
      links.appendChild(a);
      links.appendChild(document.createTextNode(" "));
    }
    showSummary(o.reviews);
  });
}

function showSummary(r) {
  document.getElementById("review-summary").textContent = r.marks ?
    ("critic precision from the marks: " + fmt(r.critic_precision) + " (" + r.critic_right + " right, " +
     r.critic_wrong + " wrong, over " + r.pairs_reviewed + " pairs)") : "no marks yet";
}

function review(mark) {
  const form = document.getElementById("review-form");
  if (!current || !form.reviewer.value) { form.reviewer.focus(); return; }
  api("/api/reviews", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ step: current.step, record_id: current.record_id, mark,
                           reviewer: form.reviewer.value, note: form.note.value }) })
    .then(r => { showSummary(r.summary); showPair(current.step, current.record_id); loadPairs(); });
}

document.addEventListener("DOMContentLoaded", () => {
  loadOverview();
  loadPairs();
  document.getElementById("filters").addEventListener("change", loadPairs);
  document.getElementById("filters").addEventListener("submit", e => { e.preventDefault(); loadPairs(); });
  for (const b of document.querySelectorAll("#review-form button")) b.addEventListener("click", () => review(b.dataset.mark));
});
