// histoserve viewer: plain JavaScript, no build step, talks only to the service that served it.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c);
  return node;
}

const pct = (p) => `${(100 * p).toFixed(1)}%`;

// ---------------------------------------------------------------- API access

const TITLES = {
  400: "Bad request", 401: "API key needed", 403: "Not allowed", 404: "Not found", 405: "Not allowed",
  413: "Too large", 415: "Not a supported image", 422: "Invalid request", 429: "Too many requests",
  503: "The service is busy or still starting",
};

class ApiError extends Error {
  constructor(status, code, message, detail) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
  // What the page shows: a plain title, then the API's own words.
  get readable() {
    if (this.status === 0) return this.message;
    const title = TITLES[this.status] || (this.status >= 500 ? "The service failed" : "Refused");
    return `${title} (HTTP ${this.status}): ${this.message}`;
  }
}

function apiKey() {
  return $("#api-key").value.trim();
}

async function api(path, { method = "GET", body, accept = "application/json" } = {}) {
  const headers = { Accept: accept };
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  let res;
  try {
    res = await fetch(path, { method, body, headers });
  } catch (e) {
    throw new ApiError(0, "unreachable",
      `Cannot reach the service at ${location.origin}: is it running, and is this machine on its network? (${e.message})`);
  }
  if (res.ok) return res;
  let code = "http_error", message = res.statusText || "no reason given", detail = null;
  try {
    const err = (await res.json()).error;
    if (err) ({ code, message, detail } = err);
  } catch (_) { /* not JSON: keep the status text */ }
  throw new ApiError(res.status, code, message, detail);
}

const getJSON = async (path) => (await api(path)).json();

function showError(box, err) {
  box.classList.remove("info");
  if (err instanceof ApiError) {
    box.textContent = err.readable;
    if (err.status === 401) {
      box.textContent += "\nEnter the service's API key in the \u201cAPI key\u201d field at the top, then try again.";
      $(".apikey").classList.add("needed");
      $("#api-key").focus();
    }
  } else {
    box.textContent = `Something went wrong in the page: ${err.message || err}`;
  }
}

function showInfo(box, text) {
  box.classList.add("info");
  box.textContent = text;
}

function clearMessage(box) {
  box.classList.remove("info");
  box.textContent = "";
}

async function busy(button, fn) {
  const label = button.textContent;
  button.disabled = true;
  button.textContent = `${label}\u2026`;
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

// ---------------------------------------------------------------- state: models and adapters

const state = { models: [], adapters: [], slides: false, defaults: {} };

function fillModelSelect(select, { classifiers = true, embedders = false, adapters = true } = {}) {
  const previous = select.value;
  select.replaceChildren();
  const models = el("optgroup", { label: "Models" });
  for (const m of state.models) {
    const ok = (classifiers && m.task === "classification") || (embedders && m.embedding);
    if (!ok) continue;
    const extra = m.task === "classification" ? `${m.classes.length} classes` : m.task;
    models.append(el("option", { value: `model:${m.name}/${m.version}`, text: `${m.name} v${m.version} (${extra})` }));
  }
  if (models.children.length) select.append(models);
  if (adapters && state.adapters.length) {
    const group = el("optgroup", { label: "Adapters" });
    for (const a of state.adapters) {
      group.append(el("option", { value: `adapter:${a.id}`, text: `${a.name || a.id} (adapter: ${a.classes.join(", ")})` }));
    }
    select.append(group);
  }
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
}

function chosen(select) {
  const [kind, ...rest] = select.value.split(":");
  return { kind, ref: rest.join(":") };
}

function modelByRef(ref) {
  return state.models.find((m) => `${m.name}/${m.version}` === ref);
}

async function loadModels() {
  const body = await getJSON("/models");
  state.models = body.models;
  state.defaults = body.defaults || {};
}

async function loadAdapters() {
  const body = await getJSON("/adapters");
  state.adapters = body.adapters;
  renderAdapters();
}

function refreshSelects() {
  fillModelSelect($("#classify-model"));
  fillModelSelect($("#adapt-model"), { classifiers: false, embedders: true, adapters: false });
  if (state.slides) fillModelSelect($("#slide-model"));
  // Preselect the models the service itself uses when a request names none (GET /models "defaults").
  const pick = (select, ref) => {
    if (ref && !select.dataset.touched && [...select.options].some((o) => o.value === `model:${ref}`)) {
      select.value = `model:${ref}`;
    }
  };
  pick($("#classify-model"), state.defaults.classification);
  pick($("#adapt-model"), state.defaults.embedding);
  if (state.slides) pick($("#slide-model"), state.defaults.classification);
}

async function checkService() {
  const status = $("#service-status");
  try {
    const res = await fetch("/readyz", { headers: { Accept: "application/json" } });
    const body = await res.json();
    status.textContent = body.ready
      ? `Ready: ${body.models.length} model${body.models.length === 1 ? "" : "s"} loaded`
      : "The service is starting: models are still loading";
    return body.ready;
  } catch (e) {
    status.textContent = `Cannot reach the service at ${location.origin}`;
    return false;
  }
}

// ---------------------------------------------------------------- drop zones

function wireDrop(zone) {
  const input = zone.querySelector("input[type=file]");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (!e.dataTransfer || !e.dataTransfer.files.length) return;
    const dt = new DataTransfer();
    const keep = input.multiple ? [...input.files] : [];
    for (const f of [...keep, ...e.dataTransfer.files]) dt.items.add(f);
    input.files = dt.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  });
}

