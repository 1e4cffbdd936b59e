/* streamprov dashboard and reports: plots drawn with the bundled uPlot (MIT, see
 * uPlot.LICENSE). The same functions draw the served dashboard (/ui, data fetched from the API)
 * and the self-contained HTML reports (data inlined). No network access beyond the API. */
(function () {
  "use strict";
  const SP = {};
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
  const color = (i) => COLORS[i % COLORS.length];

  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids.flat()) {
      if (k === null || k === undefined) continue;
      e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return e;
  }
  SP.h = h;

  function fmtNs(ns) {
    if (ns === null || ns === undefined) return "-";
    const units = [["s", 1e9], ["ms", 1e6], ["µs", 1e3]];
    for (const [u, size] of units) if (Math.abs(ns) >= size) return (ns / size).toFixed(2) + " " + u;
    return Math.round(ns) + " ns";
  }
  SP.fmtNs = fmtNs;
  const fmtTime = (ns) => ns ? new Date(ns / 1e6).toISOString().replace("T", " ").replace("Z", "") : "-";
  const rate = (x) => x ? Math.round(x).toLocaleString("en") + "/s" : "-";

  function table(headers, rows) {
    return h("table", {},
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
  }
  SP.table = table;

  function plotBox(container, title) {
    const box = h("div", { class: "plot" }, h("h3", { text: title }));
    const area = h("div", { class: "plot-area" });
    box.append(area);
    container.append(box);
    return area;
  }

  function widthOf(area) {
    return Math.max(360, Math.min(1100, (area.parentElement || area).clientWidth - 24 || 800));
  }

  function draw(area, opts, data) {
    opts.width = widthOf(area);
    opts.height = opts.height || 280;
    return new uPlot(opts, data, area);
  }

  function empty(area, text) {
    area.append(h("p", { class: "empty", text: text }));
  }

  // Align several [x[], y[]] tables on one sorted x axis (gaps are null, spanned).
  function joined(tables) {
    const clean = tables.map(([xs, ys]) => {
      const m = new Map();
      xs.forEach((x, i) => { if (x !== null && ys[i] !== null) m.set(x, ys[i]); });
      const k = [...m.keys()].sort((a, b) => a - b);
      return [k, k.map((x) => m.get(x))];
    });
    return uPlot.join(clean);
  }

  // -- plots -------------------------------------------------------------------------------
  SP.plotCdf = function (container, items, title) {
    const area = plotBox(container, title || "latency distribution (CDF)");
    const usable = items.filter((it) => it.series && it.series.count);
    if (!usable.length) return empty(area, "no chains to measure");
    const data = joined(usable.map((it) => [it.series.cdf.latencyMs, it.series.cdf.fraction]));
    return draw(area, {
      scales: { x: { time: false }, y: { range: [0, 1] } },
      axes: [{ label: "end-to-end latency (ms)" }, { label: "fraction of chains" }],
      series: [{ label: "latency ms" }].concat(usable.map((it, i) => ({
        label: it.label, stroke: color(i), width: 2, spanGaps: true,
      }))),
    }, data);
  };

  SP.plotThroughput = function (container, items, title) {
    const area = plotBox(container, title || "throughput over time");
    const usable = items.filter((it) => it.series && it.series.count);
    if (!usable.length) return empty(area, "no chains to measure");
    const data = joined(usable.map((it) => [it.series.throughput.t, it.series.throughput.rate]));
    return draw(area, {
      scales: { x: { time: false } },
      axes: [{ label: "seconds since the first record" }, { label: "records/s completed" }],
      series: [{ label: "s" }].concat(usable.map((it, i) => ({
        label: it.label, stroke: color(i), width: 2, spanGaps: true,
        fill: usable.length === 1 ? "rgba(31,119,180,0.12)" : undefined,
      }))),
    }, data);
  };

  SP.plotHops = function (container, chain) {
    const area = plotBox(container, "hops of record " + chain.recordId + " (" + chain.outcome + ")");
    const hops = chain.provenance || [];
    if (!hops.length) return empty(area, "no hops");
    const t0 = hops[0].timestamp;
    const xs = hops.map((_, i) => i);
    const per = hops.map((hp, i) => i ? (hp.timestamp - hops[i - 1].timestamp) / 1e6 : 0);
    const since = hops.map((hp) => (hp.timestamp - t0) / 1e6);
    const names = hops.map((hp) => hp.nodeId);
    return draw(area, {
      scales: { x: { time: false, range: [-0.5, hops.length - 0.5] } },
      axes: [{ label: "hop", values: (u, vals) => vals.map((v) => Number.isInteger(v) && names[v]
        ? v + " " + names[v].split("/").slice(1, 2).join("") : "") },
      { label: "ms" }],
      series: [{ label: "hop" },
        { label: "since previous hop (ms)", stroke: color(0), fill: "rgba(31,119,180,0.35)",
          paths: uPlot.paths.bars({ size: [0.6, 80] }), points: { show: false } },
        { label: "since hop 0 (ms)", stroke: color(1), width: 2, points: { show: true, size: 7 } }],
    }, [xs, per, since]);
  };

  SP.plotClocks = function (container, clocks) {
    const area = plotBox(container, "clock error bound per node over time (tolerance " +
      clocks.maxSkewMs + " ms)");
    const nodes = clocks.nodes || [];
    if (!nodes.length) return empty(area, "no hops");
    const tables = nodes.map((n) => [n.t, n.errorMs]);
    const allT = nodes.flatMap((n) => n.t);
    const tMin = Math.min(...allT), tMax = Math.max(...allT);
    tables.push([[tMin, tMax], [clocks.maxSkewMs, clocks.maxSkewMs]]);
    const data = joined(tables);
    const maxErr = Math.max(clocks.maxSkewMs, ...nodes.flatMap((n) => n.errorMs));
    draw(area, {
      scales: { x: { time: true }, y: { range: [0, maxErr * 1.1 || 1] } },
      axes: [{}, { label: "error bound (ms)" }],
      series: [{}].concat(nodes.map((n, i) => ({ label: n.nodeId, stroke: color(i), width: 1.5,
        spanGaps: true })), [{ label: "tolerance", stroke: "#2ca02c", width: 2, dash: [6, 4],
        fill: "rgba(44,160,44,0.10)", spanGaps: true }]),
    }, data);
    const offs = clocks.offsets || [];
    const histories = offs.filter((o) => o.history && o.history.t.length);
    if (histories.length) return plotClockHistories(container, histories, clocks.maxSkewMs);
    const area2 = plotBox(container, "clock offset at each node's last sync, with the tolerance band");
    if (!offs.length) return empty(area2, "no node has synchronized (clock sync off?)");
    const ts = offs.map((o) => o.t);
    const lo = Math.min(...ts) - 1, hi = Math.max(...ts) + 1;
    const band = [[lo, hi], [clocks.maxSkewMs, clocks.maxSkewMs]];
    const bandLo = [[lo, hi], [-clocks.maxSkewMs, -clocks.maxSkewMs]];
    const data2 = joined(offs.map((o) => [[o.t], [o.offsetMs]]).concat([band, bandLo]));
    const lim = Math.max(clocks.maxSkewMs, ...offs.map((o) => Math.abs(o.offsetMs))) * 1.2 || 1;
    draw(area2, {
      scales: { x: { time: true }, y: { range: [-lim, lim] } },
      axes: [{}, { label: "offset (ms)" }],
      series: [{}].concat(offs.map((o, i) => ({ label: o.nodeId, stroke: color(i),
        paths: () => null, points: { show: true, size: 9, fill: color(i) } })),
      [{ label: "+tolerance", stroke: "#2ca02c", dash: [6, 4], spanGaps: true },
        { label: "-tolerance", stroke: "#2ca02c", dash: [6, 4], spanGaps: true }]),
    }, data2);
  };

  // The last run's sync rounds per node: the offset with its error bound around it, and the
  // bound itself against the tolerance (a point's bound is the widest over its rounds).
  function plotClockHistories(container, offs, maxSkewMs) {
    const allT = offs.flatMap((o) => o.history.t);
    const tMin = Math.min(...allT), tMax = Math.max(...allT);
    const tol = [[tMin, tMax], [maxSkewMs, maxSkewMs]];
    const area = plotBox(container, "clock offset per node over the last run (each sync " +
      "round), shaded: ± its error bound; dashed: ± tolerance " + maxSkewMs + " ms");
    const tables = [];
    const series = [{}];
    const bands = [];
    offs.forEach((o, i) => {
      const hs = o.history;
      tables.push([hs.t, hs.offsetMs],
        [hs.t, hs.offsetMs.map((v, k) => v + hs.errorMs[k])],
        [hs.t, hs.offsetMs.map((v, k) => v - hs.errorMs[k])]);
      const at = series.length;
      series.push({ label: o.nodeId, stroke: color(i), width: 2, spanGaps: true },
        { label: o.nodeId + " +bound", stroke: color(i) + "55", width: 1, spanGaps: true },
        { label: o.nodeId + " -bound", stroke: color(i) + "55", width: 1, spanGaps: true });
      bands.push({ series: [at + 1, at + 2], fill: color(i) + "22" });
    });
    tables.push(tol, [tol[0], [-maxSkewMs, -maxSkewMs]]);
    series.push({ label: "+tolerance", stroke: "#2ca02c", dash: [6, 4], spanGaps: true },
      { label: "-tolerance", stroke: "#2ca02c", dash: [6, 4], spanGaps: true });
    const lim = Math.max(maxSkewMs, ...offs.flatMap((o) => o.history.offsetMs.map((v, k) =>
      Math.abs(v) + o.history.errorMs[k]))) * 1.15 || 1;
    const u = draw(area, { scales: { x: { time: true }, y: { range: [-lim, lim] } },
      axes: [{}, { label: "offset (ms)" }], series: series, bands: bands }, joined(tables));
    // the bound lines only edge the shading: keep them out of the legend
    const edges = new Set(bands.flatMap((b) => b.series));
    u.root.querySelectorAll(".u-legend .u-series").forEach((row, k) => {
      if (edges.has(k)) row.style.display = "none";
    });

    const area2 = plotBox(container, "clock error bound per node at each sync round (the " +
      "widest since the round before), with the tolerance band");
    const tables2 = offs.map((o) => [o.history.t, o.history.errorMs]).concat([tol]);
    const maxErr = Math.max(maxSkewMs, ...offs.flatMap((o) => o.history.errorMs));
    draw(area2, {
      scales: { x: { time: true }, y: { range: [0, maxErr * 1.1 || 1] } },
      axes: [{}, { label: "error bound (ms)" }],
      series: [{}].concat(offs.map((o, i) => ({ label: o.nodeId, stroke: color(i), width: 1.5,
        spanGaps: true, paths: uPlot.paths.stepped({ align: 1 }),
        points: { show: true, size: 5, fill: color(i) } })),
      [{ label: "tolerance", stroke: "#2ca02c", width: 2, dash: [6, 4],
        fill: "rgba(44,160,44,0.10)", spanGaps: true }]),
    }, joined(tables2));
  }

  function nodesOf(x) {
    if (typeof x === "number") return x;
    if (x && typeof x === "object") {
      if (typeof x.nodes === "number") return x.nodes;
      if (x.nodes && typeof x.nodes === "object") return Math.max(...Object.values(x.nodes));
    }
    return null;
  }
  SP.nodesOf = nodesOf;

  SP.plotScaling = function (container, events) {
    const area = plotBox(container, "scaling decisions over time (nodes per stage after each)");
    const evs = (events || []).filter((e) => nodesOf(e.to) !== null)
      .sort((a, b) => a.timeNs - b.timeNs);
    if (!evs.length) return empty(area, "no scaling decisions yet");
    const groups = new Map();
    for (const e of evs) {
      const key = (e.streamId || "-") + " / " + (e.stage || "all stages");
      if (!groups.has(key)) groups.set(key, [[], []]);
      const g = groups.get(key);
      const from = nodesOf(e.from);
      if (!g[0].length && from !== null) { g[0].push(e.timeNs / 1e9 - 1e-3); g[1].push(from); }
      g[0].push(e.timeNs / 1e9); g[1].push(nodesOf(e.to));
    }
    const keys = [...groups.keys()];
    const data = joined(keys.map((k) => groups.get(k)));
    const xs = data[0];
    const pad = Math.max(1, (xs[xs.length - 1] - xs[0]) * 0.05);
    return draw(area, {
      scales: { x: { time: true, range: [xs[0] - pad, xs[xs.length - 1] + pad] },
        y: { range: (u, mn, mx) => [0, Math.max(mx, 1) + 1] } },
      axes: [{}, { label: "nodes" }],
      series: [{}].concat(keys.map((k, i) => ({ label: k, stroke: color(i), width: 2,
        spanGaps: true, paths: uPlot.paths.stepped({ align: 1 }),
        points: { show: true, size: 9, fill: color(i) } }))),
    }, data);
  };

  SP.plotStreams = function (container, streams) {
    const area = plotBox(container, "streams and their time ranges (hop 0)");
    const ss = (streams || []).filter((s) => s.firstNs && s.lastNs);
    if (!ss.length) return empty(area, "no streams yet");
    const data = joined(ss.map((s, i) => [[s.firstNs / 1e9, Math.max(s.lastNs, s.firstNs + 1e6) / 1e9],
      [i + 1, i + 1]]));
    const xs = data[0];
    const pad = Math.max(0.5, (xs[xs.length - 1] - xs[0]) * 0.05);
    return draw(area, {
      height: 80 + 40 * ss.length,
      scales: { x: { time: true, range: [xs[0] - pad, xs[xs.length - 1] + pad] },
        y: { range: [0, ss.length + 1] } },
      axes: [{}, { values: (u, vals) => vals.map((v) => ss[v - 1] ? ss[v - 1].streamId : "") }],
      series: [{}].concat(ss.map((s, i) => ({ label: s.streamId, stroke: color(i), width: 10,
        spanGaps: true, points: { show: true, size: 12, fill: color(i) } }))),
    }, data);
  };

  SP.plotEvaluations = function (container, evaluations, p99BoundMs) {
    const area = plotBox(container, "evaluations: cost vs p99 latency (SLO " + p99BoundMs + " ms)");
    const evs = (evaluations || []).filter((e) => e.p99LatencyNs < 2 ** 62);
    if (!evs.length) return empty(area, "no evaluations");
    const met = evs.filter((e) => e.sloMet), missed = evs.filter((e) => !e.sloMet);
    const costs = evs.map((e) => e.cost);
    const lo = Math.min(...costs), hi = Math.max(...costs);
    const pad = Math.max(1e-3, (hi - lo) * 0.1);
    const tables = [met, missed].map((g) => [g.map((e) => e.cost), g.map((e) => e.p99LatencyNs / 1e6)]);
    tables.push([[lo - pad, hi + pad], [p99BoundMs, p99BoundMs]]);
    return draw(area, {
      scales: { x: { time: false, range: [lo - pad, hi + pad] } },
      axes: [{ label: "cost per hour" }, { label: "p99 latency (ms)" }],
      series: [{ label: "cost" },
        { label: "SLO met", stroke: "#2ca02c", paths: () => null, points: { show: true, size: 10, fill: "#2ca02c" } },
        { label: "SLO missed", stroke: "#d62728", paths: () => null, points: { show: true, size: 10, fill: "#d62728" } },
        { label: "p99 bound", stroke: "#555", dash: [6, 4], spanGaps: true }],
    }, joined(tables));
  };

  // -- sections shared by pages and reports --------------------------------------------------
  function latRow(s) {
    if (!s || !s.count) return "-";
    return "p50 " + fmtNs(s.p50) + ", p95 " + fmtNs(s.p95) + ", p99 " + fmtNs(s.p99) + ", max " + fmtNs(s.max);
  }
  function reportRows(doc) {
    const r = doc.report || {};
    const req = doc.request || {};
    return [["state", doc.state], ["stream", req.streamId],
      ["window", (req.startTime || "") + " .. " + (req.endTime || "")],
      ["configuration", r.configurationId || req.configurationId], ["speed", (req.replaySpeed || r.speed) + "x"],
      ["records", (r.records ?? "-").toLocaleString("en")],
      ["throughput", rate(r.achievedThroughput) + " of " + rate(r.targetThroughput)],
      ["latency", latRow(r.latencyNs)], ["pacing lag", latRow(r.pacingLagNs)],
      ["kept up", r.keptUp === undefined ? "-" : (r.keptUp ? "yes" : "no")],
      ["errors", r.errors ?? "-"], ["fidelity", r.fidelity || "-"]];
  }
  SP.replaySection = function (container, doc, series) {
    const r = doc.report || {};
    container.append(h("h2", { text: "replay " + doc.replayId }));
    container.append(table(["", "value"], reportRows(doc)));
    const hops = Object.entries(r.perHopLatencyNs || {});
    if (hops.length) {
      container.append(h("h3", { text: "per-hop latency" }));
      container.append(table(["stage", "latency"], hops.map(([s, v]) => [s, latRow(v)])));
    }
    const label = (r.configurationId || doc.replayId);
    SP.plotCdf(container, [{ label: label, series: series }]);
    SP.plotThroughput(container, [{ label: label, series: series }]);
  };

  SP.compareSection = function (container, docs, seriesList) {
    container.append(h("h2", { text: "replays side by side" }));
    const rows = docs.map(reportRows);
    const labels = rows[0].map((r) => r[0]);
    container.append(table([""].concat(docs.map((d) => d.replayId)),
      labels.map((l, i) => [l].concat(rows.map((r) => r[i][1])))));
    const items = docs.map((d, i) => ({ label: d.replayId + " (" + ((d.report || {}).configurationId || "?") + ")",
      series: seriesList[i] }));
    const grid = h("div", { class: "side-by-side" });
    container.append(grid);
    SP.plotCdf(grid, items);
    SP.plotThroughput(grid, items);
  };

  SP.tuneSection = function (container, job, replays) {
    const req = job.request || {};
    const slo = req.slo || {};
    container.append(h("h2", { text: "tuning job " + job.tuneId + " (" + job.state + ")" }));
    const best = job.best;
    const cfg = (c) => c ? c.nodes + " x " + c.nodeType + ", batch " + c.batchSize : "-";
    container.append(table(["", "value"], [["stream", req.streamId], ["algorithm", req.algorithm],
      ["budget", req.budget], ["SLO", "p99 <= " + slo.p99LatencyMs + " ms" + (slo.keepUp ? ", keep up" : "")],
      ["best", best ? cfg(best.configuration) + " at " + best.cost : "none met the SLO"],
      ["evaluations", (job.evaluations || []).length]]));
    SP.plotEvaluations(container, job.evaluations, slo.p99LatencyMs);
    container.append(table(["#", "configuration", "cost/h", "p99", "throughput", "kept up", "SLO"],
      (job.evaluations || []).map((e) => [e.index, cfg(e.configuration), e.cost,
        e.p99LatencyNs < 2 ** 62 ? fmtNs(e.p99LatencyNs) : "-", rate(e.throughput),
        e.keptUp ? "yes" : "no", e.sloMet ? "met" : "missed"])));
    if (replays && replays.length) {
      const items = replays.map((r) => ({ label: r.doc.replayId + " (" + ((r.doc.report || {}).configurationId || "?") + ")",
        series: r.series }));
      SP.plotCdf(container, items, "latency distribution of the evaluation replays (CDF)");
      SP.plotThroughput(container, items, "throughput of the evaluation replays");
    }
  };

  SP.renderReport = function (root, data) {
    if (data.kind === "replay") {
      SP.replaySection(root, data.replay.doc, data.replay.series);
    } else if (data.kind === "compare") {
      SP.compareSection(root, data.replays.map((r) => r.doc), data.replays.map((r) => r.series));
    } else if (data.kind === "tune") {
      SP.tuneSection(root, data.job, data.replays);
    }
    if (data.scaling && data.scaling.length) SP.plotScaling(root, data.scaling);
    document.body.setAttribute("data-ready", "1");
  };

  // -- dashboard pages (fetch from the API) ----------------------------------------------------
  async function getJson(url) {
    const res = await fetch(url, { headers: { accept: "application/json" } });
    const body = await res.json();
    if (!res.ok) throw new Error((body.error && body.error.message) || res.statusText);
    return body;
  }
  const link = (href, text) => h("a", { href: href }, text);
  const q = (name) => new URLSearchParams(location.search).get(name);

  const pages = {};
  pages.overview = async function (root) {
    const [streams, replays, tunes] = await Promise.all([getJson("/streams"), getJson("/replays"),
      getJson("/tune")]);
    root.append(h("h2", { text: "streams" }));
    root.append(table(["stream", "records", "chains", "first hop 0", "last hop 0", ""],
      streams.map((s) => [s.streamId, s.records.toLocaleString("en"), s.chains.toLocaleString("en"),
        fmtTime(s.firstNs), fmtTime(s.lastNs), h("span", {}, link("/ui/clocks?stream=" + s.streamId, "clocks"),
          " ", link("/ui/record?stream=" + s.streamId, "lineage"))])));
    SP.plotStreams(root, streams);
    root.append(h("h2", { text: "replays" }));
    const done = replays.replays.filter((d) => d.report);
    root.append(table(["replay", "stream", "configuration", "state", "records", "p99", ""],
      replays.replays.map((d) => [link("/ui/replay?id=" + d.replayId, d.replayId), d.request.streamId,
        d.request.configurationId, d.state, d.report ? d.report.records : "-",
        d.report ? fmtNs(d.report.latencyNs.p99) : "-", ""])));
    if (done.length >= 2) {
      root.append(h("p", {}, link("/ui/compare?ids=" + done.slice(0, 2).map((d) => d.replayId).join(","),
        "compare the two newest replays side by side")));
    }
    root.append(h("h2", { text: "tuning jobs" }));
    root.append(table(["job", "stream", "algorithm", "state"], tunes.jobs.map((j) =>
      [link("/ui/tune?id=" + j.tuneId, j.tuneId), j.request.streamId, j.request.algorithm, j.state])));
  };

  pages.record = async function (root) {
    const streams = await getJson("/streams");
    const stream = q("stream") || (streams[0] && streams[0].streamId);
    let record = q("record");
    if (!stream) { root.append(h("p", { text: "no streams yet" })); return; }
    if (record === null) {
      const page = await getJson("/streams/" + stream + "/provenance?limit=1");
      record = page.chains.length ? page.chains[0].recordId : null;
    }
    const form = h("form", { method: "get", action: "/ui/record" },
      "stream ", h("input", { name: "stream", value: stream }), " record ",
      h("input", { name: "record", value: record ?? "" }), " ", h("button", { type: "submit" }, "show"));
    root.append(form);
    if (record === null) return;
    const chain = await getJson("/streams/" + stream + "/records/" + record + "/provenance");
    for (const c of [chain].concat(chain.branches || [])) {
      root.append(h("h2", { text: "record " + c.recordId + (c.branch ? " branch " + c.branch : "") + ": " + c.outcome }));
      SP.plotHops(root, c);
      const t0 = c.provenance[0].timestamp;
      root.append(table(["hop", "node", "timestamp", "since hop 0", "since previous", "logical", "error bound"],
        c.provenance.map((hp, i) => [i, hp.nodeId, fmtTime(hp.timestamp), fmtNs(hp.timestamp - t0),
          fmtNs(i ? hp.timestamp - c.provenance[i - 1].timestamp : 0), hp.logical, fmtNs(hp.errorNs)])));
    }
  };

  pages.replay = async function (root) {
    const id = q("id");
    const doc = await getJson("/replay/" + id);
    const series = await getJson("/ui/data/replay/" + id + "/series");
    SP.replaySection(root, doc, series);
  };

  pages.compare = async function (root) {
    const ids = (q("ids") || "").split(",").filter((x) => x);
    const docs = await Promise.all(ids.map((id) => getJson("/replay/" + id)));
    const series = await Promise.all(ids.map((id) => getJson("/ui/data/replay/" + id + "/series")));
    SP.compareSection(root, docs, series);
  };

  pages.clocks = async function (root) {
    const streams = await getJson("/streams");
    const stream = q("stream") || (streams[0] && streams[0].streamId);
    if (!stream) { root.append(h("p", { text: "no streams yet" })); return; }
    const clocks = await getJson("/ui/data/clocks?streamId=" + encodeURIComponent(stream));
    root.append(h("h2", { text: "clocks of stream " + stream + " (policy " + clocks.policy + ")" }));
    SP.plotClocks(root, clocks);
  };

  pages.scaling = async function (root) {
    const events = (await getJson("/scaling/events")).events;
    root.append(h("h2", { text: "scaling audit trail" }));
    SP.plotScaling(root, events);
    const cfg = (x) => x && typeof x === "object" ? nodesOf(x) + " x " + x.nodeType + ", batch " + x.batchSize
      : (x ?? "-");
    root.append(table(["time", "stream", "stage", "from", "to", "trigger", "applied"],
      events.map((e) => [e.time, e.streamId, e.stage || "all", cfg(e.from), cfg(e.to), e.trigger, e.applied])));
  };

  pages.tune = async function (root) {
    const job = await getJson("/tune/" + q("id"));
    SP.tuneSection(root, job, []);
  };

  SP.start = function () {
    const root = document.getElementById("main");
    const page = document.body.getAttribute("data-page");
    const fn = pages[page];
    if (!fn) return;
    fn(root).then(() => document.body.setAttribute("data-ready", "1"), (err) => {
      root.append(h("p", { class: "error", text: String(err.message || err) }));
      document.body.setAttribute("data-ready", "error");
    });
  };
  SP.pages = pages;
  window.SP = SP;
})();
