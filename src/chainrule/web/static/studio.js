// chainrule studio: the page. Plain JavaScript, no build step, no request to another host.
//
// The settings live in the form and in the page's URL (?dataset=spirals&hidden=8,8&…), so a
// link reproduces the run. A run is made (POST /api/runs) whenever a structural setting
// changes; learning rate and weight decay are PATCHed into the running one. The server's
// updates arrive as Server-Sent Events (GET /api/runs/{id}/events); each holds the step,
// metrics, the last curve points and the views, which are drawn on canvases here.
"use strict";

const $ = (id) => document.getElementById(id);
const POINT_SETS = ["spirals", "blobs", "xor", "circles", "moons"];
const IMAGE_SETS = ["mnist", "fashion-mnist"];
const FIELDS = ["dataset", "classes", "noise", "samples", "model", "hidden", "activation",
                "dropout", "seed", "optimizer", "batch-size", "epochs", "lr", "weight-decay"];
const LIVE = ["lr", "weight-decay"];
const COLOURS = [[230, 85, 60], [52, 120, 220], [40, 170, 90], [240, 180, 30],
                 [150, 80, 200], [20, 180, 190], [220, 90, 170], [120, 120, 120],
                 [160, 110, 50], [90, 160, 40]];

const studio = { runId: null, run: null, events: null, updates: 0, lastEvent: null,
                 curve: new Map(), csvText: null, times: [], making: null };
window.studio = studio;

// ------------------------------------------------------------------ settings and the URL
function kind() {
  const set = $("dataset").value;
  return IMAGE_SETS.includes(set) ? "images" : "points";
}

function showFor() {
  const set = $("dataset").value, images = kind() === "images";
  const toy = POINT_SETS.includes(set), preset = $("model").value;
  const visible = (c) => {
    if (c.contains("toy-only")) return toy || (images && c.contains("images-only"));
    if (c.contains("csv-only")) return set === "csv";
    if (c.contains("mlp-only")) return !images || preset === "mlp";
    if (c.contains("images-only")) return images;
    if (c.contains("points-only")) return !images;
    return true;
  };
  for (const el of document.querySelectorAll(
    ".toy-only, .csv-only, .mlp-only, .images-only, .points-only")) {
    el.hidden = !visible(el.classList);
  }
  $("classes").disabled = set === "xor";
}

function readUrl() {
  const query = new URLSearchParams(location.search);
  for (const name of FIELDS) {
    const key = name.replace("-", "_");
    if (query.has(key)) $(name).value = query.get(key);
  }
  if (!query.has("classes") && ["xor", "circles", "moons"].includes($("dataset").value)) {
    $("classes").value = "2";
  }
}

function writeUrl() {
  const query = new URLSearchParams();
  for (const name of FIELDS) {
    const el = $(name);
    if (el.value !== "" && !el.closest("label").hidden) query.set(name.replace("-", "_"), el.value);
  }
  history.replaceState(null, "", "?" + query.toString());
}

function number(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

function settings() {
  const set = $("dataset").value, body = {};
  if (set === "csv") {
    body.csv = studio.csvText || "";
  } else {
    body.dataset = set;
  }
  if (POINT_SETS.includes(set)) {
    if (set !== "xor") body.classes = number("classes");
    body.noise = number("noise");
  }
  if (set !== "csv") body.samples = number("samples");
  if (kind() === "images") body.model = $("model").value;
  if (!$("hidden").closest("label").hidden && $("hidden").value.trim() !== "") {
    body.hidden = $("hidden").value.split(",").map((s) => s.trim()).filter((s) => s !== "")
      .map(Number);
  }
  if (!$("activation").closest("label").hidden && $("activation").value) {
    body.activation = $("activation").value;
  }
  body.dropout = number("dropout") ?? 0;
  body.seed = number("seed") ?? 0;
  body.optimizer = $("optimizer").value;
  body.batch_size = number("batch-size");
  body.epochs = number("epochs");
  body.lr = number("lr");
  body.weight_decay = number("weight-decay") ?? 0;
  for (const key of Object.keys(body)) if (body[key] === null) delete body[key];
  return body;
}

// ------------------------------------------------------------------ talking to the server
async function api(method, path, body) {
  const options = { method, headers: {} };
  if (method !== "GET") {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body ?? {});
  }
  const response = await fetch(path, options);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error((data && data.detail) || `${response.status}`);
  return data;
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message ? `Error: ${message}` : "";
}

