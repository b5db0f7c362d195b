// The quality page: log in, choose task / version / period, show the server-rendered report, download it,
// log it to MLflow. Everything it shows comes from /api/quality; no data is kept beyond the tab's token.
"use strict";

const state = { token: sessionStorage.getItem("medscreen.token"), versions: [] };
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${state.token}` }, options.headers || {});
  let response;
  try { response = await fetch(path, Object.assign({}, options, { headers })); } catch (_) {
    throw new Error("the server could not be reached");  // fetch's own TypeError reads "Failed to fetch"
  }
  if (response.status === 401) { showLogin({ expired: true }); throw new Error("please log in again"); }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response;
}

// Log out, or a session that ended: the report goes with the token, so the next person at the workstation
// neither sees it nor logs it to MLflow under the last user's name (the page had no Log out at all).
function showLogin({ expired = false } = {}) {
  const wasIn = state.token !== null;
  // Log out signs the token out on the server too: dropping it from the tab had left any copy of it working for the
  // rest of its lifetime (a shift). keepalive: the request outlives the page, should the tab be closed next.
  if (wasIn && !expired) {
    fetch("/api/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${state.token}` }, keepalive: true })
      .catch(() => { /* the server unreachable: the token still expires */ });
  }
  state.token = null;
  sessionStorage.removeItem("medscreen.token");
  $("report").replaceChildren(Object.assign(document.createElement("p"), { textContent: "Choose a task and a model version." }));
  $("status").textContent = ""; $("who").textContent = "";
  $("login-error").textContent = expired && wasIn ? "Your session has ended: log in again." : "";
  $("login").hidden = false;
  $("main").hidden = true;
  $("logout").hidden = true;
}

// The dates are whole UTC days, both included; the server's "until" is exclusive, so the page sends the
// midnight that ends the "To" day (a report "to 31 May" then holds the studies of 31 May).
function dayAfter(isoDate) {
  const day = new Date(`${isoDate}T00:00:00Z`);
  day.setUTCDate(day.getUTCDate() + 1);
  return day.toISOString().slice(0, 10);
}

function query() {
  const params = new URLSearchParams({ task: $("task").value, version: $("version").value });
  if ($("since").value) params.set("since", `${$("since").value}T00:00:00Z`);
  if ($("until").value) params.set("until", `${dayAfter($("until").value)}T00:00:00Z`);
  return params;
}

function fillVersions() {
  const task = $("task").value;
  const select = $("version");
  select.replaceChildren();
  for (const row of state.versions.filter((r) => r.task === task)) {
    const option = document.createElement("option");
    option.value = row.version;
    option.textContent = `v${row.version} (${row.role}, ${row.results} results)`;
    select.append(option);
  }
}

async function start() {
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  state.versions = await (await api("/api/quality/versions")).json();
  const tasks = [...new Set(state.versions.map((r) => r.task))];
  $("task").replaceChildren(...tasks.map((t) => Object.assign(document.createElement("option"), { value: t, textContent: t })));
  fillVersions();
  if (tasks.length) await show();
}

async function show() {
  $("status").textContent = "loading...";
  const asked = `${$("task").value} v${$("version").value}`;
  try {
    const params = query();
    params.set("fragment", "true");
    // Server-rendered: every value in it is escaped there, and the page's policy forbids scripts in it.
    $("report").innerHTML = await (await api(`/api/quality/report?${params}`)).text();
    $("status").textContent = "";
  } catch (error) {
    // The report asked for is not shown, and neither is the one before it: it had stayed on screen under the
    // filters of the version asked for (v3's figures under "v4"), with the reason in plain text beside the buttons.
    $("status").textContent = "";
    if (!state.token) return;
    const alert = Object.assign(document.createElement("p"), { className: "error", textContent: `No report for ${asked}: ${error.message}.` });
    alert.setAttribute("role", "alert");
    $("report").replaceChildren(alert);
  }
}

async function download() {
  const blob = await (await api(`/api/quality/report?${query()}`)).blob();
  const link = Object.assign(document.createElement("a"), {
    href: URL.createObjectURL(blob), download: `quality-${$("task").value}-v${$("version").value}.html` });
  document.body.append(link);
  link.click();
  link.remove();
}

async function logToMlflow() {
  try {
    const body = await (await api(`/api/quality/report/mlflow?${query()}`, { method: "POST" })).json();
    $("status").textContent = `logged to MLflow: ${body.artifact}`;
  } catch (error) { $("status").textContent = error.message; }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new URLSearchParams({ username: $("username").value, password: $("password").value });
    // With the network down the button had done nothing at all: fetch's rejection went uncaught.
    const response = await fetch("/api/auth/token", { method: "POST", body: form }).catch(() => null);
    if (!response) { $("login-error").textContent = "The server could not be reached: try again."; return; }
    if (!response.ok) {
      // Only a plain 401 is a wrong password; a locked account (429) says so, and for how long.
      let detail = "wrong user or password";
      if (response.status !== 401) try { detail = (await response.json()).detail; } catch (_) { detail = `${response.status} ${response.statusText}`; }
      $("login-error").textContent = detail;
      return;
    }
    state.token = (await response.json()).access_token;
    sessionStorage.setItem("medscreen.token", state.token);
    $("who").textContent = $("username").value;
    try { await start(); } catch (error) { showLogin(); $("login-error").textContent = error.message; }
  });
  $("task").addEventListener("change", fillVersions);
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); show(); });
  $("download").addEventListener("click", () => download().catch((e) => { $("status").textContent = e.message; }));
  $("log-mlflow").addEventListener("click", logToMlflow);
  $("logout").addEventListener("click", () => showLogin());
  if (state.token) start().catch(showLogin); else showLogin();
});
