// agentd console. Every value from the daemon goes into the page as text
// (textContent, SVG attributes): never as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const csrf = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
const MAX_ROWS = 1000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function short(h) { return h ? h.slice(0, 12) + "…" : ""; }
function clip(s, n) { return s.length > n ? s.slice(0, n) + "…" : s; }

async function api(path, opts) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, opts || {}));
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (!r.ok) {
    const why = body && body.reason_code ? body.reason_code + ": " + body.message : "HTTP " + r.status;
    throw new Error(why);
  }
  return body;
}

function post(path, data) {
  return api(path, {
    method: "POST",
    headers: { "content-type": "application/json", "x-csrf-token": csrf },
    body: JSON.stringify(data),
  });
}

function callLink(id) {
  if (!id) return "";
  return el("a", { href: "#call/" + encodeURIComponent(id), class: "call-link" }, id.slice(0, 12));
}

// ---- audit stream -------------------------------------------------------

let source = null;
let shown = 0;

function rowElement(r) {
  const tr = el("tr", { class: "d-" + r.decision, "data-seq": String(r.seq), "data-call": r.call_id || "" },
    el("td", { class: "num" }, r.seq),
    el("td", { title: r.timestamp }, r.timestamp.slice(11, 23)),
    el("td", {}, r.kind),
    el("td", { class: "operator" }, r.operator),
    el("td", { class: "agent" }, r.agent || ""),
    el("td", {}, r.action),
    el("td", { class: "target", title: r.target }, clip(r.target, 80)),
    el("td", { class: "decision" }, r.decision),
    el("td", { class: "reason" }, r.reason_code),
    el("td", { class: "hash", title: r.hash }, short(r.hash)),
    el("td", {}, callLink(r.call_id)));
  return tr;
}

function startStream() {
  if (source) source.close();
  const tbody = document.querySelector("#rows tbody");
  tbody.replaceChildren();
  shown = 0;
  document.getElementById("stream-count").textContent = "0";
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(document.getElementById("filters"))) {
    if (String(v).trim() !== "") params.set(k, String(v).trim());
  }
  const state = document.getElementById("stream-state");
  state.textContent = "connecting…";
  source = new EventSource("/api/events?" + params.toString());
  source.addEventListener("row", (ev) => {
    const r = JSON.parse(ev.data);
    tbody.prepend(rowElement(r));
    shown += 1;
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
    document.getElementById("stream-count").textContent = String(Math.min(shown, MAX_ROWS));
  });
  source.addEventListener("live", () => { state.textContent = "live"; state.className = "live"; });
  source.addEventListener("failure", (ev) => { state.textContent = "error: " + JSON.parse(ev.data).message; });
  source.onerror = () => { state.textContent = "reconnecting…"; state.className = ""; };
}

// ---- one call -----------------------------------------------------------

function kv(pairs) {
  const dl = el("dl", { class: "kv" });
  for (const [k, v, id] of pairs) {
    dl.append(el("dt", {}, k));
    const dd = el("dd", {}, v === null || v === undefined || v === "" ? "—" : v);
    if (id) dd.id = id;
    dl.append(dd);
  }
  return dl;
}

// The process a row names: agent, pid and access mode (rows written before
// they had fields of their own carry them in policy_id).
function processOf(r) {
  if (!r.pid && !r.access) return r.agent ? "agent:" + r.agent : r.policy_id;
  return ["agent:" + (r.agent || ""), r.pid ? "pid:" + r.pid : "", r.access ? "access:" + r.access : ""]
    .filter((x) => x).join(" ");
}

function rowsTable(rows) {
  const t = el("table", { class: "rows" },
    el("thead", {}, el("tr", {}, ...["seq", "time", "action", "target", "decision", "reason", "process", "row hash"].map((h) => el("th", {}, h)))));
  const tb = el("tbody");
  for (const r of rows) {
    tb.append(el("tr", { class: "d-" + r.decision, "data-seq": String(r.seq) },
      el("td", { class: "num" }, r.seq), el("td", {}, r.timestamp.slice(11, 23)), el("td", {}, r.action),
      el("td", { class: "target" }, clip(r.target, 90)), el("td", { class: "decision" }, r.decision),
      el("td", { class: "reason" }, r.reason_code), el("td", {}, processOf(r)), el("td", { class: "hash", title: r.hash }, short(r.hash))));
  }
  t.append(tb);
  return t;
}