async function guarded(work) {
  try {
    showError("");
    return await work();
  } catch (error) {
    showError(error.message);
    return null;
  }
}

function closeRun() {
  if (studio.events) studio.events.close();
  studio.events = null;
  if (studio.runId) {
    fetch(`/api/runs/${studio.runId}`, { method: "DELETE", keepalive: true }).catch(() => {});
  }
  studio.runId = null;
  studio.run = null;
}

async function makeRun() {
  closeRun();
  studio.curve.clear();
  studio.lastEvent = null;
  document.body.dataset.kind = kind();
  if ($("dataset").value === "csv" && !studio.csvText) {
    showError("choose a CSV file of x1,x2,label rows");
    return null;
  }
  const made = await guarded(() => api("POST", "/api/runs", settings()));
  if (!made) return null;
  studio.runId = made.id;
  await refresh();
  listen();
  return made.id;
}

async function ensureRun() {
  if (studio.making) await studio.making;
  if (!studio.runId) {
    studio.making = makeRun();
    await studio.making;
    studio.making = null;
  }
  return studio.runId;
}

async function refresh() {
  const state = await guarded(() => api("GET", `/api/runs/${studio.runId}`));
  if (!state) return;
  studio.run = state;
  studio.curve.clear();
  state.curve.forEach((point, i) => studio.curve.set(`s${i}`, point));
  if (!$("lr").value) $("lr").placeholder = String(state.settings.lr);
  showState(state);
  drawCharts();
  if (state.data.kind === "points") drawPointsOnly();
  $("save-model").href = `/api/runs/${studio.runId}/model.npz`;
}

function listen() {
  const id = studio.runId;
  const source = new EventSource(`/api/runs/${id}/events`);
  studio.events = source;
  source.onmessage = (message) => {
    if (studio.runId !== id) return;
    const event = JSON.parse(message.data);
    studio.updates += 1;
    const now = performance.now();
    studio.times.push(now);
    while (studio.times.length && now - studio.times[0] > 2000) studio.times.shift();
    render(event);
  };
  source.addEventListener("closed", () => source.close());
}

