// Models page: each served model's metrics, per-class table and plots; side-by-side compare.
"use strict";

const METRICS = [["accuracy", "accuracy"], ["top3_accuracy", "top-3 accuracy"], ["macro_f1", "macro-F1"],
  ["macro_precision", "macro precision"], ["macro_recall", "macro recall"], ["num_images", "validation photos"]];
let models = [];

// Counts (photos, support) as whole numbers, rates always with three decimals, so a
// column never mixes "1" and "0.960".
const COUNTS = new Set(["num_images", "support"]);

function fmt(value, key) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "–";
  return COUNTS.has(key) ? String(Math.round(Number(value))) : Number(value).toFixed(3);
}

function perClassTable(model) {
  const rows = Object.entries(model.per_class || {});
  if (!rows.length) return el("p", { class: "muted", text: "No per-class metrics recorded." });
  const table = el("table", {},
    el("caption", { text: "Per class (validation)" }),
    el("thead", {}, el("tr", {}, ["class", "precision", "recall", "F1", "support"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows.map(([name, r]) => el("tr", {},
      el("th", { scope: "row", text: name }), el("td", { text: fmt(r.precision) }),
      el("td", { text: fmt(r.recall) }), el("td", { text: fmt(r.f1) }), el("td", { text: fmt(r.support, "support") })))));
  return el("div", { class: "table-wrap" }, table);
}

function modelCard(model) {
  const overall = el("table", {}, el("caption", { text: "Overall" }),
    el("tbody", {}, METRICS.filter(([key]) => key in model.metrics).map(([key, label]) =>
      el("tr", {}, el("th", { scope: "row", text: label }), el("td", { text: fmt(model.metrics[key], key) })))));
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
  return el("section", { class: "card", "aria-labelledby": "model-" + model.name },
    el("div", { class: "row" }, el("h2", { id: "model-" + model.name, text: model.name }),
      model.default ? el("span", { class: "badge", text: "default" }) : null, choice),
    el("p", { class: "muted", text: model.architecture + " · " + model.classes.length + " classes · " + model.input_size + " px input" }),
    el("div", { class: "layout" }, el("div", {}, overall, perClassTable(model)), plots));
}

function renderCompare() {
  const chosen = models.filter((m) => document.getElementById("cmp-" + m.name)?.checked);
  const box = document.getElementById("compare");
  if (chosen.length < 1) {
    box.replaceChildren(el("p", { class: "muted", text: "Tick models to compare them." }));
    return;
  }
  const classes = [...new Set(chosen.flatMap((m) => Object.keys(m.per_class || {})))];
  const head = el("tr", {}, el("th", { scope: "col", text: "metric" }), chosen.map((m) => el("th", { scope: "col", text: m.name })));
  const body = el("tbody", {},
    METRICS.map(([key, label]) => el("tr", {}, el("th", { scope: "row", text: label }), chosen.map((m) => el("td", { text: fmt(m.metrics[key], key) })))),
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
