// chainrule serve: draw on the pad, send the drawing to /api/predict, show the answer.
"use strict";

const THROTTLE_MS = 100;      // at most one request per 100 ms while drawing
const EXPORT_SIZE = 140;      // the PNG sent is 140 × 140 (5 × MNIST), dark ink on white
const STROKE = 0.08;          // pen width as a fraction of the pad's side
const WHILE_DRAWING = ["saliency", "units"];
const ON_RELEASE = ["saliency", "units", "neighbours"];

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const padCtx = pad.getContext("2d");

const state = {
  strokes: [],        // each stroke: [[x, y], …] in 0..1 pad coordinates
  current: null,      // the stroke being drawn
  generation: 0,      // bumped by Clear: answers to older drawings are dropped
  inFlight: false,
  pending: false,     // the drawing changed while a request was in flight
  wantAll: false,     // the next request should include the neighbours
  lastSent: -Infinity,
  timer: 0,
  model: null,
  weights: null,      // a Promise of unit → 28×28 weights (GET /api/model/units, fetched once)
};

// ------------------------------------------------------------------ drawing
function paint(ctx, size, paper) {
  ctx.save();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  if (paper) {
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, size, size);
  } else {
    ctx.clearRect(0, 0, size, size);
  }
  ctx.strokeStyle = "#15181f";
  ctx.fillStyle = "#15181f";
  ctx.lineWidth = STROKE * size;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const stroke of state.strokes) {
    const [x0, y0] = stroke[0];
    if (stroke.length === 1) {
      ctx.beginPath();
      ctx.arc(x0 * size, y0 * size, ctx.lineWidth / 2, 0, 2 * Math.PI);
      ctx.fill();
      continue;
    }
    ctx.beginPath();
    ctx.moveTo(x0 * size, y0 * size);
    // Quadratic curves through the midpoints: smooth strokes from sparse pointer samples.
    for (let i = 1; i < stroke.length - 1; i++) {
      const [x, y] = stroke[i];
      const [nx, ny] = stroke[i + 1];
      ctx.quadraticCurveTo(x * size, y * size, ((x + nx) / 2) * size, ((y + ny) / 2) * size);
    }
    const [xl, yl] = stroke[stroke.length - 1];
    ctx.lineTo(xl * size, yl * size);
    ctx.stroke();
  }
  ctx.restore();
}

function resizePad() {
  const rect = pad.getBoundingClientRect();
  const side = Math.max(1, Math.round(rect.width * (window.devicePixelRatio || 1)));
  if (pad.width !== side || pad.height !== side) {
    pad.width = side;
    pad.height = side;
  }
  paint(padCtx, pad.width, false);
}

function pointOf(event) {
  const rect = pad.getBoundingClientRect();
  const clamp = (v) => Math.min(1, Math.max(0, v));
  return [clamp((event.clientX - rect.left) / rect.width),
          clamp((event.clientY - rect.top) / rect.height)];
}

function exportPng() {
  const canvas = document.createElement("canvas");
  canvas.width = EXPORT_SIZE;
  canvas.height = EXPORT_SIZE;
  paint(canvas.getContext("2d"), EXPORT_SIZE, true);
  return canvas.toDataURL("image/png");
}

pad.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "mouse" && event.button !== 0) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  state.current = [pointOf(event)];
  state.strokes.push(state.current);
  pad.parentElement.classList.add("inked");
  paint(padCtx, pad.width, false);
  request(false);
});

pad.addEventListener("pointermove", (event) => {
  if (!state.current) return;
  event.preventDefault();
  const samples = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const sample of samples.length ? samples : [event]) state.current.push(pointOf(sample));
  paint(padCtx, pad.width, false);
  request(false);
});

function endStroke(event) {
  if (!state.current) return;
  if (pad.hasPointerCapture(event.pointerId)) pad.releasePointerCapture(event.pointerId);
  state.current = null;
  request(true);
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

$("clear").addEventListener("click", clearAll);

function clearAll() {
  state.generation += 1;
  state.strokes = [];
  state.current = null;
  state.pending = false;
  state.wantAll = false;
  clearTimeout(state.timer);
  state.timer = 0;
  pad.parentElement.classList.remove("inked");
  paint(padCtx, pad.width, false);
  resetResult();
}

// ------------------------------------------------------------------ requests
// Throttled: while drawing, one request at most every THROTTLE_MS and never two at once;
// releasing the pen sends at once (with the neighbours) once the previous answer is in.
function request(all) {
  if (!state.strokes.length) return;
  state.wantAll = state.wantAll || all;
  if (state.inFlight) {
    state.pending = true;
    return;
  }
  const wait = THROTTLE_MS - (performance.now() - state.lastSent);
  if (state.wantAll || wait <= 0) {
    send();
  } else if (!state.timer) {
    state.timer = setTimeout(send, wait);
  }
}

async function send() {
  clearTimeout(state.timer);
  state.timer = 0;
  if (!state.strokes.length) return;
  const all = state.wantAll;
  const generation = state.generation;
  state.wantAll = false;
  state.pending = false;
  state.inFlight = true;
  setStatus("thinking…");
  try {
    const explain = all ? ON_RELEASE : WHILE_DRAWING;
    const payload = JSON.stringify({ image: exportPng(), explain });
    // The throttle counts from the request itself, not from before the PNG was made (which
    // takes longer on a busy machine, and would let the next request follow sooner).
    state.lastSent = performance.now();
    const response = await fetch("/api/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: payload,
    });
    const body = await response.json();
    if (generation === state.generation) {
      if (response.ok) {
        render(body, all);
        setStatus("");
      } else {
        setStatus(body.detail || `the server answered ${response.status}`, true);
      }
    }
  } catch (error) {
    if (generation === state.generation) setStatus(`no answer from the server (${error.message})`, true);
  } finally {
    state.inFlight = false;
    if (state.pending || state.wantAll) request(state.wantAll);
  }
}

