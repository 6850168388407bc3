// The page of `lowvram serve`: plain JavaScript over the JSON API and its event stream (see page_api.py
// for why there is no framework). Every failure is shown as the API's one sentence; a lost connection
// says the server is unreachable.
"use strict";

const PLAN_DEBOUNCE_MS = 250;   // re-plan this long after the last change of the form
const PLAN_TIMEOUT_MS = 15000;  // a plan takes well under a second; longer means the server is stuck
const API_TIMEOUT_MS = 30000;   // other JSON calls (submitting a job decodes its images)
const SLOW_PLAN_MS = 800;       // after this long, say why a plan takes a while (a new size is simulated once)
const EXACT_POLL_MS = 1500;     // while the readout is estimated, ask again this often until the exact plan is in
const PING_MS = 5000;           // how often the page checks the server is there (and its queue)
const UNREACHABLE = "The server is unreachable: check that lowvram serve is still running, then reload the page.";

const $ = (id) => document.getElementById(id);
const ui = {models: [], loras: [], machine: null, job: null, events: null, planSeq: 0, planTimer: null,
            gallery: [], catalogue: [], initDataUrl: null, maskDirty: false, lastPlan: null,
            allCatalogue: [], pulls: {}, pullNotes: {}, controlnets: [], controlDataUrl: null};

// -- talking to the server ----------------------------------------------------------------------------
class ApiError extends Error {}

async function api(path, opts = {}, timeoutMs = API_TIMEOUT_MS) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  let r;
  try {
    r = await fetch(path, {...opts, signal: ctl.signal});
  } catch (e) {
    setReachable(false);
    throw new ApiError(UNREACHABLE);
  } finally {
    clearTimeout(timer);
  }
  setReachable(true);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const sentence = body && typeof body.detail === "string" ? body.detail : `The server answered ${r.status} ${r.statusText}.`;
    throw new ApiError(sentence);
  }
  return body;
}

