// The API description needs a login: the token is kept in this page's memory only (never in storage).
"use strict";
(function () {
  const form = document.getElementById("login");
  const error = document.getElementById("error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const response = await fetch("/api/auth/token", { method: "POST", body: new URLSearchParams(new FormData(form)) });
    if (!response.ok) {
      error.textContent = (await response.json()).detail || "login failed";
      return;
    }
    const token = (await response.json()).access_token;
    const spec = await fetch("/openapi.json", { headers: { Authorization: "Bearer " + token } });
    if (!spec.ok) {
      error.textContent = "the API description could not be loaded";
      return;
    }
    form.remove();
    window.SwaggerUIBundle({
      spec: await spec.json(),
      dom_id: "#swagger-ui",
      requestInterceptor: (request) => {
        request.headers.Authorization = "Bearer " + token;
        return request;
      },
    });
  });
})();
