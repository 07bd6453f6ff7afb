// osteoscreen page: place the 8 landmarks on a radiograph (click, drag to correct), then screen it (with a
// model) or save them to the dataset's landmarks.csv (with a dataset). With a landmark model, "Suggest landmarks"
// places all 8 (unsure ones flagged); a suggested point the user has not moved stays marked as suggested, and
// nothing is screened or saved from suggested points until the user ticks that they have checked them.
// Coordinates are image pixels with (0, 0) at the centre of the top-left pixel, as in landmarks.csv.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const state = {
  info: null, mode: null, file: null, subject: null, subjects: [],
  width: 0, height: 0, scale: 1, landmarks: {}, current: null, dragging: null, dragged: false,
  suggested: {}, // landmark -> {confidence, flagged, reason}: points as the landmark model placed them
  screened: null, // the form fields (landmarks, age, sex) of the last screening
};
window.osteoscreen = state; // read by the browser tests

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function request(url, options = {}) {
  const response = await fetch(url, options);
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function names() { return state.info.landmarks.map((l) => l.name); }
function landmark(name) { return state.info.landmarks.find((l) => l.name === name); }
function placedCount() { return names().filter((n) => state.landmarks[n]).length; }
function firstMissing() { return names().find((n) => !state.landmarks[n]) || null; }
function stillSuggested() { return names().filter((n) => state.suggested[n]); }
function reviewed() { return stillSuggested().length === 0 || $("review-check").checked; }
function setPoint(name, point) { // the user placed or moved a point: it is theirs now, not a suggestion
  state.landmarks[name] = point;
  delete state.suggested[name];
}

// ---------- viewer: zoom and coordinates ----------
function applyZoom(scale) {
  if (!state.width) return;
  state.scale = Math.max(0.05, Math.min(8, scale));
  $("stage").style.width = `${state.width * state.scale}px`;
  drawMarkers();
}
function fitScale() { return ($("viewport").clientWidth - 2) / state.width; }

function toImage(event) {
  const rect = $("radiograph").getBoundingClientRect();
  const x = (event.clientX - rect.left) * state.width / rect.width - 0.5;
  const y = (event.clientY - rect.top) * state.height / rect.height - 0.5;
  return [Math.max(-0.5, Math.min(state.width - 0.5, x)), Math.max(-0.5, Math.min(state.height - 0.5, y))];
}

async function showImage(blob) {
  const image = $("radiograph");
  const url = URL.createObjectURL(blob);
  await new Promise((resolve, reject) => {
    image.onload = resolve;
    image.onerror = () => reject(new Error("the image could not be shown"));
    image.src = url;
  });
  state.width = image.naturalWidth;
  state.height = image.naturalHeight;
  $("overlay").setAttribute("viewBox", `-0.5 -0.5 ${state.width} ${state.height}`);
  $("overlay").setAttribute("preserveAspectRatio", "none");
  applyZoom(fitScale());
}

// ---------- landmarks: markers, list, diagram ----------
function drawMarkers() {
  const overlay = $("overlay");
  overlay.replaceChildren();
  const unit = 1 / state.scale; // one screen pixel in image pixels
  for (const name of names()) {
    const point = state.landmarks[name];
    if (!point) continue;
    const circle = document.createElementNS(SVG, "circle");
    circle.setAttribute("cx", point[0]);
    circle.setAttribute("cy", point[1]);
    circle.setAttribute("r", 9 * unit);
    circle.setAttribute("stroke-width", 2 * unit);
    circle.dataset.name = name;
    const suggestion = state.suggested[name];
    if (suggestion) circle.classList.add(suggestion.flagged ? "flagged" : "suggested");
    if (name === state.current) circle.classList.add("current");
    circle.addEventListener("pointerdown", (event) => startDrag(event, name));
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", point[0] + 12 * unit);
    text.setAttribute("y", point[1] - 12 * unit);
    text.setAttribute("font-size", 13 * unit);
    text.setAttribute("stroke-width", 3 * unit);
    text.textContent = name;
    overlay.append(circle, text);
  }
}

function drawPanel() {
  const list = $("landmark-list");
  list.replaceChildren();
  const diagram = $("diagram");
  diagram.querySelectorAll("circle").forEach((c) => c.remove());
  for (const item of state.info.landmarks) {
    const li = document.createElement("li");
    const point = state.landmarks[item.name];
    li.textContent = item.label + (point ? ` ✓ (${point[0].toFixed(1)}, ${point[1].toFixed(1)})` : "");
    li.title = item.hint;
    li.dataset.name = item.name;
    const suggestion = state.suggested[item.name];
    if (suggestion) {
      li.classList.toggle("flagged", suggestion.flagged);
      li.append(" ", Object.assign(document.createElement("span"), { className: "note",
        textContent: `suggested, confidence ${suggestion.confidence.toFixed(2)}` +
          (suggestion.flagged ? ` — check: ${suggestion.reason}` : "") }));
    }
    if (item.name === state.current) li.classList.add("current");
    li.addEventListener("click", () => { state.current = item.name; update(); });
    list.append(li);
    const dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("cx", item.diagram[0] * 200);
    dot.setAttribute("cy", item.diagram[1] * 100);
    dot.setAttribute("r", 5);
    dot.classList.add(item.name === state.current ? "current" : point ? "placed" : "todo");
    diagram.append(dot);
  }
  const complete = placedCount() === names().length;
  const prompt = $("prompt");
  if (!state.width) {
    prompt.textContent = state.mode === "annotation" ? "Choose a subject." : "Choose a radiograph to start.";
  } else if (state.current) {
    const item = landmark(state.current);
    prompt.innerHTML = "";
    prompt.append("Click the ", Object.assign(document.createElement("b"), { textContent: item.label }),
      ` (${item.hint}) — ${names().indexOf(item.name) + 1} of ${names().length}; drag a point to correct it.`);
  } else if (stillSuggested().length) {
    const flagged = stillSuggested().filter((n) => state.suggested[n].flagged).length;
    prompt.textContent = `${stillSuggested().length} suggested point(s)` +
      (flagged ? `, ${flagged} flagged as unsure (red, dashed)` : "") +
      ": drag any that are wrong, then tick that you have checked them.";
  } else {
    prompt.textContent = complete ? (state.mode === "annotation" ? "All 8 placed: save them, or drag to correct."
      : "All 8 placed: screen the radiograph, or drag to correct.") : "";
  }
  $("review").hidden = stillSuggested().length === 0;
  $("suggest-button").disabled = !state.width;
  $("screen-button").disabled = !(complete && state.file && reviewed());
  $("save-button").disabled = !(complete && state.subject !== null && reviewed());
  $("download-csv").disabled = $("download-json").disabled = placedCount() === 0;
}

function update() { drawMarkers(); drawPanel(); }

function startDrag(event, name) {
  event.stopPropagation();
  event.preventDefault();
  state.dragging = name;
  state.dragged = false;
  $("overlay").setPointerCapture(event.pointerId);
}

$("overlay").addEventListener("pointermove", (event) => {
  if (!state.dragging) return;
  setPoint(state.dragging, toImage(event));
  state.dragged = true;
  drawMarkers();
});
$("overlay").addEventListener("pointerup", (event) => {
  if (!state.dragging) return;
  if (state.dragged) setPoint(state.dragging, toImage(event));
  state.dragging = null;
  clearResult();
  update();
});
$("overlay").addEventListener("click", (event) => {
  if (state.dragged) { state.dragged = false; return; }
  if (!state.current || !state.width) return;
  setPoint(state.current, toImage(event));
  state.current = firstMissing();
  clearResult();
  update();
});

// ---------- zoom controls ----------
$("zoom-in").addEventListener("click", () => applyZoom(state.scale * 1.25));
$("zoom-out").addEventListener("click", () => applyZoom(state.scale / 1.25));
$("zoom-fit").addEventListener("click", () => applyZoom(fitScale()));
$("viewport").addEventListener("wheel", (event) => {
  if (!event.ctrlKey) return;
  event.preventDefault();
  applyZoom(state.scale * (event.deltaY < 0 ? 1.15 : 1 / 1.15));
}, { passive: false });

// ---------- downloads ----------
function download(text, filename, type) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = filename;
  link.click();
}
function placed() {
  return Object.fromEntries(names().filter((n) => state.landmarks[n])
    .map((n) => [n, state.landmarks[n].map((v) => Math.round(v * 100) / 100)]));
}
function stem() { return state.subject !== null ? state.subjects[state.subject].subject_id : "landmarks"; }
$("download-csv").addEventListener("click", () => download(
  "landmark,x,y\n" + Object.entries(placed()).map(([n, [x, y]]) => `${n},${x},${y}`).join("\n") + "\n",
  `${stem()}.csv`, "text/csv"));
