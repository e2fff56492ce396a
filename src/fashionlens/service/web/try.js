// "Try it": a photo (file, drop or camera) -> prediction bars and similar items.
"use strict";

// `ready` settles once the models and the catalog have been looked up: a photo chosen
// before that waits for it instead of assuming there is no catalog.
// `tagLimits`: a tag task's threshold chosen with its slider (absent: each tag's own).
const state = { blob: null, result: null, stream: null, catalog: false, ready: null,
  models: [], tagLimits: {}, tagsOpen: {}, barsOpen: {} };
const TOP_K = 10;  // bars per single-label task
// With three tasks or more (the default model has nine), each task shows this many bars
// and folds the rest of its TOP_K away, so every answer fits on one screen.
const SHOWN_WHEN_MANY = 3;
const PREVIEW_HEIGHT = 320;  // px: a small photo (60×80 catalog shots) is scaled up towards it

// The words a person reads for a task and its classes (GET /models: `title`,
// `class_titles`): "Product type", not the data column "articleType"; "not given", not "NA".
function listedTask(modelName, taskName) {
  const model = state.models.find((m) => m.name === modelName);
  return (model ? model.tasks : []).find((t) => t.name === taskName) || {};
}

function taskTitle(listed, name) {
  return listed.title || name;
}

function classTitle(listed, name) {
  return (listed.class_titles || {})[name] || name;
}

function filtersFromText(text) {
  return text.split(";").map((f) => f.trim()).filter(Boolean);
}

// `label`: the class as the model names it (data-label); `shown`: as a person reads it.
function scoreBar(label, probability, below, shown = label) {
  const fill = el("div", { class: "fill" });
  fill.style.width = (100 * probability).toFixed(1) + "%";
  return el("li", { class: "bar" + (below ? " below" : ""), "data-label": label },
    el("span", { text: shown }),
    el("div", { class: "track", role: "img", "aria-label": shown + " " + percent(probability) }, fill),
    el("span", { class: "value", text: percent(probability) }));
}

// A single-label task: its verdict and the top classes as bars, those below the page's
// threshold dimmed.
function classTask(task, listed, threshold, compact) {
  const entries = task.classes || [];
  const best = entries.length ? entries[0] : null;
  const verdict = best && best.probability >= threshold
    ? el("p", { class: "verdict" }, el("strong", { text: classTitle(listed, best.label) }), " (" + percent(best.probability) + ")")
    : el("p", { class: "verdict", text: "Not sure: no class reaches the threshold." });
  const title = taskTitle(listed, task.name);
  const bars = (some) => some.map((e) => scoreBar(e.label, e.probability, e.probability < threshold, classTitle(listed, e.label)));
  const shown = compact ? entries.slice(0, SHOWN_WHEN_MANY) : entries;
  const list = el("ul", { class: "bars", "aria-label": "Probabilities for " + title }, bars(shown));
  const rest = entries.slice(shown.length);
  if (!rest.length) return el("div", { class: "task", "data-task": task.name }, verdict, list);
  const more = el("details", { class: "more-classes" },
    el("summary", { text: rest.length + " more" }),
    el("ul", { class: "bars", "aria-label": "More probabilities for " + title }, bars(rest)));
  more.open = Boolean(state.barsOpen[task.name]);
  more.addEventListener("toggle", () => { state.barsOpen[task.name] = more.open; });
  return el("div", { class: "task", "data-task": task.name }, verdict, list, more);
}

// A multi-label task: the tags that apply. Each tag keeps the threshold the model tuned
// for it until the person unticks "each tag's own"; then one slider sets a threshold for
// every tag (the slider is shown only then, so it never shows a value not in use). The
// service sent every tag's score, so this re-filters them here without a new request.
// The tags a photo is given, as the model decides them (models.info.decide_tags): those at
// or above their limit; a parent a kept child already says (boots says shoes) is not
// listed again; at most max_tags. `scores`: [tag, probability] pairs, highest first.
function decideTags(scores, limit, task) {
  const parents = task.parents || {};
  let kept = scores.filter(([tag, p]) => p >= limit(tag));
  const said = new Set();
  for (const [tag] of kept) {
    for (let up = parents[tag], steps = 0; up !== undefined && steps < scores.length; up = parents[up], steps++) said.add(up);
  }
  kept = kept.filter(([tag]) => !said.has(tag));
  return task.max_tags ? kept.slice(0, task.max_tags) : kept;
}

