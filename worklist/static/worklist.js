// The radiologists' worklist page: list (server-side pages), study view, claim/release, final read, live updates.
"use strict";

const PAGE_SIZE = 50;
const state = { token: sessionStorage.getItem("medscreen.token"), user: null, offset: 0, total: 0,
  serverSkewMs: 0, selected: null, viewSeq: 0, lastEventId: null, streamAbort: null, refreshTimer: null,
  claimMs: null, lapseTimer: null, warnTimer: null, keptFor: null, roles: [], acting: false, listOkAt: null, retryTimer: null, retryMs: 0 };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value); else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${state.token}` }, options.headers || {});
  let response;
  try { response = await fetch(path, Object.assign({}, options, { headers })); } catch (_) {
    throw new Error("the server could not be reached");  // fetch's own TypeError reads "Failed to fetch"
  }
  if (response.status === 401) { logout({ expired: true }); throw new Error("please log in again"); }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    throw Object.assign(new Error(typeof detail === "string" ? detail : JSON.stringify(detail)), { status: response.status });
  }
  return response;
}

// --- login ---------------------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const body = new URLSearchParams({ username: $("username").value, password: $("password").value });
  // With the network down the button had done nothing at all: fetch's rejection went uncaught.
  const response = await fetch("/api/auth/token", { method: "POST", body }).catch(() => null);
  if (!response) { $("login-error").textContent = "The server could not be reached: try again."; return; }
  if (!response.ok) {
    // Only a plain 401 is a wrong password; a locked account (429) says so, and for how long.
    let detail = "Wrong username or password.";
    if (response.status !== 401) try { detail = (await response.json()).detail; } catch (_) { detail = `${response.status} ${response.statusText}`; }
    $("login-error").textContent = detail;
    return;
  }
  state.token = (await response.json()).access_token;
  sessionStorage.setItem("medscreen.token", state.token);
  // A refusal (a user without the radiologist role) is said on the login panel, not shown as an empty list.
  try { await start(); } catch (error) {
    logout();
    $("login-error").textContent = (error.status === 403 ? "This account may not use the worklist: " : "The worklist could not be opened: ") + error.message;
  }
}

// The next person at a shared workstation must not see the last patient: on Log out the list, the study and the
// typed read are emptied, not only hidden. When the session runs out (`expired`) they are hidden and kept for
// the same reader logging in again (a long read is not lost), and emptied if someone else logs in.
function logout({ expired = false } = {}) {
  if (!expired && state.token) signOut(state.token);
  state.token = null; sessionStorage.removeItem("medscreen.token");
  if (state.streamAbort) state.streamAbort.abort();
  clearTimeout(state.refreshTimer); clearTimeout(state.retryTimer);
  if (expired) state.keptFor = state.keptFor || state.user; else clearReading();
  // The reader must know that what was refused (a read, a claim) was not recorded: a bare login form said nothing.
  $("login-error").textContent = expired && state.keptFor ? "Your session has ended: log in again. A read or claim " +
    "refused just now was not recorded; the study you had open and what you typed are kept." : "";
  $("app").hidden = true; $("logout").hidden = true; $("who").textContent = ""; $("login-panel").hidden = false;
}

// Log out signs the token out on the server too: dropping it from the tab had left any copy of it working for the
// rest of its lifetime (a shift). keepalive: the request outlives the page, should the tab be closed next.
function signOut(token) {
  fetch("/api/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${token}` }, keepalive: true })
    .catch(() => { /* the server unreachable: the token still expires */ });
}

function clearReading() {
  closeStudy();
  $("read-form").hidden = true; $("read-form").dataset.uid = ""; $("read-note").value = ""; $("read-findings").replaceChildren();
  for (const id of ["rows", "s-facts", "s-score", "s-read", "s-timeline"]) $(id).replaceChildren();
  for (const id of ["s-title", "s-priority", "s-claim", "s-error", "range", "list-status", "list-error", "open-error"]) $(id).textContent = "";
  $("list-error").hidden = true; $("open-error").hidden = true;
  state.offset = 0; state.user = null; state.roles = []; state.listOkAt = null; state.keptFor = null;
}

