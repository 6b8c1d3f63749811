// The try-it page: same-origin fetches to /model, /predict, /preprocess, /explain, /feedback and /quality; no build
// step.
"use strict";

// qualityRefused: /quality answered 401 or 403 (a key to enter, or the log off): no polling until the key changes.
// logOff: 403, the prediction log is off, so verdicts cannot be taken: no buttons.
const state = { threshold: null, classes: null, qualityRefused: false, logOff: false };
// The quality panel is read again this often, and after each verdict and answer.
const QUALITY_REFRESH_MS = 10000;

function el(id) {
  return document.getElementById(id);
}

function headers() {
  const key = el("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

// The service's own message: {"detail": "..."} (or FastAPI's list of validation errors).
async function errorMessage(response) {
  let detail = null;
  try {
    detail = (await response.json()).detail;
  } catch (_) {
    detail = null;
  }
  if (Array.isArray(detail)) {
    detail = detail.map((item) => item.msg || JSON.stringify(item)).join("; ");
  }
  return `${response.status}: ${detail || response.statusText || "request failed"}`;
}

async function post(path, file) {
  const body = new FormData();
  body.append("file", file, file.name);
  const response = await fetch(path, { method: "POST", body, headers: headers() });
  if (!response.ok) {
    throw new Error(await errorMessage(response));
  }
  return response;
}

function addInfo(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

function formatMetrics(metrics) {
  return Object.entries(metrics || {})
    .filter(([, value]) => typeof value === "number")
    .map(([name, value]) => `${name} ${Number.isInteger(value) ? value : value.toFixed(3)}`)
    .join(", ");
}

async function loadModel() {
  const list = el("model-info");
  const response = await fetch("/model");
  list.replaceChildren();
  if (!response.ok) {
    addInfo(list, "Status", await errorMessage(response));
    return;
  }
  const card = await response.json();
  state.threshold = card.threshold;
  state.classes = card.class_names;
  // The key field only where the service asks for one (GET /model says so).
  el("api-key-field").hidden = !card.api_key_required;
  addInfo(list, "Name", card.name);
  addInfo(list, "Classes", card.class_names.join(" / "));
  addInfo(list, "Probability of", card.positive_class || card.class_names[1]);
  addInfo(list, "Threshold", String(card.threshold));
  const metrics = formatMetrics(card.test_metrics);
  if (metrics) addInfo(list, "Held-out metrics", metrics);
  for (const field of ["engine", "precision"]) {
    if (card[field] !== undefined) addInfo(list, field[0].toUpperCase() + field.slice(1), String(card[field]));
  }
  if (card.quantization && card.quantization.mode) addInfo(list, "Quantization", String(card.quantization.mode));
  addInfo(list, "Model id", card.id.slice(0, 12));
}

function showImage(img, blob) {
  img.src = URL.createObjectURL(blob);
  img.hidden = false;
}

function fail(card, message) {
  const error = card.querySelector(".error");
  error.textContent = message;
  error.hidden = false;
}

async function classify(file) {
  const card = el("result-template").content.firstElementChild.cloneNode(true);
  card.querySelector(".filename").textContent = file.name;
  el("results").prepend(card);
  const status = card.querySelector(".status");
  try {
    const answer = await (await post("/predict", file)).json();
    const prediction = answer.predictions[0];
    const threshold = answer.threshold;
    card.dataset.probability = String(prediction.probability);
    card.dataset.label = prediction.label;
    card.querySelector(".label").textContent = prediction.label;
    card.querySelector(".probability-text").textContent =
      `p(${state.classes ? state.classes[1] : "positive"}) = ${prediction.probability.toFixed(4)}`;
    const fill = card.querySelector(".bar-fill");
    fill.style.width = `${(prediction.probability * 100).toFixed(2)}%`;
    fill.classList.toggle("positive", prediction.probability >= threshold);
    card.querySelector(".bar-threshold").style.left = `${(threshold * 100).toFixed(2)}%`;
    card.querySelector(".bar").setAttribute(
      "aria-label", `probability ${prediction.probability.toFixed(4)} against threshold ${threshold}`,
    );
    card.querySelector(".outcome").hidden = false;
    if (prediction.id && !state.logOff) offerVerdict(card, prediction);
    status.textContent = "computing the occlusion map…";
    const [input, map] = await Promise.all([post("/preprocess", file), post("/explain?format=png", file)]);
    showImage(card.querySelector(".preview img"), await input.blob());
    showImage(card.querySelector(".map img"), await map.blob());
    status.hidden = true;
  } catch (error) {
    status.hidden = true;
    fail(card, error.message);
  } finally {
    card.setAttribute("aria-busy", "false");
    card.dataset.done = "true";
    loadQuality();
  }
}

// --- verdicts: the person's answer to "is this label right?" goes to POST /feedback ---------------------------

function offerVerdict(card, prediction) {
  const box = card.querySelector(".verdict");
  const other = (state.classes || []).find((name) => name !== prediction.label);
  box.querySelector(".verdict-right").addEventListener("click", (event) =>
    sendVerdict(card, prediction.id, prediction.label, event.currentTarget));
  box.querySelector(".verdict-wrong").addEventListener("click", (event) =>
    sendVerdict(card, prediction.id, other, event.currentTarget));
  box.querySelector(".verdict-wrong").disabled = other === undefined;
  box.hidden = false;
}

async function sendVerdict(card, id, label, button) {
  const status = card.querySelector(".verdict-status");
  status.textContent = "sending…";
  card.querySelector(".error").hidden = true;
  try {
    const response = await fetch("/feedback", {
      method: "POST",
      headers: { ...headers(), "Content-Type": "application/json" },
      body: JSON.stringify({ id, label }),
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    const verdict = (await response.json()).verdicts[0];
    for (const other of card.querySelectorAll(".verdict button")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
    card.dataset.verdict = verdict.label;
    status.textContent = `recorded: ${verdict.label}`;
  } catch (error) {
    status.textContent = "";
    fail(card, error.message);
  }
  await loadQuality();
}

// --- the quality panel: GET /quality per version and the promotion gate ---------------------------------------

// Wilson's 95 % score interval for a proportion: stays inside [0, 1] near 0 and 100 %.
function wilson(correct, total) {
  const z = 1.959964;
  const p = correct / total;
  const centre = (p + (z * z) / (2 * total)) / (1 + (z * z) / total);
  const half = (z * Math.sqrt((p * (1 - p)) / total + (z * z) / (4 * total * total))) / (1 + (z * z) / total);
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

function percent(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)} %`;
}

function row(cells, tag = "td") {
  const tr = document.createElement("tr");
  for (const value of cells) {
    const cell = document.createElement(tag);
    cell.textContent = String(value);
    tr.append(cell);
  }
  return tr;
}

function table(caption, head, rows) {
  const element = document.createElement("table");
  const title = document.createElement("caption");
  title.textContent = caption;
  const thead = document.createElement("thead");
  thead.append(row(head, "th"));
  const tbody = document.createElement("tbody");
  tbody.append(...rows.map((cells) => row(cells)));
  element.append(title, thead, tbody);
  return element;
}

function versionsTable(report) {
  return table(`Per version, over its last ${report.window} verdicts`,
    ["Version", "Role", "Verdicts", "Accuracy", "95 % interval", `Recall (${report.positive_class})`],
    report.versions.map((v) => {
      const interval = v.verdicts ? wilson(v.correct, v.verdicts).map(percent).join(" – ") : "–";
      return [v.version, v.role, v.verdicts, percent(v.accuracy), interval, percent(v.recall)];
    }));
}

function confusionTables(report) {
  const box = document.createElement("div");
  box.className = "confusions";
  for (const v of report.versions.filter((version) => version.verdicts > 0)) {
    const names = Object.keys(v.confusion);
    const confusion = table(`Version ${v.version}: true label (rows) by answer (columns)`, ["", ...names],
      names.map((truth) => [truth, ...names.map((answer) => v.confusion[truth][answer])]));
    confusion.classList.add("confusion");
    confusion.dataset.version = v.version;
    box.append(confusion);
  }
  return box;
}

function evidence(value) {
  return value === null ? "–" : value >= 1000 ? value.toExponential(2) : value.toFixed(2);
}

function showGate(gate) {
  const list = el("quality-gate");
  list.replaceChildren();
  list.dataset.decision = gate.decision;
  addInfo(list, "Decision", gate.decision + (gate.check ? ` (${gate.check} check, ${gate.mode})` : ""));
  if (gate.waiting_for) addInfo(list, "Waiting for", gate.waiting_for);
  addInfo(list, "Versions", `${gate.served_version} served` +
    (gate.shadow_version ? `, ${gate.shadow_version} in shadow` : ", none in shadow"));
  if (!gate.check) return;
  addInfo(list, "Judged pairs", `${gate.pairs} of at least ${gate.min_pairs}`);
  addInfo(list, "Right where the other was wrong",
    `shadow ${gate.shadow_only_correct}, served ${gate.served_only_correct}`);
  addInfo(list, "Evidence", `E = ${evidence(gate.evidence)}, acts at ${evidence(gate.threshold)}`);
}

async function loadQuality() {
  const status = el("quality-status");
  let response;
  try {
    response = await fetch("/quality", { headers: headers() });
  } catch (error) {
    status.textContent = `cannot reach the service: ${error.message}`;
    return;
  }
  if (!response.ok) {
    state.qualityRefused = response.status === 401 || response.status === 403;
    state.logOff = response.status === 403;
    status.textContent = await errorMessage(response);
    el("quality-versions").replaceChildren();
    el("quality-gate").replaceChildren();
    return;
  }
  state.qualityRefused = false;
  state.logOff = false;
  const report = await response.json();
  const served = report.versions.find((version) => version.version === report.served_version);
  status.textContent = `version ${report.served_version} serves; ${served ? served.verdicts : 0} verdicts on it`;
  el("quality-versions").replaceChildren(versionsTable(report), confusionTables(report));
  showGate(report.gate);
}

async function classifyAll(files) {
  // One after another: the map costs about as much as 80 predictions, so parallel maps only queue.
  for (const file of files) {
    await classify(file);
  }
}

function init() {
  const input = el("file-input");
  input.addEventListener("change", () => {
    const files = Array.from(input.files);
    input.value = "";
    classifyAll(files);
  });
  const zone = el("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    classifyAll(Array.from(event.dataTransfer.files));
  });
  el("upload-form").addEventListener("submit", (event) => event.preventDefault());
  loadModel().catch((error) => {
    el("model-info").replaceChildren();
    addInfo(el("model-info"), "Status", `cannot reach the service: ${error.message}`);
  }).finally(loadQuality);
  el("api-key").addEventListener("change", loadQuality);
  setInterval(() => state.qualityRefused || loadQuality(), QUALITY_REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", init);
