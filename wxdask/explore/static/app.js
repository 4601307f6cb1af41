// wxdask explorer: one page over the explorer's JSON and PNG endpoints (no framework, no build step).
"use strict";

const STATUS_COLOURS = {ok: "#c8e6c9", absent: "#424242", missing_idx: "#795548", no_refc: "#ff9800",
                        corrupt: "#e53935", failed: "#8e24aa", not_tried: "#f5f5f5"};
const CLUSTER_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                         "#7f7f7f", "#bcbd22", "#17becf"];
const state = {summary: null, timeline: null, lead: null, time: null, index: null, objectUrls: {}};

const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}
function clearError() { $("error").hidden = true; $("error").textContent = ""; }

async function getJSON(url) {
  const resp = await fetch(url);
  let body;
  try { body = await resp.json(); } catch (e) { body = {error: `${resp.status} ${resp.statusText}`}; }
  if (!resp.ok) { const err = new Error(body.error || resp.statusText); err.status = resp.status; throw err; }
  return body;
}

// Fetch a PNG into an <img>; on a 4xx put the server's message in `noteId` (or the error box).
async function loadImage(imgId, url, noteId) {
  const img = $(imgId);
  const resp = await fetch(url);
  if (!resp.ok) {
    let msg = `${resp.status}`;
    try { msg = (await resp.json()).error; } catch (e) { /* not JSON */ }
    img.removeAttribute("src");
    img.dataset.src = "";
    if (noteId) { $(noteId).textContent = msg; $(noteId).hidden = false; } else { showError(msg); }
    return false;
  }
  const blob = await resp.blob();
  if (state.objectUrls[imgId]) URL.revokeObjectURL(state.objectUrls[imgId]);
  state.objectUrls[imgId] = URL.createObjectURL(blob);
  img.src = state.objectUrls[imgId];
  img.dataset.src = url;
  return true;
}

function hourString(h) {  // hours since 1970 -> 2019-06-01T05
  return new Date(h * 3600e3).toISOString().slice(0, 13);
}
function q(params) { return new URLSearchParams(params).toString(); }

// ---------------------------------------------------------------- timeline (one canvas: any length)

const BANDS = {status: [0, 22], cluster: [26, 44], residual: [50, 148]};

function slotX(i) {  // centre of slot i in CSS pixels of the canvas
  const c = $("timeline");
  const n = state.timeline ? state.timeline.n : 1;
  return (i + 0.5) * c.clientWidth / n;
}

function drawTimeline() {
  const tl = state.timeline, c = $("timeline");
  const w = c.clientWidth, h = 150, dpr = window.devicePixelRatio || 1;
  c.width = w * dpr; c.height = h * dpr;
  const g = c.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  const n = tl.n, dx = w / Math.max(n, 1);
  for (let i = 0; i < n; i++) {
    const x = i * dx, ww = Math.max(dx, 1);
    if (tl.status) { g.fillStyle = STATUS_COLOURS[tl.status[i]] || "#000"; g.fillRect(x, BANDS.status[0], ww, BANDS.status[1] - BANDS.status[0]); }
    if (tl.cluster && tl.cluster[i] >= 0) {
      g.fillStyle = CLUSTER_COLOURS[tl.cluster[i] % CLUSTER_COLOURS.length];
      g.fillRect(x, BANDS.cluster[0], ww, BANDS.cluster[1] - BANDS.cluster[0]);
    }
  }
  g.fillStyle = "#333"; g.font = "10px sans-serif";
  g.fillText("status", 2, BANDS.status[1] - 6);
  if (tl.cluster) g.fillText("cluster", 2, BANDS.cluster[1] - 5);
  if (tl.residual) {  // log scale; NaN (no neighbours) breaks the line
    const vals = tl.residual.filter((v) => v !== null && v > 0);
    if (vals.length) {
      const lo = Math.log10(Math.min(...vals)), hi = Math.log10(Math.max(...vals));
      const [y0, y1] = BANDS.residual, span = Math.max(hi - lo, 1e-9);
      g.strokeStyle = "#333"; g.lineWidth = 1; g.beginPath();
      let pen = false;
      tl.residual.forEach((v, i) => {
        if (v === null || v <= 0) { pen = false; return; }
        const x = (i + 0.5) * dx, y = y1 - (Math.log10(v) - lo) / span * (y1 - y0);
        if (pen) g.lineTo(x, y); else g.moveTo(x, y);
        pen = true;
      });
      g.stroke();
      g.fillStyle = "#666"; g.font = "10px sans-serif";
      g.fillText(`interp residual (log) ${Math.pow(10, hi).toPrecision(2)}`, 2, y0 + 8);
      g.fillText(Math.pow(10, lo).toPrecision(2), 2, y1 - 2);
    }
  }
  if (state.index !== null) {
    g.strokeStyle = "#000"; g.lineWidth = 2;
    g.strokeRect(state.index * dx, 0, Math.max(dx, 2), h);
  }
}