function setStatus(text, error = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", error);
}

// ------------------------------------------------------------------ rendering
const bars = [];

function buildBars() {
  const list = $("bars");
  for (let c = 0; c < 10; c++) {
    const item = document.createElement("li");
    item.className = "bar";
    item.dataset.p = "0";
    item.innerHTML =
      '<span class="bar-value">0%</span><span class="bar-track"><span class="bar-fill"></span></span>' +
      `<span class="bar-label">${c}</span>`;
    item.setAttribute("aria-label", `${c}: 0%`);
    list.appendChild(item);
    bars.push(item);
  }
}

function percent(p) {
  if (p >= 0.995) return "100%";
  if (p < 0.005) return p > 0 ? "<1%" : "0%";
  return `${Math.round(p * 100)}%`;
}

function showBars(probabilities, top) {
  bars.forEach((bar, c) => {
    const p = probabilities ? probabilities[c] : 0;
    bar.dataset.p = String(p);
    bar.querySelector(".bar-fill").style.height = `${(p * 100).toFixed(2)}%`;
    bar.querySelector(".bar-value").textContent = percent(p);
    bar.classList.toggle("top", c === top);
    bar.setAttribute("aria-label", `${c}: ${percent(p)}`);
  });
}

function drawImage(canvas, rows, color) {
  const ctx = canvas.getContext("2d");
  const h = rows.length;
  const w = rows[0].length;
  const image = ctx.createImageData(w, h);
  let scale = 0;
  if (color === "diverging") {
    for (const row of rows) for (const v of row) scale = Math.max(scale, Math.abs(v));
  }
  for (let i = 0; i < h; i++) {
    for (let j = 0; j < w; j++) {
      const v = rows[i][j];
      const k = 4 * (i * w + j);
      let rgb;
      if (color === "diverging") {
        rgb = diverging(scale > 0 ? v / scale : 0);
      } else {
        const g = Math.round(255 * Math.min(1, Math.max(0, v)));
        rgb = [g, g, g];
      }
      image.data[k] = rgb[0];
      image.data[k + 1] = rgb[1];
      image.data[k + 2] = rgb[2];
      image.data[k + 3] = 255;
    }
  }
  ctx.putImageData(image, 0, 0);
}

// t in [-1, 1]: blue (negative) – white (0) – red (positive).
function diverging(t) {
  const pos = [215, 48, 31];
  const neg = [43, 108, 176];
  const end = t >= 0 ? pos : neg;
  const a = Math.pow(Math.min(1, Math.abs(t)), 0.8);
  return end.map((c) => Math.round(255 + (c - 255) * a));
}

function blank(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
}

function tile(rows, caption, color, top) {
  const figure = document.createElement("figure");
  figure.className = top ? "tile top" : "tile";
  const canvas = document.createElement("canvas");
  canvas.width = rows[0].length;
  canvas.height = rows.length;
  drawImage(canvas, rows, color);
  const text = document.createElement("figcaption");
  text.innerHTML = caption;
  figure.append(canvas, text);
  return figure;
}

function fmt(v) {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
}

// The units' weight images do not change with the drawing: fetched once per page, then each
// answer names its units and their activations only.
function unitWeights() {
  if (!state.weights) {
    state.weights = fetch("/api/model/units")
      .then((response) => {
        if (!response.ok) throw new Error(`the server answered ${response.status}`);
        return response.json();
      })
      .then((body) => new Map(body.units.map((u) => [u.unit, u.weights])))
      .catch((error) => {
        state.weights = null;  // try again with the next answer
        setStatus(`could not load the unit images (${error.message})`, true);
        return null;
      });
  }
  return state.weights;
}