async function start() {
  const me = await (await api("/api/auth/me")).json();
  if (state.keptFor && state.keptFor !== me.username) clearReading();
  state.keptFor = null;
  $("s-error").textContent = "";
  state.user = me.username; state.roles = me.roles;
  state.claimMs = (await (await fetch("/worklist/settings")).json()).claim_minutes * 60000;
  $("who").textContent = `${me.username} (${me.roles.join(", ")})`;
  $("login-panel").hidden = true; $("app").hidden = false; $("logout").hidden = false;
  await loadFilters();
  await loadList();
  follow();
}

// --- list ----------------------------------------------------------------------------------------

async function loadFilters() {
  const filters = await (await api("/api/worklist/filters")).json();
  const fill = (select, values) => {
    const keep = select.value;
    while (select.options.length > 1) select.remove(1);
    for (const value of values) select.append(el("option", { value, text: value.replace(/_/g, " ") }));
    select.value = keep;
  };
  fill($("f-modality"), filters.modalities); fill($("f-site"), filters.sites); fill($("f-state"), filters.states);
}

// From arrival to now, or to the read for a study already read (its wait stopped there).
function waited(iso, untilIso) {
  const end = untilIso ? Date.parse(untilIso) : Date.now() + state.serverSkewMs;
  const minutes = Math.max(0, (end - Date.parse(iso)) / 60000);
  if (minutes < 60) return `${Math.floor(minutes)} min`;
  const hours = Math.floor(minutes / 60);
  return hours < 48 ? `${hours} h ${Math.floor(minutes % 60)} min` : `${Math.floor(hours / 24)} d`;
}

// Times are shown in UTC, as every time the service records and the audit log keeps: a browser's local
// time beside a RIS or PACS time in another zone is a reading error waiting to happen.
function utc(iso, seconds = false) {
  const text = new Date(iso).toISOString().replace("T", " ");
  return `${text.slice(0, seconds ? 19 : 16)} UTC`;
}

// What the champion version may do to a study's place, kept with the version in the model registry.
function steeringText(steering) {
  return {
    "defer": "defer: positives move up; negatives may wait up to the aging cap (validated on another source)",
    "raise-only": "raise-only: positives move up; negatives keep their arrival place",
    "shadow": "shadow: recorded for monitoring; never moves a study and is not a finding",
  }[steering] || "—";
}

const shadowModel = (item) => item.steering === "shadow" && item.score !== null;

// The rule of inference/score_text.py: at least `digits` decimals, more until a score and its threshold print
// differently (0.67205 negative and 0.67240 positive at 0.672316 had both read "0.67 ... threshold 0.67").
function scoreAndThreshold(score, threshold, digits) {
  let shown = [score.toFixed(digits), threshold.toFixed(digits)];
  for (let places = digits; places <= 8; places++) {
    shown = [score.toFixed(places), threshold.toFixed(places)];
    if (shown[0] !== shown[1] || score === threshold) break;
  }
  return shown;
}

function scoreBar(item) {
  if (item.score === null) {
    const why = { could_not_score: "could not score", out_of_scope: "not scored: outside intended use" }[item.state];
    return el("span", { class: "muted", title: item.score_reason || "", text: why || "—" });
  }
  // A shadow version's score is kept for monitoring; its card says it must not be read as a finding, so
  // it is drawn grey, without the red of a positive call.
  const shadow = item.steering === "shadow";
  const [score, threshold] = scoreAndThreshold(item.score, item.threshold, 3);
  const bar = el("span", { class: "bar", title: `score ${score}, threshold ${threshold}` +
      (shadow ? " (shadow model: monitoring only, not a finding)" : "") },
    el("span", { class: `fill ${shadow ? "shadow" : item.call}` }), el("span", { class: "threshold" }));
  // Set through the CSSOM: the page's Content-Security-Policy refuses inline style attributes.
  bar.querySelector(".fill").style.width = `${(item.score * 100).toFixed(1)}%`;
  bar.querySelector(".threshold").style.left = `${(item.threshold * 100).toFixed(1)}%`;
  return el("span", {}, bar, el("span", { class: "num", text: ` ${scoreAndThreshold(item.score, item.threshold, 2)[0]}` }));
}

