// "Try it": a photo (file, drop or camera) -> prediction bars and similar items.
"use strict";

// `ready` settles once the models and the catalog have been looked up: a photo chosen
// before that waits for it instead of assuming there is no catalog.
// `tagLimits`: a tag task's threshold chosen with its slider (absent: each tag's own).
const state = { blob: null, result: null, stream: null, catalog: false, ready: null,
  models: [], tagLimits: {}, tagsOpen: {} };
const TOP_K = 10;  // bars per single-label task

function filtersFromText(text) {
  return text.split(";").map((f) => f.trim()).filter(Boolean);
}

function scoreBar(label, probability, below) {
  const fill = el("div", { class: "fill" });
  fill.style.width = (100 * probability).toFixed(1) + "%";
  return el("li", { class: "bar" + (below ? " below" : ""), "data-label": label },
    el("span", { text: label }),
    el("div", { class: "track", role: "img", "aria-label": label + " " + percent(probability) }, fill),
    el("span", { class: "value", text: percent(probability) }));
}

// A single-label task: its verdict and the top classes as bars, those below the page's
// threshold dimmed.
function classTask(task, prefix, threshold) {
  const entries = task.classes || [];
  const best = entries.length ? entries[0] : null;
  const verdict = best && best.probability >= threshold
    ? el("p", { class: "verdict" }, prefix, el("strong", { text: best.label }), " (" + percent(best.probability) + ")")
    : el("p", { class: "verdict", text: prefix + "Not sure: no class reaches the threshold." });
  const list = el("ul", { class: "bars", "aria-label": "Probabilities for " + task.name },
    entries.map((e) => scoreBar(e.label, e.probability, e.probability < threshold)));
  return el("div", { class: "task", "data-task": task.name }, verdict, list);
}

// A multi-label task: the tags that apply, with a slider of its own. The service sent
// every tag's score, so moving the slider re-filters them here without a new request;
// until it is moved, each tag keeps the threshold the model tuned for it.
function tagTask(task, prefix, index) {
  const scores = Object.entries(task.scores || {}).sort((a, b) => b[1] - a[1]);
  const own = task.thresholds || {};
  const id = "tag-threshold-" + index;
  const slider = el("input", { type: "range", id, min: "0", max: "100", step: "1", value: "50",
    "aria-describedby": id + "-hint" });
  const shown = el("output", { id: id + "-value", for: id });
  const reset = el("button", { type: "button", class: "secondary small", text: "Use the model's thresholds" });
  const verdict = el("p", { class: "verdict" });
  const chips = el("ul", { class: "tags", "aria-label": "Tags for " + task.name });
  const bars = el("ul", { class: "bars", "aria-label": "Every tag's probability for " + task.name });
  const all = el("details", { class: "tag-scores" }, el("summary", { text: "All " + scores.length + " tag scores" }), bars);
  all.open = Boolean(state.tagsOpen[task.name]);
  all.addEventListener("toggle", () => { state.tagsOpen[task.name] = all.open; });

  function update() {
    const chosen = state.tagLimits[task.name];
    if (chosen !== undefined) slider.value = String(Math.round(chosen * 100));
    const limit = (tag) => (chosen !== undefined ? chosen : (own[tag] ?? 0.5));
    shown.textContent = chosen !== undefined ? Math.round(chosen * 100) + "%" : "each tag's own";
    reset.hidden = chosen === undefined;
    const kept = scores.filter(([tag, p]) => p >= limit(tag));
    verdict.replaceChildren(prefix, el("strong", { text: kept.length ? kept.map(([tag]) => tag).join(", ") : "no tag reaches its threshold" }));
    chips.replaceChildren(...kept.map(([tag, p]) => el("li", { class: "tag", "data-label": tag }, tag + " ", el("span", { class: "value", text: percent(p) }))));
    bars.replaceChildren(...scores.map(([tag, p]) => scoreBar(tag, p, p < limit(tag))));
  }
  slider.addEventListener("input", () => { state.tagLimits[task.name] = Number(slider.value) / 100; update(); });
  reset.addEventListener("click", () => {
    delete state.tagLimits[task.name];
    slider.value = "50";
    update();
    slider.focus();
  });
  update();
  return el("div", { class: "task", "data-task": task.name }, verdict,
    el("div", { class: "field" },
      el("label", { for: id }, "Tag threshold: ", shown,
        el("span", { class: "muted", id: id + "-hint", text: " (tags below it are not selected)" })),
      el("div", { class: "row slider-row" }, slider, reset)),
    chips, all);
}

