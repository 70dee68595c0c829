// outdial dashboard: re-fetch the batch list every few seconds and swap it in place.
// The server renders (and escapes) every value; this script only moves HTML it received from its own origin.
(function () {
  "use strict";
  var root = document.getElementById("batches");
  var stamp = document.getElementById("updated");
  var body = document.body;
  var refreshMs = parseInt(body.getAttribute("data-refresh-ms"), 10) || 5000;
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var timer = null;

  // Pause / resume / cancel: enabled only for an admin session (the page then carries its CSRF token);
  // each asks for a confirmation, then posts to the admin API with the token in X-CSRF-Token.
  function enableControls() {
    if (!csrf) {
      return;
    }
    root.querySelectorAll("button.control").forEach(function (b) { b.disabled = false; });
  }

  root.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button.control") : null;
    if (!button || !csrf || button.disabled) {
      return;
    }
    var action = button.getAttribute("data-action");
    var name = button.getAttribute("data-name") || button.getAttribute("data-batch");
    var question = action === "cancel"
      ? "Cancel the campaign \u201c" + name + "\u201d? Contacts not yet called will never be called."
      : (action === "pause" ? "Pause" : "Resume") + " the campaign \u201c" + name + "\u201d?";
    if (!window.confirm(question)) {
      return;
    }
    button.disabled = true;
    fetch("/batches/" + encodeURIComponent(button.getAttribute("data-batch")) + "/" + action, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Accept": "application/json", "X-CSRF-Token": csrf }
    }).then(function (response) {
      if (response.status === 401) {
        // The admin session was signed out (here or in another tab or browser): this page is signed out too.
        window.location.assign("/login");
        return null;
      }
      return response.json().then(function (data) {
        if (!response.ok) {
          throw new Error(data.message || "HTTP " + response.status);
        }
        stamp.textContent = action + ": " + data.status;
        window.clearTimeout(timer);
        tick();
      });
    }).catch(function (error) {
      stamp.textContent = action + " failed (" + error.message + ")";
      button.disabled = false;
    });
  });

  function schedule() {
    window.clearTimeout(timer);
    timer = window.setTimeout(tick, refreshMs);
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
      enableControls();
      stamp.textContent = new Date().toLocaleTimeString();
      body.setAttribute("data-refreshes", String((parseInt(body.getAttribute("data-refreshes"), 10) || 0) + 1));
      schedule();
    }).catch(function (error) {
      stamp.textContent = "update failed (" + error.message + "), retrying";
      schedule();
    });
  }

  enableControls();
  schedule();
}());
