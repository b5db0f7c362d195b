// The paediatrician's page: sign in, then the server renders one page of flags at a time
// (GET /api/screening/flags?format=html); decisions are posted with their note. No data is kept
// in the browser beyond the login token of this tab.
"use strict";

const TOKEN = "medscreen-token";
let page = 1;

function token() { return sessionStorage.getItem(TOKEN); }

async function load() {
  const flags = document.getElementById("flags");
  if (!token()) { show(false); return; }
  const decided = document.getElementById("include-decided").checked;
  const response = await fetch(`/api/screening/flags?format=html&page=${page}&include_decided=${decided}`,
    {headers: {Authorization: "Bearer " + token()}});
  if (response.status === 401) { sessionStorage.removeItem(TOKEN); show(false); return; }
  flags.innerHTML = response.ok ? await response.text() : `<p class="error">Not allowed (${response.status})</p>`;
  // The server answers its last page when the one asked for no longer exists (the list got shorter).
  const shown = flags.querySelector("p.meta[data-page]");
  if (shown) page = Number(shown.dataset.page);
  show(true);
}

function show(signedIn) {
  document.getElementById("login").hidden = signedIn;
  document.getElementById("app").hidden = !signedIn;
  document.getElementById("logout").hidden = !signedIn;
}

document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const response = await fetch("/api/auth/token", {method: "POST", body: new URLSearchParams(new FormData(event.target))});
  if (response.ok) {
    sessionStorage.setItem(TOKEN, (await response.json()).access_token);
    document.getElementById("login-error").textContent = "";
    page = 1;
    load();
  } else {
    document.getElementById("login-error").textContent = "Wrong username or password";
  }
});

document.getElementById("logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN); show(false); });
document.getElementById("include-decided").addEventListener("change", () => { page = 1; load(); });

document.getElementById("flags").addEventListener("click", async (event) => {
  const pager = event.target.closest("button[data-page]");
  if (pager) { page = Number(pager.dataset.page); load(); return; }
  const button = event.target.closest("button[data-result]");
  if (!button) return;
  const article = button.closest("article");
  const note = article.querySelector("textarea[name=note]");
  const response = await fetch(`/api/screening/flags/${button.dataset.result}/outcome`, {
    method: "POST",
    headers: {Authorization: "Bearer " + token(), "Content-Type": "application/json"},
    body: JSON.stringify({outcome: button.dataset.outcome, note: note ? note.value : ""}),
  });
  if (!response.ok) { article.insertAdjacentHTML("beforeend", `<p class="error">Not saved (${response.status})</p>`); return; }
  load();
});

load();
