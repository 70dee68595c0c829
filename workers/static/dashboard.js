// outdial dashboard: re-fetch the batch list every few seconds and swap it in place.
// The server renders (and escapes) every value; this script only moves HTML it received from its own origin.
(function () {
  "use strict";
  var root = document.getElementById("batches");
  var stamp = document.getElementById("updated");
  var body = document.body;
  var refreshMs = parseInt(body.getAttribute("data-refresh-ms"), 10) || 5000;

  function schedule() {
    window.setTimeout(tick, refreshMs);
  }

  function tick() {
    fetch("/dashboard/batches" + window.location.search, {
      credentials: "same-origin",
      headers: { "Accept": "text/html" },
      cache: "no-store"
    }).then(function (response) {
      if (response.status === 401) {
        window.location.assign("/login");
        return null;
      }
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      return response.text();
    }).then(function (html) {
      if (html === null) {
        return;
      }
      root.innerHTML = html;
      stamp.textContent = new Date().toLocaleTimeString();
      body.setAttribute("data-refreshes", String((parseInt(body.getAttribute("data-refreshes"), 10) || 0) + 1));
      schedule();
    }).catch(function (error) {
      stamp.textContent = "update failed (" + error.message + "), retrying";
      schedule();
    });
  }

  schedule();
}());