// A file the browser already knows is not an image never goes to the service.
function notImages(files) {
  return [...files].filter((f) => f.type && !f.type.startsWith("image/"));
}

function refuseNonImages(box, files) {
  const bad = notImages(files);
  if (!bad.length) return false;
  box.classList.remove("info");
  box.textContent = `Not an image: ${bad.map((f) => `${f.name} (${f.type})`).join(", ")}. ` +
    "Choose PNG, JPEG, TIFF, BMP or WebP files.";
  return true;
}

// ---------------------------------------------------------------- classify + Grad-CAM

// Blue (0) -> cyan -> yellow -> red (1), the ramp the service's own overlay PNG uses.
function jet(v) {
  const c = (x) => Math.max(0, Math.min(1, 1.5 - Math.abs(x)));
  return [c(4 * v - 3), c(4 * v - 2), c(4 * v - 1)].map((x) => Math.round(255 * x));
}

async function drawHeatmap(canvas, base64png) {
  const img = new Image();
  img.src = `data:image/png;base64,${base64png}`;
  await img.decode();
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const px = data.data;
  for (let i = 0; i < px.length; i += 4) {
    const [r, g, b] = jet(px[i] / 255);
    px[i] = r; px[i + 1] = g; px[i + 2] = b; px[i + 3] = 255;
  }
  ctx.putImageData(data, 0, 0);
}

async function requestGradcam(card, file, modelRef, target) {
  const status = card.querySelector(".gradcam .status");
  const canvas = card.querySelector("canvas");
  status.textContent = "Computing the Grad-CAM heatmap\u2026";
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", modelRef);
  if (target) form.append("target", target);
  try {
    const body = await (await api("/gradcam", { method: "POST", body: form })).json();
    await drawHeatmap(canvas, body.heatmap_png);
    canvas.hidden = false;
    status.textContent = `Heatmap: where the model looked for \u201c${body.target}\u201d.`;
    card.dataset.gradcamTarget = body.target;
  } catch (e) {
    status.textContent = e instanceof ApiError ? `No heatmap: ${e.readable}` : `No heatmap: ${e.message}`;
  }
}