function postJson(path, body) {
  return api(path, {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
}

function showError(sentence) {
  const b = $("banner");
  b.textContent = sentence;
  b.hidden = false;
}

function clearError() { $("banner").hidden = true; }

function setReachable(ok) {
  const el = $("server-state");
  el.textContent = ok ? "" : "server unreachable";
  el.classList.toggle("bad", !ok);
  if (!ok) showError(UNREACHABLE);
  else if ($("banner").textContent === UNREACHABLE) clearError();
}

// -- formatting -----------------------------------------------------------------------------------------
function gib(bytes) {
  if (bytes == null) return "?";
  const g = bytes / 2 ** 30;
  return g >= 10 ? `${g.toFixed(0)} GiB` : g >= 1 ? `${g.toFixed(1)} GiB` : `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}
function mib(bytes) {  // a download's sizes: a tenth of a MiB still moves the numbers
  return bytes >= 2 ** 30 ? gib(bytes) : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
function secs(s) {
  if (s == null || !isFinite(s)) return "?";
  if (s >= 90) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return s >= 10 ? `${s.toFixed(0)} s` : `${s.toFixed(2)} s`;
}
function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "style") e.style.cssText = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

// -- the form -------------------------------------------------------------------------------------------
function quality() { return document.querySelector("input[name=quality]:checked").value; }

function chosenLoras() {
  return [...document.querySelectorAll("#loras .lora")].map((row) => ({
    name: row.dataset.name, weight: parseFloat(row.querySelector("input").value || "1")}));
}

function currentModel() {
  const name = $("model").value;
  return ui.models.find((m) => m.name === name) || ui.catalogue.find((m) => m.name === name);
}

function planOnly() { return ui.catalogue.some((m) => m.name === $("model").value && !m.runnable); }

function notInstalledSentence(name) {
  return `${name} is not installed on this server: pull it from the Models tab (or run \`lowvram pull ${name} ` +
    "--quality balanced` on the server's machine, then restart lowvram serve).";
}

function updateGenerateButton() {
  const only = planOnly();
  $("generate").textContent = only ? "Plan only: not installed" : "Generate";
  $("generate").disabled = only || ui.job != null;
}

function intOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function applyModelDefaults() {
  const m = currentModel();
  if (!m) return;
  if (m.width) { $("width").value = m.width; $("height").value = m.height; }
  if (m.steps) $("steps").value = m.steps;
}

function addLora(name, weight = 0.8) {
  if (!name || chosenLoras().some((l) => l.name === name)) return;
  const row = el("div", {class: "lora", "data-name": name},
    el("span", {class: "lora-name"}, name),
    el("input", {type: "number", step: "0.05", min: "-4", max: "4", value: String(weight), "aria-label": `${name} weight`,
                 oninput: schedulePlan}),
    el("button", {type: "button", class: "small", onclick: () => { row.remove(); loraCount(); schedulePlan(); }}, "✕"));
  $("loras").append(row);
  loraCount();
  schedulePlan();
}

function loraCount() {
  const n = chosenLoras().length;
  $("lora-count").textContent = n ? `(${n})` : "";
}

// -- the plan readout -----------------------------------------------------------------------------------
function schedulePlan() {
  clearTimeout(ui.planTimer);
  ui.planTimer = setTimeout(refreshPlan, PLAN_DEBOUNCE_MS);
}

async function refreshPlan() {
  const model = $("model").value;
  if (!model) return;
  const q = new URLSearchParams({model, quality: quality(), batch: String(intOrNull("batch") || 1)});
  for (const k of ["width", "height", "steps", "guidance"]) {
    const v = intOrNull(k);
    if (v != null && !Number.isNaN(v)) q.set(k, String(v));
  }
  const loras = chosenLoras().map((l) => l.name);
  if (loras.length) q.set("loras", loras.join(","));
  if (ui.initDataUrl) q.set("img2img", "true");
  if ($("cn-model").value) q.set("controlnet", $("cn-model").value);
  const seq = ++ui.planSeq;
  const box = $("plan-body");
  box.classList.add("stale");
  const slow = setTimeout(() => {
    $("plan-status").textContent = "Planning… a size not planned before is simulated once (a few seconds), then cached.";
    $("plan-status").hidden = false;
  }, SLOW_PLAN_MS);
  try {
    const r = await api(`/lowvram/v1/readout?${q}`, {}, PLAN_TIMEOUT_MS);
    if (seq !== ui.planSeq) return;  // a newer request is on its way
    ui.lastPlan = r.plan;
    renderPlan(r.plan, r.alternatives, r);
    if (r.estimated && r.exact === "pending") {  // the exact plan is being simulated: replace this one when it is in
      ui.planTimer = setTimeout(() => { if (seq === ui.planSeq) refreshPlan(); }, EXACT_POLL_MS);
    }
  } catch (e) {
    if (seq !== ui.planSeq) return;
    box.replaceChildren(el("div", {class: "verdict bad"}, "No plan"), el("p", {class: "problem"}, e.message));
  } finally {
    clearTimeout(slow);
    if (seq === ui.planSeq) { box.classList.remove("stale"); $("plan-status").hidden = true; }
  }
}

function meter(label, used, total) {
  const pct = total ? Math.min(100, (100 * used) / total) : 0;
  const over = total && used > total;
  return el("div", {class: "meter"},
    el("div", {class: "meter-label"}, el("span", {}, label), el("span", {}, `${gib(used)} of ${gib(total)}`)),
    el("div", {class: "meter-track"}, el("div", {class: `meter-fill${over ? " over" : ""}`, style: `width:${pct}%`})));
}

function placementBar(c) {
  // A bar split the way the component's weights live: resident units / streamed units / cpu.
  const bar = el("div", {class: "bar"});
  const total = c.total_units || 1;
  if (c.placement === "cpu") {
    bar.append(el("div", {class: "seg cpu", style: "width:100%"}));
  } else if (c.placement === "streamed") {
    const res = (100 * c.resident_units) / total;
    bar.append(el("div", {class: "seg resident", style: `width:${res}%`}),
               el("div", {class: `seg streamed${c.source === "disk" ? " disk" : ""}`, style: `width:${100 - res}%`}));
  } else {
    bar.append(el("div", {class: "seg resident", style: "width:100%"}));
  }
  let where = c.placement;
  if (c.placement === "streamed") where = `streamed, ${c.resident_units}/${c.total_units} units resident`;
  if (c.source === "disk" && c.placement !== "resident") where += ", from disk";
  else if (c.source === "disk") where += " (loaded from disk)";
  return el("div", {class: "comp"},
    el("div", {class: "comp-head"}, el("span", {class: "comp-name"}, c.name),
       el("span", {class: "muted"}, `${where} · `, el("b", {class: `prec ${c.precision}`}, c.precision))),
    bar);
}

function renderPlan(p, alternatives, readout = {}) {
  const box = $("plan-body");
  $("machine").textContent = `${p.machine.name}: ${gib(p.machine.vram_bytes)} VRAM, ${gib(p.machine.ram_bytes)} RAM`;
  const w = p.workload;
  const kids = [];
  kids.push(el("div", {class: "readout-head"},
    el("div", {class: `verdict ${p.fits ? "good" : "bad"}`}, p.fits ? "Fits" : "Does not fit"),
    el("div", {class: "muted"}, `${p.model} · ${w.width}×${w.height} · batch ${w.batch} · ${w.steps} steps · ${p.policy} on ${p.machine.name}`)));
  if (p.estimated) {
    const text = readout.exact === "failed" ? `Estimated from nearby sizes; the exact plan failed: ${readout.exact_error}`
                                            : "Estimated from nearby sizes; exact in a moment.";
    kids.push(el("p", {class: "muted estimate", id: "plan-estimate", title: p.estimate_note}, text));
  }
  if (!p.fits) {
    const why = [];
    if (p.lossy_reason) why.push(p.lossy_reason);
    const sf = p.smallest_fitting || {};
    if (sf.vram_bytes) why.push(`The smallest machine that fits has ${gib(sf.vram_bytes)} VRAM with ${gib(sf.ram_bytes)} RAM.`);
    if (!why.length) why.push(`It needs ${gib(p.peak_vram_bytes)} VRAM and ${gib(p.peak_ram_bytes)} RAM.`);
    kids.push(el("p", {class: "problem"}, why.join(" ")));
  } else if (p.lossy_reason) {
    kids.push(el("p", {class: "muted"}, p.lossy_reason));
  }
  kids.push(el("div", {class: "figures"},
    el("div", {class: "figure"}, el("b", {id: "plan-sstep"}, secs(p.seconds_per_step)), el("span", {}, "per step")),
    el("div", {class: "figure"}, el("b", {id: "plan-simage"}, secs(p.seconds_per_image)), el("span", {}, "per image")),
    el("div", {class: "figure"}, el("b", {}, p.attention + (p.vae_tile ? ` · tiles ${p.vae_tile}` : "")),
       el("span", {}, "attention · VAE"))));
  kids.push(meter("peak VRAM", p.peak_vram_bytes, p.machine.vram_bytes));
  kids.push(meter("peak RAM", p.peak_ram_bytes, p.machine.ram_bytes));
  kids.push(el("div", {class: "comps"}, ...p.components.map(placementBar)));
  kids.push(el("div", {class: "legend muted"},
    el("i", {class: "sw resident"}), "resident ", el("i", {class: "sw streamed"}), "streamed from RAM ",
    el("i", {class: "sw streamed disk"}), "streamed from disk ", el("i", {class: "sw cpu"}), "on the CPU"));
  if (alternatives && alternatives.length) {
    kids.push(el("div", {class: "alts"}, el("div", {class: "alts-title"}, "Faster options"),
      ...alternatives.map((a) => el("div", {class: "alt"}, el("span", {}, a.line),
        el("button", {type: "button", class: "small", onclick: () => setQuality(a.policy)}, `use ${a.policy}`)))));
  }
  kids.push(el("details", {class: "decisions"}, el("summary", {}, "Why this plan"),
    el("ul", {}, ...p.decisions.map((d) => el("li", {}, d)))));
  box.replaceChildren(...kids);
}

function setQuality(q) {
  document.querySelector(`input[name=quality][value=${q}]`).checked = true;
  schedulePlan();
}

// -- img2img and the mask -------------------------------------------------------------------------------
function setInitImage(dataUrl) {
  ui.initDataUrl = dataUrl;
  const img = $("init-img");
  $("init-stage").hidden = $("init-tools").hidden = !dataUrl;
  $("init-state").textContent = dataUrl ? "(image set)" : "";
  if (!dataUrl) { img.removeAttribute("src"); schedulePlan(); return; }
  $("init-box").open = true;
  img.onload = () => {
    const c = $("mask");
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    ui.maskDirty = false;
  };
  img.src = dataUrl;
  schedulePlan();
}

function setupMask() {
  const c = $("mask");
  let drawing = false;
  const at = (ev) => {
    const r = c.getBoundingClientRect();
    return [(ev.clientX - r.left) * (c.width / r.width), (ev.clientY - r.top) * (c.height / r.height)];
  };
  const paint = (ev) => {
    if (!drawing) return;
    const ctx = c.getContext("2d");
    const [x, y] = at(ev);
    const r = Number($("brush").value) * (c.width / c.getBoundingClientRect().width) / 2;
    ctx.fillStyle = "#fff";
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fill();
    ui.maskDirty = true;
  };
  c.addEventListener("pointerdown", (ev) => { drawing = true; c.setPointerCapture(ev.pointerId); paint(ev); });
  c.addEventListener("pointermove", paint);
  c.addEventListener("pointerup", () => { drawing = false; });
  $("mask-clear").addEventListener("click", () => {
    c.getContext("2d").clearRect(0, 0, c.width, c.height);
    ui.maskDirty = false;
  });
}

function maskDataUrl() {
  // White where painted, black elsewhere: the mask A1111's img2img reads.
  const c = $("mask");
  const out = document.createElement("canvas");
  out.width = c.width;
  out.height = c.height;
  const ctx = out.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, out.width, out.height);
  ctx.drawImage(c, 0, 0);
  return out.toDataURL("image/png");
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const fr = new FileReader();
    fr.onload = () => resolve(fr.result);
    fr.onerror = () => reject(new ApiError("The browser could not read that file."));
    fr.readAsDataURL(file);
  });
}

