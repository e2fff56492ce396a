// Shared helpers of the fashionlens pages: API calls with the key, errors, item cards.
// Plain ES2020, no build step, nothing loaded from outside this server.
"use strict";

const API = "/api/v1";
const KEY_STORE = "fashionlens.apiKey";

function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

function authHeaders() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

// fetch() against the API; resolves to parsed JSON, rejects with the server's message.
async function api(path, options = {}) {
  const headers = Object.assign({}, authHeaders(), options.headers || {});
  let response;
  try {
    response = await fetch(API + path, Object.assign({}, options, { headers }));
  } catch (err) {
    throw new Error("The service cannot be reached (" + err.message + ").");
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("application/json") ? await response.json() : null;
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.status + " " + response.statusText;
    const error = new Error(message);
    error.status = response.status;
    error.code = body && body.error ? body.error.code : null;
    throw error;
  }
  return body;
}

// A form field name with its value for query strings; arrays repeat the name.
function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) search.append(name, v);
  }
  const text = search.toString();
  return text ? "?" + text : "";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function showError(target, error) {
  const box = typeof target === "string" ? document.getElementById(target) : target;
  if (!box) return;
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = error.message || String(error);
  box.hidden = false;
}

function setStatus(id, text) {
  const node = document.getElementById(id);
  if (node) node.textContent = text || "";
}

// An <img> for an API photo. With protected reads the browser cannot add the key to a
// plain src, so the photo is fetched with it and shown from a blob URL.
function apiImage(url, alt) {
  const img = el("img", { alt: alt || "", loading: "lazy", decoding: "async" });
  if (!apiKey()) {
    img.src = url;
    return img;
  }
  fetch(url, { headers: authHeaders() })
    .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(r.statusText))))
    .then((blob) => { img.src = URL.createObjectURL(blob); })
    .catch(() => { img.alt = (alt || "photo") + " (not available)"; });
  return img;
}

// The shop's currency (ISO 4217, from GET /catalog; null: bare numbers).
let currency = null;

function setCurrency(code) {
  currency = code || null;
}

function money(value) {
  if (value === null || value === undefined || value === "") return "";
  if (currency) {
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(Number(value));
    } catch (err) {
      return Number(value).toFixed(2) + " " + currency;
    }
  }
  return Number(value).toFixed(2);
}

// An item id that wraps after its "/" and "-" rather than in the middle of a word.
function idText(id) {
  const parts = String(id).split(/(?<=[/_-])/);
  const nodes = [];
  parts.forEach((part, i) => { if (i) nodes.push(el("wbr")); nodes.push(part); });
  return nodes;
}

function percent(p) {
  return (100 * p).toFixed(1) + "%";
}

// How alike a neighbour is, for a person: the cosine similarity (-1 to 1) as a match
// strength from 0% to 100% (anything unlike counts as 0%, never a negative number).
function matchText(similarity) {
  return "match " + Math.round(100 * Math.min(1, Math.max(0, Number(similarity)))) + "%";
}

// A catalog item as a card; a button when `onOpen` is given (keyboard-usable).
function itemCard(item, onOpen) {
  const facts = [item.category, item.colour, item.size, item.price !== null && item.price !== undefined ? money(item.price) : null]
    .filter((v) => v !== null && v !== undefined && v !== "");
  const parts = [
    item.photo_url ? apiImage(item.photo_url, "Photo of " + item.id) : el("span", { class: "meta", text: "(no photo)" }),
    el("span", { class: "id" }, idText(item.id)),
    el("span", { class: "meta", text: facts.join(" · ") || "no details" }),
  ];
  if (item.status && item.status !== "available") parts.push(el("span", { class: "meta", text: item.status }));
  if (item.similarity !== undefined) parts.push(el("span", { class: "meta match", text: matchText(item.similarity) }));
  const attrs = { class: "item" + (item.status === "sold" ? " sold" : ""), "data-id": item.id };
  if (!onOpen) return el("div", attrs, parts);
  return el("button", Object.assign(attrs, { type: "button", onclick: () => onOpen(item),
    "aria-label": "Open item " + item.id }), parts);
}

const KEY_HELP = "Changes need the service's API key. \"fashionlens serve --demo\" and \"fashionlens " +
  "serve --review\" print one in their terminal when they start without one (\"demo API key: …\", " +
  "\"review API key: …\"); otherwise it is the key the service was started with (--api-key or the " +
  "FASHIONLENS_API_KEY environment variable).";

function saveKey(value) {
  if (value) sessionStorage.setItem(KEY_STORE, value);
  else sessionStorage.removeItem(KEY_STORE);
  const input = document.getElementById("api-key");
  if (input) input.value = value;
  const note = document.getElementById("key-status");
  if (note) note.textContent = value ? "A key is set for this tab." : "No key: read-only.";
}