// A claim not closed by a read lapses after the site's claim lifetime (the server then refuses the read and
// lets anyone claim the study), so the page says so instead of showing it as held.
function claimEnd(item) {
  return item.claimed_by && item.claimed_at && state.claimMs !== null ? Date.parse(item.claimed_at) + state.claimMs : null;
}
function claimLapsed(item) {
  const end = claimEnd(item);
  return end !== null && end <= Date.now() + state.serverSkewMs;
}

function row(item, position) {
  // The list carries no patient identity (its pages are not audited): the accession number and the description
  // are in the study view, which is.
  const label = `…${item.study_instance_uid.slice(-12)}`;
  const who = item.claimed_by === state.user ? "you" : item.claimed_by;
  const claim = item.claimed_by
    ? (claimLapsed(item) ? el("span", { text: `${who} (lapsed)`, class: "muted", title: `claim lapsed at ${utc(claimEnd(item))}` })
      : el("span", { text: who, class: "claimed" }))
    : el("span", { text: "—" });
  const tr = el("tr", { "data-uid": item.study_instance_uid, "data-tier": item.tier, title: item.priority_reason },
    el("td", { class: "num", text: String(position) }),
    el("td", {}, el("span", { class: `tier tier-${item.tier}`, text: item.tier_label })),
    el("td", { class: "num", text: waited(item.arrived_at, item.read_at) }),
    // A real button, so that a study is opened from the keyboard too (its click reaches the row's handler).
    el("td", {}, el("button", { type: "button", class: "open", text: label,
      ariaLabel: `Open study ${label}, ${item.tier_label}, ${item.modality}` })),
    el("td", { text: item.modality }),
    el("td", { class: "secondary", text: item.site }),
    el("td", { class: "secondary", text: item.order_priority }),
    el("td", { class: "wrap", title: steeringText(item.steering), text: item.model_name ? `${item.model_name} v${item.model_version}` + (item.steering ? ` (${item.steering})` : "") : "—" }),
    el("td", { class: "wrap" }, scoreBar(item)),
    el("td", shadowModel(item) ? { class: "muted", text: "shadow", title: steeringText("shadow") }
      : { class: item.call ? `call-${item.call}` : "", text: item.call || "—" }),
    el("td", { class: "state", text: item.state.replace(/_/g, " ") }),
    el("td", {}, claim));
  markSelected(tr, item.study_instance_uid === state.selected);
  return tr;
}

// The row of the study open in the panel: marked by a bar at its start and, for a screen reader, as the current
// one (aria-current on its Open button). A background tint alone had marked it (1.2:1 against the other rows),
// which a reader with low vision or without colour vision could not tell from the rest (WCAG 1.4.1).
function markSelected(tr, on) {
  tr.classList.toggle("selected", on);
  const button = tr.querySelector("button.open");
  if (on) button.setAttribute("aria-current", "true"); else button.removeAttribute("aria-current");
}

