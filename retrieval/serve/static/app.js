// The search page: text or image query -> POST /search -> image grid.
// Every value from the server is put in the page with textContent / src,
// never innerHTML, so a caption cannot inject markup.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_COOKIE = "clipline_api_key";
let lastQuery = null; // re-run when index / modality / k change

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    $("apikey-box").hidden = false;
    throw new Error("this server needs an API key: enter it above");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : `HTTP ${response.status}`;
    throw new Error(detail);
  }
  return body;
}

async function loadIndices() {
  try {
    const indices = await api("/indices");
    const select = $("index");
    select.replaceChildren();
    for (const info of indices) {
      const option = document.createElement("option");
      option.value = info.name;
      option.textContent = `${info.name} (${info.size.toLocaleString()})`;
      select.append(option);
    }
    setStatus(indices.length ? "Type a query or drop an image." : "No index is served.");
  } catch (err) {
    setStatus(err.message, true);
  }
}

function options() {
  return { k: Number($("k").value), modality: $("modality").value, index: $("index").value || null };
}

async function searchText(text) {
  text = text.trim();
  if (!text) return;
  lastQuery = { kind: "text", text };
  $("query-preview").hidden = true;
  await runSearch({
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text, ...options() }),
  }, `“${text}”`);
}

async function searchImage(blob, label) {
  lastQuery = { kind: "image", blob, label };
  const preview = $("query-image");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(blob);
  $("query-label").textContent = `searching by ${label}`;
  $("query-preview").hidden = false;
  const form = new FormData();
  form.append("image", blob, "query");
  const opts = options();
  form.append("k", String(opts.k));
  form.append("modality", opts.modality);
  if (opts.index) form.append("index", opts.index);
  await runSearch({ method: "POST", body: form }, label);
}

async function runSearch(request, label) {
  setStatus(`Searching ${label}…`);
  const started = performance.now();
  try {
    const answer = await api("/search", request);
    renderResults(answer);
    const ms = Math.round(performance.now() - started);
    setStatus(`${answer.results.length} results for ${label} in ${answer.index} (${ms} ms)`);
  } catch (err) {
    setStatus(err.message, true);
  }
}

function renderResults(answer) {
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of answer.results) {
    const card = document.createElement("figure");
    card.className = "result";
    card.dataset.key = hit.key;
    if (hit.image_url) {
      const img = document.createElement("img");
      img.src = hit.image_url;
      img.alt = hit.caption;
      img.loading = "lazy";
      img.title = "Search by this image";
      img.addEventListener("click", () => searchByResult(hit));
      card.append(img);
    } else {
      const none = document.createElement("div");
      none.className = "noimage";
      none.textContent = "no stored image";
      card.append(none);
    }
    const caption = document.createElement("figcaption");
    caption.className = "caption";
    caption.textContent = hit.caption || hit.key;
    const meta = document.createElement("div");
    meta.className = "meta";
    const rank = document.createElement("span");
    rank.textContent = `#${hit.rank}`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    meta.append(rank, score);
    card.append(caption, meta);
    grid.append(card);
  }
}

async function searchByResult(hit) {
  try {
    const response = await fetch(hit.image_url, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`could not load image ${hit.key}: HTTP ${response.status}`);
    await searchImage(await response.blob(), `image “${hit.caption || hit.key}”`);
  } catch (err) {
    setStatus(err.message, true);
  }
}

function firstImage(items) {
  for (const item of items || []) {
    const file = item.getAsFile ? item.getAsFile() : item;
    if (file && file.type && file.type.startsWith("image/")) return file;
  }
  return null;
}

function wireDropZone() {
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = firstImage(e.dataTransfer.files);
    if (file) searchImage(file, `“${file.name}”`);
    else setStatus("drop an image file (PNG, JPEG, WebP, GIF)", true);
  });
  document.addEventListener("paste", (e) => {
    const file = firstImage(e.clipboardData && e.clipboardData.items);
    if (file) searchImage(file, "pasted image");
  });
}

function rerun() {
  if (!lastQuery) return;
  if (lastQuery.kind === "text") searchText(lastQuery.text);
  else searchImage(lastQuery.blob, lastQuery.label);
}

function wire() {
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); searchText($("query").value); });
  $("file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) searchImage(file, `“${file.name}”`);
    e.target.value = "";
  });
  for (const id of ["index", "modality", "k"]) $(id).addEventListener("change", rerun);
  $("apikey-save").addEventListener("click", () => {
    const key = encodeURIComponent($("apikey").value.trim());
    document.cookie = `${KEY_COOKIE}=${key}; path=/; SameSite=Strict`;
    $("apikey-box").hidden = true;
    loadIndices().then(rerun);
  });
  wireDropZone();
  loadIndices();
}

wire();