function renderPrediction() {
  const box = document.getElementById("prediction");
  const threshold = Number(document.getElementById("threshold").value) / 100;
  document.getElementById("threshold-value").textContent = Math.round(threshold * 100) + "%";
  if (!state.result) return;
  const tasks = state.result.tasks;
  // The page's slider concerns single-label tasks; tag tasks bring their own.
  document.getElementById("threshold-field").hidden = tasks.every((t) => t.type === "multi_label");
  box.replaceChildren(el("p", { class: "muted", text: "Model: " + state.result.model }));
  // A photo the model was not made for (a landscape, a watch) gets that said instead of a
  // confident wrong class; its guesses stay one click away.
  let target = box;
  if (state.result.unknown) {
    box.append(el("p", { class: "verdict unknown-photo", role: "status" },
      el("strong", { text: "This does not look like a garment we know." }),
      " (unknown score " + percent(state.result.unknown_score) + ")"));
    target = el("details", { class: "unknown-guesses" },
      el("summary", { text: "What the model would guess anyway" }));
    box.append(target);
  }
  // Several tasks each get a heading; the verdict then needs no name before it.
  tasks.forEach((task, index) => {
    if (tasks.length > 1) target.append(el("h3", { text: task.name }));
    target.append(task.type === "multi_label" ? tagTask(task, "", index) : classTask(task, "", threshold));
  });
}

// Any file the person picked is sent; the service decides whether it is a photo.
function uploadType(blob) {
  return blob.type && blob.type.startsWith("image/") ? blob.type : "application/octet-stream";
}

// What a person is told when the service cannot use the file (the API's own message,
// meant for programmers, stays in the console).
const NOT_A_PHOTO = "This file is not a photo we can read. Choose a JPEG, PNG, WebP or HEIC photo.";
const PERSON_MESSAGES = {
  unreadable_image: NOT_A_PHOTO, unsupported_media_type: NOT_A_PHOTO, empty_body: NOT_A_PHOTO,
  missing_image: NOT_A_PHOTO,
  too_large: "This photo is too large for the service. Choose a smaller one.",
  request_timeout: "The photo took too long to upload. Check the connection and try again.",
};

function forPerson(error) {
  const message = PERSON_MESSAGES[error.code];
  if (!message) return error;
  console.info("fashionlens: " + error.message);
  return new Error(message);
}

async function classify() {
  const model = document.getElementById("model").value;
  const result = await api("/classify" + query({ model, top_k: TOP_K }), {
    method: "POST", headers: { "Content-Type": uploadType(state.blob) }, body: state.blob,
  });
  state.result = result;
  state.tagLimits = {};
  renderPrediction();
}

async function similar() {
  const grid = document.getElementById("similar");
  showError("similar-error", null);
  if (!state.catalog) {
    grid.replaceChildren(el("p", { class: "muted", text: "No catalog is served (start the service with --catalog or --demo)." }));
    return;
  }
  const params = { k: document.getElementById("k").value, filter: filtersFromText(document.getElementById("filter").value) };
  try {
    const result = await api("/similar" + query(params), {
      method: "POST", headers: { "Content-Type": uploadType(state.blob) }, body: state.blob,
    });
    grid.replaceChildren(...result.matches.map((item) => itemCard(item)));
    if (!result.matches.length) grid.append(el("p", { class: "muted", text: "No item matches these filters." }));
  } catch (error) {
    grid.replaceChildren();
    showError("similar-error", forPerson(error));
  }
}