$("download-json").addEventListener("click", () => download(
  JSON.stringify(placed(), null, 2) + "\n", `${stem()}.json`, "application/json"));

// ---------- suggestion ----------
function resetSuggestion() {
  state.suggested = {};
  $("review-check").checked = false;
}

$("suggest-button").addEventListener("click", async () => {
  setStatus("suggesting the landmarks ...");
  try {
    let response;
    if (state.mode === "annotation") {
      response = await request(`api/subjects/${state.subject}/suggestion`);
    } else {
      const form = new FormData();
      form.append("file", state.file);
      response = await request("api/suggest", { method: "POST", body: form });
    }
    const result = await response.json();
    resetSuggestion();
    state.landmarks = result.landmarks;
    for (const point of result.points) state.suggested[point.landmark] = point;
    const flagged = result.points.filter((p) => p.flagged).length;
    state.current = null;
    clearResult();
    setStatus([`8 landmarks suggested, ${flagged} flagged`, ...result.warnings].join("; "), result.warnings.length > 0);
  } catch (error) {
    setStatus(error.message, true);
  }
  update();
});
$("review-check").addEventListener("change", update);

// ---------- screening ----------
function clearResult() { $("result").hidden = true; }

$("file-input").addEventListener("change", async () => {
  const file = $("file-input").files[0];
  if (!file) return;
  clearResult();
  setStatus("reading the radiograph ...");
  const form = new FormData();
  form.append("file", file);
  try {
    const response = await request("api/render", { method: "POST", body: form });
    state.file = file;
    state.landmarks = {};
    resetSuggestion();
    await showImage(await response.blob());
    state.current = firstMissing();
    setStatus(`${state.width} x ${state.height} pixels`);
  } catch (error) {
    state.file = null;
    setStatus(error.message, true);
  }
  update();
});

