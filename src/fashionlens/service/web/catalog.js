// Catalog page: browse and filter items, open one, see and steer its neighbours.
"use strict";

const PAGE = 24;
const page = { offset: 0, filters: [], words: "", directions: [], current: null, weights: {} };
// A search by words returns at most this many matches (the API's k), shown PAGE at a time.
const WORDS_MAX = 200;
// Extra fields that hold an item's name (compared without case, spaces, - or _), e.g. a
// shop export's `name`, `title` or `productDisplayName` column.
const NAME_FIELDS = ["name", "title", "productname", "productdisplayname", "displayname", "itemname"];

function itemName(item) {
  for (const [field, value] of Object.entries(item.extra || {})) {
    if (NAME_FIELDS.includes(field.toLowerCase().replace(/[\s_-]/g, "")) && value) return String(value);
  }
  return null;
}

// Hearts: the ids a shopper liked stay in this tab (sessionStorage; no account), and the
// list of ids is the query of the "More like these" row (GET /more-like-these?like=...).
const LIKED_STORE = "fashionlens-liked";
page.liked = new Set(JSON.parse(sessionStorage.getItem(LIKED_STORE) || "[]"));
// Model task -> the item field its prediction fills (GET /catalog: tags.fields).
page.tagFields = {};

function heartState(button, liked) {
  button.textContent = liked ? "\u2665" : "\u2661";
  button.classList.toggle("liked", liked);
  button.setAttribute("aria-pressed", liked ? "true" : "false");
  button.setAttribute("aria-label", (liked ? "Unlike " : "Like ") + button.dataset.id);
}

function toggleLike(id) {
  if (page.liked.has(id)) page.liked.delete(id);
  else page.liked.add(id);
  sessionStorage.setItem(LIKED_STORE, JSON.stringify([...page.liked]));
  for (const button of document.querySelectorAll("button.heart")) {
    if (button.dataset.id === id) heartState(button, page.liked.has(id));
  }
  loadMoreLike();
}

// A card with its heart beside it (a button cannot hold another); a weak match is dimmed.
function likeable(card, item) {
  const heart = el("button", { type: "button", class: "heart", "data-id": item.id, onclick: () => toggleLike(item.id) });
  heartState(heart, page.liked.has(item.id));
  return el("div", { class: "card-wrap" + (item.weak ? " weak" : ""), "data-id": item.id }, card, heart);
}

// Matches as cards, with a line where good matches end (the first weak one: below the
// catalog's relevance floor, measured on the catalog itself).
function matchCards(matches) {
  const nodes = [];
  let weak = false;
  for (const match of matches) {
    if (match.weak && !weak) {
      weak = true;
      nodes.push(el("p", { class: "weak-line", text: "Good matches end here: the rest are weak matches (less alike than this catalog's items usually are to their neighbours)." }));
    }
    nodes.push(catalogCard(match));
  }
  return nodes;
}

async function loadMoreLike() {
  const section = document.getElementById("liked-section");
  const grid = document.getElementById("liked-items");
  showError("liked-error", null);
  if (!page.liked.size) {
    section.hidden = true;
    grid.replaceChildren();
    return;
  }
  section.hidden = false;
  setStatus("liked-summary", "Liked: " + count(page.liked.size, "item") + ".");
  // Only the answer to the latest list of hearts is shown (clicks may outrun answers).
  const asked = (page.likedAsked = (page.likedAsked || 0) + 1);
  try {
    const data = await api("/more-like-these" + query({ like: [...page.liked], k: 12 }));
    if (asked !== page.likedAsked) return;
    grid.replaceChildren(...matchCards(data.matches));
    section.dataset.liked = [...page.liked].join("\n");
  } catch (error) {
    if (asked !== page.likedAsked) return;
    grid.replaceChildren();
    showError("liked-error", error);
  }
}

// An item's card: its name where it has one (the id beneath it), else its id.
function catalogCard(item) {
  const card = itemCard(item, openItem);
  const name = itemName(item);
  if (name) {
    const id = card.querySelector(".id");
    id.classList.add("meta");
    id.style.fontWeight = "normal";
    const label = el("span", { class: "name", text: name });
    label.style.fontWeight = "600";
    id.before(label);
    card.setAttribute("aria-label", "Open item " + name + " (" + item.id + ")");
  }
  return likeable(card, item);
}

// The filter box's text goes to the service as it is: the service splits it at `;`
// (search/filters.py: the one filter grammar, also the CLI's --filter).
function currentFilters() {
  const filters = [];
  const category = document.getElementById("f-category").value;
  const status = document.getElementById("f-status").value;
  const maxPrice = document.getElementById("f-max-price").value;
  const colour = document.getElementById("f-colour").value;
  if (category) filters.push("category=" + category);
  if (colour) filters.push("colour=" + colour);
  if (status) filters.push("status=" + status);
  if (maxPrice !== "") filters.push("price<=" + maxPrice);
  const more = document.getElementById("f-more").value.trim();
  if (more.replace(/;/g, "").trim()) filters.push(more);
  return filters;
}