// Runs `action` (an async change). When the service asks for the API key, a small form
// appears in `box` (next to the button the person pressed) and the change is retried
// with the key typed there; `onError` gets any other error. Resolves to the action's
// result, also when it succeeded on a retry with the key typed (undefined when it
// failed or the person cancelled).
async function withKey(box, action, onError) {
  box.replaceChildren();
  box.hidden = true;
  try {
    return await action();
  } catch (error) {
    if (error.code === "writes_disabled") {
      box.replaceChildren(el("p", { text: "This service was started without an API key, so nothing can be " +
        "changed. Restart it with --api-key KEY (or the FASHIONLENS_API_KEY environment variable)." }));
      box.hidden = false;
      return undefined;
    }
    if (error.status !== 401) {
      onError(error);
      return undefined;
    }
    return new Promise((resolve) => {
      const id = box.id + "-input";
      const input = el("input", { id, type: "password", autocomplete: "off", value: apiKey() });
      const form = el("form", { class: "key-prompt" },
        el("p", { text: apiKey() ? "The API key of this tab was not accepted." : "This change needs the API key." }),
        el("p", { class: "muted", text: KEY_HELP }),
        el("div", { class: "row" },
          el("div", { class: "field" }, el("label", { for: id, text: "API key" }), input),
          el("button", { type: "submit", text: "Save key and retry" }),
          el("button", { type: "button", class: "secondary", text: "Cancel",
            onclick: () => { box.hidden = true; box.replaceChildren(); resolve(undefined); } })));
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        saveKey(input.value.trim());
        resolve(withKey(box, action, onError));
      });
      box.replaceChildren(form);
      box.hidden = false;
      input.focus();
    });
  }
}

// The API key form in the page header: kept for this browser tab only.
function setupKeyForm() {
  const form = document.getElementById("key-form");
  if (!form) return;
  const input = document.getElementById("api-key");
  const note = document.getElementById("key-status");
  input.value = apiKey();
  note.textContent = apiKey() ? "A key is set for this tab." : "No key: read-only.";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    saveKey(value);
    note.textContent = value ? "Key saved for this tab." : "Key cleared: read-only.";
  });
  const help = document.getElementById("key-help");
  if (help) help.textContent = KEY_HELP;
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// Steering for the catalog's directions in two rows, however many directions there are:
// pick a direction, move its weight; directions in use are listed and can be cleared.
// Calls onChange with {name: weight}.
function steeringControl(container, directions, onChange) {
  container.replaceChildren();
  const weights = {};
  if (!directions.length) {
    container.append(el("p", { class: "muted", text: "This catalog has no steering directions yet." }));
    return weights;
  }
  const changed = debounce(() => onChange(Object.assign({}, weights)), 250);
  const select = el("select", { id: "steer-direction" },
    directions.map((name) => el("option", { value: name, text: name })));
  const output = el("output", { for: "steer-weight", id: "steer-value", text: "0.0" });
  const range = el("input", { type: "range", id: "steer-weight", min: "-1", max: "1", step: "0.1", value: "0",
    "aria-describedby": "steer-hint" });
  const active = el("ul", { class: "chips", "aria-label": "Directions in use" });
  function renderActive() {
    active.replaceChildren(...Object.entries(weights).map(([name, weight]) => el("li", {},
      el("button", { type: "button", class: "chip", "data-direction": name,
        "aria-label": "Stop steering by " + name,
        onclick: () => { delete weights[name]; if (select.value === name) show(); renderActive(); changed(); } },
        name + " " + (weight > 0 ? "+" : "") + weight.toFixed(1) + " ×"))));
  }
  function show() {
    const value = weights[select.value] || 0;
    range.value = String(value);
    output.textContent = value.toFixed(1);
  }
  select.addEventListener("change", show);
  range.addEventListener("input", () => {
    const value = Number(range.value);
    output.textContent = value.toFixed(1);
    if (value === 0) delete weights[select.value]; else weights[select.value] = value;
    renderActive();
    changed();
  });
  container.append(
    el("div", { class: "row steer-row" },
      el("div", { class: "field" }, el("label", { for: "steer-direction", text: "More or less" }), select),
      el("div", { class: "field grow" },
        el("label", { for: "steer-weight" }, "Weight ", output), range)),
    el("span", { id: "steer-hint", class: "visually-hidden", text: "Negative values steer away from the direction" }),
    active);
  return weights;
}

function steerParams(weights) {
  return Object.entries(weights).map(([name, weight]) => name + "=" + weight);
}

document.addEventListener("DOMContentLoaded", setupKeyForm);