async function loadList() {
  const params = new URLSearchParams({ limit: PAGE_SIZE, offset: state.offset, claimed: $("f-claimed").value });
  for (const [name, id] of [["modality", "f-modality"], ["site", "f-site"], ["state", "f-state"]]) {
    if ($(id).value) params.set(name, $(id).value);
  }
  const page = await (await api(`/api/worklist?${params}`)).json();
  state.serverSkewMs = Date.parse(page.now) - Date.now();
  state.total = page.total;
  if (state.offset >= page.total && state.offset > 0) { state.offset = Math.max(0, page.total - PAGE_SIZE); return loadList(); }
  // A reload (any live event) redraws the rows: the keyboard focus goes back to the study it was on (or to the
  // row now in its place), where it had fallen to <body> and a keyboard user lost their place in the list.
  const focused = document.activeElement && document.activeElement.closest("#rows tr[data-uid]");
  const focusedAt = focused ? [...$("rows").children].indexOf(focused) : -1;
  $("rows").replaceChildren(...page.items.map((item, i) => row(item, state.offset + i + 1)));
  if (focused) {
    const rows = [...$("rows").children];
    const back = rows.find((tr) => tr.dataset.uid === focused.dataset.uid) || rows[Math.min(focusedAt, rows.length - 1)];
    if (back) back.querySelector("button.open").focus();
  }
  const last = Math.min(state.offset + PAGE_SIZE, page.total);
  $("range").textContent = page.total ? `${state.offset + 1}–${last} of ${page.total.toLocaleString()}` : "no studies";
  // A pager button disabled under the keyboard focus (Next on reaching the last page) hands it to the other one:
  // the focus had fallen to <body>, and Tab started again from the top of the page.
  const pagerFocus = document.activeElement;
  $("prev").disabled = state.offset === 0; $("next").disabled = last >= page.total;
  if (pagerFocus && pagerFocus.disabled && (pagerFocus === $("prev") || pagerFocus === $("next"))) {
    const other = pagerFocus === $("prev") ? $("next") : $("prev");
    (other.disabled ? $("range") : other).focus();
  }
  state.listOkAt = page.now;
}

// A list that could not be reloaded is said to be out of date (a new positive or a colleague's claim would not
// show), and reloaded again, at growing intervals up to a minute, until it succeeds.
async function reloadList() {
  clearTimeout(state.retryTimer);
  try {
    await loadList();
    state.retryMs = 0;
    $("list-error").hidden = true; $("list-error").textContent = "";
    if ($("live").textContent === "○ list not updated") showLive(true);
    return true;
  } catch (error) {
    if (!state.token) return false;
    const since = state.listOkAt ? `since ${utc(state.listOkAt)}` : "yet";
    $("list-error").textContent = `List not updated ${since}: ${error.message}. Retrying.`;
    $("list-error").hidden = false;
    $("live").classList.remove("on"); $("live").textContent = "○ list not updated";
    state.retryMs = Math.min(60000, Math.max(2000, state.retryMs * 2));
    state.retryTimer = setTimeout(reloadList, state.retryMs);
    return false;
  }
}

// A filter or page the reader changed: the list's new count is said (role=status), as the page shows it. The list
// had changed without a word to a screen reader, whose user could not tell an empty result from a filter that did
// nothing (WCAG 4.1.3). Live reloads are not said: they come every minute and with every arrival.
async function reloadAndSay() {
  if (!await reloadList()) return;
  $("list-status").textContent = state.total ? `Studies ${$("range").textContent}.` : "No studies match these filters.";
}

function showLive(on) {
  $("live").classList.toggle("on", on);
  $("live").textContent = on ? "● live" : "○ reconnecting";
}

function scheduleRefresh() {
  // Many events arrive together (a batch of results): one reload covers them all.
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(async () => {
    if (await reloadList() && state.selected) await openStudy(state.selected, { quiet: true }).catch(() => {});
  }, 250);
}

// --- live updates (Server-Sent Events read with fetch, so the token travels in a header) ----------

