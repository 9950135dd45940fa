/* nafrestore report: the per-image table, the comparison viewer and the training curves.
 * Inlined into report.html by nafrestore/report/page.py; reads the data from the JSON element #report-data.
 * Plain JavaScript (ES2020), no libraries, no network: images are this folder's files, by relative path. */
(function () {
  "use strict";

  const data = JSON.parse(document.getElementById("report-data").textContent);
  const $ = (id) => document.getElementById(id);
  const views = data.views || [];
  const viewByKey = Object.fromEntries(views.map((v) => [v.key, v]));
  const models = views.filter((v) => v.kind === "model");
  const hasInput = views.some((v) => v.kind === "input");
  const metrics = (data.metrics || []).filter((m) => m.kind === "image");
  const images = data.images || [];
  const previewSide = data.preview_side || 1024;

  /** JSON-safe numbers back to numbers ("inf", "-inf", "nan" are strings in the data). */
  function num(v) {
    if (typeof v === "number") return v;
    if (v === "inf") return Infinity;
    if (v === "-inf") return -Infinity;
    return NaN;
  }
  function fmt(v) {
    v = num(v);
    if (Number.isNaN(v)) return "-";
    if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
    return Math.abs(v) < 10 ? v.toFixed(4) : v.toFixed(2);
  }
  /** A relative path as a URL: each segment encoded ("#", "?", "%" and spaces in file names stay names). */
  function fileUrl(path) {
    return path.split("/").map(encodeURIComponent).join("/");
  }
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }
  function score(image, viewKey, metric) {
    const s = image.scores && image.scores[viewKey];
    return s ? num(s[metric]) : NaN;
  }

  // ---------------------------------------------------------------------------------------------------------
  // The per-image table

  const table = $("image-table");
  const columns = [];
  columns.push({ label: "", sortable: false, kind: "thumb" });
  columns.push({ label: "image", sortable: true, kind: "text", value: (im) => im.name });
  columns.push({
    label: "size", sortable: true, kind: "num", better: 1,
    value: (im) => (im.width && im.height ? im.width * im.height : NaN),
    show: (im) => (im.width && im.height ? im.width + "\u00d7" + im.height : "-"),
  });
  for (const m of metrics) {
    const better = m.higher_is_better ? 1 : -1;
    const shown = (hasInput ? [viewByKey.input] : []).concat(models);
    for (const v of shown) {
      columns.push({
        label: m.name, sub: v.label, sortable: true, kind: "num", better, metric: m.name, view: v.key,
        value: (im) => score(im, v.key, m.name),
      });
    }
    if (hasInput && models.length === 1) {
      columns.push({ // the improvement over the input, positive when the restored image is better
        label: m.name, sub: "gain", sortable: true, kind: "num", better: 1,
        value: (im) => (score(im, models[0].key, m.name) - score(im, "input", m.name)) * better,
      });
    }
  }
  const values = images.map((im) => columns.map((c) => (c.value ? c.value(im) : null)));
  let order = images.map((_, i) => i);
  const rows = [];
  let sortState = { col: -1, dir: 1 };

  function thumbFile(image) {
    const f = image.files || {};
    const key = models.length && f[models[0].key] ? models[0].key : Object.keys(f)[0];
    return key ? f[key] : null;
  }
  function canOpen(image) {
    return image.files && Object.keys(image.files).length > 0;
  }

  function buildTable() {
    if (!images.length) {
      const note = $("no-images");
      note.hidden = false;
      note.textContent = "No per-image scores in this report.";
      table.hidden = true;
      return;
    }
    const head = el("tr");
    columns.forEach((c, ci) => {
      const th = el("th", { scope: "col" });
      th.appendChild(document.createTextNode(c.label));
      if (c.sub) th.appendChild(el("span", { class: "sub", text: c.sub }));
      if (c.kind === "num") th.classList.add("num");
      if (c.sortable) {
        th.classList.add("sortable");
        th.tabIndex = 0;
        th.title = "sort by this column";
        th.addEventListener("click", () => sortBy(ci));
        th.addEventListener("keydown", (e) => {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(ci); }
        });
      }
      th.dataset.col = String(ci);
      head.appendChild(th);
    });
    table.appendChild(el("thead", {}, [head]));
    const body = el("tbody");
    images.forEach((image, i) => {
      const tr = el("tr", { "data-name": image.name, "data-index": String(i) });
      columns.forEach((c, ci) => {
        if (c.kind === "thumb") {
          const td = el("td", { class: "thumb" });
          const t = thumbFile(image);
          if (t) {
            const scale = Math.min(1, 160 / Math.max(t.width || 1, t.height || 1));
            td.appendChild(el("img", {
              src: fileUrl(t.thumb), loading: "lazy", alt: image.name, decoding: "async",
              width: String(Math.max(1, Math.round((t.width || 1) * scale))),
              height: String(Math.max(1, Math.round((t.height || 1) * scale))),
            }));
          }
          tr.appendChild(td);
        } else if (c.kind === "text") {
          tr.appendChild(el("td", { class: "name", text: image.name }));
        } else {
          const td = el("td", { class: "num", text: c.show ? c.show(image) : fmt(values[i][ci]) });
          if (c.view && models.length > 1 && c.view !== "input" && isBest(image, c)) td.classList.add("best");
          tr.appendChild(td);
        }
      });
      if (canOpen(image)) {
        tr.tabIndex = 0;
        tr.title = "compare the views of " + image.name;
        tr.addEventListener("click", () => openViewer(i));
        tr.addEventListener("keydown", (e) => { if (e.key === "Enter") openViewer(i); });
      }
      rows.push(tr);
      body.appendChild(tr);
    });
    table.appendChild(body);
  }

  function isBest(image, column) {
    const own = score(image, column.view, column.metric);
    if (Number.isNaN(own)) return false;
    return models.every((m) => {
      const other = score(image, m.key, column.metric);
      return Number.isNaN(other) || own * column.better >= other * column.better;
    });
  }

  function sortBy(ci, dir) {
    const c = columns[ci];
    if (dir === undefined) {
      // A new column starts with the best images first (names: A to Z); a second click reverses.
      dir = sortState.col === ci ? -sortState.dir : c.kind === "text" ? 1 : -c.better;
    }
    sortState = { col: ci, dir };
    const collator = new Intl.Collator(undefined, { numeric: true });
    order = images.map((_, i) => i);
    order.sort((i, j) => {
      const a = values[i][ci], b = values[j][ci];
      let r;
      if (c.kind === "text") r = collator.compare(a, b) * dir;
      else if (Number.isNaN(a) || Number.isNaN(b)) r = Number.isNaN(a) - Number.isNaN(b); // missing: last
      else r = a === b ? 0 : (a < b ? -1 : 1) * dir;
      return r || collator.compare(images[i].name, images[j].name);
    });
    const body = table.tBodies[0];
    for (const i of order) body.appendChild(rows[i]);
    for (const th of table.tHead.rows[0].cells) {
      if (Number(th.dataset.col) === ci) th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // The comparison viewer: a before/after slider or two panes side by side, one transform for every layer
  // (so zoom and panning stay in step), previews until the zoom needs the full-size files.

  const viewer = $("viewer");
  const pane0 = $("pane-0"), pane1 = $("pane-1");
  const layerA = $("layer-a"), layerB = $("layer-b");
  const imgA = $("img-a"), imgB = $("img-b"), imgC = $("img-c");
  const divider = $("divider"), split = $("split"), stage = $("stage");
  const state = {
    index: -1, a: null, b: null, mode: "slider", single: null, split: 50,
    s: 1, tx: 0, ty: 0, fitted: true, lastFocus: null,
  };

  function current() { return images[state.index]; }
  function available(image) { return views.filter((v) => image.files && image.files[v.key]); }
  function size() {
    const image = current();
    const f = image.files[state.a] || Object.values(image.files)[0];
    return { w: image.width || f.width, h: image.height || f.height };
  }

  function openViewer(i, options) {
    const image = images[i];
    if (!image || !canOpen(image)) return;
    options = options || {};
    if (state.index < 0) state.lastFocus = document.activeElement;
    state.index = i;
    const keys = available(image).map((v) => v.key);
    const pick = (wanted) => wanted.find((k) => keys.includes(k));
    if (!keys.includes(state.a) || !keys.includes(state.b) || state.a === state.b) {
      state.a = pick(["input"].concat(models.map((m) => m.key), ["gt"]));
      state.b = pick(models.map((m) => m.key).filter((k) => k !== state.a).concat(["gt"]));
      if (!state.b) state.b = state.a;
    }
    if (options.mode === "side" || options.mode === "slider") state.mode = options.mode;
    if (options.split !== undefined && !Number.isNaN(options.split)) state.split = clamp(options.split, 0, 100);
    state.single = null;
    viewer.hidden = false;
    document.body.style.overflow = "hidden";
    fillControls(image);
    history.replaceState(null, "", "#image=" + encodeURIComponent(image.name));
    // Place the image first, load it after: a large image opens with its preview, not its full-size file.
    layout(false);
    fit(false);
    if (options.zoom > 0) zoomTo(options.zoom, undefined, undefined, false);
    applyTransform();
    $("v-close").focus({ preventScroll: true });
  }

  function closeViewer() {
    viewer.hidden = true;
    document.body.style.overflow = "";
    for (const img of [imgA, imgB, imgC]) { img.removeAttribute("src"); delete img.dataset.file; }
    state.index = -1;
    history.replaceState(null, "", location.pathname + location.search);
    if (state.lastFocus && state.lastFocus.focus) state.lastFocus.focus();
  }

  function fillControls(image) {
    $("viewer-name").textContent = image.name;
    $("viewer-count").textContent = (order.indexOf(state.index) + 1) + " / " + order.length;
    const parts = metrics.map((m) => {
      const shown = views.filter((v) => image.scores && image.scores[v.key]);
      return m.name + ": " + shown.map((v) => v.label + " " + fmt(score(image, v.key, m.name))).join(", ");
    });
    $("viewer-scores").textContent = parts.join("  |  ");
    const list = available(image);
    for (const [select, key] of [[$("v-a"), state.a], [$("v-b"), state.b]]) {
      select.replaceChildren(...list.map((v) => el("option", { value: v.key, text: v.label })));
      select.value = key;
    }
    const buttons = $("v-views");
    buttons.replaceChildren(...list.map((v, n) => {
      const b = el("button", { type: "button", "data-view": v.key, title: "show " + v.label + " (" + (n + 1) + ")" });
      b.textContent = (n + 1) + " " + v.label;
      b.addEventListener("click", () => showSingle(v.key));
      return b;
    }));
  }

  /** Which view each layer shows, what is visible, and the clip of the slider (then load what is shown). */
  function layout(load) {
    const image = current();
    const single = state.single !== null;
    const side = !single && state.mode === "side";
    setImage(imgA, image, single ? state.single : state.a);
    setImage(imgB, image, state.b);
    setImage(imgC, image, state.b);
    layerB.hidden = single || side;
    pane1.hidden = !side;
    divider.hidden = single || side;
    split.hidden = side;
    split.value = String(state.split);
    layerA.style.clipPath = single || side ? "none" : "inset(0 " + (100 - state.split) + "% 0 0)";
    divider.style.left = state.split + "%";
    const label = (k) => (viewByKey[k] ? viewByKey[k].label : k);
    $("tag-a").textContent = label(single ? state.single : state.a);
    $("tag-b").textContent = label(state.b);
    $("tag-b").hidden = single || side;
    $("tag-c").textContent = label(state.b);
    $("v-slider").setAttribute("aria-pressed", String(!single && !side));
    $("v-side").setAttribute("aria-pressed", String(side));
    for (const b of $("v-views").children) b.setAttribute("aria-pressed", String(single && b.dataset.view === state.single));
    $("v-a").value = state.a;
    $("v-b").value = state.b;
    applyTransform(load);
  }

  function setImage(img, image, key) {
    const f = image.files[key];
    if (!f) { img.removeAttribute("src"); delete img.dataset.file; return; }
    const w = image.width || f.width, h = image.height || f.height;
    img.style.width = w + "px";
    img.style.height = h + "px";
    img.dataset.view = key;
    img.alt = (viewByKey[key] ? viewByKey[key].label : key) + " of " + image.name;
    img.dataset.full = f.full;
    img.dataset.preview = f.preview;
  }

  function paneSize() {
    const r = pane0.getBoundingClientRect();
    return { w: Math.max(1, r.width), h: Math.max(1, r.height) };
  }

  function applyTransform(load) {
    const t = "translate(" + state.tx + "px, " + state.ty + "px) scale(" + state.s + ")";
    for (const canvas of stage.querySelectorAll(".canvas")) canvas.style.transform = t;
    stage.classList.toggle("pixelated", state.s >= 2);
    $("v-zoom").textContent = Math.round(state.s * 100) + " %";
    if (load === false) return;
    // The preview until the zoom shows more pixels than it has; then the full-size file (loaded once, cached).
    const { w, h } = size();
    const previewScale = Math.min(1, previewSide / Math.max(w, h));
    for (const img of [imgA, imgB, imgC]) {
      if (!img.dataset.full) continue;
      const visible = img.closest("[hidden]") === null;
      const wanted = state.s > previewScale * 1.001 ? img.dataset.full : img.dataset.preview;
      if (visible && img.dataset.file !== wanted) {
        img.dataset.file = wanted;
        img.src = fileUrl(wanted);
      }
    }
  }

  function clamp(v, lo, hi) { return Math.min(hi, Math.max(lo, v)); }

  function fit(load) {
    const { w, h } = size();
    const p = paneSize();
    state.s = Math.min(p.w / w, p.h / h);
    state.tx = (p.w - w * state.s) / 2;
    state.ty = (p.h - h * state.s) / 2;
    state.fitted = true;
    applyTransform(load);
  }

  /** Zoom to scale ``s`` keeping the image point under (cx, cy) (pane pixels; default: the centre) in place. */
  function zoomTo(s, cx, cy, load) {
    const p = paneSize();
    if (cx === undefined) { cx = p.w / 2; cy = p.h / 2; }
    s = clamp(s, 0.02, 64);
    state.tx = cx - (cx - state.tx) * (s / state.s);
    state.ty = cy - (cy - state.ty) * (s / state.s);
    state.s = s;
    state.fitted = false;
    applyTransform(load);
  }

  function toggleOneToOne(cx, cy) {
    if (Math.abs(state.s - 1) < 1e-6) fit(); else zoomTo(1, cx, cy);
  }

  function showSingle(key) {
    if (!current().files[key]) return;
    state.single = key;
    layout();
  }

  function setMode(mode) {
    state.single = null;
    state.mode = mode;
    layout(false);
    if (state.fitted) fit(false);
    applyTransform();
  }

  function step(delta) {
    if (!order.length) return;
    let pos = order.indexOf(state.index);
    for (let n = 0; n < order.length; n++) {
      pos = (pos + delta + order.length) % order.length;
      if (canOpen(images[order[pos]])) { openViewer(order[pos]); return; }
    }
  }

  function cycleModels() {
    const keys = models.map((m) => m.key).filter((k) => current().files[k]);
    if (!keys.length) return;
    const at = keys.indexOf(state.single);
    showSingle(keys[(at + 1) % keys.length]);
  }

  // Panning: drag anywhere in a pane (both panes share the transform); the divider moves the split instead.
  let drag = null;
  function onPointerDown(e) {
    if (e.button !== 0) return;
    const pane = e.currentTarget;
    const onDivider = e.target === divider || divider.contains(e.target);
    drag = { id: e.pointerId, x: e.clientX, y: e.clientY, tx: state.tx, ty: state.ty, divider: onDivider, pane };
    pane.setPointerCapture(e.pointerId);
    pane.classList.add("dragging");
    if (onDivider) moveSplit(e);
    e.preventDefault();
  }
  function moveSplit(e) {
    const r = pane0.getBoundingClientRect();
    state.split = clamp(((e.clientX - r.left) / r.width) * 100, 0, 100);
    state.single = null;
    layout();
  }
  function onPointerMove(e) {
    if (!drag || e.pointerId !== drag.id) return;
    if (drag.divider) { moveSplit(e); return; }
    state.tx = drag.tx + (e.clientX - drag.x);
    state.ty = drag.ty + (e.clientY - drag.y);
    state.fitted = false;
    applyTransform();
  }
  function onPointerUp(e) {
    if (!drag || e.pointerId !== drag.id) return;
    drag.pane.classList.remove("dragging");
    drag = null;
  }
  function paneXY(e) {
    const r = e.currentTarget.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  }
  for (const pane of [pane0, pane1]) {
    pane.addEventListener("pointerdown", onPointerDown);
    pane.addEventListener("pointermove", onPointerMove);
    pane.addEventListener("pointerup", onPointerUp);
    pane.addEventListener("pointercancel", onPointerUp);
    pane.addEventListener("wheel", (e) => {
      e.preventDefault();
      const [x, y] = paneXY(e);
      zoomTo(state.s * Math.pow(2, -e.deltaY / 300), x, y);
    }, { passive: false });
    pane.addEventListener("dblclick", (e) => { const [x, y] = paneXY(e); toggleOneToOne(x, y); });
  }

  split.addEventListener("input", () => {
    state.split = Number(split.value);
    state.single = null;
    layout();
  });
  $("v-a").addEventListener("change", (e) => { state.a = e.target.value; state.single = null; layout(); });
  $("v-b").addEventListener("change", (e) => { state.b = e.target.value; state.single = null; layout(); });
  $("v-slider").addEventListener("click", () => setMode("slider"));
  $("v-side").addEventListener("click", () => setMode("side"));
  $("v-fit").addEventListener("click", () => fit());
  $("v-1to1").addEventListener("click", () => zoomTo(1));
  $("v-in").addEventListener("click", () => zoomTo(state.s * 2));
  $("v-out").addEventListener("click", () => zoomTo(state.s / 2));
  $("v-prev").addEventListener("click", () => step(-1));
  $("v-next").addEventListener("click", () => step(1));
  $("v-close").addEventListener("click", closeViewer);
  window.addEventListener("resize", () => { if (state.index >= 0 && state.fitted) fit(); });

  document.addEventListener("keydown", (e) => {
    if (viewer.hidden || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "Escape") { e.preventDefault(); closeViewer(); return; }
    const tag = e.target && e.target.tagName;
    // Selects keep their arrow keys; the slider keeps up/down (left/right change the image everywhere).
    if (tag === "SELECT" || (tag === "INPUT" && (e.key === "ArrowUp" || e.key === "ArrowDown"))) return;
    const list = available(current());
    const actions = {
      ArrowLeft: () => step(-1), ArrowRight: () => step(1), p: () => step(-1), n: () => step(1),
      i: () => showSingle("input"), g: () => showSingle("gt"), r: cycleModels,
      // s: back to the comparison from a single view, else slider <-> side by side
      s: () => setMode(state.single !== null ? state.mode : state.mode === "slider" ? "side" : "slider"),
      z: () => toggleOneToOne(), f: () => fit(), "+": () => zoomTo(state.s * 2), "=": () => zoomTo(state.s * 2),
      "-": () => zoomTo(state.s / 2),
    };
    let action = actions[e.key];
    if (!action && /^[1-9]$/.test(e.key) && Number(e.key) <= list.length) {
      action = () => showSingle(list[Number(e.key) - 1].key);
    }
    if (action) { e.preventDefault(); action(); }
  });

  // ---------------------------------------------------------------------------------------------------------
  // Training curves, drawn as SVG from the run's metrics.jsonl records

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }
  function ticks(lo, hi, n) {
    const raw = (hi - lo) / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const stepSize = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / stepSize) * stepSize; v <= hi + stepSize * 1e-9; v += stepSize) out.push(v);
    return out;
  }
  function tickText(v) {
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
    return String(Number(v.toPrecision(4)));
  }
  const COLORS = ["#2364aa", "#c0392b", "#1c7c3a", "#8e44ad", "#d35400", "#7f8c8d"];

  function chart(title, series) {
    series = series.map((s) => ({ ...s, points: s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])) }))
      .filter((s) => s.points.length);
    if (!series.length) return null;
    const W = 360, H = 220, L = 56, R = 12, T = 10, B = 32;
    const xs = series.flatMap((s) => s.points.map((p) => p[0]));
    const ys = series.flatMap((s) => s.points.map((p) => p[1]));
    let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { const d = Math.abs(y0) * 0.05 || 1; y0 -= d; y1 += d; }
    const pad = (y1 - y0) * 0.05;
    y0 -= pad; y1 += pad;
    const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const Y = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
    const root = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img" });
    root.appendChild(svg("title")).textContent = title;
    for (const v of ticks(y0, y1, 5)) {
      root.appendChild(svg("line", { class: "grid", x1: L, x2: W - R, y1: Y(v), y2: Y(v) }));
      const t = root.appendChild(svg("text", { x: L - 5, y: Y(v) + 3, "text-anchor": "end" }));
      t.textContent = tickText(v);
    }
    for (const v of ticks(x0, x1, 4)) {
      root.appendChild(svg("line", { class: "axis", x1: X(v), x2: X(v), y1: H - B, y2: H - B + 4 }));
      const t = root.appendChild(svg("text", { x: X(v), y: H - B + 15, "text-anchor": "middle" }));
      t.textContent = tickText(v);
    }
    root.appendChild(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    root.appendChild(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    const xlabel = root.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }));
    xlabel.textContent = "iteration";
    const legend = el("div", { class: "legend" });
    series.forEach((s, k) => {
      const color = COLORS[k % COLORS.length];
      const pts = s.points.map((p) => X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" ");
      root.appendChild(svg("polyline", { class: "series" + (s.dashed ? " dashed" : ""), points: pts, stroke: color }));
      if (s.markers) {
        for (const p of s.points) root.appendChild(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: color }));
      }
      const item = el("span", { text: (k ? "   " : "") + "\u25a0 " + s.label });
      item.style.color = color;
      legend.appendChild(item);
    });
    return el("figure", {}, [root, el("figcaption", { text: title }), legend]);
  }

  function drawCurves() {
    const host = $("curves");
    if (!host || !data.run || !data.run.history) return;
    const history = data.run.history;
    const series = (key) => history.filter((r) => key in r).map((r) => [num(r.step), num(r[key])]);
    const figures = [
      chart("training loss", [{ label: "loss", points: series("loss") }]),
      chart("learning rate", [{ label: "lr", points: series("lr") }]),
    ];
    const valKeys = new Set();
    for (const r of history) {
      for (const k of Object.keys(r)) {
        if (k.startsWith("val/") && !k.startsWith("val/input_") && k !== "val/n_images") valKeys.add(k);
      }
    }
    for (const key of valKeys) {
      const metric = key.slice(4);
      const input = series("val/input_" + metric);
      const s = [{ label: "restored", points: series(key), markers: true }];
      if (input.length) {
        const last = input[input.length - 1][1];
        const steps = series(key).map((p) => p[0]);
        s.push({ label: "degraded input", dashed: true, points: [[Math.min(...steps), last], [Math.max(...steps), last]] });
      }
      figures.push(chart("validation " + metric, s));
    }
    for (const f of figures) if (f) host.appendChild(f);
  }

  // ---------------------------------------------------------------------------------------------------------

  buildTable();
  if (images.length) {
    const first = columns.findIndex((c) => c.view && viewByKey[c.view].kind === "model");
    sortBy(first >= 0 ? first : 1);
  }
  drawCurves();
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.has("image")) {
    const i = images.findIndex((im) => im.name === hash.get("image"));
    if (i >= 0) {
      openViewer(i, {
        mode: hash.get("mode"), split: hash.has("split") ? Number(hash.get("split")) : undefined,
        zoom: hash.has("zoom") ? Number(hash.get("zoom")) : undefined,
      });
    }
  }
})();
