// touchflow operators' dashboard: hand-written SVG charts over the JSON API (no CDN, no
// library: the page must work on machines without internet). Data attributes on chart
// elements (data-segment, data-customers, ...) name what each mark stands for.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const FEED_EVERY_MS = 3000;
const REFRESH_EVERY_MS = 30000;
const LIFECYCLE_ORDER = ["(none)", "new", "active", "at_risk", "dormant", "churned", "won_back"];
const PALETTE = ["#2f5bea", "#12a150", "#e08a00", "#d6453d", "#8a4fd8", "#0ea5b7", "#c2477f",
  "#7a8599", "#4e7d1e", "#b8860b"];
const LIFECYCLE_COLORS = { "(none)": "#b7bfcc", new: "#0ea5b7", active: "#12a150",
  at_risk: "#e08a00", dormant: "#8a4fd8", churned: "#d6453d", won_back: "#2f5bea" };
const DIMENSIONS = { rfm_segment: "RFM", aipl_stage: "AIPL", lifecycle: "生命周期", tag: "标签",
  identity: "合并" };

let labels = { rfm_segment: {}, lifecycle: {}, aipl_stage: {} };
let sizesDimension = "rfm_segment";
let seenChanges = null; // keys of the feed's rows at the last poll (null: first poll)

// -- small helpers -------------------------------------------------------------------------

function el(tag, attrs = {}, children = []) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

function text(x, y, content, attrs = {}) {
  return el("text", { x, y, ...attrs }, [String(content)]);
}

function tip(node, content) {
  node.append(el("title", {}, [content]));
  return node;
}