async function follow() {
  if (state.streamAbort) state.streamAbort.abort();
  const abort = new AbortController();
  state.streamAbort = abort;
  while (!abort.signal.aborted && state.token) {
    try {
      const headers = { Authorization: `Bearer ${state.token}` };
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const response = await fetch("/api/worklist/events", { headers, signal: abort.signal });
      // A session that ended is said so at once: the feed had retried it every 2 s as "○ reconnecting".
      if (response.status === 401) { logout({ expired: true }); return; }
      if (!response.ok) throw new Error(`events: ${response.status}`);
      if ($("list-error").hidden) showLive(true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          handleEvent(buffer.slice(0, end)); buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (abort.signal.aborted) return;
      showLive(false);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

function handleEvent(block) {
  let kind = "message";
  for (const line of block.split("\n")) {
    if (line.startsWith("id: ")) state.lastEventId = line.slice(4);
    else if (line.startsWith("event: ")) kind = line.slice(7);
  }
  if (kind !== "hello" && !block.startsWith(":")) scheduleRefresh();
}

function closeStudy() {
  state.viewSeq += 1;  // an answer still on its way must not open the panel again
  $("study").hidden = true; $("app").classList.remove("reading"); state.selected = null; $("study").dataset.uid = "";
  clearTimeout(state.lapseTimer); clearTimeout(state.warnTimer);
  for (const tr of $("rows").children) markSelected(tr, false);
}

// --- study view ----------------------------------------------------------------------------------

// Answers can come back out of order (each study view writes an audit row, and one may wait on the database
// while a later one goes through): only the latest call draws, and it draws the whole panel at once, after
// its last answer. The actions take their study from what is drawn ($("study").dataset.uid), never from the
// row clicked last, so a read can only go to the patient on screen.
async function openStudy(uid, { quiet = false, focus = false } = {}) {
  const seq = ++state.viewSeq;
  state.selected = uid;
  for (const tr of $("rows").children) markSelected(tr, tr.dataset.uid === uid);
  if (!quiet) $("s-error").textContent = "";
  let study;
  try { study = await (await api(`/api/worklist/${encodeURIComponent(uid)}`)).json(); } catch (error) {
    if (seq === state.viewSeq && !quiet && state.token) notOpened(uid, error);
    throw error;
  }
  if (seq !== state.viewSeq) return;
  $("open-error").hidden = true; $("open-error").textContent = "";
  const heatmap = await fetchHeatmap(study);
  if (seq !== state.viewSeq) return;
  $("study").hidden = false;
  $("app").classList.add("reading");
  // Names and descriptions in <bdi>: an Arabic or Hebrew name took the number after it into its right-to-left run
  // ("(12345 <name>)"), so the patient's number read before the name and the accession before the description.
  const isolated = (text) => el("bdi", { text });
  $("s-title").replaceChildren(`${study.modality} `, isolated(study.study_description || ""), ` · `, isolated(study.accession_number || uid));
  const facts = [["Patient", el("span", {}, isolated(study.patient_name), " (", isolated(study.patient_id), ")")], ["Sex / born", `${study.patient_sex || "—"} / ${study.patient_birth_date || "—"}`],
    ["Site", study.site], ["Order priority", study.order_priority || "—"], ["Task", study.task || "—"],
    ["Arrived", `${utc(study.arrived_at)} (` +
      (study.final_read ? `read after ${waited(study.arrived_at, study.final_read.read_at)})` : `waiting ${waited(study.arrived_at)})`)],
    ["State", study.state.replace(/_/g, " ") + (study.score_reason ? `: ${study.score_reason}` : "")],
    ["Model", study.model_name ? `${study.model_name} v${study.model_version}` : "—"],
    ["Steering right", study.model_name ? steeringText(study.steering) : "—"],
    ["Claimed by", study.claimed_by || "nobody"]];
  $("s-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
  $("s-priority").textContent = `Priority ${study.tier_label}: ${study.priority_reason}`;
  $("s-score").replaceChildren(study.score === null ? el("span", { text: "No model score." })
    : el("span", {}, scoreBar(study), shadowModel(study)
      ? el("span", { class: "muted", text: " shadow model: score recorded for monitoring, not a finding and not sent to the PACS" })
      : el("span", { class: `call-${study.call}`, text: ` ${study.call} at threshold ${scoreAndThreshold(study.score, study.threshold, 2)[1]}` })));
  showHeatmap(heatmap);
  showClaim(study);
  if (!$("read-form").hidden && $("read-form").dataset.uid !== uid) buildReadForm(study);
  $("s-read").replaceChildren(...(study.final_read ? [el("p", { class: "final-read",
    text: `Read by ${study.final_read.reader} at ${utc(study.final_read.read_at)}: ` +
      Object.entries(study.final_read.findings).map(([t, f]) => `${t} ${f}`).join(", ") +
      (study.final_read.note ? ` — ${study.final_read.note}` : "") })] : []));
  $("s-timeline").replaceChildren(...study.timeline.map((item) =>
    el("li", { text: `${utc(item.at, true)} · ${item.text}` })));
  $("study").dataset.uid = uid;
  if (focus) $("s-title").focus();
}

// A study the server could not open (a 503, the network down) is said so, and the list's selection goes back to
// the study drawn in the panel, if any: a click had done nothing at all, or marked a row beside another's panel.
function notOpened(uid, error) {
  state.selected = $("study").hidden ? null : $("study").dataset.uid || null;
  for (const tr of $("rows").children) markSelected(tr, tr.dataset.uid === state.selected);
  $("open-error").textContent = `Study …${uid.slice(-12)} could not be opened: ${error.message}. Try again.`;
  $("open-error").hidden = false;
}

// The claim buttons and line; drawn again when one's own claim nears its end and when it lapses while the study
// is open. The read form stays (with what was typed) on a lapsed claim of one's own, and Claim is offered to renew it.
// Before it lapses (two minutes, or half a short claim) the reader is warned and offered "Keep my claim", which
// renews it: a claim had lapsed unannounced in the middle of a read, a colleague could take the study and the read
// was refused, and a reader who reads slowly (a screen reader, a switch) could not extend it in time (WCAG 2.2.1).
function showClaim(study) {
  clearTimeout(state.lapseTimer); clearTimeout(state.warnTimer);
  const own = study.claimed_by === state.user, lapsed = claimLapsed(study), end = claimEnd(study);
  const lead = Math.min(120000, state.claimMs / 2), left = end === null ? null : end - (Date.now() + state.serverSkewMs);
  const ending = study.is_open && own && !lapsed && left !== null && left <= lead;
  $("claim").hidden = !study.is_open || (own && !lapsed && !ending);
  $("claim").textContent = own && lapsed ? "Claim again" : ending ? "Keep my claim" : "Claim";
  // The server refuses to release a colleague's claim unless one is an admin: not offered then.
  $("release").hidden = !study.is_open || !study.claimed_by || !(own || state.roles.includes("admin"));
  $("read-form").hidden = !study.is_open || !own;
  const line = $("s-claim");
  line.className = (own && lapsed) || ending ? "error" : "muted";
  line.textContent = !study.is_open || end === null ? ""
    : own && lapsed ? `Your claim lapsed at ${utc(end)}: claim again to record your read (what you typed is kept).`
    : ending ? `Your claim lapses at ${utc(end)}: keep your claim to go on reading (what you typed is kept).`
    : lapsed ? `${study.claimed_by}'s claim lapsed at ${utc(end)}; anyone may claim the study.`
    : own ? `Your claim lasts until ${utc(end)}.` : "";
  if (study.is_open && own && !lapsed) {
    state.lapseTimer = setTimeout(() => {
      if ($("study").dataset.uid === study.study_instance_uid) showClaim(study);
      reloadList();
    }, left + 250);
    if (!ending) {
      state.warnTimer = setTimeout(() => {
        if ($("study").dataset.uid === study.study_instance_uid) showClaim(study);
      }, left - lead + 50);
    }
  }
}

// The heat-map PNG of a study, or null (none, or it could not be fetched).
async function fetchHeatmap(study) {
  if (!study.heatmap_available) return null;
  try {
    return await (await api(`/api/worklist/${encodeURIComponent(study.study_instance_uid)}/heatmap`)).blob();
  } catch (_) { return null; }
}

function showHeatmap(blob) {
  const img = $("s-heatmap-img");
  if (img.src) { URL.revokeObjectURL(img.src); img.removeAttribute("src"); }
  if (blob) img.src = URL.createObjectURL(blob);
  $("s-heatmap").hidden = !blob;
}

function buildReadForm(study) {
  $("read-form").dataset.uid = study.study_instance_uid;
  const tasks = study.task ? [study.task] : ["finding"];
  // Each task's two answers are a radio group named by the task: a screen reader had announced "present" and
  // "absent" under "Finding" only, without the task written before them (WCAG 1.3.1).
  $("read-findings").replaceChildren(el("legend", { text: "Finding" }), ...tasks.map((task) => {
    const group = el("span", { ariaLabel: task },
      el("span", { text: `${task}: `, ariaHidden: "true" }),
      el("label", {}, el("input", { type: "radio", name: `task-${task}`, value: "present", required: true, "data-task": task }), " present "),
      el("label", {}, el("input", { type: "radio", name: `task-${task}`, value: "absent", "data-task": task }), " absent "));
    group.setAttribute("role", "radiogroup");
    return group;
  }));
  $("read-note").value = "";
}

// Claim, release or read (`verb`) the study drawn in the panel.
// Says whether the server accepted it.
// One action at a time: the buttons are disabled while it runs, so a double-click cannot claim and then
// release, or record a read and then be told it "has already been read".
async function act(uid, verb, options = { method: "POST" }) {
  if (state.acting) return false;
  state.acting = true;
  const pressed = document.activeElement;
  const buttons = [$("claim"), $("release"), $("read-submit")];
  for (const button of buttons) button.disabled = true;
  $("s-error").textContent = "";
  let done = true;
  try {
    try { await api(`/api/worklist/${encodeURIComponent(uid)}/${verb}`, options); } catch (error) { $("s-error").textContent = error.message; done = false; }
    if (state.selected) await openStudy(state.selected, { quiet: true }).catch(() => {});
    await reloadList();
  } finally {
    for (const button of buttons) button.disabled = false;
    state.acting = false;
  }
  // Focus goes where the work goes on, not to the page: the finding after a claim, the recorded read after a read.
  if (done && verb === "claim" && !$("read-form").hidden) $("read-findings").querySelector("input")?.focus();
  else if (done && verb === "read") $("s-read").focus();
  else if (done && verb === "release") $("claim").focus();
  // A refusal leaves the focus on the button pressed (disabled while the action ran, it had dropped the focus to
  // <body>), or on the study's title when that button is no longer offered.
  else if (!done && pressed && document.activeElement === document.body) {
    (pressed.isConnected && !pressed.hidden && !$("study").hidden ? pressed : $("s-title")).focus();
  }
  return done;
}

async function submitRead(event) {
  event.preventDefault();
  const uid = $("read-form").dataset.uid;
  if (!uid || uid !== $("study").dataset.uid) return;
  const findings = {};
  for (const input of $("read-findings").querySelectorAll("input:checked")) findings[input.dataset.task] = input.value;
  const recorded = await act(uid, "read", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ findings, note: $("read-note").value }) });
  // A refused read keeps the form as typed (so the reader can claim again and record it).
  if (recorded) $("read-form").dataset.uid = "";
}

// --- wiring ----------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout());
  for (const id of ["f-modality", "f-site", "f-state", "f-claimed"]) {
    $(id).addEventListener("change", () => { state.offset = 0; reloadAndSay(); });
  }
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); reloadAndSay(); });
  $("next").addEventListener("click", () => { state.offset += PAGE_SIZE; reloadAndSay(); });
  $("rows").addEventListener("click", (event) => {
    const tr = event.target.closest("tr[data-uid]");
    // Where the panel follows the list (a narrow window, a high zoom) a click anywhere on the row takes the focus
    // to it too: the study would open out of sight, below the list.
    const below = getComputedStyle($("study")).position === "static";
    if (tr) openStudy(tr.dataset.uid, { focus: below || event.target.closest("button.open") !== null }).catch(() => {});
  });
  $("close-study").addEventListener("click", () => {
    const uid = state.selected;
    closeStudy();
    // Back to the row the study was opened from.
    const back = [...$("rows").children].find((tr) => tr.dataset.uid === uid);
    if (back) back.querySelector("button.open").focus();
  });
  $("claim").addEventListener("click", () => act($("study").dataset.uid, "claim"));
  $("release").addEventListener("click", () => act($("study").dataset.uid, "release"));
  $("read-form").addEventListener("submit", submitRead);
  // Waiting times and aging move with the clock even when nothing else happens.
  setInterval(() => { if (state.token) reloadList(); }, 60000);
  if (state.token) start().catch(() => logout()); else $("login-panel").hidden = false;
});