// -- the ControlNet ------------------------------------------------------------------------------------
// Sent as A1111's ControlNet extension takes a unit (server/controlnet_api.py): one unit, no preprocessor.
function fillControlNets() {
  const pick = $("cn-model");
  const was = pick.value;
  const fit = ui.controlnets.filter((c) => c.models.includes($("model").value));
  pick.replaceChildren(el("option", {value: ""}, fit.length ? "none" : "none made for this model"),
    ...fit.map((c) => el("option", {value: c.name}, c.name)));
  pick.value = fit.some((c) => c.name === was) ? was : "";
  $("cn-box").hidden = !ui.controlnets.length;
  controlState();
}

function controlState() {
  const name = $("cn-model").value;
  $("cn-state").textContent = name ? `(${name}${ui.controlDataUrl ? "" : ", no image yet"})` : "";
}

function setControlImage(dataUrl) {
  ui.controlDataUrl = dataUrl;
  const img = $("cn-img");
  img.hidden = !dataUrl;
  if (dataUrl) img.src = dataUrl; else img.removeAttribute("src");
  controlState();
}

function controlUnit() {
  return {image: ui.controlDataUrl || "", model: $("cn-model").value, module: "none",
          weight: Number($("cn-weight").value || 1)};
}

function controlFromInfotext(text) {
  // "Module: none, Model: NAME [hash], Weight: 1.0, ..." (A1111's `ControlNet 0` field) back into the picker.
  const pick = $("cn-model");
  const fields = Object.fromEntries((text || "").split(", ").map((kv) => kv.split(": ")));
  const model = (fields.Model || "").replace(/ \[[0-9a-f]+\]$/, "");
  pick.value = [...pick.options].some((o) => o.value === model && model) ? model : "";
  if (pick.value && fields.Weight) $("cn-weight").value = fields.Weight;
  if (pick.value) $("cn-box").open = true;
  controlState();
}

