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

function money(value) {
  return value === null || value === undefined ? "" : Number(value).toFixed(2);
}

function percent(p) {
  return (100 * p).toFixed(1) + "%";
}

// A catalog item as a card; a button when `onOpen` is given (keyboard-usable).
function itemCard(item, onOpen) {
  const facts = [item.category, item.colour, item.size, item.price !== null && item.price !== undefined ? money(item.price) : null]
    .filter((v) => v !== null && v !== undefined && v !== "");
  const parts = [
    item.photo_url ? apiImage(item.photo_url, "Photo of " + item.id) : el("span", { class: "meta", text: "(no photo)" }),
    el("span", { class: "id", text: item.id }),
    el("span", { class: "meta", text: facts.join(" · ") || "no details" }),
  ];
  if (item.status && item.status !== "available") parts.push(el("span", { class: "meta", text: item.status }));
  if (item.similarity !== undefined) {
    parts.push(el("span", { class: "meta", text: "similarity " + item.similarity.toFixed(3) }));
  }
  const attrs = { class: "item" + (item.status === "sold" ? " sold" : ""), "data-id": item.id };
  if (!onOpen) return el("div", attrs, parts);
  return el("button", Object.assign(attrs, { type: "button", onclick: () => onOpen(item),
    "aria-label": "Open item " + item.id }), parts);
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
    if (value) sessionStorage.setItem(KEY_STORE, value);
    else sessionStorage.removeItem(KEY_STORE);
    note.textContent = value ? "Key saved for this tab." : "Key cleared: read-only.";
  });
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// Sliders for the catalog's steering directions; calls onChange with {name: weight}.
function steeringSliders(container, directions, onChange) {
  container.replaceChildren();
  const weights = {};
  if (!directions.length) {
    container.append(el("p", { class: "muted", text: "This catalog has no steering directions yet." }));
    return weights;
  }
  const changed = debounce(() => onChange(Object.assign({}, weights)), 250);
  for (const name of directions) {
    const id = "steer-" + name.replace(/[^\w-]/g, "_");
    const output = el("output", { for: id, text: "0.0" });
    const input = el("input", { type: "range", id, min: "-1", max: "1", step: "0.1", value: "0",
      "data-direction": name, "aria-describedby": id + "-hint" });
    input.addEventListener("input", () => {
      const value = Number(input.value);
      output.textContent = value.toFixed(1);
      if (value === 0) delete weights[name]; else weights[name] = value;
      changed();
    });
    container.append(el("div", { class: "slider field" },
      el("label", { for: id }, "more / less ", el("strong", { text: name }), " ", output),
      input,
      el("span", { id: id + "-hint", class: "visually-hidden", text: "Negative values steer away from " + name }),
    ));
  }
  return weights;
}

function steerParams(weights) {
  return Object.entries(weights).map(([name, weight]) => name + "=" + weight);
}

document.addEventListener("DOMContentLoaded", setupKeyForm);
