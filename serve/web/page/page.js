/* zeroseg serve's page: reads GET metadata, posts POST segment (multipart, labels as runs) and draws
   the answer. Plain JavaScript, no dependencies, nothing from another origin.

   The overlay canvas holds each pixel's class colour exactly (the answer's palette: the colours of
   the label PNGs `zeroseg segment` writes); CSS blends it over the image canvas. A refused request
   shows the API's one-line error; the page stays usable for the next try. */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const ui = {
    model: $("model"), form: $("form"), drop: $("drop"), file: $("file"), fileName: $("file-name"),
    limits: $("limits"), classes: $("classes"), thresh: $("thresh"), threshValue: $("thresh-value"),
    headRow: $("head-row"), head: $("head"), opacity: $("opacity"), status: $("status"),
    progress: $("progress"), message: $("message"), result: $("result"), stage: $("stage"),
    imageCanvas: $("image-canvas"), overlayCanvas: $("overlay-canvas"), hover: $("hover"),
    legend: $("legend"), timing: $("timing"),
  };
  const state = {
    meta: null, file: null, bitmap: null, xhr: null, seq: 0, ticker: null, phase: "", started: 0,
    finished: 0, // attempts that ended (an answer drawn, or an error shown): `data-finished`
    shown: null, // {width, height, ids, names} of the picture on screen
  };
  const HEAD_NAMES = { paper: "paper (the paper's head)", dense: "dense (per-patch naming)" };
  const BODY_SLACK = 4096; // multipart framing and the text fields, on top of the file
  const MAX_UPSCALE = 8; // a small image is shown at most 8x its size
  const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
  const LOST = "The connection to the server was lost before it answered (is zeroseg serve still " +
    "running?). Try again.";

  // ---- small helpers ------------------------------------------------------------------------
  function oneLine(text) {
    const line = String(text || "").split(/\r?\n/).map((s) => s.trim()).find((s) => s) || "";
    return line.length > 300 ? line.slice(0, 300) + "…" : line;
  }
  function formatBytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1024 / 1024).toFixed(1) + " MiB";
  }
  function formatMs(ms) {
    if (typeof ms !== "number" || !isFinite(ms)) return "?";
    return ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : Math.round(ms) + " ms";
  }
  function formatShare(share) {
    return share > 0 && share < 0.001 ? "<0.1 %" : (100 * share).toFixed(1) + " %";
  }
  function basename(path) {
    const parts = String(path || "").replace(/[\\/]+$/, "").split(/[\\/]/);
    return parts[parts.length - 1] || "";
  }
  function rgb(colour) {
    return "rgb(" + colour[0] + ", " + colour[1] + ", " + colour[2] + ")";
  }

  // ---- status line and progress ---------------------------------------------------------------
  function setStatus(text, kind) {
    stopTicker();
    ui.message.textContent = text;
    ui.status.dataset.state = kind;
    if (kind === "done" || kind === "error") ui.status.dataset.finished = String(++state.finished);
    ui.status.classList.toggle("error", kind === "error");
    ui.progress.hidden = true;
    ui.result.classList.toggle("stale", kind === "error");
  }
  function busy(phase, fraction) {
    state.phase = phase;
    ui.status.dataset.state = "busy";
    ui.status.classList.remove("error");
    ui.progress.hidden = false;
    if (typeof fraction === "number") ui.progress.value = fraction;
    else ui.progress.removeAttribute("value"); // indeterminate while the server works
    tick();
    if (!state.ticker) state.ticker = setInterval(tick, 100);
  }
  function tick() {
    const seconds = ((performance.now() - state.started) / 1000).toFixed(1);
    const percent = ui.progress.hasAttribute("value") ? " " + Math.round(100 * ui.progress.value) + " %" : "";
    ui.message.textContent = state.phase + "…" + percent + " (" + seconds + " s)";
  }
  function stopTicker() {
    if (state.ticker) clearInterval(state.ticker);
    state.ticker = null;
  }

  // ---- the model --------------------------------------------------------------------------
  async function loadMetadata() {
    let meta;
    try {
      const reply = await fetch("metadata", { cache: "no-store" });
      meta = await reply.json();
      if (!reply.ok) throw new Error(meta.error || "HTTP " + reply.status);
    } catch (err) {
      ui.model.textContent = "GET /metadata failed (" + oneLine(err.message) + "): reload the page " +
        "once zeroseg serve runs";
      return;
    }
    state.meta = meta;
    const model = meta.model || {};
    const source = model.engine || model.checkpoint || "";
    const what = model.engine ? "engine " : "model ";
    ui.model.textContent = what + basename(source) + " · " + meta.backend + " · short side " + meta.short_side;
    ui.model.title = source;
    ui.model.dataset.backend = meta.backend;
    if (typeof meta.default_bg_thresh === "number") setThreshold(meta.default_bg_thresh);
    const heads = Array.isArray(meta.heads) ? meta.heads : [];
    ui.head.replaceChildren(...heads.map((head) => new Option(HEAD_NAMES[head] || head, head)));
    ui.headRow.hidden = heads.length < 2;
    const limits = meta.limits || {};
    if (limits.max_pixels) {
      const pixels = limits.max_pixels >= 1e6 ? (limits.max_pixels / 1e6).toFixed(1) + " MP"
        : limits.max_pixels.toLocaleString("en") + " px";
      ui.limits.textContent = "up to " + pixels + ", " + formatBytes(limits.max_body_bytes) + ", " +
        limits.max_classes.toLocaleString("en") + " classes";
    }
  }
  function setThreshold(value) {
    ui.threshValue.value = String(value);
    ui.thresh.value = String(value);
  }

  // ---- choosing an image ------------------------------------------------------------------
  async function setFile(file) {
    if (!file) return;
    cancel();
    state.file = file;
    ui.fileName.textContent = (file.name || "pasted image") + " · " + formatBytes(file.size);
    let bitmap = null;
    try {
      bitmap = await createImageBitmap(file);
    } catch (err) {
      bitmap = null; // not an image this browser decodes: the server still judges it
    }
    if (state.file !== file) return; // a newer pick won
    if (state.bitmap) state.bitmap.close();
    state.bitmap = bitmap;
    if (ui.classes.value.trim()) {
      segment();
    } else {
      setStatus("Now type the class names, then Segment.", "idle");
      ui.classes.focus();
    }
  }
  function hasFiles(event) {
    return event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
  }

  // ---- one request ------------------------------------------------------------------------
  function cancel() {
    state.seq += 1; // an answer to an older request is dropped
    if (state.xhr) state.xhr.abort();
    state.xhr = null;
    stopTicker();
  }
  function segment() {
    if (!state.file) return setStatus("Choose an image first (or drop or paste one).", "error");
    if (ui.threshValue.validity.badInput) {
      return setStatus("The background threshold is not a number: type one in [0, 1].", "error");
    }
    const cap = state.meta && state.meta.limits ? state.meta.limits.max_body_bytes : 0;
    const size = state.file.size + ui.classes.value.length + BODY_SLACK;
    if (cap && size > cap) {
      return setStatus("The file is " + formatBytes(state.file.size) + ": over this server's " +
        formatBytes(cap) + " request cap (zeroseg serve --max-body-mb).", "error");
    }
    cancel();
    const seq = state.seq;
    const bitmap = state.bitmap;
    const body = new FormData();
    body.append("image", state.file, state.file.name || "image");
    body.append("labels", ui.classes.value);
    body.append("bg_thresh", ui.threshValue.value);
    if (!ui.headRow.hidden && ui.head.value) body.append("head", ui.head.value);
    body.append("format", "rle");
    const xhr = new XMLHttpRequest();
    state.xhr = xhr;
    state.started = performance.now();
    xhr.open("POST", "segment");
    xhr.upload.onprogress = (e) => {
      if (seq === state.seq && e.lengthComputable) busy("Uploading", e.loaded / e.total);
    };
    xhr.upload.onload = () => { if (seq === state.seq) busy("Segmenting"); };
    xhr.onload = () => {
      if (seq !== state.seq) return;
      state.xhr = null;
      answer(xhr.status, xhr.responseText, performance.now() - state.started, bitmap);
    };
    xhr.onerror = () => {
      if (seq !== state.seq) return;
      state.xhr = null;
      setStatus(LOST, "error");
    };
    busy("Uploading", 0);
    xhr.send(body);
  }
  function answer(status, text, roundTrip, bitmap) {
    let body = null;
    try {
      body = JSON.parse(text);
    } catch (err) {
      body = null; // Ray Serve's own errors are plain text
    }
    ui.status.dataset.http = String(status);
    if (status === 200 && body && body.labels) {
      try {
        return show(body, roundTrip, bitmap);
      } catch (err) {
        return setStatus("The answer could not be drawn: " + oneLine(err.message), "error");
      }
    }
    if (body && typeof body.error === "string") return setStatus(body.error, "error");
    if (status === 503) return setStatus("The server is busy (HTTP 503: its queue is full). Try again.", "error");
    if (status >= 500) {
      return setStatus("The server failed (HTTP " + status + (text ? ": " + oneLine(text) : "") +
        "); a replica may be restarting. Try again.", "error");
    }
    return setStatus("Unexpected answer: HTTP " + status + " " + oneLine(text), "error");
  }

  // ---- drawing the answer -----------------------------------------------------------------
  function decodeRuns(labels, width, height, classes) {
    if (!labels || labels.format !== "rle" || labels.values.length !== labels.lengths.length) {
      throw new Error("the answer's labels are not runs");
    }
    if (labels.shape[0] !== height || labels.shape[1] !== width) throw new Error("labels of the wrong shape");
    const ids = classes <= 65536 ? new Uint16Array(width * height) : new Int32Array(width * height);
    let at = 0;
    labels.values.forEach((value, i) => {
      const end = at + labels.lengths[i];
      if (value < 0 || value >= classes || end > ids.length) throw new Error("labels out of range");
      ids.fill(value, at, end);
      at = end;
    });
    if (at !== ids.length) throw new Error("the labels do not cover the image");
    return ids;
  }
  function paintLabels(ids, palette, width, height) {
    const canvas = ui.overlayCanvas;
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    const picture = ctx.createImageData(width, height);
    const colours = palette.map(([r, g, b]) => LITTLE_ENDIAN
      ? ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0
      : ((r << 24) | (g << 16) | (b << 8) | 255) >>> 0);
    const pixels = new Uint32Array(picture.data.buffer);
    for (let i = 0; i < ids.length; i += 1) pixels[i] = colours[ids[i]];
    ctx.putImageData(picture, 0, 0);
  }
  function paintImage(bitmap, width, height) {
    const canvas = ui.imageCanvas;
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    if (bitmap) ctx.drawImage(bitmap, 0, 0, width, height);
  }
  function show(body, roundTrip, bitmap) {
    const [width, height] = body.size;
    const names = body.class_names;
    if (!Array.isArray(body.palette) || body.palette.length < names.length) throw new Error("no palette");
    const ids = decodeRuns(body.labels, width, height, names.length);
    paintImage(bitmap, width, height);
    paintLabels(ids, body.palette, width, height);
    state.shown = { width, height, ids, names };
    ui.stage.hidden = false;
    layout();
    showLegend(body);
    ui.timing.textContent = "server " + formatMs(body.server_ms) + " (segmenting " + formatMs(body.segment_ms) +
      (body.batch_size > 1 ? ", in a batch of " + body.batch_size : "") + ") · round trip " +
      formatMs(roundTrip) + " · head " + body.head;
    ui.timing.dataset.serverMs = String(body.server_ms);
    const found = Object.keys(body.fractions).filter((name) => name !== names[0]).length;
    const note = bitmap ? "" : " (this browser cannot show the image itself: labels only)";
    setStatus("Found " + found + " of " + (names.length - 1) + " classes · " + width + "×" + height + " px" +
      note, "done");
  }
  function showLegend(body) {
    const index = new Map(body.class_names.map((name, i) => [name, i]));
    const rows = Object.entries(body.fractions).sort((a, b) => b[1] - a[1]).map(([name, share]) => {
      const row = document.createElement("li");
      row.dataset.class = name;
      row.dataset.fraction = String(share);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = rgb(body.palette[index.get(name)]);
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      label.title = name;
      const value = document.createElement("span");
      value.className = "share";
      value.textContent = formatShare(share);
      row.append(swatch, label, value);
      return row;
    });
    const absent = body.class_names.filter((name) => !(name in body.fractions));
    if (absent.length) {
      const row = document.createElement("li");
      row.className = "absent";
      const listed = absent.slice(0, 12).join(", ");
      row.textContent = "not found: " + listed + (absent.length > 12 ? " and " + (absent.length - 12) + " more" : "");
      rows.push(row);
    }
    ui.legend.replaceChildren(...rows);
  }
  function layout() {
    if (!state.shown) return;
    const { width, height } = state.shown;
    const room = ui.stage.parentElement.clientWidth;
    const tall = Math.max(240, window.innerHeight * 0.75);
    const scale = Math.min(room / width, tall / height, MAX_UPSCALE);
    ui.stage.style.width = Math.max(1, Math.floor(width * scale)) + "px";
    ui.stage.style.height = Math.max(1, Math.floor(height * scale)) + "px";
  }
  function describePixel(event) {
    const shown = state.shown;
    if (!shown) return;
    const box = ui.stage.getBoundingClientRect();
    const x = Math.min(shown.width - 1, Math.max(0, Math.floor((event.clientX - box.left) / box.width * shown.width)));
    const y = Math.min(shown.height - 1, Math.max(0, Math.floor((event.clientY - box.top) / box.height * shown.height)));
    ui.hover.textContent = shown.names[shown.ids[y * shown.width + x]] + " at (" + x + ", " + y + ")";
  }

  // ---- wiring -----------------------------------------------------------------------------
  ui.form.addEventListener("submit", (e) => { e.preventDefault(); segment(); });
  ui.file.addEventListener("change", () => {
    const file = ui.file.files[0];
    ui.file.value = ""; // choosing the same file again is a new choice
    setFile(file);
  });
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      ui.drop.classList.add("over");
    });
  }
  document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) ui.drop.classList.remove("over"); });
  document.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    ui.drop.classList.remove("over");
    setFile(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const file = e.clipboardData ? Array.from(e.clipboardData.files || [])[0] : null;
    if (!file) return; // text pastes into the fields as usual
    e.preventDefault();
    setFile(file);
  });
  ui.thresh.addEventListener("input", () => { ui.threshValue.value = ui.thresh.value; });
  ui.thresh.addEventListener("change", () => { if (state.shown && state.file) segment(); });
  ui.threshValue.addEventListener("input", () => {
    const value = Number(ui.threshValue.value);
    if (ui.threshValue.value !== "" && value >= 0 && value <= 1) ui.thresh.value = String(value);
  });
  ui.head.addEventListener("change", () => { if (state.shown && state.file) segment(); });
  ui.opacity.addEventListener("input", () => { ui.overlayCanvas.style.opacity = ui.opacity.value; });
  ui.stage.addEventListener("pointermove", describePixel);
  ui.stage.addEventListener("pointerleave", () => { ui.hover.textContent = ""; });
  window.addEventListener("resize", () => requestAnimationFrame(layout));
  ui.status.dataset.state = "idle";
  loadMetadata();
})();