function screeningForm(fields) { // the radiograph with the landmarks, age and sex it was (or is) screened at
  const form = new FormData();
  form.append("file", state.file);
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  return form;
}

$("screen-button").addEventListener("click", async () => {
  const fields = { landmarks: JSON.stringify(state.landmarks), age: $("age").value, sex: $("sex").value };
  setStatus("screening ...");
  try {
    const result = await (await request("api/screen", { method: "POST", body: screeningForm(fields) })).json();
    state.screened = fields; // DICOM results describe this screening, whatever is moved afterwards
    showResult(result);
    const suggested = stillSuggested();
    $("landmark-source").textContent = suggested.length
      ? `Screened from ${suggested.length} suggested landmark(s) the user checked ` +
        `(${suggested.filter((n) => state.suggested[n].flagged).length} of them flagged) and ` +
        `${8 - suggested.length} placed by hand.`
      : "Screened from 8 landmarks placed by hand.";
    setStatus("screened");
  } catch (error) {
    setStatus(error.message, true);
  }
});

function showResult(result) {
  $("probability").textContent = `p(osteoporosis) = ${result.p_osteoporosis.toFixed(3)}`;
  $("decision").textContent = `→ ${result.decision} (threshold ${Number(result.threshold.toPrecision(3))})`;
  $("rule").textContent = `Decision rule: ${result.decision_rule}.`;
  $("decision").className = result.decision;
  $("novelty").textContent = result.unlike_training
    ? "Warning: this radiograph is unlike the model's training data (another device, anatomy or landmark " +
      "placement?); the result may not apply."
    : "";
  const bars = $("attention");
  bars.replaceChildren();
  if (result.attention) {
    bars.append(Object.assign(document.createElement("p"), { textContent: "Attention per group:" }));
    for (const [group, weight] of Object.entries(result.attention)) {
      const row = document.createElement("div");
      row.className = "bar";
      row.dataset.group = group;
      const bar = document.createElement("div");
      bar.style.width = `${Math.round(weight * 180)}px`;
      row.append(Object.assign(document.createElement("span"), { className: "name", textContent: group }), bar,
        Object.assign(document.createElement("span"), { textContent: weight.toFixed(2) }));
      bars.append(row);
    }
  }
  const patches = $("patches");
  patches.replaceChildren();
  for (const patch of result.patches) {
    const figure = document.createElement("figure");
    figure.append(Object.assign(document.createElement("img"), { src: patch.png, alt: patch.landmark }),
      Object.assign(document.createElement("figcaption"), { textContent: patch.landmark }));
    patches.append(figure);
  }
  $("result-disclaimer").textContent = result.disclaimer;
  $("dicom-actions").hidden = !result.dicom;
  $("send-pacs").hidden = !state.info.pacs;
  $("send-pacs").title = state.info.pacs ? `send the SR and key image to ${state.info.pacs}` : "";
  $("pacs-answer").textContent = "";
  $("result").hidden = false;
}

