"""The page at GET /: drop or pick an image and see the most probable classes as bars.

One self-contained HTML document (inline CSS and JavaScript, nothing fetched from elsewhere),
so it works on a machine without internet access. It posts the file to `predict` relative to
its own address and draws the `top_k` list of the response.
"""

from __future__ import annotations

import json

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>imgclf</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; color: #1d2327; }
  h1 { font-size: 1.4rem; }
  #drop-zone { border: 2px dashed #8a9199; border-radius: 8px; padding: 2rem; text-align: center; cursor: pointer; }
  #drop-zone.dragging { border-color: #2271b1; background: #f0f6fc; }
  #preview { max-width: 12rem; max-height: 12rem; display: none; margin: 1rem auto 0; }
  #status { color: #50575e; min-height: 1.5rem; margin-top: 1rem; }
  #error { color: #b32d2e; min-height: 1.5rem; }
  .row { display: grid; grid-template-columns: 10rem 1fr 4.5rem; gap: .5rem; align-items: center; margin: .3rem 0; }
  .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .track { background: #e8eaeb; border-radius: 4px; height: 1.1rem; }
  .bar { background: #2271b1; border-radius: 4px; height: 100%; }
  .value { text-align: right; font-variant-numeric: tabular-nums; }
  label.key { display: block; margin-bottom: 1rem; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<h1>Classify an image</h1>
<label class="key" id="api-key-label" hidden>API key <input id="api-key" type="password" autocomplete="off"></label>
<div id="drop-zone" tabindex="0">
  <p>Drop an image here, or <strong>click to choose one</strong>.</p>
  <input id="file-input" type="file" accept="image/*" hidden>
  <img id="preview" alt="the chosen image">
</div>
<div id="status" role="status"></div>
<div id="error" role="alert"></div>
<div id="results" aria-live="polite"></div>
<script>
const settings = __SETTINGS__;
const zone = document.getElementById("drop-zone");
const input = document.getElementById("file-input");
const preview = document.getElementById("preview");
const statusLine = document.getElementById("status");
const errorLine = document.getElementById("error");
const results = document.getElementById("results");
const keyInput = document.getElementById("api-key");
document.getElementById("api-key-label").hidden = !settings.apiKeyRequired;

function showError(text) {
  errorLine.textContent = text;
  statusLine.textContent = "";
}

function drawBars(result) {
  results.replaceChildren();
  for (const item of result.top_k) {
    const row = document.createElement("div");
    row.className = "row";
    row.dataset.class = item.class;
    row.dataset.probability = String(item.probability);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = item.class;
    name.title = item.class;
    const track = document.createElement("div");
    track.className = "track";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = (100 * item.probability).toFixed(1) + "%";
    track.appendChild(bar);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = (100 * item.probability).toFixed(1) + " %";
    row.append(name, track, value);
    results.appendChild(row);
  }
}

async function classify(file) {
  errorLine.textContent = "";
  results.replaceChildren();
  preview.src = URL.createObjectURL(file);
  preview.style.display = "block";
  statusLine.textContent = "Classifying " + file.name + " ...";
  const form = new FormData();
  form.append("file", file, file.name);
  const headers = {};
  if (settings.apiKeyRequired && keyInput.value) headers["X-API-Key"] = keyInput.value;
  let response;
  try {
    response = await fetch(new URL("predict?top_k=" + settings.topK, window.location.href), {method: "POST", body: form, headers});
  } catch (failure) {
    showError("The server could not be reached: " + failure.message);
    return;
  }
  let result = null;
  try {
    result = await response.json();
  } catch (failure) {
    showError("The server returned status " + response.status + " without a JSON body.");
    return;
  }
  if (!response.ok) {
    showError(result.error + " (request " + result.request_id + ")");
    return;
  }
  statusLine.textContent = file.name + ": " + result.class + " (" + result.model.name + " " + result.model.version + ")";
  drawBars(result);
}

zone.addEventListener("click", () => input.click());
zone.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") input.click(); });
input.addEventListener("change", () => {
  if (input.files.length) classify(input.files[0]);
  // Cleared, so that choosing the same file again (say, after entering the API key) fires "change".
  input.value = "";
});
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("dragging");
  if (event.dataTransfer.files.length) classify(event.dataTransfer.files[0]);
});
</script>
</body>
</html>
"""


def render_page(api_key_required: bool, top_k: int) -> str:
    """Return the page's HTML with the server's settings filled in."""
    settings = json.dumps({"apiKeyRequired": api_key_required, "topK": top_k})
    return _PAGE.replace("__SETTINGS__", settings)