function resultCard(file, result, model) {
  const url = URL.createObjectURL(file);
  const canvas = el("canvas", { "aria-hidden": "true", hidden: true });
  const bars = el("ol", { class: "bars", "aria-label": "Most probable classes" });
  for (const k of result.top_k) {
    bars.append(el("li", {},
      el("span", { class: "name", text: k.label, title: k.label }),
      el("span", { class: "track", "aria-hidden": "true" }, el("span", { class: "fill", style: `width:${(100 * k.probability).toFixed(1)}%` })),
      el("span", { class: "pct", text: pct(k.probability) })));
  }
  const card = el("article", { class: "result", "aria-label": `Result for ${file.name}` },
    el("h3", { text: file.name }),
    el("div", { class: "figure" }, el("img", { src: url, alt: `Uploaded image ${file.name}` }), canvas),
    el("p", { class: "prediction" }, "Label: ", el("strong", { class: "label", text: result.label }), ` (${pct(result.score)})`),
    bars);
  card.dataset.label = result.label;
  if (model && model.gradcam && model.task === "classification") {
    const id = `gc-${Math.random().toString(36).slice(2, 9)}`;
    const target = el("select", { id: `${id}-target`, class: "gradcam-target" });
    for (const c of model.classes) target.append(el("option", { value: c, text: c }));
    target.value = result.label;
    const opacity = el("input", { id: `${id}-opacity`, class: "gradcam-opacity", type: "range", min: "0", max: "100", value: "45" });
    canvas.style.opacity = "0.45";
    opacity.addEventListener("input", () => { canvas.style.opacity = String(opacity.value / 100); });
    target.addEventListener("change", () => requestGradcam(card, file, `${model.name}/${model.version}`, target.value));
    card.append(el("div", { class: "gradcam" },
      el("div", { class: "field" }, el("label", { for: target.id, text: "Grad-CAM target class" }), target),
      el("div", { class: "field" }, el("label", { for: opacity.id, text: "Heatmap opacity" }), opacity),
      el("p", { class: "status", "aria-live": "polite" })));
    requestGradcam(card, file, `${model.name}/${model.version}`, result.label);
  } else {
    card.append(el("p", { class: "hint", text: "No Grad-CAM heatmap for an adapter: it has no classifier graph to explain." }));
  }
  return card;
}

async function onClassify(event) {
  event.preventDefault();
  const box = $("#classify-message");
  const out = $("#classify-results");
  clearMessage(box);
  out.replaceChildren();  // never leave an earlier answer beside a new request's error
  const files = $("#classify-files").files;
  if (!files.length) {
    box.textContent = "Choose at least one image first.";
    $("#classify-files").focus();
    return;
  }
  if (refuseNonImages(box, files)) return;
  const { kind, ref } = chosen($("#classify-model"));
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  form.append(kind === "adapter" ? "adapter" : "model", ref);
  form.append("top_k", $("#classify-topk").value || "5");
  out.setAttribute("aria-busy", "true");
  try {
    await busy($("#classify-submit"), async () => {
      const body = await (await api("/classify", { method: "POST", body: form })).json();
      const model = kind === "model" ? modelByRef(ref) : null;
      out.replaceChildren(...body.results.map((r, i) => resultCard(files[i], r, model)));
      const via = body.adapter ? `adapter ${body.adapter.name || body.adapter.id}` : `${body.model} v${body.version}`;
      showInfo(box, `${body.results.length} image${body.results.length === 1 ? "" : "s"} classified with ${via}.`);
    });
  } catch (e) {
    showError(box, e);
  } finally {
    out.setAttribute("aria-busy", "false");
  }
}

// ---------------------------------------------------------------- adapters

let classRows = 0;

function addClassRow(name = "") {
  const n = ++classRows;
  const count = el("small", { class: "count", id: `class-${n}-count`, text: "0 images" });
  const files = el("input", { type: "file", multiple: true, accept: "image/*,.tif,.tiff", class: "class-files",
    id: `class-${n}-files`, "aria-describedby": count.id });
  files.addEventListener("change", () => {
    count.textContent = `${files.files.length} image${files.files.length === 1 ? "" : "s"}`;
  });
  const drop = el("div", { class: "drop" }, el("label", { for: files.id, text: "Example images (drop them here)" }), files, count);
  wireDrop(drop);
  const row = el("div", { class: "class-row" },
    el("div", { class: "field" }, el("label", { for: `class-${n}-name`, text: `Class ${n} name` }),
      el("input", { type: "text", class: "class-name", id: `class-${n}-name`, value: name, maxlength: "64" })),
    drop,
    el("button", { type: "button", class: "secondary", "aria-label": `Remove class ${n}`, text: "Remove",
      onclick: () => { row.remove(); } }));
  $("#adapt-classes").append(row);
  return row;
}

