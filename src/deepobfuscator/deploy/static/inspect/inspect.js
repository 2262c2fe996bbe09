// deepobf inspect: upload an image, show each run's pipeline input, what is sent, the cloud's answer and
// the eavesdropper's view. Plain DOM, no framework, no network access beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
let RUNS = [];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? "n/a" : Number(x).toFixed(digits));
const kb = (n) => (n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);
const ci = (pair) => (pair && pair[0] !== null ? ` [${fmt(pair[0], 2)}, ${fmt(pair[1], 2)}]` : "");

function bar(p) {
  const pct = Math.max(0, Math.min(1, Number(p))) * 100;
  return el("span", { class: "bar", "aria-hidden": "true" }, el("span", { style: `width:${pct.toFixed(1)}%` }));
}

// A probability cell: binary attributes show P(positive); multi-class ones the most likely class.
function probCell(entry, kind, runIndex) {
  const td = el("td", { class: "num" });
  let shown = entry.probability;
  let label = "";
  if (Array.isArray(entry.probability)) {
    let best = 0;
    entry.probability.forEach((v, i) => { if (v > entry.probability[best]) best = i; });
    shown = entry.probability[best];
    label = ` (${entry.classes ? entry.classes[best] : "class " + best})`;
  }
  td.append(bar(shown), el("span", { class: "prob", "data-kind": kind, "data-run": String(runIndex),
    "data-attr": entry.name, text: fmt(shown) }), label);
  return td;
}

function section(cls, title, ...children) {
  return el("section", { class: cls }, el("h3", { text: title }), ...children);
}

function placeholder(text) { return el("p", { class: "placeholder", text }); }

function runColumn(run, index) {
  const col = el("article", { class: "run", id: `run-${index}`, "aria-labelledby": `run-${index}-title` });
  col.append(
    el("header", {}, el("h2", { id: `run-${index}-title`, text: run.run }),
      el("p", { text: `${run.method} · input ${run.image_size[0]}×${run.image_size[1]} · intended: ` +
        `${run.attributes.join(", ")} · private: ${run.private.join(", ") || "none"}` })),
    section("seen", "As the pipeline sees it", placeholder("Upload an image to see it here.")),
    section("sent", "What is sent", placeholder("Feature channels, shape and bytes per request.")),
    section("cloud", "The cloud's answer", placeholder("Each intended attribute's probability.")),
    section("eaves", "The eavesdropper's view", run.attacked
      ? placeholder("Reconstruction and private-attribute guesses by the saved attackers.")
      : notAttacked(run.command, "Not attacked yet")));
  return col;
}

function notAttacked(command, note) {
  return el("div", { class: "notice not-attacked" },
    el("p", { text: `${note}: no saved attackers for this run. Attack it (this saves the attackers) with:` }),
    el("code", { text: command }));
}

function fill(col, part, ...children) {
  const sec = col.querySelector(`section.${part}`);
  sec.replaceChildren(sec.querySelector("h3"), ...children);
}

