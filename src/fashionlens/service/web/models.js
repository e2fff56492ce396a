// Models page: one short card per served model (what it answers, how often it was right,
// on what data); per-class figures and plots folded under "Details", built when opened.
// No table merges the classes of different models: their names mean different things.
"use strict";

// The key figures a task may have, in the order shown (single-label, then tag tasks).
const METRICS = [["accuracy", "accuracy"], ["top3_accuracy", "top-3 accuracy"], ["macro_f1", "macro-F1"],
  ["macro_precision", "macro precision"], ["macro_recall", "macro recall"],
  ["micro_f1", "micro-F1"], ["micro_precision", "micro precision"], ["micro_recall", "micro recall"],
  ["map", "mAP"], ["exact_match", "exact match"], ["num_images", "validation photos"]];
const SUMMARY = [["score", "mean task score"], ["num_images", "validation photos"]];
const NAMES_SHOWN = 6;  // classes named in a model's card; all of them under Details

// Counts (photos, support) as whole numbers, rates always with three decimals, so a
// column never mixes "1" and "0.960".
const COUNTS = new Set(["num_images", "support"]);

function fmt(value, key) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "–";
  return COUNTS.has(key) ? String(Math.round(Number(value))) : Number(value).toFixed(3);
}

function count(n) {
  return Number(n).toLocaleString("en");
}

function tagTask(task) {
  return task.type === "multi_label";
}

function classTitle(task, name) {
  return (task.class_titles || {})[name] || name;
}

function taskTitle(task) {
  return task.title || task.name;
}

// What a task answers: "10 classes: Dress, Hat, …" in the words a person reads.
function answersText(task) {
  const noun = tagTask(task) ? " tags" : (task.num_classes === 1 ? " class" : " classes");
  const names = (task.classes || []).slice(0, NAMES_SHOWN).map((c) => classTitle(task, c));
  const more = task.num_classes > names.length ? ", … (" + (task.num_classes - names.length) + " more)" : "";
  return (tagTask(task) ? "any of " : "one of ") + task.num_classes + noun + ": " + names.join(", ") + more;
}

// The one figure a shop owner asks for, per task: how often it is right.
function headline(task) {
  const m = task.metrics || {};
  if (!tagTask(task) && m.accuracy !== undefined && m.accuracy !== null) {
    return [el("strong", { text: percent(m.accuracy) }), " right"];
  }
  if (tagTask(task) && m.micro_recall !== undefined && m.micro_precision !== undefined) {
    return ["finds ", el("strong", { text: percent(m.micro_recall) }), " of the tags; ",
      el("strong", { text: percent(m.micro_precision) }), " of those it gives are right"];
  }
  return [el("span", { class: "muted", text: "not measured" })];
}