// -- running a job --------------------------------------------------------------------------------------
function requestBody() {
  const loraTags = chosenLoras().map((l) => ` <lora:${l.name}:${l.weight}>`).join("");
  const body = {
    prompt: $("prompt").value + loraTags, negative_prompt: $("negative").value,
    seed: $("seed-random").checked ? -1 : Number($("seed").value || -1),
    batch_size: Number($("batch").value || 1), quality: quality(),
    override_settings: {sd_model_checkpoint: $("model").value},
  };
  for (const [k, id] of [["width", "width"], ["height", "height"], ["steps", "steps"], ["cfg_scale", "guidance"]]) {
    const v = intOrNull(id);
    if (v != null && !Number.isNaN(v)) body[k] = v;
  }
  if ($("sampler").value) body.sampler_name = $("sampler").value;
  if (ui.initDataUrl) {
    body.init_images = [ui.initDataUrl];
    body.denoising_strength = Number($("strength").value);
    if (ui.maskDirty) body.mask = maskDataUrl();
  }
  if ($("cn-model").value) body.alwayson_scripts = {controlnet: {args: [controlUnit()]}};
  return body;
}

async function generate(ev) {
  ev.preventDefault();
  if (ui.job) return;
  clearError();
  if (planOnly()) { showError(notInstalledSentence($("model").value)); return; }
  const body = requestBody();
  const route = body.init_images ? "/lowvram/v1/img2img" : "/lowvram/v1/txt2img";
  $("generate").disabled = true;
  let job;
  try {
    job = await postJson(route, body);
  } catch (e) {
    $("generate").disabled = false;
    showError(e.message);
    return;
  }
  startRun(job);
}

function startRun(job) {
  ui.job = {id: job.id, started: performance.now(), firstStepAt: null, firstStep: 0, plan: ui.lastPlan};
  $("run").hidden = false;
  $("run-preview").hidden = true;
  $("run-result").replaceChildren();
  $("run-bar").style.width = "0%";
  showProgress(job);
  const es = new EventSource(`/lowvram/v1/jobs/${job.id}/events`);
  ui.events = es;
  es.addEventListener("progress", (e) => showProgress(JSON.parse(e.data)));
  for (const end of ["done", "interrupted", "failed"]) {
    es.addEventListener(end, (e) => { es.close(); finishRun(JSON.parse(e.data)); });
  }
  es.onerror = () => {
    if (!ui.job || ui.events !== es) return;
    es.close();
    setReachable(false);
    endRun();
    $("run-state").textContent = "Connection lost";
    $("run-meta").textContent = "";
  };
}