function renderRun(col, result, index, upload) {
  const [h, w] = result.image_size;
  fill(col, "seen", el("figure", {},
    el("img", { class: "pix input-image", src: result.input_png, width: String(w), height: String(h),
      alt: `The uploaded image centre-cropped and resized to ${h}×${w}, as ${result.run}'s pipeline sees it` }),
    el("figcaption", { text: `${h}×${w} RGB, the same crop and resize as training and the client` })));

  const sent = result.sent;
  const [c, fh, fw] = sent.shape;
  const bytes = el("table", { class: "bytes" },
    el("caption", { class: "note", text: "Bytes per request" }),
    el("tr", {}, el("th", { scope: "col", text: "encoding" }), el("th", { scope: "col", text: "bytes" })));
  for (const [dtype, n] of Object.entries(sent.bytes_per_request)) {
    bytes.append(el("tr", {}, el("td", { text: `features ${dtype}` }),
      el("td", { class: "num", "data-bytes": dtype, text: kb(n) })));
  }
  bytes.append(el("tr", {}, el("td", { text: `the ${h}×${w} image as JPEG (q90)` }),
    el("td", { class: "num", "data-bytes": "jpeg", text: kb(sent.jpeg_bytes) })));
  bytes.append(el("tr", {}, el("td", { text: `your file (${upload.format})` }),
    el("td", { class: "num", "data-bytes": "upload", text: kb(upload.bytes) })));
  fill(col, "sent", el("div", { class: "pair" },
    el("figure", {}, el("img", { class: "mosaic", src: sent.mosaic_png,
      alt: `Mosaic of ${sent.mosaic_channels} of the ${c} feature channels sent for this image` }),
    el("figcaption", { class: "shape", text: `features ${c}×${fh}×${fw}` +
      (sent.mosaic_channels < c ? ` (first ${sent.mosaic_channels} channels shown)` : "") +
      "; each channel scaled to its own range" })), bytes));

  const cloud = el("table", {}, el("tr", {}, el("th", { scope: "col", text: "intended attribute" }),
    el("th", { scope: "col", text: "probability" })));
  for (const entry of result.cloud) cloud.append(el("tr", {}, el("td", { text: entry.name }), probCell(entry, "cloud", index)));
  fill(col, "cloud", cloud);

  const ev = result.eavesdropper;
  if (!ev.attacked) { fill(col, "eaves", notAttacked(ev.command, ev.note || "Not attacked yet")); return; }
  const parts = [];
  if (ev.reconstruction) {
    const r = ev.reconstruction;
    parts.push(el("figure", {},
      el("img", { class: "pix recon", src: r.image_png, width: String(w), height: String(h),
        alt: `What the ${r.attacker} reconstructor rebuilds from the intercepted features (MS-SSIM ${fmt(r.ms_ssim)})` }),
      el("figcaption", {}, "Reconstruction by ", el("b", { text: r.attacker }), el("br"),
        "MS-SSIM to this input: ", el("span", { class: "msssim", text: fmt(r.ms_ssim) }), el("br"),
        `${ev.split}-split mean: ${fmt(r.test_ms_ssim)}`, el("br"),
        el("span", { class: "ci", text: ci(r.test_ms_ssim_ci95).trim() ? `95% CI ${ci(r.test_ms_ssim_ci95).trim()}` : "" }),
        r.best_overall && r.best_overall !== r.attacker ? ` (best overall: ${r.best_overall}, not saved)` : null)));
  }
  const table = el("table", {}, el("tr", {},
    el("th", { scope: "col", text: "private attribute" }), el("th", { scope: "col", text: "guessed P(yes)" }),
    el("th", { scope: "col", text: `balanced acc. (${ev.split})` }), el("th", { scope: "col", text: "majority" })));
  for (const g of ev.attributes) {
    table.append(el("tr", {}, el("td", {}, g.name, el("br"), el("small", { text: `by ${g.attacker}` })),
      probCell(g, "private", index),
      el("td", { class: "num bacc", "data-attr": g.name }, fmt(g.balanced_accuracy), el("br"),
        el("span", { class: "ci", text: ci(g.balanced_accuracy_ci95).trim() }),
        ...Object.entries(g.averaged || {}).map(([m, v]) => el("div", { class: "ci averaged", "data-m": m,
          text: m === "inf" ? `unlimited queries averaged: ${fmt(v)}` : `${m} queries averaged: ${fmt(v)}` }))),
      el("td", { class: "num", text: fmt(g.majority_rate) })));
  }
  parts.push(el("div", {}, table));
  if (ev.note) parts.push(el("p", { class: "note", text: ev.note }));
  fill(col, "eaves", el("div", { class: "pair" }, ...parts));
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

async function upload(blob, filename) {
  $("error").hidden = true;
  $("status").textContent = `Inspecting ${filename} ...`;
  document.body.setAttribute("aria-busy", "true");
  const started = performance.now();
  try {
    const response = await fetch(`/v1/inspect?filename=${encodeURIComponent(filename)}`, {
      method: "POST", body: blob, headers: { "Content-Type": blob.type || "application/octet-stream" } });
    let answer = null;
    try { answer = await response.json(); } catch (err) { answer = null; }
    if (!response.ok) {
      const e = answer && answer.error;
      const text = e ? `${e.message} (HTTP ${e.status}, ${e.code})` : `HTTP ${response.status}`;
      $("status").textContent = `Could not inspect ${filename}.`;
      showError(`Error: ${text}`);
      return;
    }
    answer.runs.forEach((result, i) => renderRun($(`run-${i}`), result, i, answer.upload));
    const ms = performance.now() - started;
    $("status").replaceChildren(`Results for ${filename} (${answer.upload.width}×${answer.upload.height} ` +
      `${answer.upload.format}) in `, el("span", { id: "elapsed", "data-ms": ms.toFixed(1), text: `${ms.toFixed(0)} ms` }),
      ` (server ${(answer.seconds * 1000).toFixed(0)} ms).`);
    document.body.dataset.results = String((Number(document.body.dataset.results) || 0) + 1);
  } catch (err) {
    $("status").textContent = `Could not inspect ${filename}.`;
    showError(`Error: ${err}`);
  } finally {
    document.body.removeAttribute("aria-busy");
  }
}

function pickFile(file) { if (file) upload(file, file.name); }

async function useExample(index) {
  const response = await fetch(`/v1/examples/${index}`);
  upload(await response.blob(), `synthetic-face-${index + 1}.jpg`);
}

async function init() {
  const drop = $("drop");
  const input = $("file");
  input.addEventListener("change", () => pickFile(input.files[0]));
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over"); pickFile(e.dataTransfer.files[0]);
  });
  try {
    const info = await (await fetch("/v1/runs")).json();
    RUNS = info.runs;
    $("runs").replaceChildren(...RUNS.map(runColumn));
    const examples = $("examples");
    for (let i = 0; i < info.examples; i++) {
      const button = el("button", { type: "button", "aria-label": `Inspect synthetic example face ${i + 1}` },
        el("img", { src: `/v1/examples/${i}`, alt: `Synthetic example face ${i + 1}` }));
      button.addEventListener("click", () => useExample(i));
      examples.append(button);
    }
    $("status").textContent = `${RUNS.length} run(s) loaded. Choose an image.`;
    document.body.dataset.ready = "true";
  } catch (err) {
    showError(`Error: cannot load the runs: ${err}`);
  }
}

init();