function drawLegend() {
  const tl = state.timeline, parts = [];
  const seen = new Set(tl.status || []);
  for (const [name, col] of Object.entries(STATUS_COLOURS)) {
    if (seen.has(name)) parts.push(`<span><i style="background:${col}"></i>${name}</span>`);
  }
  const clusters = [...new Set((tl.cluster || []).filter((c) => c >= 0))].sort((a, b) => a - b);
  for (const k of clusters) parts.push(`<span><i style="background:${CLUSTER_COLOURS[k % 10]}"></i>cluster ${k}</span>`);
  $("legend").innerHTML = parts.join("");
}

async function loadTimeline(lead) {
  state.timeline = await getJSON(`/api/timeline?${q({lead})}`);
  state.lead = lead;
  const c = $("timeline");
  c.dataset.nSlots = state.timeline.n;
  c.dataset.lead = lead;
  const tl = state.timeline;
  tl.times = tl.hours.map((h) => hourString(tl.start_hour + h));
  $("timeline-caption").textContent = `${tl.n} slots at lead ${lead}: status, cluster, interpolation residual; click to pick`;
  drawLegend();
  drawTimeline();
}

// ---------------------------------------------------------------- the picked slot

function analogList(neighbors, caption) {
  const ol = $("analogs");
  ol.innerHTML = "";
  for (const n of neighbors) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.className = "analog";
    b.dataset.time = n.time; b.dataset.lead = n.lead; b.dataset.sqdist = n.sqdist;
    b.textContent = `${n.time} +${n.lead}h   d² = ${n.sqdist === null ? "?" : n.sqdist.toPrecision(5)}`;
    b.addEventListener("click", () => select(n.time, n.lead));
    li.appendChild(b);
    ol.appendChild(li);
  }
  if (!neighbors.length) ol.innerHTML = "<li>no analogs</li>";
  $("analogs-caption").textContent = caption;
  ol.dataset.caption = caption;
}

async function select(time, lead) {
  clearError();
  lead = Number(lead);
  try {
    if (lead !== state.lead) { $("lead").value = String(lead); await loadTimeline(lead); }
    const info = await getJSON(`/api/slot?${q({time, lead})}`);
    state.time = info.time; state.index = info.index; state.slotMap = null;
    drawTimeline();
    const title = $("slot-title");
    title.textContent = `${info.time} UTC, lead ${info.lead} h`;
    $("time-input").value = info.time;
    location.hash = q({time: info.time, lead: info.lead});
    const bits = [`status <b>${info.status ?? "?"}</b>`];
    if (info.cluster !== undefined) bits.push(`cluster <b>${info.cluster}</b>`);
    if (info.interp_residual != null) bits.push(`interp residual ${info.interp_residual.toPrecision(3)}`);
    if (info.step_sqdist != null) bits.push(`step ${info.step_sqdist.toPrecision(3)}`);
    if (info.reconstruction_rmse != null) bits.push(`reconstruction RMSE ${info.reconstruction_rmse.toFixed(2)} dBZ`);
    $("slot-info").innerHTML = bits.map((b) => `<span>${b}</span>`).join("");
    state.storedNeighbors = info.neighbors;
    analogList(info.neighbors, state.summary.has_neighbors ?
      `stored (window ${info.exclude_window}, k ${state.summary.k})` : "none stored: run `wxdask search`");
    const slotQ = q({time: info.time, lead: info.lead});
    $("slot-note").hidden = true;
    const imgOk = await loadImage("slot-img", `/img/slot.png?${slotQ}`);
    if (imgOk) await loadImage("error-img", `/img/error.png?${slotQ}`, "slot-note");
    else $("error-img").removeAttribute("src");
    if (info.neighbors.length) await loadImage("analogs-img", `/img/analogs.png?${q({time: info.time, lead: info.lead})}`);
    else $("analogs-img").removeAttribute("src");
    if (imgOk) await renderTiles();
    title.dataset.lead = info.lead;
    title.dataset.time = info.time;  // set last: tests wait on it
    return imgOk;
  } catch (e) { showError(e.message); return false; }
}

async function rerun() {
  clearError();
  if (state.time === null) { showError("pick a slot first"); return; }
  const params = {time: state.time, lead: state.lead, window: $("window").value, k: $("k").value};
  try {
    const res = await getJSON(`/api/query?${q(params)}`);
    analogList(res.neighbors, `rerun: window ${res.window_hours} h, k ${res.neighbors.length}`);
    await loadImage("analogs-img", `/img/analogs.png?${q(params)}`);
  } catch (e) { showError(e.message); }
}

// ---------------------------------------------------------------- regimes and scores

