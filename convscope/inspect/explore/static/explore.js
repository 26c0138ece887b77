/* convscope explorer: draws the data convscope computed (every number comes from the NumPy
   engine, embedded as JSON); the one product computed here is the selected cell's w·x + b, shown
   beside the engine's value.  No network, no WebGL: canvas 2D only. */
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("cs-data").textContent);
  var LAYERS = DATA.model.layers;
  var CONVS = LAYERS.filter(function (l) { return l.conv; }).map(function (l) { return l.index; });
  var S = { img: 0, layer: CONVS.length ? CONVS[0] : -1, filter: 0, y: 0, x: 0,
            rf: null, timer: null, whatif: {} };
  var PLAY_MS = 400;

  // ---- arrays ---------------------------------------------------------------------------------
  function dec(rec) {
    if (!rec) return null;
    if (rec._a) return rec._a;
    var bin = atob(rec.f32 !== undefined ? rec.f32 : rec.u8), n = bin.length;
    var bytes = new Uint8Array(n);
    for (var i = 0; i < n; i++) bytes[i] = bin.charCodeAt(i);
    rec._a = rec.f32 !== undefined ? new Float32Array(bytes.buffer) : bytes;
    return rec._a;
  }
  function tensor(rec) { return rec ? { shape: rec.shape, data: dec(rec) } : null; }
  function image() { return DATA.images[S.img]; }
  /* The output of layer i for the current image (-1: the model's input); a layer that is the
     identity at inference (dropout) carries no copy: it is the layer before's. */
  function outputOf(i) {
    var im = image();
    while (i >= 0 && !im.outputs[i]) i--;
    return tensor(i < 0 ? im.input : im.outputs[i]);
  }
  function at3(t, c, y, x) { var H = t.shape[1], W = t.shape[2]; return t.data[(c * H + y) * W + x]; }
  function minmax(a) {
    var lo = Infinity, hi = -Infinity;
    for (var i = 0; i < a.length; i++) { if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i]; }
    return [lo, hi];
  }
  function fmt(v) { return (Math.abs(v) >= 1000 || (v !== 0 && Math.abs(v) < 0.001)) ? v.toExponential(3) : v.toFixed(4); }
  function dims(shape) {  // the lecture's H×W×C
    return shape.length === 3 ? shape[1] + "×" + shape[2] + "×" + shape[0] : String(shape[0]);
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function $(id) { return document.getElementById(id); }

  // ---- drawing --------------------------------------------------------------------------------
  function heat(t) {  // 0..1 -> black, red, yellow, white
    t = Math.max(0, Math.min(1, t));
    return [Math.min(255, 765 * t), Math.max(0, Math.min(255, 765 * t - 255)), Math.max(0, 765 * t - 510)];
  }
  /* Draw an H×W plane (a Float32Array slice, or RGB channels) onto a canvas at `zoom` px/cell. */
  function drawPlane(canvas, get, H, W, zoom, lo, hi, cmap) {
    var off = document.createElement("canvas");
    off.width = W; off.height = H;
    var cx = off.getContext("2d"), img = cx.createImageData(W, H), d = img.data;
    var span = hi > lo ? hi - lo : 1;
    for (var y = 0; y < H; y++) for (var x = 0; x < W; x++) {
      var v = get(y, x), o = (y * W + x) * 4, rgb;
      if (v.length === 3) rgb = v;
      else if (cmap === "heat") rgb = heat((v - lo) / span);
      else { var g = 255 * (v - lo) / span; rgb = [g, g, g]; }
      d[o] = rgb[0]; d[o + 1] = rgb[1]; d[o + 2] = rgb[2]; d[o + 3] = 255;
    }
    cx.putImageData(img, 0, 0);
    canvas.width = W * zoom; canvas.height = H * zoom;
    var c2 = canvas.getContext("2d");
    c2.imageSmoothingEnabled = false;
    c2.drawImage(off, 0, 0, W * zoom, H * zoom);
    return c2;
  }
  function drawPixels(canvas, rec, k, zoom) {  // uint8 (C, H, W) picture k of a (N, C, H, W) record (k null: one picture)
    var a = dec(rec), sh = rec.shape.length === 4 ? rec.shape.slice(1) : rec.shape;
    var C = sh[0], H = sh[1], W = sh[2], base = (k || 0) * C * H * W;
    drawPlane(canvas, function (y, x) {
      var o = base + y * W + x;
      return C >= 3 ? [a[o], a[o + H * W], a[o + 2 * H * W]] : a[o];
    }, H, W, zoom, 0, 255);
  }
  function zoomFor(W, target) { return Math.max(1, Math.floor(target / W)); }

  // ---- the arithmetic (the same as convscope.shapes) -----------------------------------------
  function pyFixed2(v) {  // Python's f"{v:.2f}": the exact value, ties to even
    var exact = v.toFixed(20), m = /^(-?\d+)\.(\d\d)5(0*)$/.exec(exact);
    if (!m) return v.toFixed(2);
    var hundredths = parseInt(m[1] + m[2], 10);
    if (hundredths % 2) hundredths += hundredths < 0 ? -1 : 1;
    var s = String(Math.abs(hundredths)).padStart(3, "0");
    return (v < 0 ? "-" : "") + s.slice(0, -2) + "." + s.slice(-2);
  }
  function fmtNum(v) { return Number.isInteger(v) ? String(v) : pyFixed2(v); }
  var ARITH = {
    effective: function (f, d) { return d * (f - 1) + 1; },
    /* shapes.conv_output_size(n, f, s, p, d) (fit="floor"): {out, exact} or {error}. */
    outSize: function (n, f, s, p, d) {
      var ints = [["input size", n, 1], ["kernel_size", f, 1], ["stride", s, 1], ["dilation", d, 1]];
      for (var i = 0; i < ints.length; i++)
        if (!Number.isInteger(ints[i][1]) || ints[i][1] < ints[i][2])
          return { error: ints[i][0] + " must be an int >= " + ints[i][2] + ", got " + ints[i][1] };
      if (!Number.isInteger(p) || p < 0) return { error: "padding must be >= 0, got " + p };
      var fe = ARITH.effective(f, d), span = n + 2 * p - fe;
      if (span < 0) return { error: "input " + n + (p ? " padded to " + (n + 2 * p) : "") + " is smaller than the filter " + f };
      return { out: Math.floor(span / s) + 1, exact: span % s === 0 };
    },
    /* shapes.size_formula(n, f, s, (p, p), d). */
    formula: function (n, f, s, p, d) {
      var fe = ARITH.effective(f, d), pad = p === 0 ? "" : " + 2·" + p;
      return "(" + n + " - " + fe + pad + ") / " + s + " + 1 = " + fmtNum((n - fe + 2 * p) / s + 1);
    },
    /* shapes.fit_suggestions(n, f, s, (p, p), d). */
    fixes: function (n, f, s, p, d) {
      var fe = ARITH.effective(f, d), span = n + 2 * p - fe, strides = [], parts = [];
      for (var t = 1; t <= fe; t++) if (t !== s && span % t === 0) strides.push(String(t));
      if (strides.length) parts.push("stride " + (strides.length === 1 ? strides[0] : strides.slice(0, -1).join(", ") + " or " + strides[strides.length - 1]) + " fits");
      var more = p === 0 ? "" : " more", extra = null;
      for (var q = 1; q <= s; q++) if ((span + 2 * q) % s === 0) { extra = q; break; }
      parts.push(extra !== null ? "pad by " + extra + more : "pad by " + (s - span % s) + more + " on one side");
      return parts.join(", or ");
    },
    /* shapes.unseen(n, f, s, (p, p), d): input rows after the last window. */
    unseen: function (n, f, s, p, d) { return Math.max(0, (n + 2 * p - ARITH.effective(f, d)) % s - p); }
  };

  // ---- receptive field --------------------------------------------------------------------------
  /* Ranges [y0, y1, x0, x1] that output cell (y, x) of `layer` depends on, in the output of every
     layer before it; chain[j + 1] is in layer j's output, chain[0] in the input (pixels). */
  function span(ranges, a, b) {  // the union of ranges[a..b] (null entries: padding only)
    var lo = Infinity, hi = -Infinity;
    for (var i = a; i <= b; i++) if (ranges[i]) { lo = Math.min(lo, ranges[i][0]); hi = Math.max(hi, ranges[i][1]); }
    return lo <= hi ? [lo, hi] : null;
  }
  function rfChain(layer, y, x) {
    var r = [y, y, x, x], chain = [];
    chain[layer + 1] = r.slice();
    for (var j = layer; j >= 0; j--) {
      var L = LAYERS[j], sh = L.in_shape;
      if (sh.length === 3) {
        var H = sh[1], W = sh[2];
        if (L.dep === "all") r = [0, H - 1, 0, W - 1];
        else if (L.dep === "table") {  // a container: its children's map, as a table
          var ys = span(L.table.rows, r[0], r[1]), xs = span(L.table.cols, r[2], r[3]);
          if (!ys || !xs) return null;
          r = [ys[0], ys[1], xs[0], xs[1]];
        } else if (L.dep === "window") {
          var w = L.window, pt = w.p[0][0], pl = w.p[1][0];
          r = [r[0] * w.s[0] - pt, r[1] * w.s[0] - pt + w.d[0] * (w.k[0] - 1),
               r[2] * w.s[1] - pl, r[3] * w.s[1] - pl + w.d[1] * (w.k[1] - 1)];
        }
        r = [Math.max(r[0], 0), Math.min(r[1], H - 1), Math.max(r[2], 0), Math.min(r[3], W - 1)];
        if (r[0] > r[1] || r[2] > r[3]) return null;
      }
      chain[j] = r.slice();
    }
    return chain;
  }
  function checkCell(layer, y, x, what) {
    if (!Number.isInteger(layer) || layer < 0 || layer >= LAYERS.length)
      throw new Error(what + ": layer " + layer + " is not a layer index (0 to " + (LAYERS.length - 1) + ")");
    var sh = LAYERS[layer].shape;
    if (sh.length === 3 && !(Number.isInteger(y) && Number.isInteger(x) && y >= 0 && y < sh[1] && x >= 0 && x < sh[2]))
      throw new Error(what + ": cell (" + y + ", " + x + ") is outside layer " + layer + "'s " + sh[1] + "×" + sh[2] + " output");
  }
  function receptiveField(layer, y, x) {
    checkCell(layer, y, x, "receptiveField");
    var c = rfChain(layer, y || 0, x || 0);
    if (!c) return null;
    var r = c[0];
    return { top: r[0], left: r[2], bottom: r[1], right: r[3] };
  }

  // ---- the sliding filter: w·x + b at one cell --------------------------------------------------
  function padIndex(i, n, mode) {
    if (i >= 0 && i < n) return i;
    if (mode === "zeros") return -1;
    if (mode === "replicate") return Math.max(0, Math.min(n - 1, i));
    if (mode === "circular") return ((i % n) + n) % n;
    if (mode === "reflect") { var p = 2 * (n - 1); i = ((i % p) + p) % p; return i < n ? i : p - i; }
    return -1;
  }
  function computeCell(li, k, y, x) {
    var L = LAYERS[li], cv = L.conv, wt = tensor(cv.weight), b = cv.bias ? dec(cv.bias)[k] : 0;
    var K = wt.shape[0], D = wt.shape[1], FH = wt.shape[2], FW = wt.shape[3];
    var inp = outputOf(li - 1), H = inp.shape[1], W = inp.shape[2];
    var c0 = Math.floor(k / (K / cv.groups)) * D, top = y * cv.s[0] - cv.p[0][0], left = x * cv.s[1] - cv.p[1][0];
    var win = [], wts = [], parts = [], pad = [], total = 0;
    for (var c = 0; c < D; c++) {
      var wc = [], ww = [], pc = [], sum = 0;
      for (var ky = 0; ky < FH; ky++) {
        var rw = [], rv = [], rp = [];
        for (var kx = 0; kx < FW; kx++) {
          var iy = padIndex(top + ky * cv.d[0], H, cv.padding_mode), ix = padIndex(left + kx * cv.d[1], W, cv.padding_mode);
          var inside = top + ky * cv.d[0] >= 0 && top + ky * cv.d[0] < H && left + kx * cv.d[1] >= 0 && left + kx * cv.d[1] < W;
          var v = iy < 0 || ix < 0 ? 0 : at3(inp, c0 + c, iy, ix);
          var w = wt.data[((k * D + c) * FH + ky) * FW + kx];
          rv.push(v); rw.push(w); rp.push(!inside); sum += w * v;
        }
        wc.push(rv); ww.push(rw); pc.push(rp);
      }
      win.push(wc); wts.push(ww); parts.push(sum); pad.push(pc); total += sum;
    }
    var eng = at3(outputOf(li), k, y, x), after = null;
    var nx = LAYERS[li + 1];
    if (nx && nx.shape.join() === L.shape.join() && !nx.window) after = { name: nx.name, value: at3(outputOf(li + 1), k, y, x) };
    return { window: win, weights: wts, partial_sums: parts, bias: b, value: total + b, engine: eng,
             pad: pad, origin: [top, left], channel0: c0, after: after };
  }
  function state() {
    if (S.layer < 0) return null;
    var r = computeCell(S.layer, S.filter, S.y, S.x);
    return { layer: S.layer, filter: S.filter, y: S.y, x: S.x, window: r.window, weights: r.weights,
             partial_sums: r.partial_sums, bias: r.bias, value: r.value,
             engine: r.engine, origin: r.origin, stride: LAYERS[S.layer].conv.s.slice() };
  }
  function select(layer, filter, y, x) {
    if (CONVS.indexOf(layer) < 0)
      throw new Error("select: layer " + layer + " has no filter to slide; conv layers: " + CONVS.join(", "));
    var K = LAYERS[layer].shape[0];
    if (!Number.isInteger(filter) || filter < 0 || filter >= K)
      throw new Error("select: filter " + filter + " is not one of layer " + layer + "'s " + K + " filters (0 to " + (K - 1) + ")");
    checkCell(layer, y, x, "select");
    S.layer = layer; S.filter = filter; S.y = y; S.x = x;
    S.rf = { layer: layer, y: y, x: x, filter: filter };
    renderSlide(); renderRF(); drawPipelineRF();
    return state();
  }
  function move(dy, dx) {
    if (S.layer < 0) return;
    var sh = LAYERS[S.layer].shape;
    select(S.layer, S.filter, Math.max(0, Math.min(sh[1] - 1, S.y + dy)), Math.max(0, Math.min(sh[2] - 1, S.x + dx)));
  }
  function step() {  // one stride right, then the next row, then from the top
    var sh = LAYERS[S.layer].shape, y = S.y, x = S.x + 1;
    if (x >= sh[2]) { x = 0; y += 1; }
    if (y >= sh[1]) y = 0;
    select(S.layer, S.filter, y, x);
  }
  function play(on) {
    if (on === undefined) on = !S.timer;
    if (S.timer) { clearInterval(S.timer); S.timer = null; }
    if (on && S.layer >= 0) S.timer = setInterval(step, PLAY_MS);
    $("slide-play").textContent = S.timer ? "pause" : "play";
    $("slide-play").setAttribute("data-playing", S.timer ? "1" : "0");
  }

  function renderSlide() {
    var box = $("slide-input"), nums = $("slide-numbers");
    box.textContent = ""; nums.textContent = "";
    if (S.layer < 0) { $("slide").hidden = true; return; }
    var L = LAYERS[S.layer], cv = L.conv, r = computeCell(S.layer, S.filter, S.y, S.x);
    var inp = outputOf(S.layer - 1), H = inp.shape[1], W = inp.shape[2];
    var pt = cv.p[0][0], pb = cv.p[0][1], pl = cv.p[1][0], pr = cv.p[1][1];
    var D = r.window.length, FH = cv.weight.shape[2], FW = cv.weight.shape[3];
    var shown = Math.min(D, 12), zoom = zoomFor(W + pl + pr, shown <= 2 ? 256 : 150), mm = minmax(inp.data);
    $("slide-layer").value = String(S.layer); $("slide-filter").value = String(S.filter);
    $("slide-filter").max = String(L.shape[0] - 1);
    $("slide-in-cap").textContent = "input of layer " + S.layer + ": " + dims(inp.shape) + ", padded to " +
      (H + pt + pb) + "×" + (W + pl + pr) + " (zero border " + pt + "), channels " + r.channel0 + "–" + (r.channel0 + D - 1) +
      (shown < D ? " (first " + shown + " drawn)" : "");
    for (var c = 0; c < shown; c++) {
      var holder = el("div", { "class": "chan" }), cvs = el("canvas");
      (function (ch) {
        drawPlane(cvs, function (y, x) {
          var iy = y - pt, ix = x - pl;
          if (iy < 0 || ix < 0 || iy >= H || ix >= W) return [235, 238, 242];  // the zero border
          var g = 255 * (at3(inp, r.channel0 + ch, iy, ix) - mm[0]) / ((mm[1] - mm[0]) || 1);
          return [g, g, g];
        }, H + pt + pb, W + pl + pr, zoom, 0, 1);
      })(c);
      holder.appendChild(cvs);
      var ext = [cv.d[0] * (FH - 1) + 1, cv.d[1] * (FW - 1) + 1];
      var win = el("div", { "class": "win", "data-testid": c === 0 ? "window" : "window-" + c,
                            "data-y": String(r.origin[0]), "data-x": String(r.origin[1]) });
      win.style.top = ((r.origin[0] + pt) * zoom) + "px"; win.style.left = ((r.origin[1] + pl) * zoom) + "px";
      win.style.width = (ext[1] * zoom) + "px"; win.style.height = (ext[0] * zoom) + "px";
      holder.appendChild(win);
      holder.appendChild(el("div", { "class": "cap" }, "channel " + (r.channel0 + c)));
      box.appendChild(holder);
    }
    // the output map with the cell
    var out = outputOf(S.layer), oz = zoomFor(L.shape[2], 150), om = minmax(out.data);
    var ctx = drawPlane($("slide-output"), function (y, x) { return at3(out, S.filter, y, x); }, L.shape[1], L.shape[2], oz, om[0], om[1]);
    ctx.strokeStyle = "#e07b00"; ctx.lineWidth = 2; ctx.strokeRect(S.x * oz + 1, S.y * oz + 1, oz - 2 || 1, oz - 2 || 1);
    $("slide-out-cap").textContent = "activation map " + S.filter + " of layer " + S.layer + " (" + L.shape[1] + "×" + L.shape[2] + ")";
    $("slide-pos").textContent = "cell (" + S.y + ", " + S.x + "); window at row " + r.origin[0] + ", column " + r.origin[1] +
      "; stride " + cv.s.join("×") + ", padding " + pt + ", dilation " + cv.d.join("×");
    // the numbers
    for (c = 0; c < Math.min(D, 8); c++) {
      var t = el("div");
      t.appendChild(el("div", { "class": "cap" }, "channel " + (r.channel0 + c) + ": x (input) · w (weights)"));
      var tab = el("table", { "data-testid": "numbers-" + c });
      for (var ky = 0; ky < FH; ky++) {
        var tr = el("tr");
        for (var kx = 0; kx < FW; kx++) {
          var td = el("td", r.pad[c][ky][kx] ? { "class": "pad" } : null, fmt(r.window[c][ky][kx]) + " · " + fmt(r.weights[c][ky][kx]));
          tr.appendChild(td);
        }
        tab.appendChild(tr);
      }
      t.appendChild(tab);
      t.appendChild(el("div", { "data-testid": "partial-" + c }, "partial sum " + fmt(r.partial_sums[c])));
      nums.appendChild(t);
    }
    var sum = el("div", { "class": "sum" });
    var parts = r.partial_sums.map(fmt);
    if (parts.length > 12) parts = parts.slice(0, 12).concat(["… (" + (r.partial_sums.length - 12) + " more)"]);
    sum.innerHTML = "";
    sum.appendChild(el("div", null, "per-channel partial sums: " + parts.join(" + ")));
    sum.appendChild(el("div", null, "bias b = " + fmt(r.bias)));
    var tot = el("div"); tot.appendChild(document.createTextNode("w·x + b = "));
    tot.appendChild(el("b", { "data-testid": "dot-sum" }, fmt(r.value)));
    tot.appendChild(document.createTextNode("   (the engine's activation: "));
    tot.appendChild(el("b", { "data-testid": "engine-value" }, fmt(r.engine)));
    tot.appendChild(document.createTextNode(")"));
    sum.appendChild(tot);
    if (r.after) sum.appendChild(el("div", { "data-testid": "after" }, "then " + r.after.name + " makes it " + fmt(r.after.value)));
    nums.appendChild(sum);
  }

  // ---- the pipeline -----------------------------------------------------------------------------
  var MAPS_SHOWN = 32, pipeMaps = [];
  function renderPipeline() {
    var strip = $("strip"); strip.textContent = ""; pipeMaps = [];
    var im = image();
    var col = el("div", { "class": "col", "data-layer": "-1" });
    col.appendChild(el("h4", null, "input"));
    col.appendChild(el("span", { "class": "badge" }, dims(DATA.model.input_shape)));
    var ic = el("canvas", { "class": "map" });
    drawPixels(ic, im.pixels, null, zoomFor(DATA.model.input_shape[2], 84));
    col.appendChild(ic); strip.appendChild(col);
    pipeMaps.push({ layer: -1, canvases: [ic] });
    LAYERS.forEach(function (L, i) {
      var c = el("div", { "class": "col", "data-layer": String(i) });
      c.appendChild(el("h4", { title: L.name }, "[" + i + "] " + L.name));
      c.appendChild(el("span", { "class": "badge", "data-testid": "shape-" + i }, dims(L.shape)));
      var out = outputOf(i), mm = minmax(out.data), entry = { layer: i, canvases: [] };
      if (i === LAYERS.length - 1 && L.shape.length === 1) { c.appendChild(scoreBars()); strip.appendChild(c); return; }
      if (L.shape.length === 3) {
        var maps = el("div", { "class": "maps" }), z = zoomFor(L.shape[2], L.shape[0] > 8 ? 28 : 56);
        for (var k = 0; k < Math.min(L.shape[0], MAPS_SHOWN); k++) {
          var cv = el("canvas", { "class": "actmap map", "data-layer": String(i), "data-filter": String(k), title: "map " + k });
          (function (kk) { drawPlane(cv, function (y, x) { return at3(out, kk, y, x); }, L.shape[1], L.shape[2], z, mm[0], mm[1]); })(k);
          cv._z = z; cv._draw = null;
          cv.addEventListener("click", onMapClick);
          maps.appendChild(cv); entry.canvases.push(cv);
        }
        c.appendChild(maps);
        if (L.shape[0] > MAPS_SHOWN) c.appendChild(el("div", { "class": "legend" }, "+" + (L.shape[0] - MAPS_SHOWN) + " more maps"));
      } else {
        var n = L.shape[0], vz = Math.max(1, Math.min(6, Math.floor(240 / n))), vec = el("canvas", { "class": "map", "data-layer": String(i) });
        drawPlane(vec, function (y, x) { return out.data[x]; }, 1, n, vz, mm[0], mm[1]);
        vec.style.height = "14px"; vec.style.width = Math.min(240, n * vz) + "px"; c.appendChild(vec);
        vec.addEventListener("click", function () { pickRF(i, 0, 0); });
      }
      if (L.identity) c.appendChild(el("div", { "class": "legend" }, "the identity at inference"));
      c.appendChild(el("div", { "class": "legend" }, "min " + fmt(mm[0]) + ", max " + fmt(mm[1])));
      strip.appendChild(c); pipeMaps.push(entry);
    });
  }
  function scoreBars() {
    var im = image(), box = el("div", { "class": "bars", "data-testid": "scores" });
    box.appendChild(el("div", { "class": "predicted", "data-testid": "predicted" }, DATA.classes[im.pred]));
    var top = Math.max.apply(null, im.probs);
    im.probs.forEach(function (p, k) {
      var b = el("div", { "class": "bar" + (k === im.pred ? " pred" : ""), "data-class": String(k) });
      b.appendChild(el("span", { "class": "l" }, DATA.classes[k]));
      var bar = el("div"); bar.style.width = Math.max(1, Math.round(140 * p / (top || 1))) + "px";
      b.appendChild(bar); b.appendChild(el("span", null, (100 * p).toFixed(1) + "%"));
      box.appendChild(b);
    });
    return box;
  }
  function onMapClick(ev) {
    var cv = ev.currentTarget, i = +cv.getAttribute("data-layer"), k = +cv.getAttribute("data-filter");
    var rect = cv.getBoundingClientRect(), sh = LAYERS[i].shape;
    var x = Math.min(sh[2] - 1, Math.floor((ev.clientX - rect.left) / rect.width * sh[2]));
    var y = Math.min(sh[1] - 1, Math.floor((ev.clientY - rect.top) / rect.height * sh[1]));
    if (CONVS.indexOf(i) >= 0) select(i, k, y, x); else pickRF(i, y, x, k);
  }
  function pickRF(i, y, x, k) { S.rf = { layer: i, y: y, x: x, filter: k || 0 }; renderRF(); drawPipelineRF(); }
  function drawPipelineRF() {
    renderPipeline();
    if (!S.rf) return;
    var chain = rfChain(S.rf.layer, S.rf.y, S.rf.x);
    if (!chain) return;
    pipeMaps.forEach(function (e) {
      var r = chain[e.layer + 1];
      if (!r || e.layer > S.rf.layer) return;
      e.canvases.forEach(function (cv, k) {
        if (e.layer === S.rf.layer && k !== S.rf.filter) return;
        var z = cv.width / (e.layer < 0 ? DATA.model.input_shape[2] : LAYERS[e.layer].shape[2]);
        var ctx = cv.getContext("2d");
        ctx.strokeStyle = e.layer === S.rf.layer ? "#e07b00" : "#1f7ae0"; ctx.lineWidth = Math.max(1, Math.min(2, z / 2));
        ctx.strokeRect(r[2] * z + 0.5, r[0] * z + 0.5, (r[3] - r[2] + 1) * z - 1, (r[1] - r[0] + 1) * z - 1);
      });
    });
  }
  function renderRF() {
    var cv = $("rf-input"), sh = DATA.model.input_shape, z = zoomFor(sh[2], 224);
    drawPixels(cv, image().pixels, null, z);
    var box = $("rf-box"), list = $("rf-list");
    list.textContent = "";
    if (!S.rf) { box.hidden = true; list.textContent = "Click a cell of a map in the pipeline."; return; }
    var f = receptiveField(S.rf.layer, S.rf.y, S.rf.x), chain = rfChain(S.rf.layer, S.rf.y, S.rf.x);
    if (!f) { box.hidden = true; list.textContent = "This cell sees only padding."; return; }
    box.hidden = false;
    box.style.top = (f.top * z) + "px"; box.style.left = (f.left * z) + "px";
    box.style.width = ((f.right - f.left + 1) * z) + "px"; box.style.height = ((f.bottom - f.top + 1) * z) + "px";
    ["top", "left", "bottom", "right"].forEach(function (k) { box.setAttribute("data-" + k, String(f[k])); });
    var L = LAYERS[S.rf.layer];
    list.appendChild(el("div", null, "layer " + S.rf.layer + " " + L.name + (L.shape.length === 3 ? ", cell (" + S.rf.y + ", " + S.rf.x + ")" : "") +
      " sees input rows " + f.top + "–" + f.bottom + ", columns " + f.left + "–" + f.right + " (" + (f.bottom - f.top + 1) + "×" + (f.right - f.left + 1) + " pixels)"));
    for (var j = S.rf.layer - 1; j >= 0; j--) {
      var r = chain[j + 1];
      if (r && LAYERS[j].shape.length === 3) list.appendChild(el("div", null, "through layer " + j + " " + LAYERS[j].name + ": rows " + r[0] + "–" + r[1] + ", columns " + r[2] + "–" + r[3]));
    }
  }

  // ---- arithmetic cards ----------------------------------------------------------------------
  function renderCards() {
    var box = $("cards"); box.textContent = "";
    LAYERS.forEach(function (L, i) {
      var card = el("div", { "class": "card", "data-testid": "card-" + i });
      card.appendChild(el("h4", null, "[" + i + "] " + L.name + ": " + dims(L.in_shape) + " → " + dims(L.shape)));
      if (L.formula) card.appendChild(el("div", null, "parameters " + L.formula));
      card.appendChild(el("div", null, "mult-adds " + L.macs.toLocaleString("en-US")));
      if (L.window) card.appendChild(whatIf(L, i));
      if (L.text) card.appendChild(el("pre", null, L.text));
      box.appendChild(card);
    });
    box.appendChild(el("div", { "class": "card", "data-testid": "card-total" }, "total: " + DATA.model.total_params.toLocaleString("en-US") +
      " parameters, " + DATA.model.total_macs.toLocaleString("en-US") + " mult-adds per image"));
  }
  function whatIf(L, i) {
    var w = L.window, n = L.in_shape[2], wrap = el("div");
    var init = { F: w.k[1], S: w.s[1], P: w.p[1][0], D: w.d[1] }, cur = S.whatif[i] || Object.assign({}, init);
    var row = el("div", { "class": "whatif" }), inputs = {};
    ["F", "S", "P", "D"].forEach(function (k) {
      var lab = el("label", null, k + " ");
      var inp = el("input", { type: "number", min: k === "P" ? "0" : "1", value: String(cur[k]), "data-testid": "whatif-" + k + "-" + i });
      inp.addEventListener("input", function () { var v = parseInt(inp.value, 10); if (!isNaN(v)) { cur[k] = v; S.whatif[i] = cur; update(); } });
      inputs[k] = inp; lab.appendChild(inp); row.appendChild(lab);
    });
    var reset = el("button", { "data-testid": "whatif-reset-" + i }, "reset");
    reset.addEventListener("click", function () { cur = Object.assign({}, init); S.whatif[i] = cur; for (var k in inputs) inputs[k].value = String(cur[k]); update(); });
    row.appendChild(reset);
    var res = el("div", { "data-testid": "whatif-out-" + i }), path = el("canvas", { "data-testid": "whatif-path-" + i });
    wrap.appendChild(el("div", null, "width: N = " + n + " (what if?)")); wrap.appendChild(row); wrap.appendChild(res); wrap.appendChild(path);
    function update() {
      var r = ARITH.outSize(n, cur.F, cur.S, cur.P, cur.D);
      res.className = ""; res.removeAttribute("data-out");
      if (r.error) { res.textContent = r.error; res.className = "warn-nonint"; path.width = 0; return; }
      res.setAttribute("data-out", String(r.out));
      var text = ARITH.formula(n, cur.F, cur.S, cur.P, cur.D).replace(/ - /g, " − ");
      if (!r.exact) {
        res.className = "warn-nonint";
        var lost = ARITH.unseen(n, cur.F, cur.S, cur.P, cur.D);
        text += ": stride " + cur.S + " does not fit (⌊⌋ gives " + r.out + ")" +
          (lost ? "; the last " + lost + " column" + (lost > 1 ? "s" : "") + " of the input " + (lost > 1 ? "are" : "is") + " never seen" : "") +
          "; " + ARITH.fixes(n, cur.F, cur.S, cur.P, cur.D);
      }
      res.textContent = text;
      drawPath(path, n, cur, r.out);
    }
    update();
    return wrap;
  }
  function drawPath(cv, n, c, out) {  // one axis: the padded input and where each window starts
    var total = n + 2 * c.P, cell = Math.max(3, Math.min(12, Math.floor(380 / total))), fe = ARITH.effective(c.F, c.D);
    var rows = Math.min(out, 10);
    cv.width = total * cell; cv.height = (rows + 1) * 6 + cell + 2;
    var ctx = cv.getContext("2d");
    for (var i = 0; i < total; i++) {
      var pad = i < c.P || i >= c.P + n;
      ctx.fillStyle = pad ? "#e8ebef" : "#9aa5b1";
      ctx.fillRect(i * cell, 0, cell - 1, cell);
    }
    var covered = (out - 1) * c.S + fe;
    if (covered < total) { ctx.fillStyle = "#c62828"; ctx.fillRect(covered * cell, 0, (total - covered) * cell, 3); }
    for (var k = 0; k < rows; k++) {
      var st = k * c.S;
      ctx.fillStyle = k % 2 ? "#e07b00" : "#1f7ae0";
      for (var t = 0; t < c.F; t++) ctx.fillRect((st + t * c.D) * cell, cell + 3 + k * 6, cell - 1, 4);
    }
  }

  // ---- filters, saliency -----------------------------------------------------------------------
  function renderFilters() {
    var box = $("filter-grids"); box.textContent = "";
    var any = false;
    LAYERS.forEach(function (L, i) {
      if (!L.shows_filters || !L.conv) return;
      any = true;
      var wt = tensor(L.conv.weight), K = wt.shape[0], D = wt.shape[1], FH = wt.shape[2], FW = wt.shape[3];
      var rgb = D === 3, chans = rgb ? 1 : Math.min(D, 8), mm = minmax(wt.data), z = zoomFor(FW, 30);
      box.appendChild(el("h3", null, "layer " + i + " " + L.name + ": " + K + " filters of " + FH + "×" + FW + "×" + D +
        (rgb ? " (as RGB)" : chans < D ? " (first " + chans + " channels drawn)" : "") + "; weights " + fmt(mm[0]) + " to " + fmt(mm[1])));
      var tiles = el("div", { "class": "tiles", "data-testid": "filters-" + i, "data-count": String(K) });
      for (var k = 0; k < K; k++) for (var c = 0; c < chans; c++) {
        var cv = el("canvas", { "class": "tile", title: "filter " + k + (rgb ? "" : ", channel " + c) });
        (function (kk, cc) {
          drawPlane(cv, function (y, x) {
            function g(ch) { return 255 * (wt.data[((kk * D + ch) * FH + y) * FW + x] - mm[0]) / ((mm[1] - mm[0]) || 1); }
            return rgb ? [g(0), g(1), g(2)] : wt.data[((kk * D + cc) * FH + y) * FW + x];
          }, FH, FW, z, mm[0], mm[1]);
        })(k, c);
        tiles.appendChild(cv);
      }
      box.appendChild(tiles);
    });
    if (!any) box.appendChild(el("p", { "class": "meta" }, "The model has no conv layer."));
  }
  function renderWhy() {
    var box = $("why-maps"), why = image().why; box.textContent = "";
    var sh = DATA.model.input_shape;
    function fig(title, rec, tid, z) {
      var f = el("div", { "data-testid": tid }); f.appendChild(el("div", { "class": "cap" }, title));
      if (!rec) { f.appendChild(el("div", { "class": "meta" }, "no conv layer")); return f; }
      var t = tensor(rec), mm = minmax(t.data), cv = el("canvas");
      drawPlane(cv, function (y, x) { return t.data[y * t.shape[1] + x]; }, t.shape[0], t.shape[1], z || zoomFor(t.shape[1], 168), mm[0], mm[1], "heat");
      f.appendChild(cv); return f;
    }
    var pic = el("div"); pic.appendChild(el("div", { "class": "cap" }, "image: " + image().name + ", predicted " + DATA.classes[why.target]));
    var pc = el("canvas"); drawPixels(pc, image().pixels, null, zoomFor(sh[2], 168)); pic.appendChild(pc); box.appendChild(pic);
    box.appendChild(fig("saliency (trained)", why.saliency, "saliency"));
    box.appendChild(fig("saliency (randomised weights)", why.random_saliency, "saliency-random"));
    var cam = why.cam_layer === null ? "" : " on layer " + why.cam_layer + " (" + (why.gradcam ? why.gradcam.shape.join("×") : "") + ")";
    box.appendChild(fig("Grad-CAM (trained)" + cam, why.gradcam, "gradcam"));
    box.appendChild(fig("Grad-CAM (randomised weights)", why.random_gradcam, "gradcam-random"));
    box.appendChild(el("div", { "class": "meta", "data-testid": "sanity" }, "rank correlation trained vs randomised: saliency " + why.saliency_rank_correlation +
      (why.gradcam_rank_correlation === null ? "" : ", Grad-CAM " + why.gradcam_rank_correlation) + " (near 1: the map ignores the weights)"));
  }

  // ---- training: curves and the confusion matrix -------------------------------------------------
  function renderTraining() {
    var run = DATA.run;
    if (!run) { $("training").hidden = true; $("nav-training").hidden = true; return; }
    $("training").hidden = false;
    var h = run.history, cv = $("curves"), ctx = cv.getContext("2d");
    ctx.clearRect(0, 0, cv.width, cv.height);
    // the training batches' cross-entropy without label smoothing (train_ce) is val_loss's measure
    var ce = h.length > 0 && h.every(function (r) { return r.train_ce !== undefined && r.train_ce !== null; });
    var series = [[ce ? "train_ce" : "train_loss", "#1f7ae0", 0], ["val_loss", "#e07b00", 0], ["train_accuracy", "#1f7ae0", 1], ["val_accuracy", "#e07b00", 1]];
    var W = cv.width / 2 - 30, H = cv.height - 50;
    [0, 1].forEach(function (panel) {
      var ox = 40 + panel * (W + 30), vals = [];
      series.forEach(function (s) { if (s[2] === panel) h.forEach(function (r) { if (r[s[0]] !== undefined && r[s[0]] !== null) vals.push(r[s[0]]); }); });
      var lo = panel ? 0 : 0, hi = panel ? 1 : Math.max.apply(null, vals.concat([1e-9]));
      ctx.strokeStyle = "#d9dee3"; ctx.strokeRect(ox, 10, W, H);
      ctx.fillStyle = "#5b6670"; ctx.font = "12px sans-serif";
      ctx.fillText(panel ? "accuracy" : "loss", ox, cv.height - 22);
      ctx.fillText(hi.toFixed(2), ox - 34, 18); ctx.fillText(lo.toFixed(2), ox - 34, 10 + H);
      series.forEach(function (s) {
        if (s[2] !== panel) return;
        ctx.strokeStyle = s[1]; ctx.lineWidth = 2; ctx.setLineDash(s[0].indexOf("val") === 0 ? [5, 3] : []); ctx.beginPath();
        var started = false;
        h.forEach(function (r, k) {
          if (r[s[0]] === undefined || r[s[0]] === null) return;
          var x = ox + (h.length > 1 ? k / (h.length - 1) : 0.5) * W, y = 10 + H - (r[s[0]] - lo) / ((hi - lo) || 1) * H;
          if (started) ctx.lineTo(x, y); else { ctx.moveTo(x, y); started = true; }
        });
        ctx.stroke();
      });
      ctx.setLineDash([]);
    });
    ctx.fillStyle = "#5b6670";
    ctx.fillText(ce ? "solid: training, dashed: validation; loss: cross-entropy without label smoothing" +
      (run.label_smoothing ? " (trained with smoothing " + run.label_smoothing + ")" : "") :
      "solid: training (" + (run.label_smoothing ? "with label smoothing " + run.label_smoothing + ", as trained" : "as trained") + "), dashed: validation", 40, cv.height - 6);
    cv.onmousemove = function (ev) {
      var r = cv.getBoundingClientRect(), px = (ev.clientX - r.left) * cv.width / r.width, tip = $("curve-tip");
      var panel = px > 40 + W + 15 ? 1 : 0, ox = 40 + panel * (W + 30);
      var k = Math.round((px - ox) / W * (h.length - 1));
      if (!h.length || k < 0 || k >= h.length) { tip.hidden = true; return; }
      var row = h[k], t = "epoch " + row.epoch + (row.epoch === run.best_epoch ? " ★ kept" : "");
      series.forEach(function (s) { if (row[s[0]] !== undefined && row[s[0]] !== null) t += ", " + s[0].replace("_", " ") + " " + row[s[0]].toFixed(4); });
      tip.textContent = t; tip.hidden = false; tip.style.left = (ev.clientX - r.left + 12) + "px"; tip.style.top = (ev.clientY - r.top) + "px";
    };
    cv.onmouseleave = function () { $("curve-tip").hidden = true; };
    var cm = run.confusion, box = $("confusion"); box.textContent = "";
    if (!cm) { $("confusion-cap").textContent = "No test images were available."; return; }
    $("confusion-cap").textContent = "Rows: true class; columns: predicted. " + cm.correct.toLocaleString("en-US") + " of " +
      cm.total.toLocaleString("en-US") + " " + cm.split + " images right (" + (100 * cm.correct / cm.total).toFixed(2) + "%). Click a cell for its images.";
    var tab = el("table", { "class": "cm", "data-testid": "confusion-table" }), head = el("tr");
    head.appendChild(el("th", null, "true \\ pred"));
    DATA.classes.forEach(function (c) { head.appendChild(el("th", null, c)); });
    tab.appendChild(head);
    var big = Math.max.apply(null, [].concat.apply([], cm.counts));
    cm.counts.forEach(function (row, t) {
      var tr = el("tr"); tr.appendChild(el("th", null, DATA.classes[t]));
      row.forEach(function (n, p) {
        var td = el("td", t === p ? { "class": "diag" } : null);
        var b = el("button", { "data-cell": t + "," + p, "data-count": String(n) }, String(n));
        var a = n ? 0.15 + 0.85 * n / big : 0;
        td.style.background = n ? (t === p ? "rgba(31,122,224," + a + ")" : "rgba(198,40,40," + Math.max(a, 0.25) + ")") : "";
        b.addEventListener("click", function () { showCell(t, p); });
        td.appendChild(b); tr.appendChild(td);
      });
      tab.appendChild(tr);
    });
    box.appendChild(tab);
  }
  function showCell(t, p) {
    var cm = DATA.run.confusion, box = $("cell-images"), idx = cm.cells[t + "," + p] || [], n = cm.counts[t][p];
    box.textContent = "";
    box.appendChild(el("div", { "class": "cap", "data-testid": "cell-caption" }, n + " " + cm.split + " image" + (n === 1 ? "" : "s") + " of class " + DATA.classes[t] + " predicted " + DATA.classes[p]));
    var grid = el("div", { "class": "thumbs" });
    idx.forEach(function (slot) {
      var f = el("div", { "class": "thumb", title: cm.split + " image " + cm.indices[slot] }), c = el("canvas");
      drawPixels(c, cm.thumbs, slot, zoomFor(cm.thumbs.shape[3], 48));
      f.appendChild(c); f.appendChild(el("div", { "class": "legend" }, "#" + cm.indices[slot])); grid.appendChild(f);
    });
    box.appendChild(grid);
    if (n > idx.length) box.appendChild(el("div", { "class": "meta", "data-testid": "cell-more" }, "+" + (n - idx.length) + " more"));
  }

  // ---- probes, the live server -------------------------------------------------------------------
  function renderProbes() {
    var box = $("probes"); box.textContent = "";
    DATA.images.forEach(function (im, k) {
      var b = el("div", { "class": "probe" + (k === S.img ? " on" : ""), "data-testid": "probe-" + k, title: im.name }), c = el("canvas");
      drawPixels(c, im.pixels, null, zoomFor(DATA.model.input_shape[2], 40));
      b.appendChild(c);
      b.appendChild(el("div", null, (im.label !== null && im.label !== undefined ? DATA.classes[im.label] + " → " : "") + DATA.classes[im.pred]));
      b.addEventListener("click", function () { chooseImage(k); });
      box.appendChild(b);
    });
  }
  function chooseImage(k) { S.img = k; renderAll(); }
  function renderAll() {
    renderProbes();
    if (S.layer >= 0) { var sh = LAYERS[S.layer].shape; S.y = Math.min(S.y, sh[1] - 1); S.x = Math.min(S.x, sh[2] - 1); }
    renderSlide(); renderRF(); drawPipelineRF(); renderWhy();
  }
  function setupLive() {
    if (!DATA.live) { $("nav-live").hidden = true; return; }
    $("live").hidden = false;
    var drop = $("drop"), draw = $("draw"), ctx = draw.getContext("2d"), down = false;
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, draw.width, draw.height);
    function send(blob, name) {
      $("live-out").textContent = "asking the engine…";
      fetch("api/predict", { method: "POST", body: blob, headers: { "Content-Type": "application/octet-stream" } })
        .then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); })
        .then(function (res) {
          if (!res[0]) { $("live-out").textContent = res[1].error || "the server refused the image"; return; }
          var rec = res[1].image; rec.name = name; DATA.images.push(rec);
          $("live-out").textContent = res[1].top.map(function (t) { return t.label + " " + (100 * t.probability).toFixed(1) + "%"; }).join(", ");
          chooseImage(DATA.images.length - 1);
        })
        .catch(function (e) { $("live-out").textContent = "request failed: " + e; });
    }
    drop.addEventListener("dragover", function (e) { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", function () { drop.classList.remove("over"); });
    drop.addEventListener("drop", function (e) {
      e.preventDefault(); drop.classList.remove("over");
      var f = e.dataTransfer.files[0]; if (f) send(f, f.name);
    });
    function pos(e) { var r = draw.getBoundingClientRect(); return [(e.clientX - r.left) * draw.width / r.width, (e.clientY - r.top) * draw.height / r.height]; }
    draw.addEventListener("pointerdown", function (e) { down = true; var p = pos(e); ctx.beginPath(); ctx.moveTo(p[0], p[1]); });
    draw.addEventListener("pointermove", function (e) {
      if (!down) return; var p = pos(e);
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 18; ctx.lineCap = "round"; ctx.lineTo(p[0], p[1]); ctx.stroke();
    });
    window.addEventListener("pointerup", function () { down = false; });
    $("draw-clear").addEventListener("click", function () { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, draw.width, draw.height); });
    $("draw-predict").addEventListener("click", function () { draw.toBlob(function (b) { send(b, "drawing"); }, "image/png"); });
  }

  // ---- train --serve: reload, keeping the view, when the next epoch lands --------------------------
  var POLL_MS = 1500, VIEW_KEY = "convscope-view";
  function saveView() {
    try {
      sessionStorage.setItem(VIEW_KEY, JSON.stringify({ img: S.img, layer: S.layer, filter: S.filter, y: S.y, x: S.x, scroll: window.scrollY }));
    } catch (e) { /* no storage: the reload starts from the top */ }
  }
  function restoreView() {
    var v = null;
    try { v = JSON.parse(sessionStorage.getItem(VIEW_KEY) || "null"); sessionStorage.removeItem(VIEW_KEY); } catch (e) { return; }
    if (!v) return;
    if (v.img >= 0 && v.img < DATA.images.length) chooseImage(v.img);
    if (CONVS.indexOf(v.layer) >= 0) { try { select(v.layer, v.filter, v.y, v.x); } catch (e) { /* another model */ } }
    window.scrollTo(0, v.scroll || 0);
  }
  function setupWatch() {
    var w = DATA.watch, bar = $("watch");
    if (!w) return;
    bar.hidden = false;
    var kept = w.best_epoch ? " (epoch " + w.best_epoch + ")" : "";
    bar.textContent = w.done ? "Training ended (" + w.status.replace("_", " ") + "): the model kept" + kept + "." :
      w.status === "saving" ? "Training ended: the model kept" + kept + "; saving the model file, the report and the explorer…" :
      "Live: epoch " + w.epoch + " of " + w.epochs + " done; this page reloads itself when the next one ends.";
    restoreView();
    if (w.done) return;
    var timer = setInterval(function () {
      fetch(w.api, { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (j) {
        if (j.epoch !== w.epoch || j.status !== w.status) { clearInterval(timer); saveView(); location.reload(); }
      }).catch(function () {
        clearInterval(timer);
        bar.textContent = "The live view has stopped (the run ended or was interrupted); this page shows epoch " + w.epoch + ".";
      });
    }, POLL_MS);
  }

  // ---- start ---------------------------------------------------------------------------------------
  function setup() {
    var m = DATA.meta, parts = [];
    for (var k in m) if (m[k] !== null && m[k] !== "") parts.push(k + ": " + m[k]);
    $("meta").textContent = parts.join(" · ");
    $("foot").textContent = "Written by convscope " + m.convscope + ". Self-contained: every number is embedded; no network.";
    var sel = $("slide-layer");
    CONVS.forEach(function (i) { sel.appendChild(el("option", { value: String(i) }, "[" + i + "] " + LAYERS[i].name)); });
    sel.addEventListener("change", function () { play(false); select(+sel.value, 0, 0, 0); });
    $("slide-filter").addEventListener("change", function () {
      var v = parseInt($("slide-filter").value, 10), K = LAYERS[S.layer].shape[0];
      if (!isNaN(v)) select(S.layer, Math.max(0, Math.min(K - 1, v)), S.y, S.x);
    });
    $("slide-left").addEventListener("click", function () { move(0, -1); });
    $("slide-right").addEventListener("click", function () { move(0, 1); });
    $("slide-up").addEventListener("click", function () { move(-1, 0); });
    $("slide-down").addEventListener("click", function () { move(1, 0); });
    $("slide-play").addEventListener("click", function () { play(); });
    document.addEventListener("keydown", function (e) {
      var t = e.target && e.target.tagName;
      if (t === "INPUT" || t === "SELECT" || t === "TEXTAREA") return;
      var d = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] }[e.key];
      if (d) { e.preventDefault(); move(d[0], d[1]); }
      else if (e.key === " " && t !== "BUTTON") { e.preventDefault(); play(); }
    });
    if (S.layer >= 0) S.rf = { layer: S.layer, y: 0, x: 0, filter: 0 };
    setupLive(); renderCards(); renderFilters(); renderTraining(); renderAll(); setupWatch();
  }
  window.convscope = { select: select, state: state, receptiveField: receptiveField };
  window.convscopeArith = ARITH;
  setup();
})();
