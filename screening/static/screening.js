// The paediatrician's page: sign in, then the server renders one page of flags at a time
// (GET /api/screening/flags?format=html); decisions are posted with their note. Kept in the browser: the
// login token of this tab, and a note not yet saved when the session ran out (until it is saved or the
// user logs out), so that signing in again does not throw it away.
"use strict";

const TOKEN = "medscreen-token";
const NOTE = "medscreen-note-";  // + result id: an unsaved note kept over a sign-in
let page = 1;
let shownDecided = false;  // whether the flags on screen include decided ones (the checkbox may be ahead of them)

const $ = (id) => document.getElementById(id);
function token() { return sessionStorage.getItem(TOKEN); }

// The server's reason for a refusal (its `detail`), else the status.
async function detail(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
  } catch (_) { /* not JSON */ }
  return `${response.status} ${response.statusText}`.trim();
}

// Notes typed and not yet saved, and the folds opened, by flag: a re-render must not throw them away.
function keepTyped(flags) {
  const kept = new Map();
  for (const article of flags.querySelectorAll("article.flag")) {
    const note = article.querySelector("textarea[name=note]");
    kept.set(article.id, {
      note: note && note.value !== note.defaultValue ? note.value : null,
      open: [...article.querySelectorAll("details")].map((d) => d.open),
    });
  }
  return kept;
}

function restoreTyped(flags, kept) {
  for (const article of flags.querySelectorAll("article.flag")) {
    const note = article.querySelector("textarea[name=note]");
    const saved = sessionStorage.getItem(NOTE + article.id);
    const before = kept.get(article.id);
    if (note && saved !== null) note.value = saved;
    else if (note && before && before.note !== null) note.value = before.note;
    if (before) article.querySelectorAll("details").forEach((d, i) => { if (before.open[i]) d.open = true; });
  }
}

function forgetNotes() {
  for (const key of Object.keys(sessionStorage)) if (key.startsWith(NOTE)) sessionStorage.removeItem(key);
}

async function fetchPage() {
  const decided = $("include-decided").checked;
  return fetch(`/api/screening/flags?format=html&page=${page}&include_decided=${decided}`,
    {headers: {Authorization: "Bearer " + token()}});
}

async function load({ focus = false } = {}) {
  const flags = $("flags");
  if (!token()) { show(false); return; }
  const response = await fetchPage().catch(() => null);
  if (response && response.status === 401) {
    // Notes typed and not saved are kept for after the sign-in, as when a decision finds the session ended.
    for (const [id, typed] of keepTyped(flags)) if (typed.note !== null) sessionStorage.setItem(NOTE + id, typed.note);
    signedOut(flags.querySelector("article.flag") ? "Your session has ended: sign in again; your notes are kept." : "");
    return;
  }
  // A server or network failure leaves the flags on screen, with the notes typed in them, and says the list was
  // not updated: it had replaced them with "Not allowed: ..." (a 503 is no refusal) and dropped those notes, and a
  // dropped network had done nothing at all. Only a refusal (403) takes the list away.
  if (!response || (!response.ok && response.status !== 403)) {
    const shownPage = flags.querySelector("p.meta[data-page]");
    if (shownPage) page = Number(shownPage.dataset.page);
    $("include-decided").checked = shownDecided;
    $("load-error").textContent = `The list could not be loaded: ${response ? await detail(response) : "the server could not be reached"}. ` +
      "Try again.";
    $("load-error").hidden = false;
    show(true);
    return;
  }
  $("load-error").hidden = true; $("load-error").textContent = "";
  const kept = keepTyped(flags);
  if (response.ok) { flags.innerHTML = await response.text(); shownDecided = $("include-decided").checked; }
  else flags.replaceChildren(Object.assign(document.createElement("p"),
    { className: "error", textContent: `Not allowed: ${await detail(response)}` }));
  restoreTyped(flags, kept);
  // The server answers its last page when the one asked for no longer exists (the list got shorter).
  const shown = flags.querySelector("p.meta[data-page]");
  if (shown) page = Number(shown.dataset.page);
  show(true);
  if (focus && shown) { window.scrollTo(0, 0); shown.focus(); }
}

// After a decision only the count line is brought up to date: the flags on screen stay where they are, so a
// second click cannot land on the next child's flag. A page left without flags is loaded again.
async function refreshCount() {
  const flags = $("flags");
  if (!flags.querySelector("article.flag")) { await load(); return; }
  const response = await fetchPage();
  if (!response.ok) return;
  const fresh = document.createElement("template");
  fresh.innerHTML = await response.text();
  const meta = fresh.content.querySelector("p.meta"), old = flags.querySelector("p.meta");
  if (meta && old) old.replaceWith(meta);
}