function showProgress(s) {
  const j = ui.job;
  if (!j) return;
  const running = s.state === "running";
  $("stop").disabled = !running;
  if (running && s.step > 0 && j.firstStepAt == null) { j.firstStepAt = performance.now(); j.firstStep = s.step; }
  let meta = "";
  if (s.state === "queued") {
    $("run-state").textContent = s.queue_position > 1 ? `Queued: ${s.queue_position - 1} ahead` : "Queued: next";
  } else if (running) {
    $("run-state").textContent = s.step ? `Step ${s.step} / ${s.steps}` : (s.stage || "Loading the model");
    const per = j.firstStepAt != null && s.step > j.firstStep
      ? (performance.now() - j.firstStepAt) / 1000 / (s.step - j.firstStep) : null;
    meta = [per != null ? `${per.toFixed(2)} s/it` : null, s.step ? `ETA ${secs(s.eta_seconds)}` : null,
            s.stage || null].filter(Boolean).join(" · ");
  }
  $("run-meta").textContent = meta;
  $("run-bar").style.width = `${Math.round(100 * (s.progress || 0))}%`;
  if (s.preview) {
    const img = $("run-preview");
    img.src = `data:image/png;base64,${s.preview}`;
    img.title = `preview at step ${s.preview_step}`;
    img.hidden = false;
  }
}

function endRun() {
  ui.job = null;
  ui.events = null;
  updateGenerateButton();
  $("stop").disabled = true;
}

async function finishRun(s) {
  const plan = ui.job && ui.job.plan;
  endRun();
  $("run-bar").style.width = "100%";
  $("run-meta").textContent = "";
  if (s.state === "failed") {
    $("run-state").textContent = "Failed";
    showError(s.error || "The job failed.");
    return;
  }
  if (s.state === "interrupted") {
    $("run-state").textContent = `Stopped at step ${s.step} / ${s.steps}`;
    return;
  }
  $("run-state").textContent = "Done";
  $("run-preview").hidden = true;
  const rows = [
    ["time", secs(s.run_seconds), secs(s.predicted_seconds)],
    ["peak VRAM", s.device === "cpu" ? "— (ran on the CPU)" : gib(s.peak_vram_bytes), gib(s.predicted_peak_vram_bytes)],
    ["peak RAM", gib(s.peak_ram_bytes), gib(s.predicted_peak_ram_bytes)],
  ];
  const table = el("table", {class: "table compare"},
    el("tr", {}, el("th", {}, ""), el("th", {}, "measured"), el("th", {}, `predicted${plan ? ` (${plan.machine.name})` : ""}`)),
    ...rows.map(([k, a, b]) => el("tr", {}, el("td", {}, k), el("td", {}, a), el("td", {}, b))));
  const loadNote = s.load_seconds ? el("p", {class: "muted"}, `Loading the weights took ${secs(s.load_seconds)} more.`) : null;
  const images = await loadGallery();
  const mine = images.filter((g) => (s.saved_paths || []).some((p) => p.replaceAll("\\", "/").endsWith(g.name)));
  const thumbs = el("div", {class: "result-images"},
    ...mine.map((g) => el("img", {src: outputUrl(g.name), alt: g.parameters.Prompt || "result", title: "open in the gallery",
                                  onclick: () => { showTab("gallery"); showDetail(g); }})));
  $("run-result").replaceChildren(thumbs, table, loadNote);
}

async function stop() {
  $("stop").disabled = true;
  try { await postJson("/sdapi/v1/interrupt", {}); } catch (e) { showError(e.message); }
}

// -- the gallery ----------------------------------------------------------------------------------------
function outputUrl(name, download = false) {
  return `/lowvram/v1/outputs/${name.split("/").map(encodeURIComponent).join("/")}${download ? "?download=true" : ""}`;
}

async function loadGallery() {
  try {
    ui.gallery = await api("/lowvram/v1/gallery");
  } catch (e) {
    showError(e.message);
    return ui.gallery;
  }
  const grid = $("gallery");
  if (!ui.gallery.length) {
    grid.replaceChildren(el("p", {class: "muted"}, "Nothing yet: what you generate is saved here (and in the outputs folder)."));
  } else {
    grid.replaceChildren(...ui.gallery.map((g) => el("figure", {class: "thumb", "data-name": g.name, onclick: () => showDetail(g)},
      el("img", {src: outputUrl(g.name), alt: g.parameters.Prompt || g.name, loading: "lazy"}),
      el("figcaption", {}, g.parameters.Prompt || "(no prompt)"))));
  }
  return ui.gallery;
}