function perClassTable(task) {
  const rows = Object.entries(task.per_class || {});
  const what = tagTask(task) ? "tag" : "class";
  if (!rows.length) return el("p", { class: "muted", text: "No per-" + what + " metrics recorded." });
  // A tag's tuned threshold, where the model has one.
  const thresholds = task.thresholds || null;
  const columns = [what, "precision", "recall", "F1", "support", ...(thresholds ? ["threshold"] : [])];
  const table = el("table", {},
    el("caption", { text: (tagTask(task) ? "Per tag" : "Per class") + " (validation)" }),
    el("thead", {}, el("tr", {}, columns.map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows.map(([name, r]) => el("tr", {},
      el("th", { scope: "row", text: classTitle(task, name) }), el("td", { text: fmt(r.precision) }),
      el("td", { text: fmt(r.recall) }), el("td", { text: fmt(r.f1) }), el("td", { text: fmt(r.support, "support") }),
      thresholds ? el("td", { text: fmt(thresholds[name]) }) : null))));
  return el("div", { class: "table-wrap" }, table);
}

function figuresTable(caption, figures, keys) {
  const rows = keys.filter(([key]) => key in (figures || {}));
  if (!rows.length) return el("p", { class: "muted", text: caption + ": no metrics recorded." });
  return el("table", { class: "figures" }, el("caption", { text: caption }),
    el("tbody", {}, rows.map(([key, label]) =>
      el("tr", {}, el("th", { scope: "row", text: label }), el("td", { text: fmt(figures[key], key) })))));
}

function figure(url, label, model) {
  return el("figure", {}, apiImage(url, label + " of " + model.name), el("figcaption", { class: "muted", text: label }));
}

// One task under Details: its figures and confusion matrix side by side, then every class.
function taskDetails(model, task) {
  const kind = tagTask(task) ? "tags (any number per photo)" : "one class per photo";
  // Tags have no confusion matrix (a photo has any number of them).
  const plot = task.confusion ? figure(task.confusion, "Confusion matrix, " + taskTitle(task), model)
    : (tagTask(task) ? null : el("p", { class: "muted", text: "Confusion matrix: not recorded for this task." }));
  return [
    el("p", { class: "muted", text: "Data column " + (task.column || task.name) + " · " + kind }),
    el("div", { class: "layout" }, figuresTable("Key figures", task.metrics, METRICS),
      plot ? el("div", { class: "plots" }, plot) : null),
    perClassTable(task)];
}

// Built when first opened: the page stays short and its images load only when asked for.
function folded(summary, attrs, build) {
  const box = el("details", attrs, el("summary", { text: summary }));
  box.addEventListener("toggle", () => {
    if (!box.open || box.dataset.built) return;
    box.dataset.built = "1";
    box.append(...build());
  });
  return box;
}

// A model's details; with several tasks, each task folded again under its own line.
function modelDetails(model) {
  const confusions = model.tasks.filter((t) => t.confusion).length;
  const what = ["figures per " + (model.tasks.every(tagTask) ? "tag" : "class"),
    confusions ? (confusions > 1 ? "confusion matrices" : "confusion matrix") : null,
    model.plots.curves ? "training curves" : null].filter(Boolean);
  const several = model.tasks.length > 1;
  return folded("Details: " + what.join(", "), { class: "model-details" }, () => [
    several ? figuresTable("Summary", model.summary || model.metrics, SUMMARY) : null,
    ...model.tasks.flatMap((t) => (several
      ? [folded(taskTitle(t) + ": " + t.num_classes + (tagTask(t) ? " tags" : " classes"),
        { class: "task-block task-details", "data-task": t.name }, () => taskDetails(model, t))]
      : [el("div", { class: "task-block", "data-task": t.name }, taskDetails(model, t))])),
    model.plots.curves ? el("div", { class: "plots curves" }, figure(model.plots.curves, "Training curves", model))
      : el("p", { class: "muted", text: "Training curves: not recorded for this model." }),
  ].filter(Boolean));
}

function dataText(model) {
  const data = model.data || {};
  const parts = [];
  if (data.name) parts.push("Trained on " + data.name + (data.train_images ? " (" + count(data.train_images) + " photos)" : ""));
  if (data.val_images) parts.push("measured on " + count(data.val_images) + " photos it did not train on");
  return parts.length ? parts.join("; ") + "." : "The training data was not recorded with this model.";
}

function modelCard(model) {
  // The default model gets a sentence saying what that means instead of a greyed-out button.
  const choice = model.default
    ? el("p", { class: "muted", text: "The default model: it answers every request that names no model." })
    : el("button", { type: "button", class: "secondary", onclick: () => makeDefault(model.name) }, "Make default");
  const [height, width] = model.input_shape || [model.input_size, model.input_size];
  const input = height === width ? height + " px input" : width + "×" + height + " px input";
  const unknown = model.unknown_threshold === null || model.unknown_threshold === undefined
    ? "no \"not a garment\" check" : "\"not a garment\" check";
  return el("section", { class: "card model", "aria-labelledby": "model-" + model.name, "data-model": model.name },
    el("div", { class: "row model-head" }, el("h2", { id: "model-" + model.name, text: model.name }),
      model.default ? el("span", { class: "badge", text: "default" }) : null, choice),
    el("p", { class: "muted", text: model.architecture + " · " + input + " · " + unknown }),
    el("p", { class: "model-data", text: dataText(model) }),
    el("ul", { class: "model-tasks", "aria-label": "What " + model.name + " answers" },
      model.tasks.map((t) => el("li", { class: "model-task", "data-task": t.name },
        el("span", { class: "task-title", text: taskTitle(t) }),
        el("span", { class: "task-answers muted", text: answersText(t) }),
        el("span", { class: "task-score" }, headline(t))))),
    modelDetails(model));
}

async function makeDefault(name) {
  showError("error", null);
  await withKey(document.getElementById("models-key"), async () => {
    await api("/models/default", { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: name }) });
    await load();
  }, (error) => showError("error", error));
}

async function load() {
  const data = await api("/models");
  document.getElementById("models").replaceChildren(...data.models.map(modelCard));
}

document.addEventListener("DOMContentLoaded", () => load().catch((error) => showError("error", error)));
