// attnlab attention explorer: head view, model view, relevance view, all on <canvas>.
// Data (the shape of POST /api/explain and of the JSON embedded by write_explorer):
//   {tokens, title, prediction, relevances: {method: [L]}, attentions: {layers, heads, length, k,
//    idx (b64 uint16, layers*heads*L*k), w (b64 uint8, same), scale (b64 float32 row max,
//    layers*heads*L), rest (b64 float32 mass outside the top k), thumb (b64 uint8,
//    layers*heads*T*T), thumbSize: T}}
// The weight of row entry e is w[e] / 255 * scale[row]. Only visible rows are drawn.
(function () {
  "use strict";
  const ROW = 18;              // px per token row in the head view
  const CELL = 64;             // px per thumbnail in the model view
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const SPECIAL = /^(\[(CLS|SEP|PAD|MASK)\]|<\/?s>|<pad>|<\|endoftext\|>)$/;
  const t0 = performance.now();
  const stats = {drawn: {head: 0, model: 0, relevance: 0}, linesDrawn: 0, decodeMs: null,
                 firstRenderMs: null, renders: 0, errors: []};
  window.attnlabStats = stats;
  window.attnlabReady = false;
  window.addEventListener("error", (e) => stats.errors.push(String(e.message)));

  let state = null;            // the decoded data of the current render
  let view = "head";

  function $(id) { return document.getElementById(id); }

  function bytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function decode(data) {
    const t = performance.now();
    const a = data.attentions;
    const s = {data: data, tokens: data.tokens, L: a.length, layers: a.layers, heads: a.heads,
               k: a.k, T: a.thumbSize, layer: 0, head: 0, selected: -1,
               idx: new Uint16Array(bytes(a.idx).buffer), w: bytes(a.w),
               scale: new Float32Array(bytes(a.scale).buffer),
               rest: new Float32Array(bytes(a.rest).buffer), thumb: bytes(a.thumb)};
    stats.decodeMs = performance.now() - t;
    return s;
  }

  // ---------------------------------------------------------------- head view

  function setupCanvas(canvas, cssW, cssH) {
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr);
      canvas.height = Math.round(cssH * dpr);
      canvas.style.width = cssW + "px";
      canvas.style.height = cssH + "px";
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return ctx;
  }

  function drawHead() {
    const s = state;
    const scroller = $("hv-scroll"), canvas = $("hv-canvas");
    const W = scroller.clientWidth, H = scroller.clientHeight;
    // content = sticky canvas (H) + spacer: the scroll range then covers every row.
    const spacer = Math.max(0, s.L * ROW + ROW - H) + "px";
    if ($("hv-spacer").style.height !== spacer) $("hv-spacer").style.height = spacer;
    const ctx = setupCanvas(canvas, W, H);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, W, H);
    const top = scroller.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW) - 1);
    const last = Math.min(s.L - 1, Math.ceil((top + H) / ROW));
    const colW = Math.min(180, W * 0.3), x0 = colW + 8, x1 = W - colW - 8;
    const y = (i) => i * ROW + ROW / 2 - top + 4;
    const k = s.k, base = (s.layer * s.heads + s.head) * s.L;
    const color = COLORS[s.head % COLORS.length];
    ctx.strokeStyle = color;
    let lines = 0;
    const rows = s.selected >= 0 ? [s.selected] : [];
    if (s.selected < 0) for (let i = first; i <= last; i++) rows.push(i);
    for (const i of rows) {
      const r = base + i, sc = s.scale[r];
      for (let e = 0; e < k; e++) {
        const wt = s.w[r * k + e] / 255 * sc;
        if (wt < 0.01) continue;
        const j = s.idx[r * k + e];
        ctx.globalAlpha = Math.min(1, Math.sqrt(wt));
        ctx.lineWidth = s.selected >= 0 ? 1 + 3 * wt : 1;
        ctx.beginPath();
        ctx.moveTo(x0, y(i));
        const yj = y(j), mx = (x0 + x1) / 2;
        ctx.bezierCurveTo(mx, y(i), mx, yj, x1, yj);
        ctx.stroke();
        lines++;
      }
    }
    ctx.globalAlpha = 1;
    ctx.font = "12px sans-serif";
    ctx.textBaseline = "middle";
    for (let i = first; i <= last; i++) {
      const tok = s.tokens[i];
      ctx.fillStyle = i === s.selected ? color : "#222";
      ctx.textAlign = "right";
      ctx.fillText(tok, x0 - 4, y(i), colW);
      ctx.fillStyle = "#222";
      ctx.textAlign = "left";
      ctx.fillText(tok, x1 + 4, y(i), colW);
    }
    if (s.selected >= 0) {
      const r = base + s.selected;
      $("hv-info").textContent = `query ${s.selected} "${s.tokens[s.selected]}": mass outside the top ${k}: ` +
        s.rest[r].toFixed(3) + " (click it again to show all rows)";
    } else {
      $("hv-info").textContent = `layer ${s.layer + 1}, head ${s.head + 1}: top ${k} keys per query, ` +
        "weights under 0.01 hidden; click a query (left) to isolate it";
    }
    stats.linesDrawn = lines;
    stats.drawn.head++;
  }

  function headClick(ev) {
    const s = state, scroller = $("hv-scroll");
    const rect = scroller.getBoundingClientRect();
    const x = ev.clientX - rect.left;
    if (x > Math.min(180, scroller.clientWidth * 0.3) + 8) return;
    const i = Math.floor((ev.clientY - rect.top + scroller.scrollTop) / ROW);
    if (i < 0 || i >= s.L) return;
    s.selected = s.selected === i ? -1 : i;
    drawHead();
  }

  // ---------------------------------------------------------------- model view

  function drawModel() {
    const s = state, T = s.T, pad = 44;
    const canvas = $("mv-canvas");
    const W = pad + s.heads * (CELL + 4), H = pad + s.layers * (CELL + 4);
    const ctx = setupCanvas(canvas, W, H);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, W, H);
    // One offscreen image holds every T x T thumbnail; it is scaled up cell by cell.
    const off = document.createElement("canvas");
    off.width = s.heads * T;
    off.height = s.layers * T;
    const octx = off.getContext("2d");
    const img = octx.createImageData(off.width, off.height);
    for (let l = 0; l < s.layers; l++) for (let h = 0; h < s.heads; h++) {
      const src = (l * s.heads + h) * T * T;
      for (let r = 0; r < T; r++) for (let c = 0; c < T; c++) {
        const v = Math.sqrt(s.thumb[src + r * T + c] / 255);    // sqrt: faint weights stay visible
        const p = 4 * ((l * T + r) * off.width + h * T + c);
        img.data[p] = 255 - 225 * v; img.data[p + 1] = 255 - 160 * v; img.data[p + 2] = 255 - 40 * v;
        img.data[p + 3] = 255;
      }
    }
    octx.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.font = "11px sans-serif";
    ctx.fillStyle = "#222";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    for (let h = 0; h < s.heads; h++) ctx.fillText("h" + (h + 1), pad + h * (CELL + 4) + CELL / 2, pad / 2);
    for (let l = 0; l < s.layers; l++) {
      ctx.fillText("L" + (l + 1), pad / 2, pad + l * (CELL + 4) + CELL / 2);
      for (let h = 0; h < s.heads; h++) {
        const x = pad + h * (CELL + 4), y = pad + l * (CELL + 4);
        ctx.drawImage(off, h * T, l * T, T, T, x, y, CELL, CELL);
        if (l === s.layer && h === s.head) {
          ctx.strokeStyle = "#d62728"; ctx.lineWidth = 2; ctx.strokeRect(x - 1, y - 1, CELL + 2, CELL + 2);
        }
      }
    }
    canvas.dataset.pad = pad;
    stats.drawn.model++;
  }

  function modelClick(ev) {
    const s = state, canvas = $("mv-canvas"), pad = Number(canvas.dataset.pad);
    const rect = canvas.getBoundingClientRect();
    const h = Math.floor((ev.clientX - rect.left - pad) / (CELL + 4));
    const l = Math.floor((ev.clientY - rect.top - pad) / (CELL + 4));
    if (h < 0 || l < 0 || h >= s.heads || l >= s.layers) return;
    s.layer = l; s.head = h; s.selected = -1;
    $("hv-layer").value = l; $("hv-head").value = h;
    show("head");
  }

  // ---------------------------------------------------------------- relevance view

  function drawRelevance() {
    const s = state, method = $("rv-method").value, box = $("rv-text");
    box.textContent = "";
    const vals = (s.data.relevances || {})[method];
    if (!vals) { box.textContent = "no relevance methods in this file"; stats.drawn.relevance++; return; }
    let top = 0;
    vals.forEach((v, i) => { if (!SPECIAL.test(s.tokens[i])) top = Math.max(top, Math.abs(v)); });
    if (top === 0) vals.forEach((v) => { top = Math.max(top, Math.abs(v)); });
    const frag = document.createDocumentFragment();
    vals.forEach((v, i) => {
      const span = document.createElement("span");
      const a = top > 0 ? Math.min(1, Math.abs(v) / top) : 0;
      span.className = "tok";
      span.textContent = s.tokens[i];
      span.title = `${i}: ${v.toPrecision(4)}`;
      span.style.background = v >= 0 ? `rgba(214,39,40,${a})` : `rgba(31,119,180,${a})`;
      frag.appendChild(span);
      frag.appendChild(document.createTextNode(" "));
    });
    box.appendChild(frag);
    stats.drawn.relevance++;
  }

  // ---------------------------------------------------------------- wiring

  const DRAW = {head: drawHead, model: drawModel, relevance: drawRelevance};

  function show(name) {
    view = name;
    for (const v of Object.keys(DRAW)) {
      $("view-" + v).hidden = v !== name;
      $("tab-" + v).classList.toggle("active", v === name);
    }
    if (state) DRAW[name]();
  }

  function options(select, n, label) {
    select.textContent = "";
    for (let i = 0; i < n; i++) {
      const o = document.createElement("option");
      o.value = i; o.textContent = label + " " + (i + 1);
      select.appendChild(o);
    }
  }

  function render(data) {
    state = decode(data);
    $("title").textContent = data.title || "";
    $("prediction").textContent = data.prediction == null ? "" : "prediction: " + data.prediction;
    $("summary").textContent = `${state.L} tokens, ${state.layers} layers x ${state.heads} heads`;
    options($("hv-layer"), state.layers, "layer");
    options($("hv-head"), state.heads, "head");
    const m = $("rv-method");
    m.textContent = "";
    for (const name of Object.keys(data.relevances || {})) {
      const o = document.createElement("option");
      o.value = o.textContent = name;
      m.appendChild(o);
    }
    $("hv-scroll").scrollTop = 0;
    show(view);
    stats.renders++;
    if (stats.firstRenderMs === null) stats.firstRenderMs = performance.now();
    stats.renderMs = performance.now() - t0;
    window.attnlabReady = true;
  }

  async function explain(ev) {
    ev.preventDefault();
    window.attnlabReady = false;
    const status = $("status");
    status.textContent = "explaining...";
    const methods = Array.from(document.querySelectorAll("input[name=method]:checked")).map((e) => e.value);
    try {
      const resp = await fetch("api/explain", {method: "POST", headers: {"Content-Type": "application/json"},
                                               body: JSON.stringify({text: $("text").value, methods: methods})});
      const body = await resp.json();
      if (!resp.ok) {
        const d = body.detail;
        status.textContent = "error " + resp.status + ": " + (typeof d === "string" ? d : JSON.stringify(d));
        return;
      }
      status.textContent = "";
      render(body);
    } catch (e) {
      status.textContent = "request failed: " + e;
    }
  }

  function init() {
    for (const v of Object.keys(DRAW)) $("tab-" + v).addEventListener("click", () => show(v));
    const redrawHead = () => { if (state && view === "head") requestAnimationFrame(drawHead); };
    $("hv-scroll").addEventListener("scroll", redrawHead);
    window.addEventListener("resize", redrawHead);
    $("hv-canvas").addEventListener("click", headClick);
    $("hv-layer").addEventListener("change", (e) => { state.layer = +e.target.value; state.selected = -1; drawHead(); });
    $("hv-head").addEventListener("change", (e) => { state.head = +e.target.value; state.selected = -1; drawHead(); });
    $("mv-canvas").addEventListener("click", modelClick);
    $("rv-method").addEventListener("change", drawRelevance);
    const form = $("explain-form");
    if (form) form.addEventListener("submit", explain);
    const embedded = $("attnlab-data");
    if (embedded) render(JSON.parse(embedded.textContent));
  }

  window.attnlabRender = render;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