async function showCall(id) {
  const body = document.getElementById("call-body");
  document.querySelector("#call-form input[name=id]").value = id;
  body.replaceChildren(el("p", { class: "muted" }, "loading…"));
  let v;
  try { v = await api("/api/calls/" + encodeURIComponent(id)); }
  catch (e) { body.replaceChildren(el("p", { class: "error", id: "call-error" }, e.message)); return; }
  const parts = [];
  const d = v.decision;
  if (d) {
    parts.push(el("h2", {}, "Decision"),
      el("p", { class: "verdict d-" + d.decision, id: "call-verdict" }, d.decision.toUpperCase() + " ",
        el("span", { id: "call-reason" }, d.reason_code)),
      kv([["action", d.action], ["arguments", d.target, "call-target"], ["operator", d.operator], ["session", d.session],
        ["policy", d.policy_id], ["decided in", d.latency_us + " µs"], ["audit row", "seq " + d.seq + " · " + d.hash],
        ["time", d.timestamp]]));
  }
  if (v.explanation) {
    const x = v.explanation;
    parts.push(el("h2", {}, "Checks"), kv([["decided by", x.check, "call-check"], ["why", x.why, "call-why"]]));
    for (const n of x.notes || []) parts.push(el("p", { class: "muted" }, n));
    for (const f of x.fixes || []) {
      parts.push(el("p", {}, "To allow it: " + f.summary + (f.verified ? " (checked against the patched policy)" : "")));
      if (f.toml) parts.push(el("pre", {}, f.toml));
    }
  }
  parts.push(el("h2", {}, "Message"));
  if (v.message) {
    const m = v.message;
    parts.push(kv([["operator", m.row.operator], ["session", m.row.session], ["signature", m.signature, "call-signature"],
      ["active message", m.row.active_message_id], ["audit row", "seq " + m.row.seq + " · " + m.row.hash]]));
  } else parts.push(el("p", { class: "muted" }, "No message row names this call's active message."));
  if (v.grant) {
    const g = v.grant;
    parts.push(el("h2", {}, "Grant"),
      kv([["state", g.live ? "installed for agent " + g.agent : "no longer installed (used, expired or revoked)", "call-grant"],
        ["template", g.template ? JSON.stringify(g.template) : "none (the action grants nothing in the kernel)"]]));
  }
  parts.push(el("h2", {}, "Kernel events (" + v.kernel.length + ")"));
  parts.push(v.kernel.length ? rowsTable(v.kernel) : el("p", { class: "muted" }, "No kernel event is tied to this call."));
  parts.push(el("h2", {}, "Receipt"));
  const rc = v.receipt;
  const rcBox = el("div", { class: "receipt" });
  if (rc.image) rcBox.append(el("img", { src: rc.image, alt: "receipt card", width: 256, height: 256, id: "receipt-image" }));
  rcBox.append(kv([["state", rc.state, "receipt-state"], ["exact check", rc.exact], ["watermark",
    rc.watermark === null || rc.watermark === undefined ? null : (rc.watermark ? "pass" : "fail") +
      (rc.bit_error_rate !== null && rc.bit_error_rate !== undefined ? " · BER " + (rc.bit_error_rate * 100).toFixed(2) + " %" : "")],
    ["names this row", rc.claims_match_row === null || rc.claims_match_row === undefined ? null : (rc.claims_match_row ? "yes" : "NO")],
    ["detail", rc.detail]]));
  parts.push(rcBox);
  if (v.decisions.length > 1) parts.push(el("h2", {}, "All gateway rows"), rowsTable(v.decisions));
  body.replaceChildren(...parts);
}

// ---- chain --------------------------------------------------------------

async function showChain() {
  const body = document.getElementById("chain-body");
  body.replaceChildren(el("p", { class: "muted" }, "verifying…"));
  let c;
  try { c = await api("/api/chain"); } catch (e) { body.replaceChildren(el("p", { class: "error" }, e.message)); return; }
  const parts = [];
  if (c.ok) {
    parts.push(el("p", { class: "verdict d-allow", id: "chain-state" }, "INTACT: verified through row " + c.last_seq));
  } else if (c.finding) {
    parts.push(el("p", { class: "verdict d-deny", id: "chain-state" }, "BROKEN at row " + c.finding.seq + ": " + c.finding.code),
      el("p", { id: "chain-finding" }, c.finding.message));
  } else {
    parts.push(el("p", { class: "verdict d-deny", id: "chain-state" }, "UNREADABLE"), el("p", {}, c.error));
  }
  const cp = c.last_checkpoint;
  parts.push(kv([["rows", c.first_seq === null ? "none" : c.first_seq + " … " + c.last_seq],
    ["signed through", c.ok ? "row " + c.anchored_through : null],
    ["not yet signed", c.ok ? c.unanchored_tail + " rows after the last checkpoint" : null],
    ["last checkpoint", cp ? "row " + cp.count + " at " + cp.timestamp + " · head " + short(cp.head_hash) : "none yet"],
    ["checkpoint key", c.key_fingerprint]]));
  body.replaceChildren(...parts);
}