// ------------------------------------------------------------------ drawing an update
function fmt(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function showState(state) {
  $("state").textContent = state.state;
  $("step-count").textContent = String(state.step);
  $("epoch").textContent = String(state.epoch);
  $("train-acc").textContent = fmt(state.metrics.accuracy);
  $("val-acc").textContent = fmt(state.metrics.val_accuracy);
  $("lr-now").textContent = String(state.lr);
  $("pause").disabled = state.state !== "running";
  $("step").disabled = state.state !== "paused";
  $("train").disabled = state.state === "running" || state.state === "done" ||
    state.state === "error";
  if (state.error) showError(state.error);
}

function render(event) {
  studio.lastEvent = event;
  if (studio.run) {
    Object.assign(studio.run, { state: event.state, step: event.step, epoch: event.epoch,
                                lr: event.lr, metrics: event.metrics });
  }
  for (const point of event.curve) studio.curve.set(point.i, point);
  showState(event);
  const span = studio.times.length > 1 ? (studio.times.at(-1) - studio.times[0]) / 1000 : 0;
  $("rate").textContent = span > 0 ? ((studio.times.length - 1) / span).toFixed(1) : "–";
  drawCharts();
  if (event.regions) drawRegions(event.regions);
  if (event.first_layer) drawFirstLayer(event.first_layer);
  if (event.confusion && kind() === "images") drawConfusion(event.confusion);
  if (event.mistakes) drawMistakes(event.mistakes);
  if (event.health) drawHealth(event.health);
  if (event.backward) drawBackward(event.backward);
}

function bytes(base64) {
  const raw = atob(base64), out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function chart(canvas, series, yMax, label) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height, pad = 34;
  ctx.clearRect(0, 0, w, h);
  ctx.font = "15px system-ui, sans-serif";
  ctx.fillStyle = getComputedStyle(document.body).color;
  ctx.strokeStyle = "rgba(128,128,128,0.4)";
  ctx.strokeRect(pad, 6, w - pad - 6, h - pad - 6);
  const points = [...studio.curve.values()].sort((a, b) => a.step - b.step);
  const last = points.length ? points.at(-1).step : 1;
  let top = yMax;
  if (top === null) {
    top = 0;
    for (const p of points) for (const s of series) top = Math.max(top, p[s.key] ?? 0);
    top = top || 1;
  }
  ctx.fillText(label, pad + 6, 24);
  ctx.fillText(top.toPrecision(2), 2, 18);
  ctx.fillText("0", 2, h - pad);
  ctx.fillText(`step ${last}`, w - 100, h - 10);
  for (const s of series) {
    ctx.beginPath();
    ctx.setLineDash(s.dash);
    ctx.strokeStyle = s.colour;
    ctx.lineWidth = 2;
    let started = false;
    for (const p of points) {
      const v = p[s.key];
      if (v === null || v === undefined) continue;
      const x = pad + (w - pad - 6) * (last ? p.step / last : 0);
      const y = 6 + (h - pad - 6) * (1 - Math.min(v / top, 1));
      if (started) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      started = true;
    }
    ctx.stroke();
  }
  ctx.setLineDash([]);
}

function drawCharts() {
  chart($("loss-chart"), [{ key: "loss", colour: "#d7301f", dash: [] },
                          { key: "val_loss", colour: "#d7301f", dash: [5, 4] }], null, "loss");
  chart($("acc-chart"), [{ key: "accuracy", colour: "#3346d3", dash: [] },
                         { key: "val_accuracy", colour: "#3346d3", dash: [5, 4] }], 1,
        "accuracy");
}

function toCanvas(extent, canvas) {
  const [x0, x1, y0, y1] = extent;
  return (x, y) => [(x - x0) / (x1 - x0) * canvas.width, (y1 - y) / (y1 - y0) * canvas.height];
}

function drawPoints(ctx, canvas) {
  const points = studio.run && studio.run.data.points;
  if (!points) return;
  const at = toCanvas(points.extent, canvas);
  const dot = (x, y, c, ring) => {
    const [u, v] = at(x, y), [r, g, b] = COLOURS[c % COLOURS.length];
    ctx.beginPath();
    ctx.arc(u, v, ring ? 3.6 : 3, 0, 2 * Math.PI);
    if (ring) {
      ctx.strokeStyle = `rgb(${r},${g},${b})`; ctx.lineWidth = 1.6; ctx.stroke();
    } else {
      ctx.fillStyle = `rgb(${r},${g},${b})`; ctx.fill();
      ctx.strokeStyle = "rgba(255,255,255,0.9)"; ctx.lineWidth = 0.8; ctx.stroke();
    }
  };
  points.x.forEach(([x, y], i) => dot(x, y, points.y[i], false));
  points.x_val.forEach(([x, y], i) => dot(x, y, points.y_val[i], true));
}

function drawPointsOnly() {
  const canvas = $("regions"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  drawPoints(ctx, canvas);
}

const regionBuffer = document.createElement("canvas");

function drawRegions(regions) {
  const side = regions.side, classes = bytes(regions.classes);
  const confidence = bytes(regions.confidence), C = studio.run ? studio.run.data.classes : 2;
  regionBuffer.width = regionBuffer.height = side;
  const bctx = regionBuffer.getContext("2d"), image = bctx.createImageData(side, side);
  for (let i = 0; i < side * side; i++) {
    const [r, g, b] = COLOURS[classes[i] % COLOURS.length];
    const sure = Math.max(0, (confidence[i] / 255 - 1 / C) / (1 - 1 / C));
    const a = 0.15 + 0.6 * sure;
    image.data[4 * i] = Math.round(255 * (1 - a) + r * a);
    image.data[4 * i + 1] = Math.round(255 * (1 - a) + g * a);
    image.data[4 * i + 2] = Math.round(255 * (1 - a) + b * a);
    image.data[4 * i + 3] = 255;
  }
  bctx.putImageData(image, 0, 0);
  const canvas = $("regions"), ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(regionBuffer, 0, 0, canvas.width, canvas.height);
  drawPoints(ctx, canvas);
}

function drawTiles(canvas, tiles, diverging) {
  const { n, h, w } = tiles, data = bytes(tiles.data), gap = 2;
  const cols = Math.min(n, 8), rows = Math.ceil(n / cols);
  const scale = Math.max(1, Math.floor(Math.min(336 / (cols * (w + gap)), 4)));
  canvas.width = cols * (w + gap) * scale;
  canvas.height = rows * (h + gap) * scale;
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(canvas.width, canvas.height);
  image.data.fill(0);
  for (let t = 0; t < n; t++) {
    const ox = (t % cols) * (w + gap) * scale, oy = Math.floor(t / cols) * (h + gap) * scale;
    for (let y = 0; y < h * scale; y++) {
      for (let x = 0; x < w * scale; x++) {
        const v = data[t * h * w + Math.floor(y / scale) * w + Math.floor(x / scale)];
        let rgb;
        if (diverging) {
          const s = (v - 128) / 127;
          rgb = s >= 0 ? [255, 255 * (1 - s), 255 * (1 - s)] : [255 * (1 + s), 255 * (1 + s), 255];
        } else {
          rgb = [v, v, v];
        }
        const k = 4 * ((oy + y) * canvas.width + ox + x);
        image.data[k] = rgb[0]; image.data[k + 1] = rgb[1]; image.data[k + 2] = rgb[2];
        image.data[k + 3] = 255;
      }
    }
  }
  ctx.putImageData(image, 0, 0);
}

function drawFirstLayer(layer) {
  drawTiles($("weights"), layer.weights, true);
  drawTiles($("grads"), layer.gradients, true);
  $("first-layer-note").textContent = `${layer.layer}: the first ${layer.weights.n} ` +
    `${layer.kind}s; max |W| ${fmt(layer.weights.max_abs, 4)}, ` +
    `max |∂L/∂W| ${layer.gradients.max_abs.toExponential(2)}`;
}

function drawConfusion(matrix) {
  const table = $("confusion");
  const cell = (tag, text) => {
    const el = document.createElement(tag);
    el.textContent = text;
    return el;
  };
  const head = document.createElement("tr");
  head.append(cell("th", "true \\ pred"), ...matrix.map((_, j) => cell("th", String(j))));
  const rows = matrix.map((row, i) => {
    const tr = document.createElement("tr"), total = row.reduce((a, b) => a + b, 0) || 1;
    tr.append(cell("th", String(i)));
    row.forEach((count, j) => {
      const td = cell("td", String(count));
      const hue = i === j ? "51,70,211" : "215,48,31";
      td.style.background = `rgba(${hue},${(0.85 * count / total).toFixed(2)})`;
      tr.append(td);
    });
    return tr;
  });
  table.replaceChildren(head, ...rows);
}

function drawMistakes(mistakes) {
  if (!mistakes.n) {
    $("mistakes-note").textContent = "no mistakes on the test sample";
    return;
  }
  drawTiles($("mistakes"), mistakes, false);
  $("mistakes-note").textContent = mistakes.labels.map((label, i) =>
    `${label}→${mistakes.pred[i]} (${Math.round(100 * mistakes.probability[i])}%)`).join(", ");
}

function drawHealth(health) {
  $("health").innerHTML = health.layers.map((layer) => {
    const r = layer.update_ratio, hot = r !== null && (r > 1e-2 || r < 1e-5);
    return `<tr><td>${layer.name}</td><td>${layer.shape.join("×")}</td>` +
      `<td>${layer.grad_norm === null ? "–" : layer.grad_norm.toExponential(2)}</td>` +
      `<td class="${hot ? "hot" : ""}">${r === null ? "–" : r.toExponential(2)}</td></tr>`;
  }).join("");
  $("dead").innerHTML = health.relu.map((relu) =>
    `<li>${relu.name}: ${(100 * relu.dead_fraction).toFixed(1)}% of ${relu.units} units dead</li>`
  ).join("");
}

function drawBackward(backward) {
  $("backward").innerHTML = backward.steps.map((step) => {
    const factors = step.factors.map((f) =>
      `<span class="f">${escapeHtml(f.name)} ${f.shape.join("×") || "scalar"}  ‖·‖ = ` +
      `${Number(f.norm).toExponential(3)}</span>`).join("");
    return `<li><b>${escapeHtml(step.title)}</b>${factors}</li>`;
  }).join("");
  $("backward-note").textContent = `explain_backward on ${backward.samples} training samples ` +
    `at the current weights (L = ${Number(backward.loss).toFixed(4)}): every factor's shape ` +
    "and norm, from the loss back to the input.";
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
                                                  '"': "&quot;" })[c]);
}

