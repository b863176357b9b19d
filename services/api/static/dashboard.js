// The rr dashboard: polls the API on this origin and redraws. No framework, no build step, no network
// beyond the API. Data is only ever inserted as text (textContent), never as HTML.
"use strict";

const PANELS_EVERY_MS = 5000;  // panels refresh at least this often (ages move), and after new events
const FEED_KEPT = 200;         // feed lines kept on the page
const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16", "#4a5568"];
const SVG_NS = "http://www.w3.org/2000/svg";

const state = { after: 0, refreshing: null, refreshAgain: false, firstFeed: true, panels: false, fed: false };

// ---- small helpers ---------------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function fill(id, ...nodes) {
  document.getElementById(id).replaceChildren(...nodes.flat());
}

function setText(id, text) {
  document.getElementById(id).textContent = text;
}

function table(headers, rows) {
  const head = el("tr", {}, headers.map(h => el("th", { class: h.endsWith("#") ? "num" : "", text: h.replace(/#$/, "") })));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, rows));
}

function empty(text) {
  return el("p", { class: "empty", text });
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind || text}`, text });
}

function ago(iso) {
  if (!iso) return "-";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m ago`;
  return `${Math.floor(s / 86400)}d${String(Math.floor(s % 86400 / 3600)).padStart(2, "0")}h ago`;
}

function clock(iso) {
  return iso ? new Date(iso).toISOString().slice(11, 19) : "-";
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const error = new Error((body && body.error) || `${url}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function notice(text) {
  const box = document.getElementById("notice");
  box.hidden = !text;
  box.textContent = text || "";
}

function connection(live, text) {
  const box = document.getElementById("conn");
  box.className = `conn ${live ? "live" : "down"}`;
  box.textContent = text;
}

// ---- panels ----------------------------------------------------------------------------------

function renderHeader(s) {
  setText("leader", s.leader_id || "none");
  setText("alive", `${s.alive_peers} of ${s.nodes.length}`);
  setText("work-total", String(s.work.total));
  setText("seq", String(s.last_seq));
  setText("node", s.node_id || "-");
}

function renderLeaders(s) {
  const roles = Object.entries(s.leaders);
  if (!roles.length) return fill("leaders", empty("no leader elected yet"));
  fill("leaders", table(["role", "leader", "epoch#", "since", "note"], roles.map(([role, l]) => el("tr", {},
    el("td", { text: role }),
    el("td", {}, l.node ? el("b", { text: l.node }) : badge("none", "offline")),
    el("td", { class: "num", text: l.epoch ?? "-" }),
    el("td", { class: "muted", text: ago(l.since) }),
    // A leader whose loops are not all running holds the lease and decides nothing: say so.
    (l.loops_down || []).length
      ? el("td", { class: "wrap" }, badge("unhealthy", "offline"), " loops not running: " + l.loops_down.join("; "))
      : el("td", { class: "wrap muted", text: l.reason || "" }),
  ))));
}

function gpuText(gpus) {
  if (!gpus.length) return "-";
  const counts = {};
  for (const g of gpus) counts[g] = (counts[g] || 0) + 1;
  return Object.entries(counts).map(([name, n]) => `${n}x ${name}`).join(", ");
}

function renderNodes(s) {
  setText("nodes-count", `${s.alive_peers} alive of ${s.nodes.length}`);
  if (!s.nodes.length) return fill("nodes", empty("no node has come online yet"));
  fill("nodes", table(["node", "status", "roles", "cpus#", "mem GB#", "gpus", "work", "since"], s.nodes.map(n => el("tr", {},
    el("td", {}, el("b", { text: n.node_id }), n.leads.length ? el("span", { class: "lead", text: ` ★ ${n.leads.join(",")}` }) : null),
    el("td", { title: n.reason }, badge(n.status)),
    el("td", { class: "wrap", text: n.roles.join(", ") || "-" }),
    el("td", { class: "num", text: n.cpu_count || "-" }),
    el("td", { class: "num", text: n.memory_gb ? n.memory_gb.toFixed(0) : "-" }),
    el("td", { text: gpuText(n.gpus) }),
    el("td", { text: Object.entries(n.work).map(([k, v]) => `${k} ${v}`).join(", ") || "-" }),
    el("td", { class: "muted wrap", title: n.reason, text: n.alive ? ago(n.since) : `${ago(n.since)} (${n.reason || "offline"})` }),
  ))));
}

function renderWorkCounts(counts) {
  fill("work-counts", Object.entries(counts).map(([status, n]) =>
    el("span", { class: "chip" }, badge(status), el("b", { text: n }))));
}

function progressBar(fraction) {
  if (fraction === null || fraction === undefined) return "-";
  const bar = el("span", { class: "bar", title: `${Math.round(fraction * 100)}%` }, el("i"));
  bar.firstChild.style.width = `${Math.round(Math.min(1, Math.max(0, fraction)) * 100)}%`;
  return bar;
}

function renderWork(w) {
  renderWorkCounts(w.counts);
  if (!w.items.length) return fill("work-items", empty("the queue is empty"));
  fill("work-items", table(["work id", "type", "config", "games#", "status", "cause", "node", "try#", "progress", "updated"],
    w.items.map(i => el("tr", {},
      el("td", { class: "mono", text: i.work_id }),
      el("td", { text: i.work_type }),
      el("td", { text: i.config }),
      el("td", { class: "num", text: i.num_games }),
      el("td", { title: i.unschedulable || i.reason }, i.unschedulable ? badge("unschedulable") : badge(i.status)),
      el("td", { class: "mono wrap", title: i.reason, text: i.unschedulable || i.cause || (i.status === "failed" ? i.reason : "") }),
      el("td", { text: i.node || "-" }),
      el("td", { class: "num", text: i.attempt }),
      el("td", {}, progressBar(i.progress)),
      el("td", { class: "muted", text: ago(i.updated_at) }),
    ))));
}

// A rating on the config's scale with its 95% interval: "812 ± 95".
function fmtElo(elo, interval) {
  if (elo === null || elo === undefined) return "-";
  return interval ? `${elo.toFixed(0)} ± ${interval.toFixed(0)}` : elo.toFixed(0);
}

function renderModels(s) {
  const models = Object.entries(s.models);
  fill("models", models.length
    ? table(["config", "promoted model", "gen#", "elo#", "installed on", "distribution", "promoted"], models.map(([config, m]) => el("tr", {},
        el("td", {}, el("b", { text: config })),
        el("td", { class: "mono", title: `sha256 ${m.sha256}`, text: m.model_id }),
        el("td", { class: "num", text: m.generation }),
        el("td", { class: "num", title: "Elo on the config's scale: random play = 0; 95% interval", text: fmtElo(m.elo, m.elo_interval) }),
        el("td", { title: m.nodes.join(", "), text: `${m.nodes.length} node${m.nodes.length === 1 ? "" : "s"}` }),
        el("td", { title: m.taint || "" }, m.taint ? badge("TAINTED: rolling back", "failed")
          : m.distribution_complete ? badge("complete") : badge("in progress", "progress")),
        el("td", { class: "muted", text: ago(m.promoted_at) }),
      )))
    : empty("no model promoted yet"));
  const data = Object.entries(s.data);
  fill("data", data.length
    ? [el("h3", { text: "Game data" }), table(["config", "batches#", "games#", "samples#", "newest batch"], data.map(([config, d]) => el("tr", {},
        el("td", { text: config }),
        el("td", { class: "num", text: d.batches }),
        el("td", { class: "num", text: d.games }),
        el("td", { class: "num", text: d.samples }),
        el("td", { class: "muted", text: ago(d.newest_at) }),
      )))]
    : []);
}

// ---- Elo chart: inline SVG, one line per config ----------------------------------------------

// A round grid step (1, 2, 2.5 or 5 times a power of ten) at least `raw`.
function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(Math.max(raw, 1e-9)));
  return [1, 2, 2.5, 5, 10].map(m => m * power).find(s => s >= raw);
}

// Promoted generations are the line (with their intervals as bars), rejected candidates are
// separate hollow marks, the pure-search anchor a dashed level: one scale per config, random play = 0.
function renderElo(doc) {
  const configs = Object.entries(doc.configs).filter(([, points]) => points.length);
  if (!configs.length) {
    fill("elo-chart", empty("no rating yet: the first evaluation rates the anchor and the candidate"));
    return fill("elo-legend");
  }
  const W = 600, H = 220, L = 44, R = 10, T = 10, B = 24;
  const all = configs.flatMap(([, p]) => p);
  const byTime = all.every(p => p.at);
  const x = p => (byTime ? Date.parse(p.at) : p.seq);
  let [x0, x1] = [Math.min(...all.map(x)), Math.max(...all.map(x))];
  let [y0, y1] = [Math.min(0, ...all.map(p => p.elo - p.interval)), Math.max(...all.map(p => p.elo + p.interval))];
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  const pad = Math.max(10, (y1 - y0) * 0.05);
  const step = niceStep((y1 - y0 + 2 * pad) / 4);
  y0 = Math.floor((y0 - pad) / step) * step; y1 = Math.ceil((y1 + pad) / step) * step;
  const px = v => L + (v - x0) / (x1 - x0) * (W - L - R);
  const py = v => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Elo by config (random play = 0)" });
  for (let v = y0; v <= y1 + 1e-9; v += step) {
    chart.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: py(v), y2: py(v) }));
    chart.append(svg("text", { x: L - 6, y: py(v) + 3, "text-anchor": "end" }, v.toFixed(0)));
  }
  chart.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  const label = v => (byTime ? new Date(v).toISOString().slice(5, 16).replace("T", " ") : `seq ${Math.round(v)}`);
  chart.append(svg("text", { x: L, y: H - 8 }, label(x0)));
  chart.append(svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, label(x1)));
  const tip = (config, p) => `${config} ${p.model_id}${p.generation ? ` (generation ${p.generation})` : p.kind === "anchor" ? " (pure-search anchor)" : " (not promoted)"}: ${fmtElo(p.elo, p.interval)} from ${p.games} games`;
  const legend = [];
  configs.forEach(([config, points], i) => {
    const color = COLORS[i % COLORS.length];
    const promoted = points.filter(p => p.generation !== null).sort((a, b) => a.generation - b.generation);
    for (const a of points.filter(p => p.kind === "anchor")) {
      const level = svg("line", { class: "anchor", x1: L, x2: W - R, y1: py(a.elo), y2: py(a.elo), stroke: color, "stroke-dasharray": "4 3", "stroke-width": 1 });
      level.append(svg("title", {}, tip(config, a)));
      chart.append(level);
    }
    if (promoted.length) {
      const path = promoted.map((p, j) => `${j ? "L" : "M"}${px(x(p)).toFixed(1)},${py(p.elo).toFixed(1)}`).join(" ");
      chart.append(svg("path", { class: "promoted", d: path, fill: "none", stroke: color, "stroke-width": 2 }));
    }
    for (const p of promoted) {
      chart.append(svg("line", { class: "interval", x1: px(x(p)), x2: px(x(p)), y1: py(p.elo - p.interval), y2: py(p.elo + p.interval), stroke: color, "stroke-width": 1 }));
      const dot = svg("circle", { class: "promoted", cx: px(x(p)), cy: py(p.elo), r: 4, fill: color, stroke: color, "stroke-width": 1.5 });
      dot.append(svg("title", {}, tip(config, p)));
      chart.append(dot);
    }
    for (const p of points.filter(p => p.generation === null && p.kind !== "anchor")) {
      const mark = svg("circle", { class: "rejected", cx: px(x(p)), cy: py(p.elo), r: 3, fill: "#fff", stroke: color, "stroke-width": 1.2, "stroke-dasharray": "2 1" });
      mark.append(svg("title", {}, tip(config, p)));
      chart.append(mark);
    }
    const best = promoted.find(p => doc.promoted[config] === p.model_id) || promoted[promoted.length - 1];
    legend.push(el("span", {}, el("i", { style: `background:${color}` }), `${config || "unknown config"} `,
      best ? el("b", { text: fmtElo(best.elo, best.interval) }) : el("span", { class: "muted", text: "nothing promoted" }),
      el("span", { class: "muted", text: best ? ` ${best.model_id} (gen ${best.generation})` : "" })));
  });
  legend.push(el("span", { class: "muted", text: "line: promoted generations ± 95%; hollow: not promoted; dashed: pure-search anchor; random play = 0" }));
  fill("elo-chart", chart);
  fill("elo-legend", legend);
}

// ---- live event feed ---------------------------------------------------------------------------

function feedLine(e, fresh) {
  return el("li", { class: fresh ? "fresh" : "", title: e.subject },
    el("span", { class: "mono muted", text: e.seq }),
    el("span", { class: "mono muted", text: clock(e.ts) }),
    el("span", { class: "type", text: e.type }),
    el("span", { text: e.text }));
}

function addToFeed(events) {
  const feed = document.getElementById("feed");
  feed.querySelector(".placeholder")?.remove();
  const fresh = !state.firstFeed;
  for (const e of events) feed.prepend(feedLine(e, fresh));  // newest on top
  while (feed.children.length > FEED_KEPT) feed.lastChild.remove();
  setText("feed-count", `newest first, last seq ${events[events.length - 1].seq}`);
  state.firstFeed = false;
}

// body[data-ready] once the panels and the first batch of the feed are shown (for scripts and tests).
function markReady() {
  if (state.panels && state.fed) document.body.dataset.ready = "yes";
}

// The server pushes each batch of new events (server-sent events); EventSource reconnects by
// itself after a drop, sending the last batch's seq as Last-Event-ID, so nothing is missed.
function streamEvents() {
  const source = new EventSource(`/api/stream?after=${state.after}`);
  source.onopen = () => connection(true, "live");
  source.onerror = () => connection(false, "API unreachable; reconnecting");
  source.onmessage = (message) => {
    const doc = JSON.parse(message.data);
    if (doc.events.length) {
      addToFeed(doc.events);
      refreshPanels();
    }
    state.after = doc.last_seq;
    state.fed = true;
    markReady();
    connection(true, "live");
  };
}

// ---- refresh -----------------------------------------------------------------------------------

async function loadPanels() {
  try {
    const [status, work, elo] = await Promise.all([getJSON("/status"), getJSON("/work/status?limit=15"), getJSON("/api/elo")]);
    renderHeader(status);
    renderLeaders(status);
    renderNodes(status);
    renderModels(status);
    renderWork(work);
    renderElo(elo);
    state.panels = true;
    markReady();
    notice("");
  } catch (e) {
    notice(e.status === 503 ? `The API is starting: ${e.message}` : `Could not load the status: ${e.message}`);
  }
}

// One refresh at a time; a request during one runs once more after it.
function refreshPanels() {
  if (state.refreshing) { state.refreshAgain = true; return state.refreshing; }
  state.refreshing = loadPanels().finally(() => {
    state.refreshing = null;
    if (state.refreshAgain) { state.refreshAgain = false; refreshPanels(); }
  });
  return state.refreshing;
}

refreshPanels();
streamEvents();
setInterval(refreshPanels, PANELS_EVERY_MS);