// ---- agents -------------------------------------------------------------

function renderAgents(list) {
  const body = document.getElementById("agents-body");
  if (!list.length) { body.replaceChildren(el("p", { class: "muted" }, "No agents.")); return; }
  const t = el("table", { class: "rows", id: "agents" },
    el("thead", {}, el("tr", {}, ...["agent", "mode", "processes", "live grants", "switch"].map((h) => el("th", {}, h)))));
  const tb = el("tbody");
  for (const a of list) {
    const sel = el("select", { name: "mode" }, el("option", { value: "enforce" }, "enforce"), el("option", { value: "audit-only" }, "audit-only"));
    sel.value = a.mode === "enforce" ? "audit-only" : "enforce";
    const tok = el("input", { name: "confirm", size: 20, placeholder: "confirmation token", type: "password" });
    const btn = el("button", { type: "submit" }, "Switch");
    const form = el("form", { class: "mode-form", "data-agent": a.name }, sel, tok, btn);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const out = document.getElementById("agents-result");
      try {
        const rows = await post("/api/agents/" + encodeURIComponent(a.name) + "/mode", { mode: sel.value, confirm: tok.value.trim() });
        out.textContent = a.name + ": now " + sel.value;
        out.className = "status ok";
        renderAgents(rows);
      } catch (e) {
        out.textContent = a.name + ": refused: " + e.message;
        out.className = "status error";
      }
    });
    const grants = el("td", { class: "grants" });
    for (const g of a.grants) grants.append(callLink(g), " ");
    tb.append(el("tr", { "data-agent": a.name },
      el("td", {}, a.name), el("td", { class: "mode m-" + a.mode }, a.mode),
      el("td", {}, a.pids.length ? a.pids.join(" ") : "none"), grants, el("td", {}, form)));
  }
  t.append(tb);
  body.replaceChildren(t);
}

async function showAgents() {
  try { renderAgents(await api("/api/agents")); }
  catch (e) { document.getElementById("agents-body").replaceChildren(el("p", { class: "error" }, e.message)); }
}

// ---- approvals ----------------------------------------------------------

let approvalsTimer = null;

function renderApprovals(list) {
  const body = document.getElementById("approvals-body");
  if (!list.approvals.length) { body.replaceChildren(el("p", { class: "muted", id: "approvals-empty" }, "Nothing waits for approval.")); return; }
  const t = el("table", { class: "rows", id: "approvals" },
    el("thead", {}, el("tr", {}, ...["call", "operator", "session", "agent", "action", "arguments", "seconds left", "answer"].map((h) => el("th", {}, h)))));
  const tb = el("tbody");
  const now = Date.now() / 1000;
  for (const a of list.approvals) {
    const why = el("input", { name: "reason", size: 16, placeholder: "reason (optional)" });
    const out = document.getElementById("approvals-result");
    const answer = (verb) => async () => {
      try {
        const r = await post("/api/approvals/" + encodeURIComponent(a.id) + "/" + verb, { reason: why.value.trim() });
        out.textContent = a.action + " " + a.id.slice(0, 12) + ": " + r.outcome;
        out.className = "status ok";
      } catch (e) {
        out.textContent = a.id.slice(0, 12) + ": refused: " + e.message;
        out.className = "status error";
      }
      showApprovals();
    };
    const ok = el("button", { type: "button", class: "approve" }, "Approve");
    const no = el("button", { type: "button", class: "deny" }, "Deny");
    ok.addEventListener("click", answer("approve"));
    no.addEventListener("click", answer("deny"));
    tb.append(el("tr", { "data-approval": a.id },
      el("td", {}, callLink(a.id)), el("td", {}, a.operator), el("td", {}, a.session),
      el("td", {}, a.agent || "-"), el("td", {}, a.action),
      el("td", { class: "target" }, clip(JSON.stringify(a.arguments), 200),
        // What approving does beyond this call (docs/approvals.md, elevations and anomalies).
        a.elevation ? el("div", { class: "muted" }, "elevates the read-only session for " + a.elevation.actions.join(", ") + " (" + a.elevation.effect + ") for " + a.elevation.secs + " s") : null,
        a.anomaly ? el("div", { class: "muted" }, "session anomaly " + a.anomaly + ": approving resets its counts") : null),
      el("td", { class: "num" }, Math.max(0, Math.round(a.deadline - now))),
      el("td", {}, why, " ", ok, " ", no)));
  }
  t.append(tb);
  body.replaceChildren(t);
}

// Refreshed every 2 s while shown, but not under a reason being typed.
function refreshApprovals() {
  const f = document.activeElement;
  if (f && f.name === "reason" && f.closest("#approvals-body")) return;
  showApprovals();
}