function count(n, what) {
  return n.toLocaleString("en") + " " + what + (n === 1 ? "" : "s");
}

// Words: the service turns the words naming the catalog's values into conditions and ranks
// by the meaning of the whole text (GET /search); its `query.words` says which did what.
async function loadWordMatches() {
  const grid = document.getElementById("items");
  const k = Math.min(WORDS_MAX, page.offset + PAGE);
  const data = await api("/search" + query({ q: page.words, k: k, filter: page.filters }));
  const shown = data.matches.slice(page.offset, page.offset + PAGE);
  grid.replaceChildren(...shown.map(catalogCard));
  const used = data.query.words.filter((w) => w.used_as === "condition").map((w) => w.word + ": " + w.filter);
  const how = used.length ? " Conditions: " + used.join(", ") + "; the rest ranks by meaning." : " Ranked by meaning.";
  setStatus("summary", shown.length
    ? "Best matches " + (page.offset + 1) + "–" + (page.offset + shown.length) + " for “" + page.words + "”." + how
    : "No item matches “" + page.words + "”." + how);
  document.getElementById("prev").disabled = page.offset === 0;
  document.getElementById("next").disabled = data.matches.length < k || k >= WORDS_MAX;
}

async function loadItems() {
  showError("error", null);
  const grid = document.getElementById("items");
  try {
    if (page.words) return await loadWordMatches();
    const [data, info] = await Promise.all([
      api("/items" + query({ filter: page.filters, limit: PAGE, offset: page.offset })),
      api("/catalog")]);
    grid.replaceChildren(...data.items.map(catalogCard));
    const first = data.items.length ? page.offset + 1 : 0;
    const last = page.offset + data.items.length;
    const total = count(info.items, "item") + " in the catalog";
    let summary;
    if (!data.items.length) {
      summary = (page.filters.length ? "No item matches these filters" : "No items") + " (" + total + ").";
    } else if (!page.filters.length) {
      summary = "Items " + first + "–" + last + " of " + total + ".";
    } else {
      const matching = data.next_offset === null ? "of " + last : "of more than " + last;
      summary = "Items " + first + "–" + last + " " + matching + " matching " + page.filters.join("; ") +
        " (" + total + ").";
    }
    setStatus("summary", summary);
    document.getElementById("prev").disabled = page.offset === 0;
    document.getElementById("next").disabled = data.next_offset === null;
  } catch (error) {
    grid.replaceChildren();
    setStatus("summary", "");
    showError("error", error);
  }
}

async function loadNeighbours() {
  const grid = document.getElementById("neighbours");
  showError("detail-error", null);
  try {
    const data = await api("/similar" + query({ item: page.current.id, k: 8, steer: steerParams(page.weights) }));
    grid.replaceChildren(...matchCards(data.matches));
  } catch (error) {
    grid.replaceChildren();
    showError("detail-error", error);
  }
}

// The dialog shows `item`; its `data-status` attribute is the status shown (what a test
// or a script waits on).
function renderDetail(item) {
  page.current = item;
  const name = itemName(item);
  document.getElementById("detail-title").textContent = name || item.id;
  document.getElementById("detail-photo").replaceChildren(item.photo_url
    ? apiImage(item.photo_url, "Photo of " + (name || item.id)) : el("p", { class: "muted", text: "No photo stored for this item." }));
  const meta = document.getElementById("detail-meta");
  meta.replaceChildren();
  const rows = [...(name ? [["id", item.id]] : []), ["category", item.category], ["colour", item.colour],
    ["size", item.size], ["price", money(item.price)], ["status", item.status]];
  for (const [name, value] of Object.entries(item.extra || {})) rows.push([name, value]);
  for (const [name, value] of rows) meta.append(el("dt", { text: name }), el("dd", { text: value || "–" }));
  renderTags(item);
  document.getElementById("detail-sold").textContent = item.status === "sold" ? "Mark as available again" : "Mark as sold";
  document.getElementById("detail").dataset.status = item.status;
}

async function openItem(item) {
  const dialog = document.getElementById("detail");
  renderDetail(item);
  document.getElementById("detail-key").hidden = true;
  page.weights = steeringControl(document.getElementById("steering"), page.directions, (weights) => {
    page.weights = weights;
    loadNeighbours();
  });
  if (!dialog.open) dialog.showModal();
  await loadNeighbours();
}