async function loadRegimes() {
  if (!state.summary.has_clusters) { $("regimes-message").textContent = "no clusters in this store: run `wxdask cluster`"; $("regimes-message").hidden = false; return; }
  try {
    const r = await getJSON("/api/regimes");
    let html = "<tr><th>cluster</th><th>slots</th>" + (r.months || []).map((m) => `<th>m${m}</th>`).join("") + "</tr>";
    r.sizes.forEach((size, k) => {
      html += `<tr><th style="color:${CLUSTER_COLOURS[k % 10]}">${k}</th><td>${size}</td>` +
        (r.counts || []).map((row) => `<td>${row[k]}</td>`).join("") + "</tr>";
    });
    $("cluster-counts").innerHTML = html;
    $("cluster-counts").dataset.k = r.sizes.length;
  } catch (e) { showError(e.message); }
  await loadImage("centroids", "/img/centroids.png", "regimes-message");
}

async function loadScores() {
  const s = await getJSON("/api/scores");
  const ev = s.evaluation;
  if (ev && ev.autoencoder && ev.pca) {
    const keys = Object.keys(ev.autoencoder).filter((k) => k !== "echo_fraction");
    let html = "<tr><th>held-out (dBZ)</th>" + keys.map((k) => `<th>${k}</th>`).join("") + "</tr>";
    for (const m of ["autoencoder", "pca"]) {
      html += `<tr><th>${m}</th>` + keys.map((k) => {
        const better = ev.autoencoder_better && (ev.autoencoder_better[k] === (m === "autoencoder"));
        const v = ev[m][k];
        return `<td class="${better ? "better" : ""}">${v === null || v === undefined ? "" : Number(v).toFixed(3)}</td>`;
      }).join("") + "</tr>";
    }
    $("evaluation").innerHTML = html + `<caption>${ev.n_heldout} held-out images, model ${ev.model_hash}</caption>`;
  } else {
    $("evaluation").innerHTML = "<caption>no held-out evaluation in this store (run `wxdask evaluate`)</caption>";
  }
  const other = [];
  for (const key of ["analog", "interpolation", "reconstruction_rmse"]) {
    if (s[key]) other.push(`<div><b>${key}</b>: ` + Object.entries(s[key]).map(([k, v]) =>
      `${k} = ${typeof v === "number" ? v.toPrecision(4) : JSON.stringify(v)}`).join(", ") + "</div>");
  }
  if (!s.analog) other.push("<div><b>analog scores</b>: none in this store</div>");
  $("other-scores").innerHTML = other.join("");
}

// ---------------------------------------------------------------- tiles

// A click on the slot's PNG -> (lon, lat): /api/slot_map says where each map's axes lie in the PNG
// (shares of its width and height from the top left) and their limits; the axes are linear.
function pointAt(fx, fy) {
  const panels = (state.slotMap && state.slotMap.panels) || [];
  for (const p of panels) {
    if (fx < p.left || fx > p.right || fy < p.top || fy > p.bottom) continue;
    if (!p.on_latlon) return {error: "this store's maps are not on latitude/longitude: no tile view"};
    return {lon: p.x_min + (fx - p.left) / (p.right - p.left) * (p.x_max - p.x_min),
            lat: p.y_min + (p.bottom - fy) / (p.bottom - p.top) * (p.y_max - p.y_min)};
  }
  return {error: "click inside a map (the stored or the decoded one) to query the tile there"};
}

function tileMessage(message, bad) {
  const box = $("tile-message");
  box.textContent = message || "";
  box.hidden = !message;
  box.classList.toggle("bad", !!bad);
}

function tileList(res) {
  const ol = $("tile-analogs");
  ol.innerHTML = "";
  for (const n of res.neighbors) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.className = "tile-analog";
    b.dataset.time = n.time; b.dataset.lead = n.lead; b.dataset.sqdist = n.sqdist;
    b.dataset.tileY = n.tile_y; b.dataset.tileX = n.tile_x;
    b.textContent = `${n.time} +${n.lead}h  tile (${n.tile_y}, ${n.tile_x}) at ${n.latitude.toFixed(2)}N ` +
      `${n.longitude.toFixed(2)}E  d² = ${n.sqdist === null ? "?" : n.sqdist.toPrecision(5)}`;
    b.addEventListener("click", () => select(n.time, n.lead));
    li.appendChild(b);
    ol.appendChild(li);
  }
  if (!res.neighbors.length) ol.innerHTML = "<li>no other tile qualifies</li>";
}

