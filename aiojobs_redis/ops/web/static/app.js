// aiojobs_redis dashboard: plain JS, no build step. Polls the JSON API of this app.
// Nothing from a job is ever inserted as HTML: text goes through textContent only.
"use strict";
(function () {
  const POLL_MS = 2000;
  const SLOW_POLL_MS = 10000;
  const PAGE = 20;
  // the job states, in order, come from the API (/api/queues "states"): a state added to
  // the server's table appears here with its count and its tab, with nothing to change
  let STATES = [];
  // the states a job can be cancelled in (a rule of the server's, not a list to display):
  // a finished job (completed, failed, cancelled) cannot be
  const CANCELLABLE = new Set(["waiting", "active", "delayed", "blocked"]);
  // the states whose priority and delay can change (POST .../change): not yet running
  const CHANGEABLE = new Set(["waiting", "delayed"]);

  // The token arrives once in the URL's fragment (#token=...): a browser never sends a
  // fragment to a server, so the token is in no access log. It is kept for this tab only
  // (sessionStorage), removed from the address bar, and sent as "Authorization: Bearer".
  const params = new URLSearchParams(location.search);
  const fromHash = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  let token = sessionStorage.getItem("ajr-token") || "";
  if (fromHash) {
    try { token = decodeURIComponent(fromHash[1]); } catch (e) { token = fromHash[1]; }
    sessionStorage.setItem("ajr-token", token);
    const rest = location.hash.slice(1).split("&").filter((p) => !p.startsWith("token=")).join("&");
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }

  const view = { queue: params.get("queue") || null, state: null, offset: 0,
    readOnly: false, detail: null, lastSlow: 0 };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "onclick") node.addEventListener("click", v);
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" || typeof c === "number"
        ? document.createTextNode(String(c)) : c);
    }
    return node;
  }

  function replaceRows(tbody, rows, columns, emptyText) {
    tbody.replaceChildren(...(rows.length ? rows
      : [el("tr", { class: "empty" }, el("td", { colSpan: columns }, emptyText))]));
  }

  async function api(path, options) {
    const headers = Object.assign({ "Accept": "application/json" }, (options && options.headers) || {});
    if (token) headers["Authorization"] = "Bearer " + token;
    const response = await fetch(path, Object.assign({}, options || {}, { headers: headers }));
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      let message = body && body.error ? body.error.message : response.statusText;
      if (response.status === 401 && !token) message += " (open this page as …/#token=<token>)";
      throw new Error(response.status + ": " + message);
    }
    return body;
  }

  // A job id or a schedule name goes in a URL as ONE path segment, its "/" encoded too
  // (%2F): it can neither add segments nor climb out of its own ("a/../b" is
  // "a%2F..%2Fb"), and the server reads it back exactly. Encoding "." as %2E would not
  // help: a browser resolves %2E%2E as ".." all the same. So the two ids that are a dot
  // segment whatever their encoding, "." and "..", go in the query string instead.
  const qpath = () => "api/queues/" + encodeURIComponent(view.queue);
  function jobUrl(id, action) {
    const tail = action ? "/" + action : "";
    if (id === "." || id === "..") return qpath() + "/job" + tail + "?id=" + encodeURIComponent(id);
    return qpath() + "/jobs/" + encodeURIComponent(id) + tail;
  }
  const scheduleUrl = (name) => qpath() + "/schedules/" + encodeURIComponent(name) + "/run";

  let messageUntil = 0;
  function setStatus(text, isError, sticky) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("error", !!isError);
    if (sticky) messageUntil = Date.now() + 6000;
  }
  const say = (text, isError) => setStatus(text, isError, true);

  function ago(iso) {
    if (!iso) return "";
    return duration((Date.now() - Date.parse(iso)) / 1000) + (Date.parse(iso) > Date.now() ? "" : " ago");
  }

  function duration(seconds) {
    const s = Math.abs(seconds);
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 90) return s.toFixed(1) + " s";
    if (s < 5400) return (s / 60).toFixed(1) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }

  function ms(v) { return v === null || v === undefined ? "–" : duration(v / 1000); }

  // ---------------------------------------------------------------- queues

  function renderQueues(data) {
    view.readOnly = data.read_only;
    document.body.classList.toggle("read-only", data.read_only);
    $("readonly-badge").hidden = !data.read_only;
    if (!view.queue || !data.queues.some((q) => q.name === view.queue)) {
      view.queue = data.queues.length ? data.queues[0].name : null;
    }
    $("queues").replaceChildren(...data.queues.map((q) => el("button", {
      type: "button", class: q.name === view.queue ? "selected" : "", "data-queue": q.name,
      onclick: () => { view.queue = q.name; view.offset = 0; view.detail = null; refresh(true); },
    }, q.name + " · " + count(q.counts, "waiting") + " waiting · "
      + count(q.counts, "failed") + " failed")));
    setStates(data.states);
    const q = data.queues.find((x) => x.name === view.queue);
    if (!q) return;
    $("queue-title").textContent = q.name;
    for (const state of STATES) $("count-" + state).textContent = count(q.counts, state);
    $("count-workers").textContent = q.workers;
    $("oldest-age").textContent = q.oldest_waiting_age_s === null ? "–" : duration(q.oldest_waiting_age_s);
    $("paused-badge").hidden = !q.paused;
    $("pause-btn").textContent = q.paused ? "Resume" : "Pause";
    $("pause-btn").dataset.paused = q.paused ? "1" : "0";
    $("retry-all-btn").disabled = !q.counts.failed;
    renderTabs(q.counts);
    renderRedrive(q.counts);
  }

  // the Redrive button: on the failed tab only (a dead-letter queue's failed jobs go back
  // to the queues they came from); hidden with every other change when read-only
  function renderRedrive(counts) {
    const button = $("redrive-btn");
    button.hidden = view.state !== "failed";
    if (counts) button.disabled = !counts.failed;
  }

  const count = (counts, state) => typeof counts[state] === "number" ? counts[state].toLocaleString() : "–";

  // one card per state, before the workers card: built again only when the states change
  function setStates(states) {
    if (!Array.isArray(states) || states.join("\n") === STATES.join("\n")) return;
    STATES = states.slice();
    if (!STATES.includes(view.state)) {
      view.state = STATES.includes("failed") ? "failed" : STATES[0] || null;
      view.offset = 0;
    }
    $("state-cards").replaceChildren(...STATES.map((s) => el("div",
      { class: s === "failed" ? "card bad" : "card", "data-state": s },
      el("span", { class: "label" }, s), el("span", { class: "num", id: "count-" + s }, "–"))));
  }

  function renderTabs(counts) {
    $("state-tabs").replaceChildren(...STATES.map((s) => el("button", {
      type: "button", class: s === view.state ? "selected" : "", "data-state": s,
      onclick: () => { view.state = s; view.offset = 0; renderRedrive(null); refresh(false); },
    }, s + " (" + count(counts, s) + ")")));
  }

  // ------------------------------------------------------------------ jobs

  function jobTime(job) {
    switch (view.state) {
      case "failed": case "completed": return ago(job.finished_at);
      case "cancelled": return ago(job.finished_at || job.created_at);
      case "delayed": return "due " + (job.due_at ? new Date(job.due_at).toLocaleTimeString() : "?");
      case "active": return "started " + ago(job.started_at);
      default: return "added " + ago(job.created_at);
    }
  }

  function jobActions(job) {
    const buttons = [];
    const act = (label, cls, fn) => el("button", { type: "button", class: "mutating " + cls,
      onclick: async (ev) => {
        ev.stopPropagation();
        ev.target.disabled = true;
        try {
          const r = await fn();  // null: not done (the user said no); a string: what to say
          if (r !== null) say(label + " " + job.id + ": " + (typeof r === "string" ? r : "done"));
        }
        catch (e) { say(label + " " + job.id + ": " + e.message, true); }
        refresh(false);
      } }, label);
    if (job.state === "failed") buttons.push(act("Retry", "retry", () => api(jobUrl(job.id, "retry"), { method: "POST" })));
    if (job.state === "delayed") buttons.push(act("Promote", "promote", () => api(jobUrl(job.id, "promote"), { method: "POST" })));
    if (CANCELLABLE.has(job.state)) buttons.push(act("Cancel", "cancel", () => cancelJob(job.id)));
    if (job.state !== "active") buttons.push(act("Remove", "remove", () => {
      if (!confirm("Remove job " + job.id + "?")) return Promise.resolve(null);
      return api(jobUrl(job.id), { method: "DELETE" });
    }));
    return buttons;
  }

  // POST .../cancel: "cancelled" (it was waiting or delayed: it never runs) or "active"
  // (it runs: its worker stops it and records it cancelled). Resolves to what to say.
  async function cancelJob(id) {
    if (!confirm("Cancel job " + id + "?")) return null;
    const r = await api(jobUrl(id, "cancel"), { method: "POST" });
    return r.state === "active" ? "cancellation requested (running on its worker)" : "cancelled";
  }

  function renderJobs(data) {
    if (data.offset > 0 && data.offset >= data.total) view.offset = 0;  // the page emptied
    $("time-col").textContent = { failed: "failed", completed: "finished", delayed: "due",
      active: "running", waiting: "waiting", cancelled: "cancelled" }[view.state] || "time";
    const rows = data.jobs.map((job) => el("tr", { "data-job-id": job.id },
      el("td", { class: "id", title: job.id, onclick: () => { view.detail = job.id; loadDetail(); } },
        job.id.length > 28 ? job.id.slice(0, 27) + "…" : job.id),
      el("td", {}, job.task || ""),
      el("td", {}, job.attempts + "/" + job.max_attempts),
      el("td", {}, jobTime(job)),
      el("td", { class: job.error && view.state !== "completed" ? "err" : "", title: job.error || "" },
        view.state === "active" && job.progress ? "progress " + job.progress
          : (view.state === "completed" ? "" : (job.error || ""))),
      el("td", { class: "actions" }, ...jobActions(job))));
    replaceRows($("jobs-body"), rows, 6, "no " + view.state + " jobs");
    const last = Math.min(data.offset + data.jobs.length, data.total);
    $("page-info").textContent = data.total ? (data.offset + 1) + "–" + last + " of "
      + data.total.toLocaleString() : "";
    $("prev-page").disabled = data.offset === 0;
    $("next-page").disabled = data.offset + PAGE >= data.total;
    const newest = data.order === "newest";
    $("prev-page").textContent = newest ? "‹ newer" : "‹ earlier";
    $("next-page").textContent = newest ? "older ›" : "later ›";
  }

  async function loadDetail() {
    if (!view.detail) { $("job-detail").hidden = true; return; }
    let job;
    try { job = await api(jobUrl(view.detail)); }
    catch (e) { say("job " + view.detail + ": " + e.message, true); view.detail = null; $("job-detail").hidden = true; return; }
    $("job-detail").hidden = false;
    $("detail-title").textContent = job.task + " · " + job.id;
    const fields = [["state", job.state], ["attempts", job.attempts + " of " + job.max_attempts],
      ["stalls", job.stalls], ["priority", job.priority], ["created", job.created_at],
      ["started", job.started_at], ["finished", job.finished_at], ["due", job.due_at],
      ["worker", job.worker]];
    if (job.origin) fields.push(["origin", job.origin]);
    if (job.cancelled_by) fields.push(["cancelled by", job.cancelled_by]);
    if (job.cancel_requested) fields.push(["cancel", "requested: its worker is stopping it"]);
    const cancel = $("detail-cancel");
    cancel.hidden = !CANCELLABLE.has(job.state) || !!job.cancel_requested;
    cancel.dataset.jobId = job.id;
    $("detail-fields").replaceChildren(...fields.flatMap(([k, v]) =>
      [el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "–" : String(v))]));
    renderChangeForm(job);
    renderLogs(job.logs || []);
    renderFlow(job.flow);
    $("detail-error").textContent = job.error || "–";
    $("detail-traceback").textContent = job.traceback || "–";
    const shown = (c) => c.json + (c.truncated ? " … (" + c.size + " characters in all)" : "");
    $("detail-args").textContent = "args: " + shown(job.args) + "\nkwargs: " + shown(job.kwargs)
      + (job.payload_error ? "\n(cannot decode: " + job.payload_error + ")" : "");
    $("detail-result").textContent = "result: " + shown(job.result) + "\nprogress: " + shown(job.progress);
  }

  // a job of a flow: what it waits for (and how each ended), what waits for it
  function renderFlow(flow) {
    $("detail-flow-section").hidden = !flow;
    if (!flow) return;
    $("detail-flow-summary").textContent = "waits for " + flow.dependencies + " job(s), "
      + flow.pending + " not finished; " + flow.waited_for_by.length + " job(s) wait for it";
    const rows = flow.waits_for.map((d) => el("tr", { class: "flow-dep" },
      el("td", {}, "waits for"), el("td", {}, d.id), el("td", {}, d.state),
      el("td", {}, d.error || ""))).concat(flow.waited_for_by.map((id) => el("tr",
      { class: "flow-dependent" }, el("td", {}, "waited for by"), el("td", {}, id),
      el("td", {}, ""), el("td", {}, ""))));
    replaceRows($("detail-flow"), rows, 4, "no jobs");
  }

  // the job's log: one row per line (time, attempt, text), oldest first, as text only
  function renderLogs(lines) {
    const rows = lines.map((line) => el("tr", { class: "log-line" },
      el("td", { class: "log-at" }, line.at || "–"),
      el("td", { class: "log-attempt" }, "#" + line.attempt),
      el("td", { class: "log-text" }, line.text)));
    replaceRows($("detail-logs"), rows, 3, "no log lines");
  }

  // the priority and delay of a waiting or delayed job: the inputs keep what the user
  // typed across polls, and are cleared when another job is shown
  let changeFor = null;
  function renderChangeForm(job) {
    const form = $("detail-change");
    form.hidden = !CHANGEABLE.has(job.state);
    if (changeFor !== job.id) {
      changeFor = job.id;
      $("change-priority").value = "";
      $("change-delay").value = "";
    }
    form.dataset.jobId = job.id;
    $("change-priority").placeholder = String(job.priority);
  }

  // POST .../change with the fields the user filled in; resolves to what to say
  async function changeJob(id) {
    const body = {};
    for (const [key, input, integer] of [["priority", $("change-priority"), true],
                                         ["delay_s", $("change-delay"), false]]) {
      if (input.validity.badInput) throw new Error(key + ": not a number");
      if (input.value.trim() === "") continue;
      const value = Number(input.value);
      if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) {
        throw new Error(key + " must be " + (integer ? "an integer" : "a number"));
      }
      body[key] = value;
    }
    if (!Object.keys(body).length) throw new Error("give a priority, a delay or both");
    const r = await api(jobUrl(id, "change"), { method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json" } });
    $("change-priority").value = "";
    $("change-delay").value = "";
    return "now " + r.state;
  }

  // ----------------------------------------------------------------- chart

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function renderChart(data) {
    const series = data.series;
    const W = 900, H = 180, L = 40, B = 20, T = 8;
    const max = Math.max(1, ...series.map((m) => m.completed + m.failed));
    const bw = (W - L) / series.length;
    const root = svg("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none",
      role: "img", "aria-label": "jobs per minute" });
    root.appendChild(svg("line", { x1: L, y1: H - B, x2: W, y2: H - B, class: "axis" }));
    for (const frac of [0.5, 1]) {
      const y = H - B - (H - B - T) * frac;
      root.appendChild(svg("line", { x1: L, y1: y, x2: W, y2: y, class: "axis" }));
      const label = svg("text", { x: 2, y: y + 4 });
      label.textContent = String(Math.round(max * frac));
      root.appendChild(label);
    }
    series.forEach((m, i) => {
      const x = L + i * bw;
      const hOk = (H - B - T) * m.completed / max;
      const hBad = (H - B - T) * m.failed / max;
      if (hOk > 0) {
        const r = svg("rect", { x: x + 1, y: H - B - hOk, width: Math.max(bw - 2, 1), height: hOk, class: "ok" });
        const t = svg("title", {}); t.textContent = new Date(m.minute * 60000).toLocaleTimeString()
          + ": " + m.completed + " completed, " + m.failed + " failed, " + m.retried + " retried";
        r.appendChild(t); root.appendChild(r);
      }
      if (hBad > 0) root.appendChild(svg("rect", { x: x + 1, y: H - B - hOk - hBad,
        width: Math.max(bw - 2, 1), height: hBad, class: "bad" }));
      if (i % 10 === 0) {
        const label = svg("text", { x: x, y: H - 6 });
        label.textContent = new Date(m.minute * 60000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        root.appendChild(label);
      }
    });
    $("chart").replaceChildren(root);
    $("window-summary").textContent = "· " + data.completed.toLocaleString() + " completed, "
      + data.failed.toLocaleString() + " failed, " + data.retried.toLocaleString() + " retried, "
      + data.stalled + " stalled · wait p50 " + ms(data.wait.p50_ms) + ", p99 " + ms(data.wait.p99_ms)
      + " · run p50 " + ms(data.run.p50_ms) + ", p99 " + ms(data.run.p99_ms);
  }

  // -------------------------------------------------------- workers, schedules

  function renderWorkers(data) {
    const rows = data.workers.map((w) => el("tr", { "data-worker-id": w.id },
      el("td", {}, w.id), el("td", {}, w.host), el("td", {}, w.pid),
      el("td", {}, w.active + "/" + w.concurrency), el("td", {}, w.processed),
      el("td", {}, w.failed), el("td", {}, duration(Math.max(data.now - w.heartbeat_at, 0)) + " ago")));
    replaceRows($("workers-body"), rows, 7, "no live worker");
  }

  function renderSchedules(data) {
    const rows = data.schedules.map((s) => el("tr", { "data-schedule": s.name },
      el("td", {}, s.name), el("td", {}, s.task),
      el("td", {}, s.cron ? s.cron + " (" + s.tz + ")" : "every " + duration(s.every_s)),
      el("td", {}, s.next_run_at ? new Date(s.next_run_at).toLocaleString() : "ended"),
      el("td", { title: s.last_error || "" }, (s.last_state || "–") + (s.runs ? " · " + s.runs + " runs" : "")),
      el("td", { class: "actions" }, el("button", { type: "button", class: "mutating",
        onclick: async () => {
          try { const r = await api(scheduleUrl(s.name), { method: "POST" });
            say("schedule " + s.name + ": enqueued " + r.job_id); }
          catch (e) { say("schedule " + s.name + ": " + e.message, true); }
        } }, "Run now"))));
    replaceRows($("schedules-body"), rows, 6, "no schedules");
  }

  // --------------------------------------------------------------- polling

  let busy = false;
  async function refresh(slow) {
    if (busy) return;
    busy = true;
    try {
      renderQueues(await api("api/queues"));
      if (view.queue && view.state) {
        const base = qpath();
        const now = Date.now();
        const tasks = [
          api(base + "/jobs?state=" + encodeURIComponent(view.state) + "&offset=" + view.offset + "&limit=" + PAGE).then(renderJobs),
          api(base + "/workers").then(renderWorkers),
        ];
        if (slow || now - view.lastSlow >= SLOW_POLL_MS) {
          view.lastSlow = now;
          tasks.push(api(base + "/metrics?minutes=60").then(renderChart));
          if (view.schedules) tasks.push(api(base + "/schedules").then(renderSchedules));
        }
        if (view.detail) tasks.push(loadDetail());
        await Promise.all(tasks);
      }
      if (!document.body.dataset.loadedMs) {
        document.body.dataset.loadedMs = String(Math.round(performance.now()));
      }
      if (Date.now() > messageUntil) setStatus("live · " + new Date().toLocaleTimeString());
    } catch (e) {
      setStatus(e.message, true);
    } finally {
      busy = false;
      document.body.dataset.loaded = "1";
    }
  }

  $("prev-page").addEventListener("click", () => { view.offset = Math.max(0, view.offset - PAGE); refresh(false); });
  $("next-page").addEventListener("click", () => { view.offset += PAGE; refresh(false); });
  $("detail-close").addEventListener("click", () => { view.detail = null; $("job-detail").hidden = true; });
  $("detail-cancel").addEventListener("click", async (ev) => {
    const id = ev.target.dataset.jobId;
    if (!id) return;
    ev.target.disabled = true;
    try { const r = await cancelJob(id); if (r) say("Cancel " + id + ": " + r); }
    catch (e) { say("Cancel " + id + ": " + e.message, true); }
    finally { ev.target.disabled = false; }
    refresh(false);
  });
  async function submitChange() {
    const id = $("detail-change").dataset.jobId;
    if (!id) return;
    const button = $("change-submit");
    button.disabled = true;
    try { say("Change " + id + ": " + await changeJob(id)); }
    catch (e) { say("Change " + id + ": " + e.message, true); }
    finally { button.disabled = false; }
    refresh(false);
  }
  $("change-submit").addEventListener("click", submitChange);
  for (const input of [$("change-priority"), $("change-delay")]) {
    input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); submitChange(); } });
  }
  $("pause-btn").addEventListener("click", async () => {
    const resume = $("pause-btn").dataset.paused === "1";
    try { await api(qpath() + (resume ? "/resume" : "/pause"), { method: "POST" }); }
    catch (e) { say(e.message, true); }
    refresh(false);
  });
  $("retry-all-btn").addEventListener("click", async () => {
    if (!confirm("Retry every failed job of " + view.queue + "?")) return;
    try { const r = await api(qpath() + "/retry-failed", { method: "POST" }); say("retried " + r.retried + " job(s)"); }
    catch (e) { say(e.message, true); }
    refresh(false);
  });

  // POST .../redrive, no body: every failed job that has an origin queue goes back to it
  $("redrive-btn").addEventListener("click", async (ev) => {
    const queue = view.queue;
    if (!queue) return;
    if (!confirm("Send every failed job of " + queue + " back to the queue it came from?")) return;
    const button = ev.currentTarget;
    button.disabled = true;
    try {
      const r = await api("api/queues/" + encodeURIComponent(queue) + "/redrive", { method: "POST" });
      say("Redrive " + queue + ": " + r.redriven + " job(s) sent back to their origin queues");
    }
    catch (e) { say("Redrive " + queue + ": " + e.message, true); }
    refresh(false);
  });

  refresh(true);
  setInterval(() => { if (!document.hidden) refresh(false); }, POLL_MS);
})();
