// The try-it page: same-origin fetches to /model, /predict, /preprocess and /explain; no build step.
"use strict";

const state = { threshold: null, classes: null };

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
  }
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
  });
}

document.addEventListener("DOMContentLoaded", init);