const SHOWN_FIELDS = ["Prompt", "Negative prompt", "Steps", "Sampler", "CFG scale", "Seed", "Size", "Model", "Denoising strength"];

function showDetail(g) {
  const d = $("detail");
  const p = g.parameters || {};
  const rows = SHOWN_FIELDS.filter((k) => p[k] !== undefined && p[k] !== "")
    .map((k) => el("tr", {}, el("th", {}, k), el("td", {}, String(p[k]))));
  d.replaceChildren(
    el("img", {src: outputUrl(g.name), alt: p.Prompt || g.name}),
    el("div", {class: "detail-actions"},
      el("button", {type: "button", id: "send-to-prompt", onclick: () => sendToPrompt(p)}, "Send to prompt"),
      el("button", {type: "button", id: "use-as-init", onclick: () => useAsInit(g)}, "Use as init image"),
      el("a", {class: "button", href: outputUrl(g.name, true), download: g.name.split("/").pop()}, "Download")),
    el("table", {class: "table params", id: "detail-params"}, ...rows),
    el("details", {}, el("summary", {}, "Infotext"), el("pre", {class: "infotext"}, g.infotext || "")));
  d.hidden = false;
  for (const t of document.querySelectorAll(".thumb")) t.classList.toggle("selected", t.dataset.name === g.name);
}

function sendToPrompt(p) {
  $("prompt").value = (p.Prompt || "").replace(/\s*<lora:[^>]*>/g, "");
  $("negative").value = p["Negative prompt"] || "";
  if (p["Size-1"]) { $("width").value = p["Size-1"]; $("height").value = p["Size-2"]; }
  if (p.Steps) $("steps").value = p.Steps;
  if (p["CFG scale"] !== undefined) $("guidance").value = p["CFG scale"];
  if (p.Seed !== undefined) { $("seed").value = p.Seed; $("seed-random").checked = false; }
  if (p.Sampler && [...$("sampler").options].some((o) => o.value === p.Sampler)) $("sampler").value = p.Sampler;
  if (p.Model && ui.models.some((m) => m.name === p.Model)) $("model").value = p.Model;
  fillControlNets();
  controlFromInfotext(p["ControlNet 0"]);
  showTab("generate");
  schedulePlan();
}

async function useAsInit(g) {
  try {
    const r = await fetch(outputUrl(g.name));
    if (!r.ok) throw new ApiError("That image is no longer in the outputs folder.");
    const blob = await r.blob();
    setInitImage(await readFile(blob));
    showTab("generate");
  } catch (e) {
    showError(e instanceof ApiError ? e.message : UNREACHABLE);
  }
}

// -- models ---------------------------------------------------------------------------------------------
function renderModels() {
  const t = $("models-table");
  t.replaceChildren(el("tr", {}, ...["model", "architecture", "source", "default size", "fits", "s/image", "peak VRAM", "peak RAM"]
    .map((h) => el("th", {}, h))),
    ...ui.models.map((m) => el("tr", {},
      el("td", {}, m.name), el("td", {}, m.architecture || "?"), el("td", {}, m.source),
      el("td", {}, m.width ? `${m.width}×${m.height}, ${m.steps} steps` : ""),
      el("td", {class: m.fits ? "good" : "bad"}, m.problem ? m.problem : m.fits ? "yes" : "no"),
      el("td", {}, secs(m.seconds_per_image)), el("td", {}, gib(m.peak_vram_bytes)), el("td", {}, gib(m.peak_ram_bytes)))));
  const c = $("catalogue-table");
  c.replaceChildren(el("tr", {}, ...["name", "model", "default size", "installed here", "", "pull"].map((h) => el("th", {}, h))),
    ...ui.allCatalogue.map((m) => el("tr", {"data-model": m.name},
      el("td", {}, m.name), el("td", {}, m.title), el("td", {}, `${m.width}×${m.height}, ${m.steps} steps`),
      el("td", {class: "installed"}, m.installed.length ? `installed (${m.installed.join(", ")})` : "no"),
      el("td", {}, el("button", {type: "button", class: "small", onclick: () => planFor(m.name)}, "plan it")),
      el("td", {class: "pull-cell"}))));
  for (const m of ui.allCatalogue) {
    const tracked = ui.pulls[m.name];
    if (tracked) showPull(m.name, tracked.status);
    else if (m.pulling) followPull(m.pulling);
    else showPullChoice(m, ...(ui.pullNotes[m.name] || []));
  }
}

function pullCell(name) {
  return document.querySelector(`#catalogue-table tr[data-model="${CSS.escape(name)}"] .pull-cell`);
}

