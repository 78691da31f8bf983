// Card preview: load a fixture or take a pasted request, POST it to the real service endpoint,
// and show the cards. The card HTML comes from /preview/render (escaped and sanitised on the
// server); everything else is set with textContent.
(() => {
  "use strict";
  const root = document.getElementById("preview");
  const servicesUrl = root.dataset.servicesUrl;
  const renderUrl = root.dataset.renderUrl;
  const fixtureUrl = root.dataset.fixtureUrl;
  const textarea = document.getElementById("request");
  const select = document.getElementById("service");
  const statusLine = document.getElementById("status");
  const expectedLine = document.getElementById("expected");
  const sidebar = document.getElementById("cards");
  const raw = document.getElementById("raw");
  let expected = null;

  function setStatus(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  function fail(text) {
    setStatus(text, true);
    sidebar.replaceChildren();
    sidebar.dataset.state = "error";
  }

  function serviceForHook(hook) {
    for (const option of select.options) {
      if (option.dataset.hook === hook) return option.value;
    }
    return select.value;
  }

  function diagnostics(body) {
    if (body && body.resourceType === "OperationOutcome" && Array.isArray(body.issue)) {
      return body.issue.map((i) => i.diagnostics || (i.details && i.details.text) || i.code).join("; ");
    }
    return "unexpected response";
  }

  function compareExpected(cards) {
    if (!expected) { expectedLine.hidden = true; return; }
    const want = expected.map((e) => e.id).sort();
    const got = [...new Set(cards.map((c) => (c.source && c.source.topic && c.source.topic.code) || "?"))].sort();
    const same = want.length === got.length && want.every((id, i) => id === got[i]);
    expectedLine.hidden = false;
    expectedLine.textContent = (same ? "✓ matches the fixture: " : "✗ the fixture expects: ") + (want.join(", ") || "no cards");
    expectedLine.className = same ? "" : "error";
  }

  async function run() {
    let body;
    try {
      body = JSON.parse(textarea.value);
    } catch (err) {
      fail("The request is not valid JSON: " + err.message);
      return;
    }
    if (body && typeof body.hook === "string") select.value = serviceForHook(body.hook);
    sidebar.dataset.state = "loading";
    setStatus("Calling " + select.value + " …");
    const started = performance.now();
    let response, payload;
    try {
      response = await fetch(servicesUrl + "/" + encodeURIComponent(select.value), {
        method: "POST",
        headers: {"Content-Type": "application/json", "Accept": "application/json"},
        body: JSON.stringify(body),
      });
      payload = await response.json().catch(() => null);
    } catch (err) {
      fail("Could not reach the service: " + err.message);
      return;
    }
    const took = Math.round(performance.now() - started);
    raw.textContent = JSON.stringify(payload, null, 2);
    if (!response.ok || !payload || !Array.isArray(payload.cards)) {
      fail("The service answered " + response.status + ": " + diagnostics(payload));
      return;
    }
    const rendered = await fetch(renderUrl, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({cards: payload.cards}),
    });
    if (!rendered.ok) {
      fail("Could not render the cards (" + rendered.status + ")");
      return;
    }
    const html = await rendered.json();
    sidebar.innerHTML = html.html; // server-rendered: autoescaped, markdown sanitised with nh3
    setStatus(payload.cards.length + " card(s) in " + took + " ms");
    compareExpected(payload.cards);
    sidebar.dataset.state = "done";
  }

  async function loadFixture(name) {
    sidebar.dataset.state = "loading";
    setStatus("Loading " + name + " …");
    const response = await fetch(fixtureUrl + name.split("/").map(encodeURIComponent).join("/"));
    if (!response.ok) {
      fail("Could not load the scenario " + name + " (" + response.status + ")");
      return;
    }
    const data = await response.json();
    expected = data.expected || [];
    textarea.value = JSON.stringify(data.request, null, 2);
    if (data.service) select.value = data.service;
    await run();
  }

  for (const button of document.querySelectorAll("button[data-fixture]")) {
    button.addEventListener("click", () => loadFixture(button.dataset.fixture));
  }
  document.getElementById("run").addEventListener("click", () => { expected = null; run(); });
})();
