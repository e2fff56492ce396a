// Models page: each served model's tasks (classes or tags, key metrics, per-class table)
// and plots; a side-by-side compare.
"use strict";

// The key figures a task may have, in the order shown (single-label, then tag tasks).
const METRICS = [["accuracy", "accuracy"], ["top3_accuracy", "top-3 accuracy"], ["macro_f1", "macro-F1"],
  ["macro_precision", "macro precision"], ["macro_recall", "macro recall"],
  ["micro_f1", "micro-F1"], ["micro_precision", "micro precision"], ["micro_recall", "micro recall"],
  ["map", "mAP"], ["exact_match", "exact match"], ["num_images", "validation photos"]];
const SUMMARY = [["score", "mean task score"], ["num_images", "validation photos"]];
let models = [];

// Counts (photos, support) as whole numbers, rates always with three decimals, so a
// column never mixes "1" and "0.960".
const COUNTS = new Set(["num_images", "support"]);

function fmt(value, key) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "–";
  return COUNTS.has(key) ? String(Math.round(Number(value))) : Number(value).toFixed(3);
}

function tagTask(task) {
  return task.type === "multi_label";
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
      el("th", { scope: "row", text: name }), el("td", { text: fmt(r.precision) }),
      el("td", { text: fmt(r.recall) }), el("td", { text: fmt(r.f1) }), el("td", { text: fmt(r.support, "support") }),
      thresholds ? el("td", { text: fmt(thresholds[name]) }) : null))));
  return el("div", { class: "table-wrap" }, table);
}

function figuresTable(caption, figures, keys) {
  const rows = keys.filter(([key]) => key in (figures || {}));
  if (!rows.length) return el("p", { class: "muted", text: caption + ": no metrics recorded." });
  return el("table", {}, el("caption", { text: caption }),
    el("tbody", {}, rows.map(([key, label]) =>
      el("tr", {}, el("th", { scope: "row", text: label }), el("td", { text: fmt(figures[key], key) })))));
}

function taskSummary(task) {
  return task.name + ": " + task.num_classes + (tagTask(task) ? " tags" : " classes");
}

function taskBlock(task, several) {
  const kind = tagTask(task) ? "tags (any number per photo)" : "one class per photo";
  return el("div", { class: "task-block" },
    several ? el("h3", { text: task.name }) : null,
    el("p", { class: "muted", text: kind + " · " + task.num_classes + (tagTask(task) ? " tags" : " classes") }),
    figuresTable(several ? "Key metrics · " + task.name : "Overall", task.metrics, METRICS),
    perClassTable(task));
}

function modelCard(model) {
  const several = model.tasks.length > 1;
  const plots = el("div", { class: "plots" });
  for (const [which, label] of [["confusion", "Confusion matrix"], ["curves", "Training curves"]]) {
    const url = model.plots[which];
    plots.append(url ? el("figure", {}, apiImage(url, label + " of " + model.name), el("figcaption", { class: "muted", text: label }))
      : el("p", { class: "muted", text: label + ": not recorded for this model." }));
  }
  // The default model gets a sentence saying what that means instead of a greyed-out button.
  const choice = model.default
    ? el("p", { class: "muted", text: "The default model: it answers every request that names no model." })
    : el("button", { type: "button", class: "secondary", onclick: () => makeDefault(model.name) }, "Make default");
  const [height, width] = model.input_shape || [model.input_size, model.input_size];
  const input = height === width ? height + " px input" : width + "×" + height + " px input";
  return el("section", { class: "card", "aria-labelledby": "model-" + model.name },
    el("div", { class: "row" }, el("h2", { id: "model-" + model.name, text: model.name }),
      model.default ? el("span", { class: "badge", text: "default" }) : null, choice),
    el("p", { class: "muted", text: model.architecture + " · " + input + " · " + model.tasks.map(taskSummary).join(", ") }),
    el("div", { class: "layout" },
      el("div", {}, several ? figuresTable("Summary", model.summary || model.metrics, SUMMARY) : null,
        model.tasks.map((t) => taskBlock(t, several))),
      plots));
}

function renderCompare() {
  const chosen = models.filter((m) => document.getElementById("cmp-" + m.name)?.checked);
  const box = document.getElementById("compare");
  if (chosen.length < 1) {
    box.replaceChildren(el("p", { class: "muted", text: "Tick models to compare them." }));
    return;
  }
  // One row per task and figure any chosen model has; the task's name goes before the
  // figure once a chosen model has several tasks.
  const named = chosen.some((m) => m.tasks.length > 1);
  const rows = [];
  const seen = new Set();
  for (const m of chosen) {
    for (const t of m.tasks) {
      for (const [key, label] of METRICS) {
        const id = (named ? t.name : "") + "\u0000" + key;
        if (!(key in (t.metrics || {})) || seen.has(id)) continue;
        seen.add(id);
        rows.push({ task: named ? t.name : null, key, label: named ? t.name + ": " + label : label });
      }
    }
  }
  const value = (m, row) => {
    const task = row.task === null ? m.tasks[0] : m.tasks.find((t) => t.name === row.task);
    return fmt(task ? (task.metrics || {})[row.key] : undefined, row.key);
  };
  const classes = [...new Set(chosen.flatMap((m) => Object.keys(m.per_class || {})))];
  const head = el("tr", {}, el("th", { scope: "col", text: "metric" }), chosen.map((m) => el("th", { scope: "col", text: m.name })));
  const body = el("tbody", {},
    rows.map((row) => el("tr", {}, el("th", { scope: "row", text: row.label }), chosen.map((m) => el("td", { text: value(m, row) })))),
    classes.map((c) => el("tr", {}, el("th", { scope: "row", text: "F1 " + c }),
      chosen.map((m) => el("td", { text: fmt((m.per_class || {})[c]?.f1) })))));
  box.replaceChildren(el("table", {}, el("caption", { text: "Side by side" }), el("thead", {}, head), body));
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
  models = data.models;
  document.getElementById("models").replaceChildren(...models.map(modelCard));
  const pick = document.getElementById("compare-pick");
  pick.querySelectorAll("label").forEach((n) => n.remove());
  for (const m of models) {
    const box = el("input", { type: "checkbox", id: "cmp-" + m.name, checked: true, onchange: renderCompare });
    pick.append(el("label", {}, box, " " + m.name));
  }
  renderCompare();
}

document.addEventListener("DOMContentLoaded", () => load().catch((error) => showError("error", error)));