function show(signedIn) {
  $("login").hidden = signedIn;
  $("app").hidden = !signedIn;
  $("logout").hidden = !signedIn;
}

function signedOut(message = "") {
  sessionStorage.removeItem(TOKEN);
  $("login-error").textContent = message;
  show(false);
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const response = await fetch("/api/auth/token", {method: "POST", body: new URLSearchParams(new FormData(event.target))})
    .catch(() => null);  // the network down: the button had done nothing at all
  if (!response) { $("login-error").textContent = "The server could not be reached: try again."; return; }
  if (response.ok) {
    sessionStorage.setItem(TOKEN, (await response.json()).access_token);
    $("login-error").textContent = "";
    load();
  } else {
    // A locked account says so (and for how long); only a plain 401 is a wrong password.
    $("login-error").textContent = response.status === 401 ? "Wrong username or password" : await detail(response);
  }
});

// Log out signs the token out on the server too: dropping it from the tab had left any copy of it working for the
// rest of its lifetime (a shift). keepalive: the request outlives the page, should the tab be closed next.
$("logout").addEventListener("click", () => {
  if (token()) {
    fetch("/api/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${token()}` }, keepalive: true })
      .catch(() => { /* the server unreachable: the token still expires */ });
  }
  sessionStorage.removeItem(TOKEN); forgetNotes();
  $("flags").replaceChildren(); $("status").textContent = "";
  $("load-error").hidden = true; $("load-error").textContent = "";
  page = 1;
  show(false);
});
// The list's new count is said (role=status) when the reader ticks or unticks "show decided flags": the list and
// its count had changed without a word to a screen reader (WCAG 4.1.3), as the worklist's filters had.
$("include-decided").addEventListener("change", async () => {
  page = 1;
  $("status").textContent = "";
  await load();
  const meta = $("flags").querySelector("p.meta[data-page]");
  if (meta && $("load-error").hidden) $("status").textContent = `${meta.textContent.replace(/\s+/g, " ").trim()}.`;
});

const OUTCOME_TEXT = { referred: "referred to genetics", not_relevant: "not relevant" };

$("flags").addEventListener("click", async (event) => {
  const pager = event.target.closest("button[data-page]");
  if (pager) { page = Number(pager.dataset.page); load({ focus: true }); return; }
  const button = event.target.closest("button[data-result]");
  if (!button) return;
  const article = button.closest("article");
  // One click, one decision: the flag's buttons stay disabled while its decision is on its way.
  if (article.dataset.pending) return;
  article.dataset.pending = "1";
  const buttons = article.querySelectorAll("button[data-result]");
  buttons.forEach((b) => { b.disabled = true; });
  const note = article.querySelector("textarea[name=note]");
  const name = article.querySelector("h2").firstChild.textContent.trim();
  const error = article.querySelector("p.error.decision") || Object.assign(document.createElement("p"), { className: "error decision" });
  const response = await fetch(`/api/screening/flags/${button.dataset.result}/outcome`, {
    method: "POST",
    headers: {Authorization: "Bearer " + token(), "Content-Type": "application/json"},
    // The decision shown (none: undecided): a colleague's decision since is refused (409) rather than replaced unseen.
    body: JSON.stringify({outcome: button.dataset.outcome, note: note ? note.value : "",
                          replaces: article.dataset.decision ? Number(article.dataset.decision) : null}),
  }).catch(() => null);
  delete article.dataset.pending;
  buttons.forEach((b) => { b.disabled = false; });
  if (!response || !response.ok) {
    if (response && response.status === 401 && note) sessionStorage.setItem(NOTE + article.id, note.value);
    if (response && response.status === 401) {
      signedOut(`Your session has ended: sign in again to record the decision on ${name}; your note is kept.`);
      return;
    }
    error.textContent = `Not saved: ${response ? await detail(response) : "the server could not be reached"}`;
    article.append(error);
    // Disabled while the decision was posted, the button had dropped the keyboard focus to <body>.
    if (document.activeElement === document.body) button.focus();
    return;
  }
  sessionStorage.removeItem(NOTE + article.id);
  // The decided flag gives its place to a line of the same height saying what was stored: nothing moves under
  // the pointer. Set through the CSSOM: the page's Content-Security-Policy refuses inline style attributes.
  const done = Object.assign(document.createElement("p"), {
    className: "decided", tabIndex: -1, textContent: `Decision saved: ${name}, ${OUTCOME_TEXT[button.dataset.outcome]}.` });
  done.style.minHeight = `${article.getBoundingClientRect().height}px`;
  article.replaceWith(done);
  $("status").textContent = done.textContent;
  done.focus();
  refreshCount();
});

load();
