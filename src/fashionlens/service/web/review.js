// Review page: go through the review queue (fashionlens serve --review QUEUE.json) with
// the keyboard: keep, relabel, drop, next; U undoes the last decision taken here. Each
// decision is saved by the server at once, so reopening the page continues at the first
// undecided photo. The queue is read with the API key (asked for once per tab).
"use strict";

const REASONS = {
  unreadable: "unreadable file", leakage: "duplicate across train and validation",
  duplicate: "duplicate", "off-topic": "not a garment the model knows", mislabel: "likely mislabel", outlier: "outlier",
};
let queue = null;
let position = 0;
let busy = false;
// The decisions taken in this tab, last on top: {photo, before} (the decision it replaced).
const history = [];

function photoUrl(photo) {
  return API + "/review/photo" + query({ photo });
}

function labelsText(labels) {
  return labels && labels.length ? labels.join(", ") : "(none)";
}

function decisionText(decision) {
  if (!decision) return "not yet";
  if (decision.action === "relabel") return "relabel as " + labelsText(decision.labels);
  return decision.action;
}

function nextOpen(from) {
  for (let i = from; i < queue.entries.length; i++) if (!queue.entries[i].decision) return i;
  return Math.min(from, queue.entries.length - 1);
}

function render() {
  const entries = queue.entries;
  const entry = entries[position];
  const decided = entries.filter((e) => e.decision).length;
  document.getElementById("review-position").textContent = (position + 1) + " of " + entries.length;
  document.getElementById("review-progress").textContent = decided + " of " + entries.length +
    " decided" + (decided === entries.length ? ": all done. Write the cleaned CSV with " +
    "fashionlens review apply " + queue.queue : "");
  const bar = document.getElementById("review-bar");
  bar.max = entries.length;
  bar.value = decided;
  const figure = document.getElementById("review-photo");
  const img = apiImage(photoUrl(entry.photo), entry.photo);
  img.loading = "eager";
  figure.replaceChildren(img, el("figcaption", { class: "muted", text: entry.photo }));
  document.getElementById("review-reason").textContent = REASONS[entry.reason] || entry.reason;
  document.getElementById("review-confidence").textContent = "sureness " + Number(entry.confidence).toFixed(2);
  document.getElementById("review-labels").textContent = labelsText(entry.labels);
  document.getElementById("review-suggested").textContent = entry.suggested ? labelsText(entry.suggested) : "–";
  document.getElementById("review-split").textContent = entry.split || "–";
  document.getElementById("review-decision").textContent = decisionText(entry.decision);
  document.getElementById("review-why").textContent = entry.why;
  const related = entry.related || [];
  document.getElementById("review-related").replaceChildren(
    ...(related.length ? [el("p", { class: "label", text: "The same picture:" })] : []),
    ...related.map((r) => el("figure", {},
      apiImage(photoUrl(r.photo), r.photo),
      el("figcaption", { class: "muted small-text", text: r.photo + " · " + labelsText(r.labels) +
        (r.split ? " · " + r.split : "") }))));
  const pick = entry.decision && entry.decision.labels ? entry.decision.labels
    : (entry.suggested && entry.suggested.length ? entry.suggested : entry.labels);
  if (queue.multilabel) {
    document.getElementById("relabel-tags").value = (pick || []).join("; ");
  } else {
    document.getElementById("relabel-class").value = (pick && pick[0]) || queue.classes[0];
  }
  document.getElementById("prev").disabled = position === 0;
  document.getElementById("next").disabled = position >= entries.length - 1;
  document.getElementById("undo").disabled = !history.length;
}

function post(decision) {
  return api("/review/decisions", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(decision),
  });
}

// Saves a decision on the photo at `index` (asking for the key if needed); true when saved.
async function save(index, action, labels) {
  const entry = queue.entries[index];
  busy = true;
  showError("error", null);
  const saved = await withKey(document.getElementById("review-key"),
    () => post({ photo: entry.photo, action, labels: labels || null, entry: entry.id }),
    (error) => showError("error", error));
  busy = false;
  if (!saved) return false;
  // A photo may head several entries (a duplicate that is also a mislabel): one decision.
  for (const e of queue.entries) if (e.photo === entry.photo) e.decision = saved.decision;
  return true;
}

