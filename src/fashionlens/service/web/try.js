// "Try it": a photo (file, drop or camera) -> prediction bars and similar items.
"use strict";

// `ready` settles once the models and the catalog have been looked up: a photo chosen
// before that waits for it instead of assuming there is no catalog.
const state = { blob: null, result: null, stream: null, catalog: false, ready: null };

function filtersFromText(text) {
  return text.split(";").map((f) => f.trim()).filter(Boolean);
}

function renderPrediction() {
  const box = document.getElementById("prediction");
  const threshold = Number(document.getElementById("threshold").value) / 100;
  document.getElementById("threshold-value").textContent = Math.round(threshold * 100) + "%";
  if (!state.result) return;
  box.replaceChildren(el("p", { class: "muted", text: "Model: " + state.result.model }));
  for (const task of state.result.tasks) {
    const tags = task.type === "multi_label";
    const entries = tags ? task.tags : task.classes;
    const best = entries.length ? entries[0] : null;
    if (tags) {
      const chosen = entries.filter((t) => t.probability >= threshold).map((t) => t.label);
      box.append(el("p", { class: "verdict" }, task.name + ": ",
        el("strong", { text: chosen.length ? chosen.join(", ") : "no tag above the threshold" })));
    } else if (best && best.probability >= threshold) {
      box.append(el("p", { class: "verdict" }, task.name === "classification" ? "" : task.name + ": ",
        el("strong", { text: best.label }), " (" + percent(best.probability) + ")"));
    } else {
      box.append(el("p", { class: "verdict", text: "Not sure: no class reaches the threshold." }));
    }
    const list = el("ul", { class: "bars", "aria-label": "Probabilities for " + task.name });
    for (const entry of entries) {
      const fill = el("div", { class: "fill" });
      fill.style.width = (100 * entry.probability).toFixed(1) + "%";
      const below = entry.probability < threshold;
      list.append(el("li", { class: "bar" + (below ? " below" : ""), "data-label": entry.label },
        el("span", { text: entry.label }),
        el("div", { class: "track", role: "img", "aria-label": entry.label + " " + percent(entry.probability) }, fill),
        el("span", { class: "value", text: percent(entry.probability) })));
    }
    box.append(list);
  }
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
  const result = await api("/classify" + query({ model, top_k: 1000 }), {
    method: "POST", headers: { "Content-Type": uploadType(state.blob) }, body: state.blob,
  });
  state.result = result;
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

async function loadModels() {
  const select = document.getElementById("model");
  const data = await api("/models");
  select.replaceChildren(...data.models.map((m) => el("option", { value: m.name, selected: m.default }, m.name + (m.default ? " (default)" : ""))));
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
  for (const id of ["model", "k"]) {
    document.getElementById(id).addEventListener("change", () => { if (state.blob) analyse(state.blob); });
  }
  document.getElementById("filter").addEventListener("change", () => { if (state.blob) similar(); });
  state.ready = loadModels().catch((error) => showError("error", error));
});