function tagTask(task, listed, index) {
  const scores = Object.entries(task.scores || {}).sort((a, b) => b[1] - a[1]);
  const own = task.thresholds || {};
  const id = "tag-threshold-" + index;
  const slider = el("input", { type: "range", id, min: "0", max: "100", step: "1", value: "50",
    "aria-describedby": id + "-hint" });
  const shown = el("output", { id: id + "-value", for: id });
  const each = el("input", { type: "checkbox", id: id + "-own", class: "own-thresholds" });
  const sliderField = el("div", { class: "field" },
    el("label", { for: id }, "One threshold for every tag: ", shown,
      el("span", { class: "muted", id: id + "-hint", text: " (tags below it are not selected)" })),
    slider);
  const verdict = el("p", { class: "verdict" });
  const chips = el("ul", { class: "tags", "aria-label": "Tags for " + taskTitle(listed, task.name) });
  const bars = el("ul", { class: "bars", "aria-label": "Every tag's probability for " + taskTitle(listed, task.name) });
  const all = el("details", { class: "tag-scores" }, el("summary", { text: "All " + scores.length + " tag scores" }), bars);
  all.open = Boolean(state.tagsOpen[task.name]);
  all.addEventListener("toggle", () => { state.tagsOpen[task.name] = all.open; });
  const name = (tag) => classTitle(listed, tag);

  function update() {
    const chosen = state.tagLimits[task.name];
    each.checked = chosen === undefined;
    sliderField.hidden = chosen === undefined;
    if (chosen !== undefined) slider.value = String(Math.round(chosen * 100));
    shown.textContent = chosen !== undefined ? Math.round(chosen * 100) + "%" : "";
    const limit = (tag) => (chosen !== undefined ? chosen : (own[tag] ?? 0.5));
    const kept = decideTags(scores, limit, task);
    const parents = task.parents || {};
    const said = (tag) => (parents[tag] ? " (" + name(parents[tag]) + ")" : "");
    verdict.replaceChildren(el("strong", { text: kept.length ? kept.map(([tag]) => name(tag) + said(tag)).join(", ") : "no tag reaches its threshold" }));
    chips.replaceChildren(...kept.map(([tag, p]) => el("li", { class: "tag", "data-label": tag }, name(tag) + said(tag) + " ", el("span", { class: "value", text: percent(p) }))));
    bars.replaceChildren(...scores.map(([tag, p]) => scoreBar(tag, p, p < limit(tag), name(tag))));
  }
  slider.addEventListener("input", () => { state.tagLimits[task.name] = Number(slider.value) / 100; update(); });
  each.addEventListener("change", () => {
    if (each.checked) delete state.tagLimits[task.name];
    else state.tagLimits[task.name] = Number(slider.value) / 100;
    update();
    if (!each.checked) slider.focus();
  });
  update();
  return el("div", { class: "task", "data-task": task.name }, verdict,
    el("label", { class: "check", for: id + "-own" }, each, " Each tag's own threshold (tuned for it by the model)"),
    sliderField, chips, all);
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
  // confident wrong class; its guesses stay one click away. A model without that check
  // says so (as `fashionlens predict` does), so no answer reads as "this is a garment".
  let target = box;
  if (state.result.unknown) {
    box.append(el("p", { class: "verdict unknown-photo", role: "status" },
      el("strong", { text: "This does not look like a garment we know." }),
      " Its answers would be guesses."));
    target = el("details", { class: "unknown-guesses" },
      el("summary", { text: "What the model would guess anyway" }));
    box.append(target);
  } else if (state.result.unknown_score === null || state.result.unknown_score === undefined) {
    box.append(el("p", { class: "muted no-unknown-check" }, NO_UNKNOWN_CHECK));
  }
  // Several tasks each get a heading; the verdict then needs no name before it.
  tasks.forEach((task, index) => {
    const listed = listedTask(state.result.model, task.name);
    if (tasks.length > 1) target.append(el("h3", { text: taskTitle(listed, task.name) }));
    target.append(task.type === "multi_label" ? tagTask(task, listed, index)
      : classTask(task, listed, threshold, tasks.length >= 3));
  });
}

const NO_UNKNOWN_CHECK = "This model has no \"not a garment\" check (it was never calibrated for " +
  "one): it answers even for a photo of something else.";

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
    evenRows(grid);
    if (!result.matches.length) grid.append(el("p", { class: "muted", text: "No item matches these filters." }));
  } catch (error) {
    grid.replaceChildren();
    showError("similar-error", forPerson(error));
  }
}

// Similar items in rows of equal length where the count allows (8 as 2 × 4, not 7 + 1
// alone): of the columns that fit (as app.css's .grid lays them out), the most that
// divide the count, unless that would halve them.
function evenRows(grid) {
  grid.classList.remove("even-rows");
  const count = grid.querySelectorAll(".item").length;
  const fit = getComputedStyle(grid).gridTemplateColumns.split(" ").filter(Boolean).length;
  let columns = 0;
  for (let c = Math.min(fit, count); c >= 1 && !columns; c -= 1) if (count % c === 0) columns = c;
  if (count > fit && columns * 2 > fit) {
    grid.style.setProperty("--columns", String(columns));
    grid.classList.add("even-rows");
  }
}

// A small photo (a 60×80 catalog shot) is scaled up by a whole factor, pixels kept sharp,
// instead of being shown at its own tiny size; larger photos fit the box as before.
function sizePreview(preview) {
  const { naturalWidth: w, naturalHeight: h } = preview;
  const factor = w && h ? Math.floor(PREVIEW_HEIGHT / h) : 1;
  preview.classList.toggle("upscaled", factor >= 2);
  preview.style.width = factor >= 2 ? w * factor + "px" : "";
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
  preview.onload = () => { sizePreview(preview); revealPrediction(); };
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
  box.textContent = "Answers: " + chosen.tasks.map((t) => taskTitle(t, t.name) + " (" + t.num_classes + " " +
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
  window.addEventListener("resize", debounce(() => evenRows(document.getElementById("similar")), 150));
  state.ready = loadModels().catch((error) => showError("error", error));
});