// The model's predicted tags, each with the shop's value for its field and Accept /
// Correct: either sets the shop's value (PATCH), which then always wins over the prediction.
function renderTags(item) {
  const box = document.getElementById("detail-tags");
  box.replaceChildren();
  const entries = Object.entries(item.predicted || {});
  document.getElementById("detail-tags-heading").hidden = !entries.length;
  for (const [task, value] of entries) {
    const field = page.tagFields[task] || "extra." + task;
    const list = Array.isArray(value) ? value : [value];
    const label = list.map((v) => v.label).join(", ");
    const shop = field.startsWith("extra.") ? (item.extra || {})[field.slice(6)] : item[field];
    const shown = list.map((v) => v.label + " (" + percent(v.probability) + ")").join(", ") || "none";
    const row = el("div", { class: "tag-row", "data-task": task },
      el("span", { class: "tag-field", text: field.replace(/^extra\./, "") + ": " }),
      el("span", { class: "tag-value", text: shown }),
      el("span", { class: "meta", text: " · shop: " + (shop === null || shop === undefined || shop === "" ? "not given" : shop) }));
    const accept = el("button", { type: "button", class: "secondary", text: "Accept",
      disabled: !label || String(shop || "").toLowerCase() === label.toLowerCase(),
      "aria-label": "Accept " + label + " as " + field, onclick: () => setField(field, label) });
    const input = el("input", { type: "text", value: shop || label, "aria-label": "Correct " + field, maxlength: "1000" });
    const correct = el("form", { class: "row tag-correct", hidden: true,
      onsubmit: (event) => { event.preventDefault(); setField(field, input.value.trim() || null); } },
    input, el("button", { type: "submit", class: "secondary", text: "Save" }));
    const open = el("button", { type: "button", class: "secondary", text: "Correct…",
      onclick: () => { correct.hidden = false; input.focus(); } });
    row.append(" ", accept, " ", open, correct);
    box.append(row);
  }
}

async function setField(field, value) {
  showError("detail-error", null);
  const id = encodeURIComponent(page.current.id);
  await withKey(document.getElementById("detail-key"), async () => {
    setBusy(true);
    try {
      renderDetail(await api("/items/" + id, { method: "PATCH", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ [field]: value }) }));
      await loadItems();
    } finally {
      setBusy(false);
    }
  }, (error) => showError("detail-error", error));
}

// Sold, available again, or delete; asks for the API key in the dialog when needed.
// While a request and the item list it refreshes are on their way, the buttons are
// disabled and the dialog is marked busy (`data-busy`): a second click then would act
// on the item as it was before the first.
function setBusy(busy) {
  const dialog = document.getElementById("detail");
  for (const name of ["detail-sold", "detail-delete"]) document.getElementById(name).disabled = busy;
  if (busy) dialog.dataset.busy = "1";
  else delete dialog.dataset.busy;
}

async function change(action) {
  showError("detail-error", null);
  const id = encodeURIComponent(page.current.id);
  if (action === "delete" && !window.confirm("Delete item " + page.current.id + " and its photo?")) return;
  const sold = page.current.status === "sold";
  await withKey(document.getElementById("detail-key"), async () => {
    setBusy(true);
    try {
      if (action === "sold" && !sold) {
        renderDetail(await api("/items/" + id + "/sold", { method: "POST" }));
      } else if (action === "sold") {
        renderDetail(await api("/items/" + id, { method: "PATCH", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ status: "available" }) }));
      } else {
        await api("/items/" + id, { method: "DELETE" });
        document.getElementById("detail").close();
      }
      await loadItems();
    } finally {
      setBusy(false);
    }
  }, (error) => showError("detail-error", error));
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    page.filters = currentFilters();
    page.words = document.getElementById("f-words").value.trim();
    page.offset = 0;
    loadItems();
  });
  document.getElementById("prev").addEventListener("click", () => { page.offset = Math.max(0, page.offset - PAGE); loadItems(); });
  document.getElementById("next").addEventListener("click", () => { page.offset += PAGE; loadItems(); });
  document.getElementById("detail-close").addEventListener("click", () => document.getElementById("detail").close());
  document.getElementById("detail-sold").addEventListener("click", () => change("sold"));
  document.getElementById("detail-delete").addEventListener("click", () => change("delete"));
  try {
    const info = await api("/catalog");
    setCurrency(info.currency);
    if (info.currency) document.querySelector('label[for="f-max-price"]').textContent = "Highest price (" + info.currency + ")";
    page.directions = info.directions || [];
    page.tagFields = (info.tags && info.tags.fields) || {};
    // Tags of heads refit since (same search vectors): stale until `catalog retag`.
    document.getElementById("tags-notice").hidden = !(info.tags && info.tags.tags_current === false);
    // Items per value by the filter rule: the shop's value, else a confident prediction.
    const values = info.values || {};
    const select = document.getElementById("f-category");
    const categories = values.category || Object.fromEntries(Object.entries(info.categories).map(([k, n]) => [k, { items: n }]));
    for (const [name, c] of Object.entries(categories)) {
      if (name) select.append(el("option", { value: name, text: name + " (" + c.items + ")" }));
    }
    const colours = document.getElementById("f-colour");
    for (const [name, c] of Object.entries(values.colour || {})) {
      colours.append(el("option", { value: name, text: name + " (" + c.items + ")" }));
    }
    colours.closest(".field").hidden = !Object.keys(values.colour || {}).length;
    document.getElementById("liked-clear").addEventListener("click", () => {
      for (const id of [...page.liked]) toggleLike(id);
    });
    loadMoreLike();
  } catch (error) {
    showError("error", error);
    return;
  }
  loadItems();
});
