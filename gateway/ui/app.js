// Prism's dashboard: the sweeps list and a sweep's page, read from the v1 JSON API.
//
// Trust: every string the API returns may have been written by a hostile trial (metric names
// and values, logs, artifact names, reasons). They reach the page only as text nodes
// (textContent, Node.append of strings) or as ECharts text options, which ECharts paints on its
// canvas; tooltips use renderMode "richText", painted too, never HTML. Nothing here assigns
// innerHTML, and the Content-Security-Policy allows no inline script.
//
// The token lives in sessionStorage only (this tab) and goes out as a bearer header; the event
// stream is read with fetch(), since EventSource cannot send that header.
"use strict";

(() => {
  const TOKEN_KEY = "prism.token";
  const LIST_POLL_MS = 2000;
  // Whole sweeps read at once by the list, for their best value (see refreshBest).
  const LIST_READS_AT_ONCE = 4;
  const SWEEP_REFRESH_MS = 700;
  const RETRY_MAX_MS = 10000;
  // What the metric curves keep of what trials report (see addMetric).
  const MAX_METRIC_NAMES = 100;
  const MAX_POINTS = 5000;
  const MAX_PAGE_VALUES = 200000;
  const OUTCOMES = [
    "succeeded", "pruned", "failed", "timed_out", "oom_killed", "output_limit", "cancelled",
    "sandbox_error", "runner_lost",
  ];
  // Why a sweep stopped before its last trial (its stopReason).
  const STOP_REASONS = {
    target_reached: "its target was reached",
    deadline: "its deadline passed",
    search_failed: "its sampler failed",
  };

  // ---- DOM: text only ----

  /** An element with attributes (never event handlers or URLs from data) and text or nodes. */
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value !== undefined && value !== null && value !== false) {
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    node.append(...children.filter((c) => c !== undefined && c !== null).map(asChild));
    return node;
  }

  function asChild(child) {
    return child instanceof Node ? child : String(child);
  }

  const $ = (id) => document.getElementById(id);

  function formatValue(value) {
    if (typeof value === "number") {
      return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
    }
    if (value === undefined) return "";
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return text.length > 80 ? `${text.slice(0, 79)}…` : text;
  }

  function formatAge(iso) {
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (!Number.isFinite(seconds)) return "";
    if (seconds < 60) return `${Math.floor(seconds)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h`;
    return `${Math.floor(seconds / 86400)} d`;
  }

  /** A name for the saved file: the last part, letters, digits, dot, dash, underscore. */
  function safeFileName(name) {
    const last = String(name).split("/").pop() || "";
    const cleaned = last.replace(/[^A-Za-z0-9._-]+/g, "_").replace(/^[._]+/, "").slice(0, 120);
    return cleaned || "artifact";
  }

  // ---- The API ----

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  async function api(path, { method = "GET", body, signal } = {}) {
    if (!token()) throw new ApiError(401, "no token entered");
    const headers = { Authorization: `Bearer ${token()}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const reply = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
      credentials: "omit",
    });
    if (!reply.ok) throw new ApiError(reply.status, await errorMessage(reply));
    return reply;
  }

  async function errorMessage(reply) {
    try {
      const body = await reply.json();
      if (body && typeof body.message === "string") return body.message;
    } catch {
      // Not JSON: the status says enough.
    }
    return reply.statusText || "request failed";
  }

  const apiJson = async (path, options) => (await api(path, options)).json();

  /**
   * A sweep's answer with every trial: it carries the first 1,000, and past them
   * nextTrialsPageToken, from which the rest are read a page of 1,000 at a time.
   */
  async function wholeSweep(sweep, signal) {
    const trials = sweep.trials || [];
    let token = sweep.nextTrialsPageToken || "";
    while (token) {
      const query = `pageSize=1000&pageToken=${encodeURIComponent(token)}`;
      const page = await apiJson(`${sweepPath(sweep.id)}/trials?${query}`, { signal });
      trials.push(...(page.trials || []));
      token = page.nextPageToken || "";
    }
    return { ...sweep, trials, nextTrialsPageToken: "" };
  }
  const sweepPath = (id) => `/v1/sweeps/${encodeURIComponent(id)}`;
  const trialPath = (id, index) => `${sweepPath(id)}/trials/${Number(index)}`;

  // ---- Notices and the token ----

  function notify(text) {
    const notice = $("notice");
    notice.textContent = text;
    notice.hidden = !text;
  }

  function askForToken(message) {
    $("login").hidden = false;
    $("forget").hidden = true;
    notify(message);
    $("token").focus();
  }

  /**
   * Shows an error. A refused token (401) stops the view and asks for another: true. An
   * unavailable service (503: the orchestrator restarting, or no token configured on the
   * gateway) leaves the view retrying, with the form up in case the token is what changed.
   */
  function report(error) {
    if (error.name === "AbortError") return true;
    if (error instanceof ApiError && error.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      // Nothing half-loaded stays up behind the form; entering a token starts the view again.
      if (current) current.stop();
      $("view").replaceChildren();
      askForToken(`The gateway refused the token (401: ${error.message}). Enter the token again.`);
      return true;
    }
    if (error instanceof ApiError && error.status === 503) {
      $("login").hidden = false;
      notify(`The service is unavailable (503: ${error.message}). Retrying; ` +
        "or enter the token again below.");
      return false;
    }
    const status = error instanceof ApiError ? `${error.status}: ` : "";
    notify(`${status}${error.message}`);
    return false;
  }

  /** A read went through: whatever went wrong before is over. */
  function answered() {
    $("login").hidden = true;
    notify("");
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done);
    });
  }

  // ---- Views: one at a time, stopped through its AbortController ----

  let current = null;

  function route() {
    if (current) current.stop();
    const controller = new AbortController();
    const cleanups = [];
    current = {
      signal: controller.signal,
      onStop: (fn) => cleanups.push(fn),
      stop: () => {
        controller.abort();
        cleanups.forEach((fn) => fn());
      },
    };
    $("view").replaceChildren();
    $("live").textContent = "";
    if (!token()) {
      askForToken("");
      return;
    }
    $("login").hidden = true;
    $("forget").hidden = false;
    notify("");
    const match = /^#\/sweeps\/([^/]+)$/.exec(location.hash);
    if (!match) {
      listView(current);
      return;
    }
    let sweepId;
    try {
      sweepId = decodeURIComponent(match[1]);
    } catch {
      // A hand-typed or cut link (#/sweeps/%E0): no sweep has such an id.
      $("view").append(el("p", {}, el("a", { href: "#/" }, "← all sweeps")));
      notify("No such sweep: the link is not a sweep's id.");
      return;
    }
    sweepView(sweepId, current);
  }

  // ---- The sweeps list ----

  function listView(view) {
    const body = el("tbody");
    const table = el(
      "table",
      { id: "sweeps", class: "grid" },
      el("thead", {}, el("tr", {}, ...["Sweep", "Task", "State", "Trials", "Best", "Age"].map(
        (h) => el("th", {}, h)))),
      body,
    );
    const empty = el("p", { class: "hint", hidden: true }, "No sweeps yet.");
    $("view").append(el("h1", {}, "Sweeps"), table, empty);
    // The list carries no best trial: each sweep is read whole again only when it has changed.
    const best = new Map();

    // A sweep that cannot be read (a 5xx, an answer too large) keeps its best cell as it was
    // and is read again at the next poll; it never keeps the rest of the list from showing.
    async function refreshBest(sweeps) {
      const changed = sweeps.filter((s) => best.get(s.id)?.key !== bestKey(s));
      await eachAtMost(LIST_READS_AT_ONCE, changed, async (s) => {
        try {
          const whole = s.spec?.objective?.metric
            ? await apiJson(sweepPath(s.id), { signal: view.signal })
            : s;
          best.set(s.id, { key: bestKey(s), text: bestText(whole) });
        } catch (error) {
          if (error.name === "AbortError" || (error instanceof ApiError && error.status === 401)) {
            throw error;
          }
        }
      });
    }

    async function poll() {
      while (!view.signal.aborted) {
        try {
          const page = await apiJson("/v1/sweeps?pageSize=50", { signal: view.signal });
          const sweeps = page.sweeps || [];
          await refreshBest(sweeps);
          body.replaceChildren(...sweeps.map((s) => sweepRow(s, best.get(s.id)?.text || "")));
          empty.hidden = sweeps.length > 0;
          $("live").textContent = `live · ${new Date().toLocaleTimeString()}`;
          answered();
        } catch (error) {
          if (report(error)) return;
        }
        await sleep(LIST_POLL_MS, view.signal);
      }
    }
    poll();
  }

  /** Runs fn over the items, at most `limit` at a time. */
  async function eachAtMost(limit, items, fn) {
    const queue = [...items];
    const worker = async () => {
      while (queue.length) await fn(queue.shift());
    };
    await Promise.all(Array.from({ length: Math.min(limit, queue.length) }, worker));
  }

  const bestKey = (s) => `${s.state}/${s.counts?.finished ?? 0}`;

  function bestText(sweep) {
    const metric = sweep.spec?.objective?.metric;
    if (!metric || !sweep.bestTrial) return "";
    return `${metric} = ${formatValue(sweep.bestTrial.metrics?.[metric])}` +
      ` (trial ${sweep.bestTrial.index ?? 0})`;
  }

  function sweepRow(sweep, best) {
    const counts = sweep.counts || {};
    const trials = `${counts.succeeded ?? 0} ok / ${counts.finished ?? 0} done / ${counts.total ?? 0}` +
      (counts.pruned ? ` · ${counts.pruned} pruned` : "") +
      (counts.running ? ` · ${counts.running} running` : "");
    const link = el("a", { href: `#/sweeps/${encodeURIComponent(sweep.id)}` }, sweep.id.slice(0, 8));
    return el(
      "tr",
      { "data-sweep": sweep.id },
      el("td", { class: "mono" }, link),
      el("td", {}, sweep.spec?.task ?? ""),
      el("td", {}, stateBadge(sweep.state)),
      el("td", {}, trials),
      el("td", { class: "best-value" }, best),
      el("td", {}, formatAge(sweep.createTime)),
    );
  }

  function stateBadge(state) {
    return el("span", { class: `badge state-${/^[a-z_]+$/.test(state) ? state : "other"}` }, state);
  }

  /** The class of an outcome's cell: its own for the outcomes this page knows. */
  const outcomeClass = (outcome) => (OUTCOMES.includes(outcome) ? `outcome-${outcome}` : undefined);

  /** An int64 of the API (a string in its JSON) as a number; undefined when absent. */
  const int64 = (value) => (value === undefined || value === null ? undefined : Number(value));

  // ---- A sweep's page ----

  function sweepView(sweepId, view) {
    const page = {
      id: sweepId,
      sweep: null,
      sort: { key: "index", descending: false },
      filter: "",
      selected: null,
      // trial index -> {count, size, points: [{x, values}]} from the metric events, in their
      // order; size is the number of values in points, valueCount the page's total.
      metrics: new Map(),
      valueCount: 0,
      metricNames: new Set(),
      chosenMetric: "",
      charts: [],
    };
    const parts = {
      heading: el("h1", {}, "Sweep"),
      summary: el("div", { class: "summary" }),
      cancel: el("button", { id: "cancel", type: "button", disabled: true }, "Cancel sweep"),
      filter: el("select", { id: "outcome-filter", "aria-label": "Filter by outcome" }),
      table: el("table", { id: "trials", class: "grid" }),
      plot: el("div", { id: "plot", class: "chart" }),
      metricChoice: el("select", { id: "metric-choice", "aria-label": "Metric" }),
      curves: el("div", { id: "curves", class: "chart" }),
      history: el("div", { id: "history", class: "chart" }),
      detail: el("section", { id: "trial", class: "detail", hidden: true }),
    };
    page.parts = parts;
    parts.filter.append(el("option", { value: "" }, "every outcome"),
      el("option", { value: "-" }, "not finished"),
      ...OUTCOMES.map((o) => el("option", { value: o }, o)));
    $("view").append(
      el("p", {}, el("a", { href: "#/" }, "← all sweeps")),
      parts.heading, parts.summary, el("p", {}, parts.cancel),
      el("h2", {}, "Trials ", parts.filter), parts.table,
      el("div", { class: "charts" },
        el("section", {}, el("h2", {}, "Objective against the parameters"), parts.plot),
        el("section", {}, el("h2", {}, "Metric curves ", parts.metricChoice), parts.curves),
        el("section", {}, el("h2", {}, "Optimisation history"), parts.history)),
      parts.detail,
    );
    page.charts = [parts.plot, parts.curves, parts.history]
      .map((node) => echarts.init(node, null, { renderer: "canvas" }));
    const resize = () => page.charts.forEach((chart) => chart.resize());
    window.addEventListener("resize", resize);
    view.onStop(() => {
      window.removeEventListener("resize", resize);
      page.charts.forEach((chart) => chart.dispose());
    });

    parts.filter.addEventListener("change", () => {
      page.filter = parts.filter.value;
      renderTrials(page);
    });
    parts.metricChoice.addEventListener("change", () => {
      page.chosenMetric = parts.metricChoice.value;
      page.metricChosenByUser = true;
      renderCurves(page);
    });
    parts.cancel.addEventListener("click", async () => {
      parts.cancel.disabled = true;
      try {
        showSweep(page, await wholeSweep(await apiJson(`${sweepPath(sweepId)}:cancel`, {
          method: "POST", body: {}, signal: view.signal,
        }), view.signal));
      } catch (error) {
        report(error);
        parts.cancel.disabled = false;
      }
    });

    const refresh = throttled(async () => {
      try {
        const sweep = await apiJson(sweepPath(sweepId), { signal: view.signal });
        showSweep(page, await wholeSweep(sweep, view.signal));
        answered();
        // The open trial's logs are read again only once it has changed.
        const open = (page.sweep.trials || []).find((t) => (t.index ?? 0) === page.selected);
        if (open && trialKey(open) !== page.selectedKey) {
          await showTrial(page, page.selected, view.signal);
        }
      } catch (error) {
        // A 4xx will not mend by itself; a restart or a cut connection will: read again.
        if (!report(error) && !(error instanceof ApiError && error.status < 500)) {
          sleep(RETRY_MAX_MS / 5, view.signal).then(() => refresh());
        }
      }
    }, SWEEP_REFRESH_MS, view.signal);
    page.showTrial = (index) => showTrial(page, index, view.signal).catch(report);

    refresh();
    watch(sweepId, view.signal, (event) => {
      if (event.kind === "metric") {
        addMetric(page, event);
      } else if (event.kind !== "heartbeat") {
        refresh();
      }
    }).then((last) => {
      if (last) $("live").textContent = `stream ended: ${last.sweepState || last.kind}`;
      refresh();
    }).catch(report);
  }

  /** Calls fn at most once per `ms`, the last call always honoured. */
  function throttled(fn, ms, signal) {
    let timer = null;
    let last = 0;
    return () => {
      if (timer !== null || signal.aborted) return;
      const wait = Math.max(0, last + ms - Date.now());
      timer = setTimeout(async () => {
        timer = null;
        last = Date.now();
        if (!signal.aborted) await fn();
      }, wait);
    };
  }

  /**
   * Reads the sweep's events until its final one, resuming after the last sequence number seen
   * when the stream breaks. Resolves with the final event (undefined when stopped).
   */
  async function watch(sweepId, signal, onEvent) {
    let after = 0;
    let wait = 500;
    let attempts = 0;
    while (!signal.aborted) {
      $("live").textContent = attempts++ ? "reconnecting…" : "connecting…";
      try {
        const reply = await api(`${sweepPath(sweepId)}/events?afterSeq=${after}`, { signal });
        $("live").textContent = "live";
        const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const event = parseEvent(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
            if (!event) continue;
            wait = 500;
            if (event.kind === "error") {
              after = Math.max(after, event.seq || 0);
              throw new Error("the event stream failed");
            }
            if (event.seq > after && event.kind !== "heartbeat" && event.kind !== "end") {
              after = event.seq;
              onEvent(event);
            }
            if (event.final) return event;
          }
        }
      } catch (error) {
        if (signal.aborted) return undefined;
        // What waiting cannot mend ends the watch; anything else (a restart, a cut) is retried.
        if (error instanceof ApiError && [400, 401, 404].includes(error.status)) throw error;
      }
      await sleep(wait, signal);
      wait = Math.min(wait * 2, RETRY_MAX_MS);
    }
    return undefined;
  }

  function parseEvent(block) {
    const data = block.split("\n").filter((line) => line.startsWith("data:"))
      .map((line) => line.slice(5)).join("\n");
    if (!data.trim()) return null;
    try {
      const event = JSON.parse(data);
      return event && typeof event === "object" ? event : null;
    } catch {
      return null;
    }
  }

  function showSweep(page, sweep) {
    page.sweep = sweep;
    const { parts } = page;
    const counts = sweep.counts || {};
    parts.heading.replaceChildren("Sweep ", el("span", { class: "mono" }, sweep.id), " ",
      stateBadge(sweep.state));
    const objective = sweep.spec?.objective;
    const stop = sweep.stopReason;
    parts.summary.replaceChildren(...[
      el("p", {}, el("strong", {}, "Task: "), sweep.spec?.task ?? ""),
      el("p", { class: "counts" }, `${counts.total ?? 0} trials: ${counts.pending ?? 0} pending, ` +
        `${counts.running ?? 0} running, ${counts.finished ?? 0} finished, ` +
        `${counts.succeeded ?? 0} succeeded` + (counts.pruned ? `, ${counts.pruned} pruned` : "")),
      el("p", {}, el("strong", {}, "Objective: "), objective?.metric
        ? `${objective.goal || "minimize"} ${objective.metric}` : "none"),
      sweep.spec?.search ? el("p", {}, el("strong", {}, "Search: "), searchText(sweep.spec)) : null,
      el("p", { class: "best-value" }, el("strong", {}, "Best: "), bestText(sweep) || "none yet"),
      stop ? el("p", { class: "stop-reason" }, el("strong", {}, "Stopped early: "),
        Object.hasOwn(STOP_REASONS, stop) ? STOP_REASONS[stop] : stop) : null,
    ].filter((p) => p !== null));
    parts.cancel.disabled = sweep.state !== "running";
    renderTrials(page);
    renderPlot(page);
    renderHistory(page);
    const before = page.chosenMetric;
    chooseMetric(page);
    if (page.chosenMetric !== before) scheduleCurves(page);
  }

  /** An adaptive search in a few words: its sampler and budget, and its rule if any. */
  function searchText(spec) {
    const { search, earlyStopping: rule } = spec;
    const text = `${search.sampler || "tpe"} sampler, ${search.trials ?? 0} trials at most`;
    if (!rule) return text;
    return `${text}; ${rule.rule} pruning on ${rule.metric ?? spec.objective?.metric ?? ""}` +
      ` at each ${rule.stepKey || "step"}`;
  }

  // ---- The trial table ----

  function paramNames(sweep) {
    const names = new Set();
    for (const trial of sweep.trials || []) Object.keys(trial.params || {}).forEach((n) => names.add(n));
    return [...names].sort();
  }

  function objectiveOf(sweep, trial) {
    const metric = sweep.spec?.objective?.metric;
    return metric ? trial.metrics?.[metric] : undefined;
  }

  function renderTrials(page) {
    const { sweep, parts, sort } = page;
    if (!sweep) return;
    const params = paramNames(sweep);
    const pruning = (sweep.trials || []).some((t) => t.prunedStep !== undefined);
    const columns = [
      { key: "index", label: "#", value: (t) => t.index ?? 0 },
      { key: "state", label: "state", value: (t) => t.state },
      { key: "outcome", label: "outcome", value: (t) => t.outcome, class: (t) => outcomeClass(t.outcome) },
      { key: "objective", label: sweep.spec?.objective?.metric || "objective",
        value: (t) => objectiveOf(sweep, t) },
      ...(pruning ? [{ key: "pruned", label: "pruned at step", value: (t) => int64(t.prunedStep) }] : []),
      ...params.map((name) => ({ key: `param:${name}`, label: name, value: (t) => t.params?.[name] })),
      { key: "duration", label: "seconds",
        value: (t) => (t.state === "finished" ? t.durationSeconds : undefined) },
      { key: "runner", label: "runner", value: (t) => t.runner },
    ];
    const column = columns.find((c) => c.key === sort.key) || columns[0];
    const bestIndex = sweep.bestTrial ? sweep.bestTrial.index ?? 0 : null;
    const shown = (sweep.trials || [])
      .filter((t) => !page.filter || (page.filter === "-" ? !t.outcome : t.outcome === page.filter))
      .sort((a, b) => compare(column.value(a), column.value(b)) * (sort.descending ? -1 : 1));
    const head = el("tr", {}, ...columns.map((c) => {
      const arrow = c.key === sort.key ? (sort.descending ? " ▼" : " ▲") : "";
      const th = el("th", { class: "sortable", "data-key": c.key }, c.label, arrow);
      th.addEventListener("click", () => {
        page.sort = { key: c.key, descending: c.key === sort.key ? !sort.descending : false };
        renderTrials(page);
      });
      return th;
    }));
    const rows = shown.map((t) => {
      const index = t.index ?? 0;
      const row = el("tr", {
        "data-index": index,
        class: [index === bestIndex ? "best" : "", index === page.selected ? "selected" : ""].join(" ").trim(),
        title: index === bestIndex ? "best trial" : undefined,
      }, ...columns.map((c) => el("td", { class: c.class?.(t) }, formatValue(c.value(t)) ?? "")));
      row.addEventListener("click", () => page.showTrial(index));
      return row;
    });
    parts.table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  }

  /** Numbers before text, missing values last. */
  function compare(a, b) {
    const missing = (v) => v === undefined || v === null || v === "";
    if (missing(a) || missing(b)) return missing(a) - missing(b);
    if (typeof a === "number" && typeof b === "number") return a - b;
    if (typeof a === "number") return -1;
    if (typeof b === "number") return 1;
    return formatValue(a).localeCompare(formatValue(b));
  }

  // ---- The plots ----

  const TEXT_TOOLTIP = { renderMode: "richText", confine: true };

  /** Parallel coordinates: one axis per parameter, then the objective; one line a trial. */
  function renderPlot(page) {
    const { sweep } = page;
    const metric = sweep.spec?.objective?.metric;
    if (!metric) {
      page.charts[0].setOption({
        title: { text: "No objective: nothing to rank the trials by.", left: "center", top: "middle",
          textStyle: { fontSize: 14, fontWeight: "normal", color: "#5c6474" } },
      }, { notMerge: true });
      return;
    }
    const params = paramNames(sweep);
    const axes = params.length ? params : ["trial"];
    const scored = (sweep.trials || []).filter((t) => t.outcome === "succeeded" &&
      typeof objectiveOf(sweep, t) === "number");
    const bestIndex = sweep.bestTrial ? sweep.bestTrial.index ?? 0 : null;
    const columns = [...axes, metric];
    const valueOf = (t, name, i) => {
      if (i === axes.length) return objectiveOf(sweep, t);
      return params.length ? t.params?.[name] : t.index ?? 0;
    };
    const parallelAxis = columns.map((name, i) => {
      const values = scored.map((t) => valueOf(t, name, i));
      if (!values.every((v) => typeof v === "number")) {
        return { dim: i, name, type: "category", data: [...new Set(values.map(formatValue))] };
      }
      // Learning rates and the like span decades: a log axis spreads them out.
      const positive = values.length > 0 && values.every((v) => v > 0);
      const decades = positive && Math.max(...values) / Math.min(...values) >= 100;
      return { dim: i, name, type: decades ? "log" : "value", scale: true };
    });
    const data = scored.map((t) => {
      const value = columns.map((name, i) => {
        const v = valueOf(t, name, i);
        return parallelAxis[i].type === "value" ? v : formatValue(v);
      });
      const isBest = (t.index ?? 0) === bestIndex;
      return {
        name: `trial ${t.index ?? 0}${isBest ? " (best)" : ""}`,
        value,
        lineStyle: isBest ? { color: "#d9480f", width: 4, opacity: 1 } : undefined,
      };
    });
    page.charts[0].setOption({
      animation: false,
      tooltip: TEXT_TOOLTIP,
      parallel: { left: 60, right: 90, top: 40, bottom: 30 },
      parallelAxis,
      series: [{
        type: "parallel",
        // The tooltip lists the trial's value on every axis, named (displayName only: a name
        // from the data, such as "__proto__", is no key of ECharts' own).
        dimensions: columns.map((column, i) => ({ name: `d${i}`, displayName: column })),
        encode: { tooltip: columns.map((_, i) => i) },
        lineStyle: { color: "#3b5bdb", width: 1.5, opacity: 0.6 },
        emphasis: { lineStyle: { width: 3, opacity: 1 } },
        data,
      }],
    }, { notMerge: true });
  }

  /**
   * The optimisation history: each scored trial's objective in the order they finished, and
   * the best value up to it as a line.
   */
  function renderHistory(page) {
    const { sweep } = page;
    const metric = sweep.spec?.objective?.metric;
    const points = (sweep.history || []).filter((p) => typeof p.value === "number" &&
      typeof p.bestValue === "number");
    const hint = !metric ? "No objective: nothing to rank the trials by."
      : !points.length ? "No trial has reported the objective yet." : "";
    if (hint) {
      page.charts[2].setOption({
        title: { text: hint, left: "center", top: "middle",
          textStyle: { fontSize: 14, fontWeight: "normal", color: "#5c6474" } },
      }, { notMerge: true });
      return;
    }
    // x: the nth trial to finish with an objective value; the tooltip names the trial.
    const dimensions = [{ name: "x", displayName: "finished" }, { name: "y", displayName: metric },
      { name: "trial", displayName: "trial" }];
    page.charts[2].setOption({
      animation: false,
      tooltip: { ...TEXT_TOOLTIP, trigger: "item" },
      legend: { top: 0 },
      grid: { left: 60, right: 30, top: 40, bottom: 40 },
      xAxis: { type: "value", name: "trials finished", nameLocation: "middle", nameGap: 25,
        minInterval: 1 },
      yAxis: { type: "value", name: metric, scale: true },
      series: [
        { type: "scatter", name: "trial", dimensions, encode: { x: 0, y: 1, tooltip: [2, 1] },
          data: points.map((p, i) => [i + 1, p.value, p.trialIndex ?? 0]) },
        { type: "line", name: "best so far", step: "end", showSymbol: false, dimensions,
          encode: { x: 0, y: 1, tooltip: [0, 1] },
          lineStyle: { color: "#d9480f", width: 2 }, itemStyle: { color: "#d9480f" },
          data: points.map((p, i) => [i + 1, p.bestValue]) },
      ],
    }, { notMerge: true });
  }

  /**
   * Keeps a metric event's numbers for the curves. A trial writes these names and how many
   * there are: past MAX_METRIC_NAMES new names are ignored, and past MAX_POINTS a trial's
   * curve keeps every other point. The whole page keeps at most MAX_PAGE_VALUES numbers, over
   * every trial and name (a sweep has up to 10,000 trials): past it, the curve holding the most
   * keeps every other point, again until the page is within it. So no trial, and no sweep,
   * can make the page unusable.
   */
  function addMetric(page, event) {
    const values = event.data?.values;
    if (!values || typeof values !== "object") return;
    const index = event.trialIndex ?? 0;
    const curve = page.metrics.get(index) || { count: 0, size: 0, points: [] };
    page.metrics.set(index, curve);
    const x = typeof values.step === "number" ? values.step : curve.count;
    curve.count += 1;
    // No prototype: a metric named __proto__ is kept like any other.
    const kept = Object.create(null);
    let size = 0;
    for (const [name, value] of Object.entries(values)) {
      if (name === "step" || typeof value !== "number") continue;
      if (!page.metricNames.has(name) && page.metricNames.size < MAX_METRIC_NAMES) {
        page.metricNames.add(name);
        page.parts.metricChoice.append(el("option", { value: name }, name));
      }
      if (page.metricNames.has(name)) {
        kept[name] = value;
        size += 1;
      }
    }
    if (!size) return;
    curve.points.push({ x, values: kept });
    curve.size += size;
    page.valueCount += size;
    if (curve.points.length > MAX_POINTS) thin(page, curve);
    while (page.valueCount > MAX_PAGE_VALUES) {
      const largest = [...page.metrics.values()].filter((c) => c.points.length > 1)
        .reduce((a, b) => (!a || b.size > a.size ? b : a), null);
      if (!largest) {
        // Nothing left to thin (a point a trial): the newest is dropped.
        thin(page, curve, []);
        break;
      }
      thin(page, largest);
    }
    chooseMetric(page);
    scheduleCurves(page);
  }

  /** Keeps every other point of a curve (or the points given), counting what is left. */
  function thin(page, curve, points = curve.points.filter((_, i) => i % 2 === 0)) {
    const size = points.reduce((sum, p) => sum + Object.keys(p.values).length, 0);
    page.valueCount -= curve.size - size;
    curve.size = size;
    curve.points = points;
  }

  /** Until the user picks one, the curves show the objective, or else the first name seen. */
  function chooseMetric(page) {
    if (page.metricChosenByUser || !page.metricNames.size) return;
    const objective = page.sweep?.spec?.objective?.metric;
    const chosen = page.metricNames.has(objective) ? objective : page.chosenMetric;
    page.chosenMetric = chosen || [...page.metricNames][0];
    page.parts.metricChoice.value = page.chosenMetric;
  }

  function scheduleCurves(page) {
    if (page.curvesQueued) return;
    page.curvesQueued = true;
    requestAnimationFrame(() => {
      page.curvesQueued = false;
      renderCurves(page);
    });
  }

  /** One line per trial: the chosen metric against its step. */
  function renderCurves(page) {
    const name = page.chosenMetric;
    const series = [...page.metrics.entries()].sort((a, b) => a[0] - b[0]).map(([index, { points }]) => ({
      type: "line",
      name: `trial ${index}`,
      showSymbol: points.length < 50,
      // The tooltip names the step and the metric (displayName, as in renderPlot).
      dimensions: [{ name: "x", displayName: "step" }, { name: "y", displayName: name }],
      encode: { x: 0, y: 1, tooltip: [0, 1] },
      data: points.filter((p) => typeof p.values[name] === "number").map((p) => [p.x, p.values[name]]),
    })).filter((s) => s.data.length);
    page.charts[1].setOption({
      animation: false,
      tooltip: { ...TEXT_TOOLTIP, trigger: "axis" },
      legend: { type: "scroll", top: 0 },
      grid: { left: 60, right: 30, top: 40, bottom: 40 },
      xAxis: { type: "value", name: "step", nameLocation: "middle", nameGap: 25 },
      yAxis: { type: "value", name, scale: true },
      series,
    }, { notMerge: true });
  }

  // ---- One trial: details, logs, artifacts ----

  const trialKey = (t) => `${t.state}/${t.outcome}/${t.attempts ?? 0}`;

  async function showTrial(page, index, signal) {
    page.selected = index;
    const read = (page.trialReads = (page.trialReads || 0) + 1);
    renderTrials(page);
    const base = trialPath(page.id, index);
    const [trial, logs, listed] = await Promise.all([
      apiJson(base, { signal }),
      apiJson(`${base}/logs`, { signal }),
      apiJson(`${base}/artifacts`, { signal }),
    ]);
    // Another row was clicked (or this one read again) meanwhile: only the last read is shown.
    if (read !== page.trialReads) return;
    page.selectedKey = trialKey(trial);
    const facts = [
      ["state", trial.state], ["outcome", trial.outcome], ["reason", trial.reason],
      ["exit code", trial.exitCode], ["seconds", trial.durationSeconds],
      ["peak memory (bytes)", trial.peakMemoryBytes], ["attempts", trial.attempts],
      ["runner", trial.runner],
    ];
    if (trial.prunedStep !== undefined) {
      facts.push(["pruned at step", int64(trial.prunedStep)], ["pruned value", trial.prunedValue]);
    }
    // The (step, value) pairs told to the sweep's early-stopping rule.
    const told = (trial.intermediateValues || [])
      .map((v) => `step ${formatValue(int64(v.step ?? 0))}: ${formatValue(v.value ?? 0)}`);
    const artifacts = (listed.artifacts || []).map((artifact) => {
      const button = el("button", { type: "button", class: "download" }, "download");
      button.addEventListener("click", () => download(page.id, index, artifact.name).catch(report));
      return el("li", {}, el("span", { class: "artifact-name" }, artifact.name),
        ` (${artifact.sizeBytes ?? 0} bytes) `, button);
    });
    page.parts.detail.hidden = false;
    page.parts.detail.replaceChildren(
      el("h2", {}, `Trial ${index}`),
      el("dl", {}, ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, formatValue(v))])),
      el("h3", {}, "Parameters"), el("pre", {}, JSON.stringify(trial.params ?? {}, null, 2)),
      el("h3", {}, "Result"), el("pre", { class: "result" }, JSON.stringify(trial.metrics ?? {}, null, 2)),
      ...(told.length ? [el("h3", {}, "Values told to the early-stopping rule"),
        el("pre", { class: "intermediate" }, told.join("\n"))] : []),
      el("h3", {}, "Artifacts"),
      artifacts.length ? el("ul", { class: "artifacts" }, ...artifacts) : el("p", { class: "hint" }, "none"),
      ...(listed.skipped || []).map((note) => el("p", { class: "hint" }, `skipped: ${note}`)),
      el("h3", {}, "stdout", logs.truncated ? " (truncated)" : ""),
      el("pre", { class: "log stdout" }, logs.stdout ?? ""),
      el("h3", {}, "stderr"),
      el("pre", { class: "log stderr" }, logs.stderr ?? ""),
    );
  }

  /** Fetched with the token, saved through an object URL under a safe name, never shown. */
  async function download(sweepId, index, name) {
    const reply = await api(`${trialPath(sweepId, index)}/artifacts/${encodeURIComponent(name)}`);
    const blob = new Blob([await reply.arrayBuffer()], { type: "application/octet-stream" });
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: safeFileName(name), hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  // ---- Start ----

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const entered = $("token").value.trim();
    $("token").value = "";
    if (!entered) return;
    sessionStorage.setItem(TOKEN_KEY, entered);
    route();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    route();
  });
  window.addEventListener("hashchange", route);
  route();
})();