// ------------------------------------------------------------------ the controls
async function action(name) {
  await ensureRun();
  if (!studio.runId) return;
  const state = await guarded(() => api("POST", `/api/runs/${studio.runId}/${name}`));
  if (state) {
    if (name === "reset") {
      studio.curve.clear();
      state.curve.forEach((point, i) => studio.curve.set(`s${i}`, point));
    }
    studio.run = Object.assign(studio.run || {}, state);
    showState(state);
    drawCharts();
  }
}

let remake = null;

function settingsChanged(event) {
  const live = event && LIVE.includes(event.target.id);
  showFor();
  writeUrl();
  if (live && studio.runId) {
    const change = {};
    const lr = number("lr"), wd = number("weight-decay");
    if (event.target.id === "lr" && lr !== null) change.lr = lr;
    if (event.target.id === "weight-decay" && wd !== null) change.weight_decay = wd;
    if (Object.keys(change).length) {
      guarded(() => api("PATCH", `/api/runs/${studio.runId}`, change)).then((state) => {
        if (state) showState(state);
      });
    }
    return;
  }
  clearTimeout(remake);
  remake = setTimeout(() => { studio.making = makeRun().finally(() => { studio.making = null; }); },
                      250);
}

async function saveRun() {
  await ensureRun();
  const saved = await guarded(() => api("POST", `/api/runs/${studio.runId}/save`));
  if (saved) $("saved").textContent = `saved in ${saved.folder}: ${saved.files.join(", ")}`;
}

function readCsv() {
  const file = $("csv-file").files[0];
  if (!file) return;
  if (file.size > 1_000_000) {
    showError(`${file.name} is ${file.size.toLocaleString()} bytes; the limit is 1,000,000`);
    return;
  }
  file.text().then((text) => {
    studio.csvText = text;
    settingsChanged(null);
  });
}

function init() {
  $("settings").addEventListener("submit", (event) => event.preventDefault());
  readUrl();
  showFor();
  writeUrl();
  document.body.dataset.kind = kind();
  for (const name of FIELDS) $(name).addEventListener("change", settingsChanged);
  $("csv-file").addEventListener("change", readCsv);
  $("train").addEventListener("click", () => action("start"));
  $("pause").addEventListener("click", () => action("pause"));
  $("step").addEventListener("click", () => action("step"));
  $("reset").addEventListener("click", () => action("reset"));
  $("save-run").addEventListener("click", saveRun);
  window.addEventListener("pagehide", closeRun);
  if ($("dataset").value !== "csv") studio.making = makeRun().finally(() => { studio.making = null; });
}

init();