// The Pull button with what it fetches for this machine (the server plans it as
// `lowvram pull NAME --quality balanced` does: a GGUF quant only when the full weights do not fit well).
function showPullChoice(m, note = null, bad = false) {
  if (note) ui.pullNotes[m.name] = [note, bad];  // kept when the table is drawn again
  else delete ui.pullNotes[m.name];
  const cell = pullCell(m.name);
  if (!cell || !m.pull) return;  // a server that does not pull (the Ray cluster's) says nothing here
  const p = m.pull;
  const what = p.problem ? null : el("span", {class: "pull-what", title: p.reason || ""},
    p.weights === "full weights" ? "full weights" : `${p.weights} (chosen for this machine)`);
  const button = p.problem || (m.installed.length && !note) ? null
    : el("button", {type: "button", class: "small pull-start", onclick: () => startPull(m.name)}, "Pull");
  cell.replaceChildren(...[button, what,
    p.problem ? el("span", {class: "bad"}, p.problem) : null,
    note ? el("div", {class: `pull-note${bad ? " bad" : ""}`}, note) : null,
    p.command && !m.installed.length ? el("code", {class: "pull"}, p.command) : null].filter(Boolean));
}

async function startPull(name) {
  try {
    followPull(await postJson("/lowvram/v1/pulls", {model: name}));
  } catch (e) {
    const m = ui.allCatalogue.find((c) => c.name === name);
    if (m) showPullChoice(m, e instanceof ApiError ? e.message : UNREACHABLE, true);
  }
}

function followPull(status) {
  const name = status.model;
  if (ui.pulls[name] && ui.pulls[name].id === status.id) return;
  if (ui.pulls[name]) ui.pulls[name].events.close();
  const es = new EventSource(`/lowvram/v1/pulls/${status.id}/events`);
  ui.pulls[name] = {id: status.id, status, events: es};
  showPull(name, status);
  es.addEventListener("progress", (e) => showPull(name, JSON.parse(e.data)));
  for (const end of ["done", "failed", "cancelled"]) {
    es.addEventListener(end, (e) => { es.close(); endPull(name, JSON.parse(e.data)); });
  }
  es.onerror = () => {
    if (!ui.pulls[name] || ui.pulls[name].events !== es) return;
    es.close();
    delete ui.pulls[name];
    setReachable(false);
    const m = ui.allCatalogue.find((c) => c.name === name);
    if (m) showPullChoice(m, "Connection lost: reload the page to see how the pull went.", true);
  };
}

// A pull's bar: bytes of the total still to download, speed, ETA, files, Cancel.
function showPull(name, s) {
  const tracked = ui.pulls[name];
  if (tracked) tracked.status = s;
  delete ui.pullNotes[name];
  const cell = pullCell(name);
  if (!cell) return;
  const frac = s.bytes_total ? s.bytes_done / s.bytes_total : 0;
  const label = s.state === "queued" ? `Pulling ${s.weights}: checking the hub…`
    : `Pulling ${s.weights}: ${mib(s.bytes_done)} / ${mib(s.bytes_total)}`;
  const meta = s.state === "downloading" ? [s.bytes_per_second ? `${(s.bytes_per_second / 1e6).toFixed(1)} MB/s` : null,
    s.eta_seconds != null ? `ETA ${secs(s.eta_seconds)}` : null, `${s.files_done} / ${s.files_total} files`]
    .filter(Boolean).join(" · ") : "";
  const bar = el("div", {class: "pull-bar"});
  bar.style.width = `${Math.round(100 * frac)}%`;
  cell.replaceChildren(el("div", {class: "pull-state"}, label), el("div", {class: "progress"}, bar),
    el("div", {class: "muted pull-meta"}, meta),
    el("button", {type: "button", class: "small pull-cancel", onclick: () => cancelPull(name)}, "Cancel"));
}

async function cancelPull(name) {
  const tracked = ui.pulls[name];
  if (!tracked) return;
  try { await postJson(`/lowvram/v1/pulls/${tracked.id}/cancel`, {}); }
  catch (e) { showError(e instanceof ApiError ? e.message : UNREACHABLE); }
}

async function endPull(name, s) {
  delete ui.pulls[name];
  if (s.state === "done") {
    try { await loadModels(); }  // the pulled model joins the picker and the tables, no restart needed
    catch (e) { showError(e instanceof ApiError ? e.message : UNREACHABLE); }
    const cell = pullCell(name);
    if (cell) cell.replaceChildren(el("span", {class: "good pull-done"}, `Pulled ${s.weights}: installed.`));
    return;
  }
  const m = ui.allCatalogue.find((c) => c.name === name);
  if (!m) return;
  if (s.state === "failed") showPullChoice(m, s.error, true);
  else showPullChoice(m, `Cancelled after ${mib(s.bytes_done)}; the finished files are kept: Pull again fetches the rest.`);
}