async function onAdapt(event) {
  event.preventDefault();
  const box = $("#adapt-message");
  clearMessage(box);
  const form = new FormData();
  const rows = [...document.querySelectorAll(".class-row")];
  const used = rows.filter((r) => r.querySelector(".class-files").files.length || r.querySelector(".class-name").value.trim());
  for (const row of used) {
    const name = row.querySelector(".class-name").value.trim();
    const files = row.querySelector(".class-files").files;
    if (!name) {
      box.textContent = "Every class with images needs a name.";
      row.querySelector(".class-name").focus();
      return;
    }
    if (!files.length) {
      box.textContent = `Class \u201c${name}\u201d has no images: drop at least one.`;
      row.querySelector(".class-files").focus();
      return;
    }
    if (refuseNonImages(box, files)) return;
    for (const f of files) {
      form.append("files", f, f.name);
      form.append("labels", name);
    }
  }
  if (used.length < 2) {
    box.textContent = "An adapter needs at least two classes, each with at least one image.";
    return;
  }
  const name = $("#adapt-name").value.trim();
  if (name) form.append("name", name);
  const { ref } = chosen($("#adapt-model"));
  if (ref) form.append("model", ref);
  try {
    await busy($("#adapt-submit"), async () => {
      const a = await (await api("/adapt", { method: "POST", body: form })).json();
      $(".apikey").classList.remove("needed");
      const loo = a.loo_accuracy === null ? "not available (one image per class)" : pct(a.loo_accuracy);
      const use = el("button", { type: "button", text: "Classify with this adapter", onclick: () => useAdapter(a.id) });
      $("#adapt-result").replaceChildren(el("div", { class: "adapter-card" },
        el("p", {}, "Created adapter ", el("strong", { text: a.name || a.id }), ` (id ${a.id}) on ${a.model} v${a.version}.`),
        el("p", {}, "Leave-one-out accuracy on the examples: ", el("strong", { class: "loo", text: loo })),
        el("p", { class: "reads", text: `Classifies with the ${a.head} head on ${a.embedding_part
          ? `the ${a.embedding_part} part of the embedding (chosen on these examples)` : "the whole embedding"}.` }),
        el("p", { text: `Classes: ${a.classes.map((c) => `${c} (${a.shots[c]})`).join(", ")}` }), use));
      await loadAdapters();
      refreshSelects();
    });
  } catch (e) {
    showError(box, e);
  }
}

function useAdapter(id) {
  $("#classify-model").value = `adapter:${id}`;
  $("#classify").scrollIntoView();
  $("#classify-files").focus();
}

function renderAdapters() {
  const body = $("#adapters-table tbody");
  body.replaceChildren();
  if (!state.adapters.length) {
    body.append(el("tr", {}, el("td", { colspan: "6", class: "empty", text: "No adapters yet." })));
    return;
  }
  for (const a of state.adapters) {
    const label = a.name || a.id;
    body.append(el("tr", { "data-id": a.id },
      el("td", { text: label }),
      el("td", { text: a.classes.map((c) => `${c} (${a.shots[c]})`).join(", ") }),
      el("td", { text: a.loo_accuracy === null ? "n/a" : pct(a.loo_accuracy) }),
      el("td", { text: `${a.model} v${a.version}` }),
      el("td", { text: a.created_at }),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "secondary", "aria-label": `Classify with adapter ${label}`, text: "Use",
          onclick: () => useAdapter(a.id) }),
        el("button", { type: "button", class: "danger", "aria-label": `Delete adapter ${label}`, text: "Delete",
          onclick: () => deleteAdapter(a) }))));
  }
}

async function deleteAdapter(a) {
  const box = $("#adapters-message");
  clearMessage(box);
  if (!window.confirm(`Delete adapter \u201c${a.name || a.id}\u201d? This cannot be undone.`)) return;
  try {
    await api(`/adapters/${encodeURIComponent(a.id)}`, { method: "DELETE" });
    await loadAdapters();
    refreshSelects();
    showInfo(box, `Deleted adapter ${a.name || a.id}.`);
  } catch (e) {
    showError(box, e);
  }
}

// ---------------------------------------------------------------- slides (only when the service has them)

let slidePaths = {};
let viewer = null;
let pollTimer = null;

function fill(template, id) {
  return template.replace(/\{[^}]+\}/, encodeURIComponent(id));
}