// ---------- DICOM results of a DICOM upload: download, or send to the PACS the server was started with ----------
async function downloadDicom(part) {
  setStatus(`writing the DICOM ${part === "sr" ? "SR" : "key image"} ...`);
  try {
    const response = await request(`api/dicom/${part}`, { method: "POST", body: screeningForm(state.screened) });
    const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
    const link = Object.assign(document.createElement("a"), {
      href: URL.createObjectURL(await response.blob()), download: name ? name[1] : `osteoscreen-${part}.dcm` });
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    setStatus("downloaded");
  } catch (error) {
    setStatus(error.message, true);
  }
}
$("download-sr").addEventListener("click", () => downloadDicom("sr"));
$("download-key-image").addEventListener("click", () => downloadDicom("key-image"));

$("send-pacs").addEventListener("click", async () => {
  $("pacs-answer").className = "";
  $("pacs-answer").textContent = `sending to ${state.info.pacs} ...`;
  try {
    const answer = await (await request("api/send", { method: "POST", body: screeningForm(state.screened) }))
      .json();
    const failed = answer.failed.length ? ` Not accepted: ${answer.failed.join("; ")}` : "";
    $("pacs-answer").textContent = `${answer.destination} accepted ${answer.sent.length} of ` +
      `${answer.sent.length + answer.failed.length} file(s).${failed}`;
    $("pacs-answer").className = answer.failed.length ? "error" : "";
  } catch (error) {
    $("pacs-answer").textContent = error.message;
    $("pacs-answer").className = "error";
  }
});

// ---------- annotation ----------
async function loadSubjects() {
  state.subjects = await (await request("api/subjects")).json();
  const select = $("subject-select");
  select.replaceChildren(...state.subjects.map((s) => Object.assign(document.createElement("option"), {
    value: s.index, textContent: `${s.subject_id} (${s.placed}/8)` })));
}

async function openSubject(index) {
  if (index < 0 || index >= state.subjects.length) return;
  state.subject = index;
  $("subject-select").value = index;
  setStatus("loading ...");
  try {
    const [image, marks] = await Promise.all([request(`api/subjects/${index}/image`),
      request(`api/subjects/${index}/landmarks`)]);
    const payload = await marks.json();
    state.landmarks = Object.fromEntries(Object.entries(payload.landmarks).filter(([, p]) => p));
    resetSuggestion();
    await showImage(await image.blob());
    state.current = firstMissing();
    setStatus(`${payload.subject_id}: ${placedCount()} of 8 landmarks in landmarks.csv`);
  } catch (error) {
    setStatus(error.message, true);
  }
  update();
}

$("subject-select").addEventListener("change", () => openSubject(Number($("subject-select").value)));
$("previous-subject").addEventListener("click", () => openSubject(state.subject - 1));
$("next-subject").addEventListener("click", () => openSubject(state.subject + 1));
$("save-button").addEventListener("click", async () => {
  const index = state.subject;
  try {
    const response = await request(`api/subjects/${index}/landmarks`, {
      method: "PUT", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ landmarks: state.landmarks }) });
    const saved = await response.json();
    resetSuggestion();
    await loadSubjects();
    $("subject-select").value = index;
    setStatus(`saved ${saved.saved} to ${saved.file} (${saved.complete} of ${state.subjects.length} subjects complete)`);
  } catch (error) {
    setStatus(error.message, true);
  }
});

// ---------- modes ----------
function setMode(mode) {
  state.mode = mode;
  state.landmarks = {};
  state.width = 0;
  state.file = null;
  state.subject = null;
  resetSuggestion();
  $("radiograph").removeAttribute("src");
  $("screening-controls").hidden = $("screen-button").hidden = mode !== "screening";
  $("annotation-controls").hidden = $("save-button").hidden = mode !== "annotation";
  document.querySelectorAll("#modes button").forEach((b) => b.classList.toggle("active", b.dataset.mode === mode));
  clearResult();
  update();
  if (mode === "annotation") loadSubjects().then(() => openSubject(0)).catch((e) => setStatus(e.message, true));
}

(async function start() {
  state.info = await (await request("api/info")).json();
  $("disclaimer").textContent = state.info.disclaimer + (state.info.model && state.info.model.synthetic_training_data
    ? " This model was trained on synthetic phantoms: no clinical validity." : "");
  // a model trained with age and sex (+clinical) asks for them; any model accepts them
  $("covariates").hidden = !(state.info.model && state.info.model.covariates.length);
  $("suggest-button").hidden = !state.info.suggest;
  const modes = ["screening", "annotation"].filter((m) => state.info[m]);
  if (modes.length > 1) {
    for (const mode of modes) {
      const button = Object.assign(document.createElement("button"), { type: "button", textContent: mode });
      button.dataset.mode = mode;
      button.addEventListener("click", () => setMode(mode));
      $("modes").append(button);
    }
  }
  setMode(modes[0]);
})().catch((error) => setStatus(error.message, true));