// On a phone (one column) the prediction card sits below the photo card and its
// preview: bring it into view once the preview has its height.
function revealPrediction() {
  if (window.matchMedia("(max-width: 820px)").matches) {
    document.getElementById("prediction-heading").scrollIntoView({ behavior: "smooth", block: "start" });
  }
}

async function analyse(blob) {
  state.blob = blob;
  state.result = null;
  showError("error", null);
  showError("similar-error", null);
  // The preview appears once the service has read the photo, so a file it cannot read
  // never leaves a broken image or an empty gap behind.
  const preview = document.getElementById("preview");
  preview.hidden = true;
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.removeAttribute("src");
  setStatus("status", "Analysing…");
  const started = performance.now();
  try {
    await state.ready;
    await classify();  // then similar: the service reuses this photo's model output
  } catch (error) {
    setStatus("status", "");
    document.getElementById("prediction").replaceChildren(el("p", { class: "muted", text: "No prediction." }));
    document.getElementById("similar").replaceChildren();
    showError("error", forPerson(error));
    return;
  }
  preview.onerror = () => { preview.hidden = true; revealPrediction(); };
  preview.onload = revealPrediction;
  preview.src = URL.createObjectURL(blob);
  preview.hidden = false;
  await similar();
  setStatus("status", "Done in " + Math.round(performance.now() - started) + " ms.");
}

function setupPhotoInput() {
  const input = document.getElementById("photo");
  const zone = document.getElementById("dropzone");
  input.addEventListener("change", () => { if (input.files.length) analyse(input.files[0]); });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer.files[0];
    if (file) analyse(file);
  });
}

function stopCamera() {
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  document.getElementById("camera").hidden = true;
  document.getElementById("camera-shoot").hidden = true;
  document.getElementById("camera-stop").hidden = true;
  document.getElementById("camera-start").hidden = false;
}

function setupCamera() {
  const start = document.getElementById("camera-start");
  const video = document.getElementById("camera");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    start.disabled = true;
    start.title = "This browser (or a page not served from localhost/HTTPS) has no camera access";
    return;
  }
  start.addEventListener("click", async () => {
    showError("error", null);
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
    } catch (error) {
      showError("error", new Error("The camera cannot be used: " + error.message));
      return;
    }
    video.srcObject = state.stream;
    video.hidden = false;
    start.hidden = true;
    document.getElementById("camera-shoot").hidden = false;
    document.getElementById("camera-stop").hidden = false;
    document.getElementById("camera-shoot").focus();
  });
  document.getElementById("camera-stop").addEventListener("click", stopCamera);
  document.getElementById("camera-shoot").addEventListener("click", () => {
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob((blob) => { stopCamera(); if (blob) analyse(blob); }, "image/jpeg", 0.92);
  });
}

// What the chosen model answers: its tasks, under the picker.
function describeModel() {
  const chosen = state.models.find((m) => m.name === document.getElementById("model").value);
  const box = document.getElementById("model-tasks");
  if (!chosen) { box.textContent = ""; return; }
  box.textContent = "Answers: " + chosen.tasks.map((t) => t.name + " (" + t.num_classes + " " +
    (t.type === "multi_label" ? "tags" : "classes") + ")").join(", ");
}

async function loadModels() {
  const select = document.getElementById("model");
  const data = await api("/models");
  state.models = data.models;
  select.replaceChildren(...data.models.map((m) => el("option", { value: m.name, selected: m.default }, m.name + (m.default ? " (default)" : ""))));
  describeModel();
  try {
    const info = await api("/catalog");
    setCurrency(info.currency);
    state.catalog = true;
  } catch (error) {
    state.catalog = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setupPhotoInput();
  setupCamera();
  document.getElementById("threshold").addEventListener("input", renderPrediction);
  document.getElementById("model").addEventListener("change", describeModel);
  for (const id of ["model", "k"]) {
    document.getElementById(id).addEventListener("change", () => { if (state.blob) analyse(state.blob); });
  }
  document.getElementById("filter").addEventListener("change", () => { if (state.blob) similar(); });
  state.ready = loadModels().catch((error) => showError("error", error));
});