async function enableSlides(paths) {
  const find = (suffix) => Object.keys(paths).find((p) => p.endsWith(suffix));
  slidePaths = {
    create: "/slides", files: find("/slides/files"), job: Object.keys(paths).find((p) => /^\/slides\/\{[^}]+\}$/.test(p)),
    geojson: find("/tiles.geojson"), csv: find("/tiles.csv"), dzi: find("/slide.dzi"),
    heatmapDzi: find("/heatmap.dzi"), heatmap: find("/heatmap.png"),
  };
  if (!slidePaths.job) return;
  state.slides = true;
  $("#slides").hidden = false;
  $("#nav-slides").hidden = false;
  fillModelSelect($("#slide-model"));
  if (slidePaths.files) {
    try {
      const body = await getJSON(slidePaths.files);
      const items = Array.isArray(body) ? body : body.files || body.slides || [];
      for (const it of items) {
        const path = typeof it === "string" ? it : it.path;
        const bytes = typeof it === "object" ? it.bytes ?? it.size : null;
        const size = bytes ? ` (${(bytes / 1e6).toFixed(1)} MB)` : "";
        $("#slide-path").append(el("option", { value: path, text: `${path}${size}` }));
      }
    } catch (e) {
      showError($("#slides-message"), e);
    }
  }
}

function progressOf(job) {
  const p = job.progress;
  if (p && typeof p === "object") {
    const done = p.done ?? p.tiles_done ?? 0, total = p.total ?? p.tiles_total ?? 0;
    return { done, total };
  }
  return { done: job.tiles_done ?? 0, total: job.tiles_total ?? 0 };
}

function loadViewerScript() {
  if (window.OpenSeadragon) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const s = el("script", { src: "/static/vendor/openseadragon/openseadragon.min.js" });
    s.onload = resolve;
    s.onerror = () => reject(new Error("the slide viewer script did not load"));
    document.head.append(s);
  });
}

async function showSlide(id) {
  await loadViewerScript();
  $("#slide-view").hidden = false;
  if (viewer) viewer.destroy();
  viewer = window.OpenSeadragon({
    element: $("#slide-viewer"), prefixUrl: "/static/vendor/openseadragon/images/",
    tileSources: fill(slidePaths.dzi, id), showNavigator: true, crossOriginPolicy: false,
  });
  const opacity = () => $("#slide-opacity").value / 100;
  viewer.addOnceHandler("open", () => {
    const overlay = slidePaths.heatmapDzi ? fill(slidePaths.heatmapDzi, id)
      : { type: "image", url: fill(slidePaths.heatmap, id) };
    if (!slidePaths.heatmapDzi && !slidePaths.heatmap) return;
    viewer.addTiledImage({ tileSource: overlay, x: 0, y: 0, width: 1, opacity: opacity() });
  });
  $("#slide-opacity").oninput = () => {
    const item = viewer.world.getItemAt(1);
    if (item) item.setOpacity(opacity());
  };
}

function renderSlideSummary(job) {
  const box = $("#slide-summary");
  box.replaceChildren();
  const s = job.summary;
  if (!s) return;
  const answer = s.answer || {};
  const fractions = s.class_fractions || answer.fractions;
  if (answer.label) {
    box.append(el("p", { class: "slide-answer" }, "Slide-level answer: ", el("strong", { text: answer.label }),
      ` (${pct(answer.fraction || 0)} of the classified tissue)`));
    if (answer.rule) box.append(el("p", { class: "hint", text: `How: ${answer.rule}.` }));
  }
  const facts = [];
  if (s.slide) facts.push(`slide ${s.slide.width} \u00d7 ${s.slide.height} px at ${s.slide.mpp_x} \u00b5m/px`);
  if (s.tissue_area_mm2 !== undefined) facts.push(`tissue ${s.tissue_area_mm2} mm\u00b2`);
  if (s.tiles_classified !== undefined) facts.push(`${s.tiles_classified} tiles classified with ${s.model}`);
  if (facts.length) box.append(el("p", { text: facts.join("; ") }));
  if (fractions && typeof fractions === "object") {
    const bars = el("ol", { class: "bars", "aria-label": "Fraction of tissue per class" });
    for (const [c, v] of Object.entries(fractions).sort((a, b) => b[1] - a[1])) {
      bars.append(el("li", {}, el("span", { class: "name", text: c }),
        el("span", { class: "track", "aria-hidden": "true" }, el("span", { class: "fill", style: `width:${(100 * v).toFixed(1)}%` })),
        el("span", { class: "pct", text: pct(v) })));
    }
    box.append(bars);
  }
}