function planFor(name) {
  $("model").value = name;
  applyModelDefaults();
  updateGenerateButton();
  showTab("generate");
  schedulePlan();
}

// -- start-up -------------------------------------------------------------------------------------------
function fillModelPicker(models, catalogue) {
  ui.models = models;
  ui.allCatalogue = catalogue;
  ui.catalogue = catalogue.filter((c) => !models.some((m) => m.name === c.name)).map((c) => ({...c, runnable: false}));
  $("model").replaceChildren(
    el("optgroup", {label: "On this server"}, ...models.map((m) => el("option", {value: m.name},
      `${m.name}${m.architecture ? ` (${m.architecture})` : ""}${m.fits ? "" : " — does not fit"}`))),
    el("optgroup", {label: "Catalogue (plan only until pulled)"}, ...ui.catalogue.map((c) => el("option", {value: c.name},
      `${c.name} — ${c.title}`))));
}

// After a pull: the server lists the new model; the picker keeps what was chosen.
async function loadModels() {
  const [models, catalogue, controlnets] = await Promise.all([api("/lowvram/v1/models"), api("/lowvram/v1/catalogue"),
    api("/lowvram/v1/controlnets")]);
  const chosen = $("model").value;
  fillModelPicker(models, catalogue);
  $("model").value = chosen;
  ui.controlnets = controlnets;  // the new model may take ControlNets the server lists
  fillControlNets();
  renderModels();
  updateGenerateButton();
}

function showTab(name) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === name);
  for (const p of document.querySelectorAll(".tabpane")) p.hidden = p.id !== `tab-${name}`;
  if (name === "gallery") loadGallery();
}

async function ping() {
  try {
    const p = await api("/sdapi/v1/progress?skip_current_image=true", {}, PING_MS);
    const n = p.state.job_count;
    $("server-state").textContent = n ? `${n} job${n > 1 ? "s" : ""} in the queue` : "idle";
  } catch (e) { /* setReachable already said so */ }
}

async function init() {
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("form").addEventListener("submit", generate);
  $("stop").addEventListener("click", stop);
  $("model").addEventListener("change", () => {
    applyModelDefaults(); updateGenerateButton(); fillControlNets(); schedulePlan();
  });
  for (const id of ["width", "height", "batch", "steps", "guidance"]) $(id).addEventListener("input", schedulePlan);
  for (const r of document.querySelectorAll("input[name=quality]")) r.addEventListener("change", schedulePlan);
  $("seed-random").addEventListener("change", () => { $("seed").disabled = $("seed-random").checked; });
  $("seed").disabled = true;
  $("lora-add").addEventListener("click", () => addLora($("lora-pick").value));
  $("strength").addEventListener("input", () => { $("strength-out").textContent = $("strength").value; });
  $("init-file").addEventListener("change", async () => {
    const f = $("init-file").files[0];
    if (f) setInitImage(await readFile(f));
  });
  $("init-clear").addEventListener("click", () => { $("init-file").value = ""; setInitImage(null); });
  $("cn-model").addEventListener("change", () => { controlState(); schedulePlan(); });
  $("cn-file").addEventListener("change", async () => {
    const f = $("cn-file").files[0];
    if (f) setControlImage(await readFile(f));
  });
  $("cn-clear").addEventListener("click", () => { $("cn-file").value = ""; setControlImage(null); });
  setupMask();
  try {
    const [models, samplers, loras, catalogue, controlnets] = await Promise.all([
      api("/lowvram/v1/models"), api("/sdapi/v1/samplers"), api("/sdapi/v1/loras"), api("/lowvram/v1/catalogue"),
      api("/lowvram/v1/controlnets")]);
    ui.controlnets = controlnets;
    ui.loras = loras;
    fillModelPicker(models, catalogue);
    const current = models.find((m) => m.current);
    if (current) $("model").value = current.name;
    $("sampler").append(...samplers.map((s) => el("option", {value: s.name}, s.name)));
    $("lora-pick").replaceChildren(...loras.map((l) => el("option", {value: l.name}, l.name)));
    $("lora-box").hidden = !loras.length;
    if (!models.length) showError("The server offers no models: start lowvram serve with --model or --models-dir.");
    renderModels();
    fillControlNets();
    applyModelDefaults();
    updateGenerateButton();
    refreshPlan();
  } catch (e) {
    showError(e.message);
  }
  loadGallery();
  ping();
  setInterval(ping, PING_MS);
}

document.addEventListener("DOMContentLoaded", init);