async function decide(action, labels) {
  if (busy || !queue) return;
  const index = position;
  const before = queue.entries[index].decision;
  if (!(await save(index, action, labels))) return;
  history.push({ index, before });
  position = nextOpen(index + 1);
  render();
}

// Undo the last decision taken in this tab (whichever photo is shown): the photo goes
// back to what it was before, and the page shows it.
async function undo() {
  if (busy || !queue || !history.length) return;
  const last = history[history.length - 1];
  const before = last.before;
  const done = before ? await save(last.index, before.action, before.labels)
    : await save(last.index, "undo");
  if (!done) return;
  history.pop();
  position = last.index;
  render();
}

function relabel() {
  if (queue.multilabel) {
    const tags = document.getElementById("relabel-tags").value.split(";").map((t) => t.trim()).filter(Boolean);
    decide("relabel", tags);
  } else {
    decide("relabel", [document.getElementById("relabel-class").value]);
  }
}

function move(step) {
  position = Math.max(0, Math.min(queue.entries.length - 1, position + step));
  render();
}

function onKey(event) {
  if (!queue || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  const typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" ||
    target.tagName === "SELECT");
  if (typing) {
    if (event.key === "Enter" && (target.id === "relabel-class" || target.id === "relabel-tags")) {
      event.preventDefault();
      relabel();
      document.getElementById("relabel").focus();
    } else if (event.key === "Escape") {
      target.blur();
    }
    return;
  }
  const key = event.key.toLowerCase();
  const actions = {
    k: () => decide("keep"), d: () => decide("drop"), u: undo,
    n: () => move(1), arrowright: () => move(1), arrowleft: () => move(-1),
    r: () => document.getElementById(queue.multilabel ? "relabel-tags" : "relabel-class").focus(),
  };
  if (actions[key]) {
    event.preventDefault();
    actions[key]();
  }
}

async function load() {
  setupKeyForm();
  // The queue needs the API key (unless the service shows it to anyone): asked for here,
  // then loaded with it.
  queue = await withKey(document.getElementById("load-key"), () => api("/review"), (error) => {
    const empty = document.getElementById("review-empty");
    empty.textContent = error.code === "no_review"
      ? "No review queue is open. Write one with \"fashionlens review DATA\", then start the " +
        "service with \"fashionlens serve --review review-queue.json\"."
      : "";
    empty.hidden = error.code !== "no_review";
    if (error.code !== "no_review") showError("error", error);
  });
  if (!queue) return;
  if (!queue.entries.length) {
    const empty = document.getElementById("review-empty");
    empty.textContent = "The queue is empty: nothing was flagged.";
    empty.hidden = false;
    return;
  }
  const select = document.getElementById("relabel-class");
  select.replaceChildren(...queue.classes.map((c) => el("option", { value: c, text: c })));
  select.hidden = queue.multilabel;
  document.getElementById("relabel-tags").hidden = !queue.multilabel;
  document.querySelector("label[for=relabel-class]").textContent = queue.multilabel ? "New tags (; between)" : "New class";
  if (queue.multilabel) document.querySelector("label[for=relabel-class]").setAttribute("for", "relabel-tags");
  position = Math.min(queue.next, queue.entries.length - 1);
  document.getElementById("review").hidden = false;
  document.getElementById("keep").addEventListener("click", () => decide("keep"));
  document.getElementById("drop").addEventListener("click", () => decide("drop"));
  document.getElementById("undo").addEventListener("click", undo);
  document.getElementById("relabel").addEventListener("click", relabel);
  document.getElementById("next").addEventListener("click", () => move(1));
  document.getElementById("prev").addEventListener("click", () => move(-1));
  document.addEventListener("keydown", onKey);
  render();
}

document.addEventListener("DOMContentLoaded", load);