function html(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

const nf = new Intl.NumberFormat("zh-CN");
function num(n) { return n === null || n === undefined ? "–" : nf.format(n); }

function yuan(minor) {
  const y = (minor || 0) / 100;
  if (Math.abs(y) >= 1e8) return `¥${(y / 1e8).toFixed(2)}亿`;
  if (Math.abs(y) >= 1e4) return `¥${(y / 1e4).toFixed(1)}万`;
  return `¥${nf.format(Math.round(y))}`;
}

function pct(x) { return x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`; }

function shortId(id) { return id.length <= 14 ? id : `${id.slice(0, 8)}…${id.slice(-4)}`; }

function name(dimension, value) {
  if (value === "" || value === "(none)") return dimension === "lifecycle" ? "未购" : "—";
  const zh = (labels[dimension] || {})[value];
  return zh ? zh : value;
}

function filters() {
  const q = new URLSearchParams();
  for (const id of ["brand", "since", "until"]) {
    const v = document.getElementById(id).value;
    if (v) q.set(id, v);
  }
  return q;
}

async function api(endpoint, extra = {}) {
  const q = filters();
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  const response = await fetch(`api/${endpoint}?${q}`, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function setState(panelId, state) { document.getElementById(panelId).dataset.state = state; }

function empty(container, message) {
  container.replaceChildren(html("div", { class: "empty" }, [message]));
}

const NO_DATA = "暂无数据 · No data for this brand and date range";

const generation = {}; // per panel: only the newest load draws (filters may change mid-load)

async function panel(panelId, container, load, draw, quiet = false) {
  const mine = (generation[panelId] = (generation[panelId] || 0) + 1);
  if (!quiet) setState(panelId, "loading");
  try {
    const data = await load();
    if (mine !== generation[panelId]) return;
    draw(data);
    setState(panelId, "ready");
  } catch (err) {
    if (mine !== generation[panelId]) return;
    container.replaceChildren(html("div", { class: "error" }, [`加载失败 · ${err.message}`]));
    setState(panelId, "error");
  }
}

// -- KPIs ----------------------------------------------------------------------------------

async function loadKpis() {
  try {
    const s = await api("summary");
    document.getElementById("kpi-people").textContent = num(s.people);
    document.getElementById("kpi-buyers").textContent = num(s.buyers);
    document.getElementById("kpi-events").textContent = num(s.events);
    document.getElementById("kpi-revenue").textContent = yuan(s.revenue_minor);
    document.getElementById("kpi-changes").textContent = num(s.changes);
    setState("kpis", "ready");
    hideBanner();
  } catch (err) {
    showBanner(`无法读取数据 · ${err.message}`);
    setState("kpis", "error");
  }
}

function showBanner(message) {
  const b = document.getElementById("banner");
  b.textContent = message;
  b.hidden = false;
}
function hideBanner() { document.getElementById("banner").hidden = true; }

// -- segment sizes over time: a line per segment ---------------------------------------------

function drawSizes(data) {
  const box = document.getElementById("chart-sizes");
  const legend = document.getElementById("legend-sizes");
  legend.replaceChildren();
  const values = Object.keys(data.series);
  if (!data.days.length || !values.length) return empty(box, NO_DATA);
  const W = 960, H = 260, L = 54, R = 110, T = 10, B = 28;
  const times = data.days.map((d) => Date.parse(d));
  const t0 = times[0], t1 = times[times.length - 1];
  const max = Math.max(1, ...values.flatMap((v) => data.series[v]));
  const x = (t) => (t1 === t0 ? L + (W - L - R) / 2 : L + ((t - t0) / (t1 - t0)) * (W - L - R));
  const y = (n) => T + (1 - n / max) * (H - T - B);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "segment sizes" });
  for (let i = 0; i <= 4; i++) {
    const v = Math.round((max * i) / 4);
    svg.append(el("line", { class: "grid-line", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    svg.append(text(L - 8, y(v) + 4, num(v), { "text-anchor": "end", class: "muted" }));
  }
  const ticks = Math.min(6, data.days.length);
  for (let i = 0; i < ticks; i++) {
    const idx = ticks === 1 ? 0 : Math.round((i * (data.days.length - 1)) / (ticks - 1));
    svg.append(text(x(times[idx]), H - 8, data.days[idx].slice(5), { "text-anchor": "middle", class: "muted" }));
  }
  const colors = sizesDimension === "lifecycle" ? LIFECYCLE_COLORS : {};
  values.forEach((value, i) => {
    const color = colors[value] || PALETTE[i % PALETTE.length];
    const points = data.series[value];
    const d = points.map((n, j) => `${j ? "L" : "M"}${x(times[j]).toFixed(1)},${y(n).toFixed(1)}`).join("");
    const last = points[points.length - 1];
    const line = el("path", { class: "series", d, fill: "none", stroke: color, "stroke-width": 2.2,
      "stroke-linejoin": "round", "data-value": value, "data-last": last });
    svg.append(tip(line, `${name(sizesDimension, value)}: ${num(last)}`));
    if (points.length === 1) svg.append(el("circle", { cx: x(times[0]), cy: y(last), r: 4, fill: color }));
    svg.append(text(W - R + 6, y(last) + 4, `${name(sizesDimension, value)} ${num(last)}`,
      { fill: color, "font-size": 11 }));
    legend.append(html("span", {}, [html("i", { style: `background:${color}` }), name(sizesDimension, value)]));
  });
  box.replaceChildren(svg);
}

// -- RFM matrix: 2 x 4 heat map --------------------------------------------------------------

function drawRfm(data) {
  const box = document.getElementById("chart-rfm");
  const total = data.cells.reduce((s, c) => s + c.customers, 0);
  if (!total) return empty(box, NO_DATA);
  const W = 520, H = 250, L = 64, T = 34, cw = (W - L) / 4, ch = (H - T) / 2;
  const max = Math.max(...data.cells.map((c) => c.customers));
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "RFM matrix" });
  ["R↑ F↑", "R↑ F↓", "R↓ F↑", "R↓ F↓"].forEach((h, col) =>
    svg.append(text(L + cw * col + cw / 2, 20, h, { "text-anchor": "middle", class: "muted" })));
  ["M↑ 重要", "M↓ 一般"].forEach((h, row) =>
    svg.append(text(L - 10, T + ch * row + ch / 2 + 4, h, { "text-anchor": "end", class: "muted" })));
  for (const c of data.cells) {
    const heat = c.customers / max;
    const fill = `hsl(226, 80%, ${96 - heat * 48}%)`;
    const ink = heat > 0.55 ? "#fff" : "#1d2433";
    const x0 = L + cw * c.col, y0 = T + ch * c.row;
    const g = el("g", { class: "cell", "data-segment": c.segment, "data-customers": c.customers,
      "data-revenue-minor": c.revenue_minor });
    g.append(tip(el("rect", { x: x0 + 3, y: y0 + 3, width: cw - 6, height: ch - 6, rx: 8, fill }),
      `${c.name} ${c.segment}: ${num(c.customers)} customers, ${yuan(c.revenue_minor)} in range`));
    g.append(text(x0 + cw / 2, y0 + ch / 2 - 16, c.name, { "text-anchor": "middle", fill: ink }));
    g.append(text(x0 + cw / 2, y0 + ch / 2 + 10, num(c.customers),
      { "text-anchor": "middle", fill: ink, "font-size": 22, "font-weight": 650, class: "count" }));
    g.append(text(x0 + cw / 2, y0 + ch / 2 + 30, `${pct(c.customers / total)} · ${yuan(c.revenue_minor)}`,
      { "text-anchor": "middle", fill: ink, "font-size": 11 }));
    svg.append(g);
  }
  box.replaceChildren(svg);
}

// -- AIPL funnel -----------------------------------------------------------------------------

function drawFunnel(data) {
  const box = document.getElementById("chart-funnel");
  if (!data.steps.length || !data.steps[0].reached) return empty(box, NO_DATA);
  const W = 520, H = 250, top = data.steps[0].reached, rowH = (H - 10) / data.steps.length;
  const colors = ["#9db4f7", "#6b8ef1", "#3f68ea", "#2345b8"];
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "AIPL funnel" });
  data.steps.forEach((s, i) => {
    const w = Math.max(6, (s.reached / top) * (W - 200));
    const x0 = 100 + (W - 200 - w) / 2, y0 = 5 + i * rowH;
    const g = el("g", { class: "step", "data-stage": s.stage, "data-reached": s.reached });
    g.append(tip(el("rect", { x: x0, y: y0 + 4, width: w, height: rowH - 14, rx: 6, fill: colors[i] }),
      `${s.name} ${s.stage}: ${num(s.reached)}`));
    g.append(text(90, y0 + rowH / 2 + 2, `${s.name} ${s.stage}`, { "text-anchor": "end" }));
    g.append(text(W - 95, y0 + rowH / 2 + 2, num(s.reached), { "font-weight": 650, class: "count" }));
    if (s.conversion !== null) {
      g.append(text(W - 95, y0 + rowH / 2 + 17, `↳ ${pct(s.conversion)}`, { class: "muted", "font-size": 11 }));
    }
    svg.append(g);
  });
  box.replaceChildren(svg);
}

// -- lifecycle flows: a two-column Sankey ----------------------------------------------------

function drawFlow(data) {
  const box = document.getElementById("chart-flow");
  if (!data.flows.length) return empty(box, NO_DATA);
  const W = 520, H = 260, nodeW = 12, gap = 8, xL = 96, xR = W - 96 - nodeW;
  const order = (v) => { const i = LIFECYCLE_ORDER.indexOf(v); return i < 0 ? 99 : i; };
  const total = data.flows.reduce((s, f) => s + f.people, 0);
  const side = (key) => {
    const sums = {};
    for (const f of data.flows) sums[f[key]] = (sums[f[key]] || 0) + f.people;
    return Object.keys(sums).sort((a, b) => order(a) - order(b)).map((v) => ({ v, n: sums[v] }));
  };
  const left = side("from"), right = side("to");
  const scale = (H - gap * (Math.max(left.length, right.length) - 1)) / total;
  const place = (nodes) => { let y = 0; for (const n of nodes) { n.y = y; n.h = n.n * scale; n.used = 0; y += n.h + gap; } };
  place(left); place(right);
  const byV = (nodes) => Object.fromEntries(nodes.map((n) => [n.v, n]));
  const L = byV(left), Rn = byV(right);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "lifecycle flows" });
  const flows = [...data.flows].sort((a, b) => order(a.from) - order(b.from) || order(a.to) - order(b.to));
  for (const f of flows) {
    const a = L[f.from], b = Rn[f.to], h = f.people * scale;
    const y0 = a.y + a.used + h / 2, y1 = b.y + b.used + h / 2;
    a.used += h; b.used += h;
    const mx = (xL + nodeW + xR) / 2;
    const path = el("path", { class: "flow", d: `M${xL + nodeW},${y0} C${mx},${y0} ${mx},${y1} ${xR},${y1}`,
      fill: "none", stroke: LIFECYCLE_COLORS[f.to] || "#7a8599", "stroke-opacity": 0.35,
      "stroke-width": Math.max(1, h), "data-from": f.from, "data-to": f.to, "data-people": f.people });
    svg.append(tip(path, `${name("lifecycle", f.from)} → ${name("lifecycle", f.to)}: ${num(f.people)}`));
  }
  for (const [nodes, x, anchor, dx] of [[left, xL, "end", -6], [right, xR, "start", nodeW + 6]]) {
    for (const n of nodes) {
      svg.append(el("rect", { x, y: n.y, width: nodeW, height: Math.max(1, n.h), rx: 2,
        fill: LIFECYCLE_COLORS[n.v] || "#7a8599" }));
      svg.append(text(x + dx, n.y + n.h / 2 + 4, `${name("lifecycle", n.v)} ${num(n.n)}`, { "text-anchor": anchor }));
    }
  }
  box.replaceChildren(svg);
}

// -- top sharers -----------------------------------------------------------------------------

function drawSharers(data) {
  const box = document.getElementById("chart-sharers");
  const t = data.totals;
  document.getElementById("sharers-totals").replaceChildren(
    html("span", {}, ["分享邀请 invitations ", html("b", {}, [num(t.invitations)])]),
    html("span", {}, ["被邀请人 invitees ", html("b", {}, [num(t.invitees)])]),
    html("span", {}, ["转化 converted ", html("b", {}, [num(t.converted_invitees)])]),
    html("span", { title: "converted invitees per sharer (one brand at a time)" },
      ["K 因子 ", html("b", {}, [t.k_factor === null ? "选一个品牌" : t.k_factor.toFixed(2)])]),
  );
  if (!data.sharers.length) return empty(box, NO_DATA);
  const rowH = 24, W = 520, H = data.sharers.length * rowH + 4, x0 = 150;
  const max = Math.max(1, ...data.sharers.map((s) => Math.max(s.invitations, s.invitees)));
  const wOf = (n) => (n / max) * (W - x0 - 70);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "top sharers" });
  data.sharers.forEach((s, i) => {
    const y = i * rowH + 2;
    const g = el("g", { class: "sharer", "data-person": s.person_id, "data-brand": s.brand,
      "data-invitations": s.invitations, "data-converted": s.converted_invitees });
    g.append(tip(text(x0 - 8, y + 15, `${shortId(s.person_id)} · ${s.brand}`,
      { "text-anchor": "end", "font-family": "ui-monospace, monospace", "font-size": 11 }), s.person_id));
    g.append(tip(el("rect", { x: x0, y: y + 3, width: Math.max(2, wOf(s.invitees)), height: rowH - 8, rx: 4, fill: "#c9d6fb" }),
      `${num(s.invitations)} invitations, ${num(s.invitees)} invitees`));
    g.append(tip(el("rect", { x: x0, y: y + 3, width: wOf(s.converted_invitees), height: rowH - 8, rx: 4, fill: "#2f5bea" }),
      `${num(s.converted_invitees)} converted invitees`));
    g.append(text(x0 + Math.max(2, wOf(s.invitees)) + 6, y + 15,
      `${num(s.converted_invitees)} / ${num(s.invitees)}`, { class: "count" }));
    svg.append(g);
  });
  box.replaceChildren(svg);
}

// -- live feed -------------------------------------------------------------------------------

function when(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}`;
}

function drawFeed(data) {
  const list = document.getElementById("feed");
  const keys = data.changes.map((c) => `${c.brand}|${c.person_id}|${c.seq}`);
  if (!data.changes.length) {
    list.replaceChildren(html("li", { class: "empty" }, ["暂无分群变化 · No segment changes yet"]));
  } else {
    list.replaceChildren(...data.changes.map((c, i) => {
      const dim = c.dimension;
      const fresh = seenChanges !== null && !seenChanges.has(keys[i]);
      const cause = c.cause_event_id === "time" ? "⏱ 时间推移 time" : c.cause_event_id;
      return html("li", { class: fresh ? "change new" : "change", "data-key": keys[i] }, [
        html("span", { class: "when", title: "event time (UTC)" }, [when(c.event_time_ms)]),
        html("span", { class: "brand" }, [c.brand]),
        html("span", { class: "who", title: c.person_id }, [shortId(c.person_id)]),
        html("span", { class: "dim" }, [DIMENSIONS[c.dimension] || c.dimension]),
        html("span", { class: "move" }, [`${name(dim, c.from_value)} → `, html("b", {}, [name(dim, c.to_value)])]),
        html("span", { class: "cause", title: c.rule }, [cause]),
      ]);
    }));
  }
  seenChanges = new Set(keys);
}

async function pollFeed() {
  const status = document.getElementById("feed-status");
  try {
    drawFeed(await api("changes", { limit: 30 }));
    status.classList.remove("stale");
    setState("panel-feed", "ready");
  } catch (err) {
    status.classList.add("stale");
    setState("panel-feed", "error");
  }
}

// -- wiring ----------------------------------------------------------------------------------

function refreshCharts(quiet = false) {
  loadKpis();
  const sizes = () => api("segment-sizes", { dimension: sizesDimension });
  panel("panel-sizes", document.getElementById("chart-sizes"), sizes, drawSizes, quiet);
  panel("panel-rfm", document.getElementById("chart-rfm"), () => api("rfm-matrix"), drawRfm, quiet);
  panel("panel-funnel", document.getElementById("chart-funnel"), () => api("aipl-funnel"), drawFunnel, quiet);
  panel("panel-flow", document.getElementById("chart-flow"), () => api("lifecycle-flow"), drawFlow, quiet);
  panel("panel-sharers", document.getElementById("chart-sharers"), () => api("top-sharers"), drawSharers, quiet);
  document.getElementById("updated").textContent = `更新于 updated ${new Date().toLocaleTimeString("zh-CN")}`;
}

function onFilters() {
  seenChanges = null;
  refreshCharts();
  pollFeed();
}

async function init() {
  try {
    const b = await api("brands");
    labels = b.labels;
    const select = document.getElementById("brand");
    for (const x of b.brands) {
      select.append(html("option", { value: x.brand }, [`${x.brand} (${num(x.people)})`]));
    }
    const days = b.brands.flatMap((x) => [x.first_day, x.last_day]).sort();
    if (days.length) {
      for (const id of ["since", "until"]) {
        document.getElementById(id).min = days[0];
        document.getElementById(id).max = days[days.length - 1];
      }
    }
  } catch (err) {
    showBanner(`无法读取数据 · ${err.message}`);
  }
  for (const id of ["brand", "since", "until"]) document.getElementById(id).addEventListener("change", onFilters);
  document.getElementById("all-time").addEventListener("click", () => {
    document.getElementById("since").value = "";
    document.getElementById("until").value = "";
    onFilters();
  });
  for (const button of document.querySelectorAll("#sizes-dimension button")) {
    button.addEventListener("click", () => {
      sizesDimension = button.dataset.dimension;
      for (const other of document.querySelectorAll("#sizes-dimension button")) other.classList.toggle("on", other === button);
      panel("panel-sizes", document.getElementById("chart-sizes"),
        () => api("segment-sizes", { dimension: sizesDimension }), drawSizes);
    });
  }
  onFilters();
  setInterval(pollFeed, FEED_EVERY_MS);
  setInterval(() => refreshCharts(true), REFRESH_EVERY_MS);
}

init();