async function queryTile(lat, lon) {
  const box = $("tile-query");
  const params = {time: state.time, lead: state.lead, lat: lat.toFixed(5), lon: lon.toFixed(5),
                  mode: $("tile-mode").value, k: $("tile-k").value, window: $("tile-window").value};
  tileMessage("");
  try {
    const res = await getJSON(`/api/tiles?${q(params)}`);
    const t = res.tile;
    box.innerHTML = `<b>${res.label}</b>: centre ${t.latitude.toFixed(2)}N ${t.longitude.toFixed(2)}E, ` +
      `${res.mode.replace("_", " ")}, window ${res.window_hours} h, k ${res.k}`;
    box.dataset.tileY = t.tile_y; box.dataset.tileX = t.tile_x;
    tileList(res);
    await loadImage("tiles-img", `/img/tiles.png?${q(params)}`, "tile-message");
    box.dataset.state = "ok";
  } catch (e) {
    box.textContent = ""; box.dataset.tileY = ""; box.dataset.tileX = "";
    $("tile-analogs").innerHTML = "";
    $("tiles-img").removeAttribute("src");
    tileMessage(e.message, true);
    box.dataset.state = "error";
  }
  box.dataset.query = `${params.lat},${params.lon}`;  // set last: tests wait on it
}

// The tile view of the picked slot: the click-to-query map, and its tile regimes.
async function renderTiles() {
  const s = state.summary;
  if (!s || !s.tiles) return;
  $("tiles").hidden = false;
  if (state.time === null) return;
  const slotQ = q({time: state.time, lead: state.lead});
  try {
    state.slotMap = await getJSON(`/api/slot_map?${slotQ}`);
    $("slot-img").classList.add("clickable");
  } catch (e) { state.slotMap = null; tileMessage(e.message, true); }
  $("tile-analogs").innerHTML = "";
  $("tile-query").textContent = "";
  $("tiles-img").removeAttribute("src");
  if (s.has_tile_regimes) {
    $("tile-regimes-message").hidden = true;
    await loadImage("tile-regimes-img", `/img/tile_regimes.png?${slotQ}`, "tile-regimes-message");
  } else {
    $("tile-regimes-message").textContent = "no tile regimes in this store: run `wxdask cluster --tiles`";
    $("tile-regimes-message").hidden = false;
  }
}

function onSlotImageClick(ev) {
  if (!state.summary || !state.summary.tiles || state.time === null) return;
  const rect = $("slot-img").getBoundingClientRect();
  const pt = pointAt((ev.clientX - rect.left) / rect.width, (ev.clientY - rect.top) / rect.height);
  if (pt.error) { tileMessage(pt.error, true); $("tile-query").dataset.query = "outside"; return; }
  queryTile(pt.lat, pt.lon);
}

// ---------------------------------------------------------------- start

async function start() {
  try {
    state.summary = await getJSON("/api/summary");
  } catch (e) { showError(e.message); return; }
  const s = state.summary;
  $("store-name").textContent = `${s.store} (${s.n_times} times, ${s.first} to ${s.last})`;
  $("lead").innerHTML = s.leads.map((l) => `<option value="${l}">${l} h</option>`).join("");
  $("window").value = s.exclude_window || "0";
  $("k").value = s.k || 5;
  if (s.model_message) { $("model-message").textContent = s.model_message; $("model-message").hidden = false; }
  if (!s.has_embedding) showError("this store has no embedding: run `wxdask embed` (analogs and decoded views are off)");
  $("lead").addEventListener("change", async () => {
    const lead = Number($("lead").value);
    if (state.time !== null) await select(state.time, lead); else await loadTimeline(lead);
  });
  $("go").addEventListener("click", () => select($("time-input").value.trim(), $("lead").value));
  $("time-input").addEventListener("keydown", (ev) => { if (ev.key === "Enter") $("go").click(); });
  $("rerun").addEventListener("click", rerun);
  $("slot-img").addEventListener("click", onSlotImageClick);
  $("tile-window").value = s.tile_exclude_window || "0";
  $("tile-k").value = s.tile_k || 5;
  if (s.tile_mode) $("tile-mode").value = s.tile_mode;
  $("stored").addEventListener("click", () => { if (state.time !== null) select(state.time, state.lead); });
  $("timeline").addEventListener("click", (ev) => {
    const c = $("timeline"), rect = c.getBoundingClientRect();
    const i = Math.min(state.timeline.n - 1, Math.max(0, Math.floor((ev.clientX - rect.left) / rect.width * state.timeline.n)));
    select(state.timeline.times[i], state.lead);
  });
  window.addEventListener("resize", () => state.timeline && drawTimeline());
  const hash = new URLSearchParams(location.hash.slice(1));
  const lead = hash.has("lead") ? Number(hash.get("lead")) : s.leads[0];
  try { await loadTimeline(s.leads.includes(lead) ? lead : s.leads[0]); } catch (e) { showError(e.message); }
  await Promise.all([loadRegimes(), loadScores().catch((e) => showError(e.message))]);
  if (hash.has("time")) await select(hash.get("time"), lead);
  renderTiles();
  document.body.dataset.ready = "1";
}

window.explorer = {state, select, slotX, rerun, queryTile, pointAt};
start();