async function pollSlide(id) {
  clearTimeout(pollTimer);
  const box = $("#slides-message");
  try {
    const job = await getJSON(fill(slidePaths.job, id));
    const { done, total } = progressOf(job);
    $("#slide-progress").max = Math.max(total, 1);
    $("#slide-progress").value = done;
    $("#slide-status").textContent = `Job ${id}: ${job.status}` + (total ? `, ${done} of ${total} tiles` : "");
    if (job.status === "queued" || job.status === "running") {
      pollTimer = setTimeout(() => pollSlide(id), 1000);
      return;
    }
    if (job.status === "failed") {
      const why = job.error && typeof job.error === "object" ? job.error.message : job.error;
      box.textContent = `The slide job failed: ${why || "no reason given"}`;
      return;
    }
    if (job.status === "cancelled") {
      showInfo(box, `Slide job ${id} was cancelled.`);
      return;
    }
    if (job.status === "done") {
      renderSlideSummary(job);
      const links = $("#slide-downloads");
      links.replaceChildren();
      if (slidePaths.geojson) links.append(el("a", { href: fill(slidePaths.geojson, id), download: `${id}.geojson`, text: "Download GeoJSON (QuPath)" }), " ");
      if (slidePaths.csv) links.append(el("a", { href: fill(slidePaths.csv, id), download: `${id}.csv`, text: "Download CSV" }));
      if (slidePaths.dzi) await showSlide(id);
    }
  } catch (e) {
    showError(box, e);
  }
}

async function onSlide(event) {
  event.preventDefault();
  const box = $("#slides-message");
  clearMessage(box);
  const file = $("#slide-file").files[0];
  const path = $("#slide-path").value;
  if (!file && !path) {
    box.textContent = "Upload a slide or pick one on the server first.";
    $("#slide-file").focus();
    return;
  }
  const form = new FormData();
  if (file) form.append("file", file, file.name);
  else form.append("path", path);
  const { kind, ref } = chosen($("#slide-model"));
  if (ref) form.append(kind === "adapter" ? "adapter" : "model", ref);
  if ($("#slide-mpp").value) form.append("mpp", $("#slide-mpp").value);
  try {
    await busy($("#slide-submit"), async () => {
      const job = await (await api(slidePaths.create, { method: "POST", body: form })).json();
      $("#slide-job").hidden = false;
      $("#slide-summary").replaceChildren();
      $("#slide-downloads").replaceChildren();
      await pollSlide(job.id);
    });
  } catch (e) {
    showError(box, e);
  }
}

// ---------------------------------------------------------------- start

async function start() {
  wireDrop($("#classify .drop"));
  addClassRow();
  addClassRow();
  $("#classify-form").addEventListener("submit", onClassify);
  $("#adapt-form").addEventListener("submit", onAdapt);
  $("#adapt-add-class").addEventListener("click", () => addClassRow().querySelector(".class-name").focus());
  for (const id of ["#adapt-model", "#classify-model", "#slide-model"]) {
    $(id)?.addEventListener("change", (e) => { e.target.dataset.touched = "1"; });
  }
  $("#slides-form").addEventListener("submit", onSlide);
  $("#api-key").addEventListener("input", () => $(".apikey").classList.remove("needed"));
  // The key stays in this tab (sessionStorage), never in a URL or a cookie.
  $("#api-key").value = sessionStorage.getItem("histoserve-api-key") || "";
  $("#api-key").addEventListener("change", () => sessionStorage.setItem("histoserve-api-key", apiKey()));

  const box = $("#classify-message");
  for (let attempt = 0; attempt < 30; attempt++) {
    if (await checkService()) break;
    await new Promise((r) => setTimeout(r, 2000));
  }
  try {
    await Promise.all([loadModels(), loadAdapters()]);
    refreshSelects();
    const spec = await getJSON("/openapi.json");
    if (spec.paths && spec.paths["/slides"]) await enableSlides(spec.paths);
    document.body.dataset.ready = "1";
  } catch (e) {
    showError(box, e);
    document.body.dataset.ready = "error";
  }
}

document.addEventListener("DOMContentLoaded", start);
