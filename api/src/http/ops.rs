//! `GET /ops`: the operators' job dashboard (SPEC §5).
//!
//! One self-contained page (inline CSS and JS, no external assets): it asks
//! for an OPERATOR or ADMIN key (kept in the tab's sessionStorage), reads the
//! organization's jobs through the ops GraphQL (`jobs(state:)`), shows each
//! queue's jobs by state and a table of jobs (dead ones first, with their last
//! error), and offers Retry / Discard on DEAD and FAILED rows through
//! `retryJob` / `discardJob`. The page itself is public and holds no data;
//! everything it shows comes from `/graphql` under the key's authority.

use axum::http::header;
use axum::response::{Html, IntoResponse};

/// The page's `<title>`.
pub const TITLE: &str = "Valora Operations · Jobs";

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Inline script and style only; requests go to this origin only.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                 frame-ancestors 'none'",
            ),
        ],
        Html(PAGE),
    )
}

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Valora Operations · Jobs</title>
<style>
:root {
  --bg: #f5f6f8; --panel: #fff; --ink: #1d2330; --muted: #6b7280; --line: #e3e6eb;
  --accent: #4f46e5; --accent-ink: #fff;
  --queued: #2563eb; --running: #d97706; --succeeded: #16a34a; --failed: #ea580c;
  --dead: #dc2626; --discarded: #6b7280;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { display: flex; align-items: center; gap: 16px; padding: 12px 24px;
  background: #111827; color: #f9fafb; }
header h1 { font-size: 16px; margin: 0; font-weight: 600; letter-spacing: .2px; }
header h1 b { color: #a5b4fc; }
header .spacer { flex: 1; }
header label { font-size: 13px; color: #d1d5db; display: flex; align-items: center; gap: 6px; }
main { max-width: 1280px; margin: 0 auto; padding: 20px 24px 48px; }
section.card { background: var(--panel); border: 1px solid var(--line); border-radius: 10px;
  padding: 16px 18px; margin-bottom: 18px; box-shadow: 0 1px 2px rgba(16,24,40,.04); }
h2 { font-size: 15px; margin: 0 0 12px; font-weight: 600; }
h2 small { color: var(--muted); font-weight: 400; margin-left: 8px; }
button { font: inherit; cursor: pointer; border-radius: 6px; border: 1px solid var(--line);
  background: #fff; color: var(--ink); padding: 5px 12px; }
button:hover { border-color: #c7cbd3; background: #f9fafb; }
button:disabled { opacity: .5; cursor: default; }
button.primary { background: var(--accent); border-color: var(--accent); color: var(--accent-ink); }
button.primary:hover { background: #4338ca; }
header button { background: transparent; color: #e5e7eb; border-color: #374151; }
header button:hover { background: #1f2937; border-color: #4b5563; }
button.retry { color: var(--accent); border-color: #c7d2fe; }
button.discard { color: var(--dead); border-color: #fecaca; }
input, select { font: inherit; padding: 6px 10px; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
#login { max-width: 520px; margin: 64px auto; }
#login p { color: var(--muted); margin: 0 0 14px; }
#login form { display: flex; gap: 8px; }
#login input { flex: 1; }
.error { color: var(--dead); margin-top: 10px; min-height: 1em; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .4px; color: var(--muted); font-weight: 600; }
tbody tr:hover { background: #fafbfc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
#queues td.num { cursor: pointer; }
#queues td.num:hover { background: #eef2ff; }
#queues td.zero { color: #c3c7cf; }
#queues tfoot td { font-weight: 600; border-bottom: none; }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 11.5px; font-weight: 600;
  letter-spacing: .3px; color: #fff; }
.s-QUEUED { background: var(--queued); } .s-RUNNING { background: var(--running); }
.s-SUCCEEDED { background: var(--succeeded); } .s-FAILED { background: var(--failed); }
.s-DEAD { background: var(--dead); } .s-DISCARDED { background: var(--discarded); }
.c-DEAD { color: var(--dead); font-weight: 600; } .c-FAILED { color: var(--failed); font-weight: 600; }
td.err { color: #b91c1c; min-width: 200px; max-width: 340px; overflow-wrap: break-word; }
td.time { white-space: nowrap; font-size: 12px; }
td.key { max-width: 300px; word-break: break-all; }
.table-wrap { overflow-x: auto; }
td.actions { white-space: nowrap; }
td.actions button + button { margin-left: 6px; }
.filters { display: flex; gap: 10px; align-items: center; margin-bottom: 10px; flex-wrap: wrap; }
.filters .spacer { flex: 1; }
#status { color: var(--muted); font-size: 12.5px; }
#toast { position: fixed; right: 20px; bottom: 20px; max-width: 420px; padding: 10px 14px; border-radius: 8px;
  background: #111827; color: #f9fafb; box-shadow: 0 6px 20px rgba(0,0,0,.2); opacity: 0; transition: opacity .2s; }
#toast.show { opacity: 1; }
#toast.bad { background: #991b1b; }
.hidden { display: none !important; }
.empty { text-align: center; color: var(--muted); padding: 24px; }
</style>
</head>
<body>
<header>
  <h1><b>Valora</b> Operations · Jobs</h1>
  <span class="spacer"></span>
  <span id="whoami" class="muted"></span>
  <label class="signed-in hidden"><input type="checkbox" id="auto" checked> auto-refresh</label>
  <button id="refresh" class="signed-in hidden" type="button">Refresh</button>
  <button id="logout" class="signed-in hidden" type="button">Sign out</button>
</header>
<main>
  <section id="login" class="card hidden">
    <h2>Sign in</h2>
    <p>Paste an OPERATOR or ADMIN API key. It is kept in this tab only (sessionStorage) and sent as
      <span class="mono">Authorization: Bearer …</span> to <span class="mono">/graphql</span>.</p>
    <form id="login-form">
      <input id="key" type="password" autocomplete="off" placeholder="API key" aria-label="API key">
      <button id="login-button" class="primary" type="submit">Open dashboard</button>
    </form>
    <div id="login-error" class="error"></div>
  </section>

  <div id="dashboard" class="hidden">
    <section class="card">
      <h2>Queues <small>jobs by state, per queue — click a number to filter</small></h2>
      <table id="queues">
        <thead><tr><th>Queue</th></tr></thead>
        <tbody></tbody>
        <tfoot></tfoot>
      </table>
    </section>
    <section class="card">
      <div class="filters">
        <h2 style="margin:0">Jobs</h2>
        <span class="spacer"></span>
        <label>State <select id="state-filter"></select></label>
        <label>Queue <select id="kind-filter"></select></label>
      </div>
      <div class="table-wrap">
      <table id="jobs">
        <thead><tr>
          <th>Key</th><th>Queue</th><th>Subject</th><th>State</th><th class="num">Attempts</th>
          <th>Last error</th><th>When (UTC)</th><th></th>
        </tr></thead>
        <tbody></tbody>
      </table>
      </div>
      <div id="status"></div>
    </section>
  </div>
</main>
<div id="toast" role="status"></div>
<script>
"use strict";
const STATES = ["DEAD", "FAILED", "RUNNING", "QUEUED", "SUCCEEDED", "DISCARDED"];
const KINDS = ["subscription_start", "trial_expiry", "period_close", "proration", "invoice_finalize", "invoice_overdue"];
const ACTIONABLE = new Set(["DEAD", "FAILED"]);
const PAGE = 100, MAX_PAGES = 10, MAX_ROWS = 250;
const FIELDS = "id key kind state subjectId attempts maxAttempts lastError runAt createdAt startedAt finishedAt";
const $ = (sel) => document.querySelector(sel);
let jobs = [], truncated = new Set(), loading = false, filterState = "", filterKind = "";

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function key() { return sessionStorage.getItem("valora-ops-key") || ""; }
function when(instant) { return instant ? instant.replace("T", " ").slice(0, 16) : ""; }
function toast(text, bad) {
  const t = $("#toast");
  t.textContent = text; t.className = "show" + (bad ? " bad" : "");
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.className = ""; }, 4000);
}

async function gql(query, variables) {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: { "Content-Type": "application/json", "Authorization": "Bearer " + key() },
    body: JSON.stringify({ query, variables: variables || {} }),
  });
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!body) throw new Error("HTTP " + response.status);
  if (body.errors && body.errors.length) {
    const error = new Error(body.errors[0].message);
    error.code = body.errors[0].extensions && body.errors[0].extensions.code;
    throw error;
  }
  return body.data;
}

// Every job of the organization, by state (newest first within a state).
async function loadJobs() {
  const first = STATES.map((s) => `${s}: jobs(state: ${s}, first: ${PAGE}) { nodes { ${FIELDS} } pageInfo { hasNextPage endCursor } }`);
  const data = await gql(`query OpsJobs { ${first.join(" ")} }`);
  const all = [], cut = new Set();
  for (const state of STATES) {
    let page = data[state], pages = 1;
    all.push(...page.nodes);
    while (page.pageInfo.hasNextPage && pages < MAX_PAGES) {
      const next = await gql(`query OpsMore($after: String) { jobs(state: ${state}, first: ${PAGE}, after: $after) { nodes { ${FIELDS} } pageInfo { hasNextPage endCursor } } }`,
        { after: page.pageInfo.endCursor });
      page = next.jobs; pages += 1;
      all.push(...page.nodes);
    }
    if (page.pageInfo.hasNextPage) cut.add(state);
  }
  return { all, cut };
}

async function refresh() {
  if (loading || !key()) return;
  loading = true;
  try {
    const { all, cut } = await loadJobs();
    jobs = all; truncated = cut;
    showDashboard();
    render();
    $("#status").textContent = `Updated ${new Date().toLocaleTimeString()} · ${jobs.length} job${jobs.length === 1 ? "" : "s"}`;
  } catch (error) {
    if (error.code === "UNAUTHENTICATED" || error.code === "FORBIDDEN") {
      signOut("That key may not operate jobs: " + error.message);
    } else {
      $("#status").textContent = "Could not load jobs: " + error.message;
      toast("Could not load jobs: " + error.message, true);
    }
  } finally {
    loading = false;
  }
}

function renderQueues() {
  const head = "<tr><th>Queue</th>" + STATES.map((s) => `<th class="num">${s}</th>`).join("") + '<th class="num">Total</th></tr>';
  $("#queues thead").innerHTML = head;
  const kinds = [...KINDS, ...new Set(jobs.map((j) => j.kind).filter((k) => !KINDS.includes(k)))];
  const totals = Object.fromEntries(STATES.map((s) => [s, 0]));
  const rows = kinds.map((kind) => {
    const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const job of jobs) if (job.kind === kind) counts[job.state] += 1;
    let sum = 0;
    const cells = STATES.map((s) => {
      totals[s] += counts[s]; sum += counts[s];
      const cls = counts[s] ? (s === "DEAD" || s === "FAILED" ? "num c-" + s : "num") : "num zero";
      return `<td class="${cls}" data-kind="${esc(kind)}" data-state="${s}" data-count="${counts[s]}">${counts[s]}</td>`;
    });
    return `<tr data-queue="${esc(kind)}"><td class="mono">${esc(kind)}</td>${cells.join("")}<td class="num" data-kind="${esc(kind)}" data-state="">${sum}</td></tr>`;
  });
  $("#queues tbody").innerHTML = rows.join("");
  const grand = STATES.reduce((n, s) => n + totals[s], 0);
  $("#queues tfoot").innerHTML = "<tr><td>All queues</td>" +
    STATES.map((s) => `<td class="num" data-kind="" data-state="${s}">${totals[s]}${truncated.has(s) ? "+" : ""}</td>`).join("") +
    `<td class="num" data-kind="" data-state="">${grand}</td></tr>`;
}

function renderJobs() {
  const order = (j) => STATES.indexOf(j.state);
  const shown = jobs
    .filter((j) => (!filterState || j.state === filterState) && (!filterKind || j.kind === filterKind))
    .sort((a, b) => order(a) - order(b) || (b.createdAt || "").localeCompare(a.createdAt || ""));
  const rows = shown.slice(0, MAX_ROWS).map((j) => {
    const actions = ACTIONABLE.has(j.state)
      ? `<button class="retry" data-action="retry" data-id="${esc(j.id)}" type="button">Retry</button><button class="discard" data-action="discard" data-id="${esc(j.id)}" type="button">Discard</button>`
      : "";
    return `<tr data-id="${esc(j.id)}" data-key="${esc(j.key)}" data-state="${esc(j.state)}">
      <td class="mono key">${esc(j.key)}</td>
      <td class="mono">${esc(j.kind)}</td>
      <td class="mono muted" title="${esc(j.subjectId)}">${esc(String(j.subjectId).slice(0, 12))}…</td>
      <td><span class="badge s-${esc(j.state)}">${esc(j.state)}</span></td>
      <td class="num">${j.attempts} / ${j.maxAttempts}</td>
      <td class="err">${esc(j.lastError)}</td>
      <td class="mono muted time"><span title="run at ${esc(j.runAt)}">run ${esc(when(j.runAt))}</span>${j.finishedAt ? `<br><span title="finished at ${esc(j.finishedAt)}">done ${esc(when(j.finishedAt))}</span>` : ""}</td>
      <td class="actions">${actions}</td></tr>`;
  });
  $("#jobs tbody").innerHTML = rows.length ? rows.join("") : '<tr><td colspan="8" class="empty">No jobs match.</td></tr>';
  if (shown.length > MAX_ROWS) {
    $("#jobs tbody").insertAdjacentHTML("beforeend", `<tr><td colspan="8" class="empty">Showing ${MAX_ROWS} of ${shown.length}; filter by state or queue to see the rest.</td></tr>`);
  }
}

function render() { renderQueues(); renderJobs(); }

function fillFilters() {
  $("#state-filter").innerHTML = '<option value="">All (dead first)</option>' + STATES.map((s) => `<option>${s}</option>`).join("");
  $("#kind-filter").innerHTML = '<option value="">All queues</option>' + KINDS.map((k) => `<option>${k}</option>`).join("");
}

function showDashboard() {
  $("#login").classList.add("hidden");
  $("#dashboard").classList.remove("hidden");
  document.querySelectorAll(".signed-in").forEach((e) => e.classList.remove("hidden"));
}

function signOut(message) {
  sessionStorage.removeItem("valora-ops-key");
  jobs = [];
  $("#dashboard").classList.add("hidden");
  document.querySelectorAll(".signed-in").forEach((e) => e.classList.add("hidden"));
  $("#login").classList.remove("hidden");
  $("#login-error").textContent = message || "";
  $("#key").value = "";
  $("#key").focus();
}

async function act(action, id, button) {
  const job = jobs.find((j) => j.id === id);
  const label = job ? job.key : id;
  if (action === "discard" && !confirm(`Discard ${label}? It will never run unless retried.`)) return;
  button.disabled = true;
  const mutation = action === "retry" ? "retryJob" : "discardJob";
  try {
    const data = await gql(`mutation OpsAct($id: ID!) { ${mutation}(id: $id) { id state } }`, { id });
    toast(`${action === "retry" ? "Retried" : "Discarded"} ${label}: now ${data[mutation].state}`);
  } catch (error) {
    toast(`${action} failed: ${error.message}`, true);
  }
  await refresh();
}

$("#login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("#key").value.trim();
  if (!value) { $("#login-error").textContent = "Enter an API key."; return; }
  sessionStorage.setItem("valora-ops-key", value);
  $("#login-error").textContent = "";
  refresh();
});
$("#logout").addEventListener("click", () => signOut(""));
$("#refresh").addEventListener("click", () => refresh());
$("#state-filter").addEventListener("change", (e) => { filterState = e.target.value; renderJobs(); });
$("#kind-filter").addEventListener("change", (e) => { filterKind = e.target.value; renderJobs(); });
$("#queues").addEventListener("click", (e) => {
  const cell = e.target.closest("td[data-state]");
  if (!cell) return;
  filterState = cell.dataset.state; filterKind = cell.dataset.kind;
  $("#state-filter").value = filterState; $("#kind-filter").value = filterKind;
  renderJobs();
  $("#jobs").scrollIntoView({ behavior: "smooth", block: "start" });
});
$("#jobs").addEventListener("click", (e) => {
  const button = e.target.closest("button[data-action]");
  if (button) act(button.dataset.action, button.dataset.id, button);
});
setInterval(() => { if ($("#auto").checked && !document.hidden) refresh(); }, 3000);

fillFilters();
if (key()) refresh(); else signOut("");
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained() {
        assert!(PAGE.contains(&format!("<title>{TITLE}</title>")));
        for external in ["src=\"http", "href=\"http", "<link ", "@import", "src=\"//"] {
            assert!(!PAGE.contains(external), "external asset: {external}");
        }
    }
}
