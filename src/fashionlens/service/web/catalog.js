// Catalog page: browse and filter items, open one, see and steer its neighbours.
"use strict";

const PAGE = 24;
const page = { offset: 0, filters: [], directions: [], current: null, weights: {} };

function currentFilters() {
  const filters = [];
  const category = document.getElementById("f-category").value;
  const status = document.getElementById("f-status").value;
  const maxPrice = document.getElementById("f-max-price").value;
  if (category) filters.push("category=" + category);
  if (status) filters.push("status=" + status);
  if (maxPrice !== "") filters.push("price<=" + maxPrice);
  for (const part of document.getElementById("f-more").value.split(";")) {
    if (part.trim()) filters.push(part.trim());
  }
  return filters;
}

async function loadItems() {
  showError("error", null);
  const grid = document.getElementById("items");
  try {
    const data = await api("/items" + query({ filter: page.filters, limit: PAGE, offset: page.offset }));
    grid.replaceChildren(...data.items.map((item) => itemCard(item, openItem)));
    const first = data.items.length ? page.offset + 1 : 0;
    setStatus("summary", data.items.length
      ? "Items " + first + "–" + (page.offset + data.items.length) + (page.filters.length ? " matching " + page.filters.join(", ") : "")
      : "No item matches these filters.");
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
    grid.replaceChildren(...data.matches.map((item) => itemCard(item, openItem)));
  } catch (error) {
    grid.replaceChildren();
    showError("detail-error", error);
  }
}

function renderDetail(item) {
  page.current = item;
  document.getElementById("detail-title").textContent = item.id;
  document.getElementById("detail-photo").replaceChildren(item.photo_url
    ? apiImage(item.photo_url, "Photo of " + item.id) : el("p", { class: "muted", text: "No photo stored for this item." }));
  const meta = document.getElementById("detail-meta");
  meta.replaceChildren();
  const rows = [["category", item.category], ["colour", item.colour], ["size", item.size],
    ["price", money(item.price)], ["status", item.status]];
  for (const [name, value] of Object.entries(item.extra || {})) rows.push([name, value]);
  for (const [name, value] of rows) meta.append(el("dt", { text: name }), el("dd", { text: value || "–" }));
  document.getElementById("detail-sold").textContent = item.status === "sold" ? "Mark as available again" : "Mark as sold";
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

// Sold, available again, or delete; asks for the API key in the dialog when needed.
async function change(action) {
  showError("detail-error", null);
  const id = encodeURIComponent(page.current.id);
  if (action === "delete" && !window.confirm("Delete item " + page.current.id + " and its photo?")) return;
  const sold = page.current.status === "sold";
  await withKey(document.getElementById("detail-key"), async () => {
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
  }, (error) => showError("detail-error", error));
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    page.filters = currentFilters();
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
    const select = document.getElementById("f-category");
    for (const name of Object.keys(info.categories)) {
      if (name) select.append(el("option", { value: name, text: name + " (" + info.categories[name] + ")" }));
    }
  } catch (error) {
    showError("error", error);
    return;
  }
  loadItems();
});