// cls < 0: no drawing (the templates alone, without their logits).
function showUnits(units, cls, weights) {
  const box = $("units");
  box.classList.toggle("templates", units.kind === "templates");
  box.replaceChildren(...units.units.map((u) => {
    const rows = weights.get(u.unit);
    if (units.kind !== "templates") {
      return tile(rows, `#${u.unit} <b>${fmt(u.activation)}</b>`, "diverging", false);
    }
    const caption = cls < 0 ? `<b>${u.unit}</b>` : `<b>${u.unit}</b> z = ${fmt(u.activation)}`;
    return tile(rows, caption, "diverging", u.unit === cls);
  }));
}

async function showTemplates() {
  const generation = state.generation;
  const weights = await unitWeights();
  if (!weights || state.strokes.length || generation !== state.generation) return;
  const units = [...weights.keys()].map((unit) => ({ unit, activation: 0 }));
  showUnits({ kind: "templates", units }, -1, weights);
}

function render(body, all) {
  const cls = body.class;
  $("digit").textContent = body.empty ? "–" : String(cls);
  $("confidence").innerHTML = body.empty
    ? "No ink found yet."
    : `<strong>${(100 * body.probabilities[cls]).toFixed(1)}%</strong> sure it is a ${cls}`;
  showBars(body.probabilities, body.empty ? -1 : cls);
  drawImage($("input28"), body.input, "gray");

  if (body.saliency) {
    $("saliency-class").textContent = String(cls);
    drawImage($("saliency"), body.saliency, "diverging");
    const ink = body.saliency.map((row, i) => row.map((g, j) => g * body.input[i][j]));
    drawImage($("saliency-ink"), ink, "diverging");
  }

  if (body.units) {
    const generation = state.generation;
    unitWeights().then((weights) => {
      if (weights && generation === state.generation) showUnits(body.units, cls, weights);
    });
  }

  const neighbours = $("neighbours");
  if (body.neighbours) {
    neighbours.replaceChildren(...body.neighbours.map((n) =>
      tile(n.image, `<b>${n.label}</b> d=${n.distance.toFixed(1)}`, "gray", n.label === cls)));
    neighbours.classList.remove("stale");
  } else if (all) {
    const note = (body.notes || []).find((n) => n.startsWith("neighbours"));
    if (note) $("neighbours-caption").textContent = note.replace(/^neighbours: /, "Not available: ");
  } else {
    neighbours.classList.add("stale");
  }
}

function resetResult() {
  $("digit").textContent = "–";
  $("confidence").textContent = "Draw a digit and the model answers as you go.";
  showBars(null, -1);
  setStatus("");
  for (const id of ["input28", "saliency", "saliency-ink"]) blank($(id));
  $("saliency-class").textContent = "c";
  if (state.model && state.model.units === "templates") {
    showTemplates();  // they do not depend on the drawing: keep them, without logits
  } else {
    $("units").replaceChildren();
  }
  $("neighbours").replaceChildren();
  $("neighbours").classList.remove("stale");
}

// ------------------------------------------------------------------ the model
async function loadModel() {
  try {
    const response = await fetch("/api/model");
    const info = await response.json();
    state.model = info;
    const accuracy = info.test_accuracy == null
      ? "" : ` · test accuracy <strong>${(100 * info.test_accuracy).toFixed(2)}%</strong>`;
    // "784–256–256–10" for a stack of Dense layers on the pixels (MLP, softmax regression).
    const dense = info.layers.filter((l) => l.type === "Dense").map((l) => l.output_shape[0]);
    const shape = info.units ? ` ${[784, ...dense].join("–")}` : "";
    $("model-line").innerHTML =
      `<strong>${info.name}</strong>${shape} · ${info.parameters.toLocaleString("en-US")} parameters${accuracy}`;
    $("model-line").title = info.summary;
    const caption = $("units-caption");
    if (info.units) unitWeights();
    if (info.units === "templates") {
      showTemplates();
      $("units-title").textContent = "Class templates";
      caption.textContent = "A softmax regression scores class k by z = w_k · x + b_k: each " +
        "image is one column w_k of W. Red pixels add to the class's score when inked, blue subtract.";
    } else if (info.units === "hidden") {
      $("units-title").textContent = "Most active hidden units";
      caption.textContent = "The 8 units of the first hidden layer with the largest activation for " +
        "your drawing, each shown as its 784 input weights (red positive, blue negative).";
    } else {
      $("units-card").hidden = true;  // e.g. a CNN: no dense layer on the pixels to show
    }
    if (!info.neighbours.available) {
      $("neighbours-caption").textContent = `Not available: ${info.neighbours.reason}`;
    }
  } catch (error) {
    $("model-line").textContent = `could not load the model description (${error.message})`;
  }
}

buildBars();
resetResult();
resizePad();
new ResizeObserver(resizePad).observe(pad);
loadModel();