async function showApprovals() {
  try { renderApprovals(await api("/api/approvals")); }
  catch (e) { document.getElementById("approvals-body").replaceChildren(el("p", { class: "error" }, e.message)); }
}

// ---- charts (SVG drawn here) ------------------------------------------

const COLORS = { allow: "#2e7d32", deny: "#c62828", would_deny: "#ef6c00", escalate: "#6a1b9a", info: "#78909c" };

function minutesChart(c) {
  const W = 900, H = 240, L = 40, B = 30, T = 10;
  const n = c.minutes.length;
  const keys = Object.keys(c.per_minute);
  const totals = c.minutes.map((_, i) => keys.reduce((s, k) => s + c.per_minute[k][i], 0));
  const max = Math.max(1, ...totals);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "decisions per minute" });
  const bw = (W - L - 10) / n;
  for (let t = 0; t <= 4; t++) {
    const y = T + (H - B - T) * (1 - t / 4);
    s.append(svg("line", { x1: L, x2: W - 10, y1: y, y2: y, stroke: "#ddd" }));
    s.append(svg("text", { x: L - 4, y: y + 4, "text-anchor": "end", class: "axis" }, Math.round(max * t / 4)));
  }
  c.minutes.forEach((m, i) => {
    let y = H - B;
    for (const k of keys) {
      const v = c.per_minute[k][i];
      if (!v) continue;
      const h = (H - B - T) * v / max;
      y -= h;
      const r = svg("rect", { x: L + i * bw + 1, y, width: Math.max(1, bw - 2), height: h, fill: COLORS[k] || "#90a4ae" });
      r.append(svg("title", {}, `${m} ${k}: ${v}`));
      s.append(r);
    }
    if (i % 5 === 0) s.append(svg("text", { x: L + i * bw, y: H - 10, class: "axis" }, m.slice(11)));
  });
  let lx = L;
  for (const k of keys) {
    s.append(svg("rect", { x: lx, y: T, width: 10, height: 10, fill: COLORS[k] || "#90a4ae" }));
    s.append(svg("text", { x: lx + 14, y: T + 9, class: "axis" }, k));
    lx += 90;
  }
  return s;
}

function reasonsChart(c) {
  const rows = c.denials_by_reason;
  const W = 900, rowH = 22, L = 260;
  const H = Math.max(1, rows.length) * rowH + 10;
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "denials by reason" });
  if (!rows.length) { s.append(svg("text", { x: 0, y: 16, class: "axis" }, "no denials in this window")); return s; }
  const max = Math.max(...rows.map((r) => r[1]));
  rows.forEach(([reason, n], i) => {
    const y = 5 + i * rowH;
    s.append(svg("text", { x: L - 6, y: y + 14, "text-anchor": "end", class: "axis" }, reason));
    s.append(svg("rect", { x: L, y, width: Math.max(2, (W - L - 60) * n / max), height: rowH - 6, fill: COLORS.deny }));
    s.append(svg("text", { x: L + (W - L - 60) * n / max + 6, y: y + 14, class: "axis" }, n));
  });
  return s;
}

async function showCharts() {
  try {
    const c = await api("/api/counts?minutes=30");
    document.getElementById("chart-minutes").replaceChildren(minutesChart(c));
    document.getElementById("chart-reasons").replaceChildren(reasonsChart(c));
  } catch (e) {
    document.getElementById("chart-minutes").replaceChildren(el("p", { class: "error" }, e.message));
  }
}

// ---- routing ------------------------------------------------------------

function route() {
  const h = decodeURIComponent(location.hash.slice(1) || "stream");
  const [view, arg] = h.split("/", 2);
  const name = document.getElementById("view-" + view) ? view : "stream";
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + name;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === name);
  if (name === "call" && arg) showCall(arg);
  if (name === "chain") showChain();
  if (name === "agents") showAgents();
  if (name === "charts") showCharts();
  if (approvalsTimer) { clearInterval(approvalsTimer); approvalsTimer = null; }
  if (name === "approvals") { showApprovals(); approvalsTimer = setInterval(refreshApprovals, 2000); }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("filters").addEventListener("submit", (ev) => { ev.preventDefault(); startStream(); });
  document.getElementById("call-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = new FormData(ev.target).get("id");
    if (id) location.hash = "#call/" + encodeURIComponent(String(id).trim());
  });
  document.getElementById("chain-verify").addEventListener("click", showChain);
  document.getElementById("logout").addEventListener("click", async () => {
    try { await post("/logout", {}); } catch (_) { /* already gone */ }
    if (source) source.close();
    location.reload();
  });
  window.addEventListener("hashchange", route);
  startStream();
  route();
});
