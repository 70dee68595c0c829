// outdial "New campaign" wizard: four steps, validated by the API itself.
// Every check is the server's: the preview (POST /call-settings/preview) and the contacts check
// (POST /contacts/check) answer with the same 422 errors as POST /batches and the import; this script only
// builds the request bodies and shows the answers. Writes carry the session's CSRF token in X-CSRF-Token.
(function () {
  "use strict";
  var body = document.body;
  var form = document.getElementById("wizard");
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var admin = body.getAttribute("data-admin") === "1";
  var state = { csv: null, contactsChecked: false, previewSeq: 0, busy: false, afterCall: [], warnings: [],
    applied: null, profiles: {}, fromError: false };

  function $(id) { return document.getElementById(id); }
  function text(el, value) { el.textContent = value == null ? "" : String(value); }

  function api(method, path, payload, contentType) {
    var headers = { "Accept": "application/json" };
    if (csrf) { headers["X-CSRF-Token"] = csrf; }
    var init = { method: method, headers: headers, credentials: "same-origin", cache: "no-store" };
    if (payload !== undefined) {
      headers["Content-Type"] = contentType || "application/json";
      init.body = contentType ? payload : JSON.stringify(payload);
    }
    return fetch(path, init).then(function (response) {
      if (response.status === 401) {
        // The session was signed out (here or in another tab or browser): this page is signed out too.
        window.location.assign("/login");
      }
      return response.json().catch(function () { return {}; }).then(function (data) {
        return { status: response.status, data: data };
      });
    });
  }

  // -- steps -------------------------------------------------------------------------------------------
  function show(step) {
    body.setAttribute("data-step", String(step));
    document.querySelectorAll("section.step").forEach(function (s) {
      s.hidden = s.getAttribute("data-step") !== String(step);
    });
    document.querySelectorAll("#steps li").forEach(function (li) {
      li.classList.toggle("current", li.getAttribute("data-goto") === String(step));
    });
    if (step === 3) { preview(); }
    if (step === 4) { review(); }
  }

  // -- errors ------------------------------------------------------------------------------------------
  function clearErrors(scope) {
    (scope || document).querySelectorAll(".field-error").forEach(function (p) { text(p, ""); });
    (scope || document).querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
  }

  // The error box of a field: its own, else the nearest parent path's ("call_settings.windows[0].start" ->
  // "call_settings.windows"), else the general box.
  function errorBox(field) {
    var path = field || "body";
    while (path) {
      var box = document.querySelector('[data-error-for="' + path.replace(/"/g, "") + '"]');
      if (box) { return box; }
      var cut = Math.max(path.lastIndexOf("."), path.lastIndexOf("["));
      path = cut > 0 ? path.slice(0, cut) : "";
    }
    return $("general-error");
  }

  function showErrors(errors) {
    var first = null;
    (errors || []).forEach(function (e) {
      var box = errorBox(e.field);
      var prefix = box.getAttribute("data-error-for") === e.field || !e.field ? "" : e.field + ": ";
      text(box, (box.textContent ? box.textContent + " · " : "") + prefix + e.message);
      var input = box.previousElementSibling;
      if (input && /^(INPUT|TEXTAREA|SELECT|P)$/.test(input.tagName)) { input.setAttribute("aria-invalid", "true"); }
      var section = box.closest("section.step");
      var step = section ? parseInt(section.getAttribute("data-step"), 10) : 0;
      if (step && (first === null || step < first)) { first = step; }
    });
    return first;
  }

  // -- the request bodies ------------------------------------------------------------------------------
  function value(id) { return $(id).value.trim(); }

  function batchFields() {
    var out = { name: value("f-name"), account_id: value("f-account") };
    if (value("f-agent")) { out.agent_id = value("f-agent"); }
    if (value("f-from")) { out.from_number = value("f-from"); }
    return out;
  }

  function dayList(spec) {   // "1-5,7" -> [1,2,3,4,5,7]; anything else is sent as written for the server to judge
    var days = [];
    spec.split(",").forEach(function (part) {
      var m = part.trim().match(/^(\d+)\s*-\s*(\d+)$/);
      if (m) {
        for (var d = +m[1]; d <= +m[2] && d - +m[1] < 8; d++) { days.push(d); }
      } else if (part.trim()) {
        days.push(/^\d+$/.test(part.trim()) ? +part.trim() : part.trim());
      }
    });
    return days;
  }

  function callSettings() {
    var cs = {};
    var mode = document.querySelector('input[name="window-mode"]:checked').value;
    if (mode === "simple") {
      cs.days_of_week = Array.prototype.map.call(
        document.querySelectorAll('input[name="day"]:checked'), function (c) { return +c.value; });
      cs.allowed_hours = { start: value("f-start"), end: value("f-end") };
    } else if (mode === "windows") {
      cs.windows = value("f-windows").split("\n").filter(function (l) { return l.trim(); }).map(function (line) {
        var parts = line.trim().split(/\s+/);
        return { days: dayList(parts[0] || ""), start: parts[1] || "", end: parts[2] || "" };
      });
    }
    document.querySelectorAll("[data-setting]").forEach(function (input) {
      var raw = input.value.trim();
      if (!raw) { return; }
      var kind = input.getAttribute("data-kind");
      cs[input.getAttribute("data-setting")] = kind && /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw;
    });
    var hol = value("f-holidays");
    if (hol) {
      var m = hol.match(/^([A-Za-z]{2})[-\/ ](.+)$/);
      cs.holidays = m ? { country: m[1], subdivision: m[2] } : hol;
    }
    var dates = value("f-blackouts").split(/[\s,]+/).filter(function (d) { return d; });
    if (dates.length) { cs.blackout_dates = dates; }
    var purpose = $("f-purpose").value;
    if (purpose) { cs.purpose = purpose; }
    var compliance = complianceValue();
    if (compliance) { cs.compliance = compliance; }
    var ac = afterCall();
    if (ac) { cs.after_call = ac; }
    return cs;
  }

  // -- step 3: the calling law -------------------------------------------------------------------------
  function complianceMode() {
    return (document.querySelector('input[name="compliance-mode"]:checked') || {}).value || "none";
  }

  // call_settings.compliance: "auto", the checked profile ids, or null (nothing sent: no profile applies).
  function complianceValue() {
    var mode = complianceMode();
    if (mode === "auto") { return "auto"; }
    if (mode !== "chosen") { return null; }
    var ids = Array.prototype.map.call(document.querySelectorAll('#compliance-list input[name="profile"]:checked'),
      function (c) { return c.value; });
    return ids.length ? ids : null;
  }

  function showComplianceMode() {
    $("compliance-profiles").hidden = complianceMode() !== "chosen";
  }

  // The checkbox list of "these profiles", from GET /compliance-profiles (the profiles in force).
  function renderProfiles(data) {
    var list = $("compliance-list");
    var checked = {};
    list.querySelectorAll('input[name="profile"]:checked').forEach(function (c) { checked[c.value] = true; });
    list.innerHTML = "";
    (data.profiles || []).forEach(function (p) {
      var doc = p.document || p;
      state.profiles[p.id] = doc.name || "";
      var li = document.createElement("li");
      li.className = "compliance-profile";
      li.setAttribute("data-profile", p.id);
      var label = document.createElement("label");
      var box = document.createElement("input");
      box.type = "checkbox";
      box.name = "profile";
      box.value = p.id;
      box.checked = !!checked[p.id];
      var code = document.createElement("code");
      text(code, p.id);
      var name = document.createElement("span");
      text(name, " " + (doc.name || ""));
      var where = [doc.country, doc.subdivision].filter(function (v) { return v; }).join("-");
      var more = document.createElement("span");
      more.className = "muted";
      text(more, " (" + [where, (doc.purposes || []).join(", ")].filter(function (v) { return v; }).join("; ") + ")");
      label.appendChild(box);
      label.appendChild(document.createTextNode(" "));
      label.appendChild(code);
      label.appendChild(name);
      label.appendChild(more);
      li.appendChild(label);
      list.appendChild(li);
    });
  }

  function loadProfiles() {
    return api("GET", "/compliance-profiles").then(function (r) {
      if (r.status !== 200) {
        text($("compliance-profiles-note"), "The profiles could not be listed: " +
          (r.data.message || "HTTP " + r.status));
        return;
      }
      renderProfiles(r.data);
      body.setAttribute("data-profiles", "1");
    });
  }

  function complianceText(compliance) {
    if (!compliance) { return "none"; }
    if (compliance === "auto") { return "auto (chosen for each number by its country and US state, and the purpose)"; }
    return compliance.map(function (id) { return state.profiles[id] ? id + " (" + state.profiles[id] + ")" : id; })
      .join(", ");
  }

  // A value typed for a success rule: true, false and numbers are read as JSON, anything else is a string.
  function scalar(raw) {
    if (/^(true|false)$/i.test(raw)) { return raw.toLowerCase() === "true"; }
    if (/^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/.test(raw)) { return JSON.parse(raw); }
    return raw;
  }

  // call_settings.after_call from the "After the call" inputs; null when every input is empty (nothing is sent).
  function afterCall() {
    var ac = {};
    var mode = $("f-ac-success").value;
    if (mode === "call_successful") {
      ac.success = "call_successful";
    } else if (mode === "equals" || mode === "in") {
      var rule = {};
      if (value("f-ac-success-field")) { rule.field = value("f-ac-success-field"); }
      if (mode === "equals" && value("f-ac-success-equals")) {
        rule.equals = scalar(value("f-ac-success-equals"));
      } else if (mode === "in") {
        var values = value("f-ac-success-in").split(",").map(function (v) { return v.trim(); })
          .filter(function (v) { return v; }).map(scalar);
        if (values.length) { rule["in"] = values; }
      }
      ac.success = rule;   // an incomplete rule is sent as typed: the API names what it lacks
    }
    document.querySelectorAll("input[data-after-call], select[data-after-call]").forEach(function (input) {
      var name = input.getAttribute("data-after-call");
      var raw = input.value.trim();
      if (name === "success" || !raw) { return; }
      ac[name] = input.getAttribute("data-kind") === "integer" && /^-?\d+$/.test(raw) ? Number(raw) : raw;
    });
    return Object.keys(ac).length ? ac : null;
  }

  function successMode() {
    var mode = $("f-ac-success").value;
    $("ac-success-rule").hidden = mode !== "equals" && mode !== "in";
    $("ac-success-equals").hidden = mode !== "equals";
    $("ac-success-in").hidden = mode !== "in";
  }

  // -- step 2: contacts --------------------------------------------------------------------------------
  function csvText() { return state.csv !== null ? state.csv : $("f-csv-text").value; }

  function checkContacts() {
    var report = $("contacts-report");
    clearErrors($("step-2"));
    report.innerHTML = "";
    var csv = csvText();
    if (!csv.trim()) {
      text(errorBox("contacts"), "Upload a CSV file or paste the rows.");
      return Promise.resolve(false);
    }
    return api("POST", "/contacts/check", csv, "text/csv").then(function (r) {
      if (r.status === 422) { showErrors(r.data.errors); return false; }
      if (r.status !== 200) { text(errorBox("contacts"), r.data.message || "HTTP " + r.status); return false; }
      renderReport(report, r.data, "valid");
      state.contactsChecked = true;
      return true;
    });
  }

  function renderReport(box, data, countKey) {
    var p = document.createElement("p");
    p.className = "report-summary";
    p.setAttribute("data-rows", data.rows);
    p.setAttribute("data-" + countKey, data[countKey]);
    text(p, data.rows + " rows: " + data[countKey] + " " + (countKey === "valid" ? "valid" : "imported") +
      ", " + (data.errors_total || 0) + " with errors" + (data.errors_total ? " (not imported)" : ""));
    box.appendChild(p);
    if (!data.errors || !data.errors.length) { return; }
    var table = document.createElement("table");
    table.className = "row-errors";
    var head = table.insertRow();
    ["line", "field", "problem"].forEach(function (h) {
      var th = document.createElement("th"); text(th, h); head.appendChild(th);
    });
    data.errors.forEach(function (e) {
      var tr = table.insertRow();
      tr.className = "row-error";
      tr.setAttribute("data-line", e.line != null ? e.line : e.index);
      [e.line != null ? e.line : "#" + e.index, e.field || "", e.message].forEach(function (v) {
        text(tr.insertCell(), v);
      });
    });
    box.appendChild(table);
  }

  // -- step 3: preview ---------------------------------------------------------------------------------
  var operatorZone = (Intl.DateTimeFormat().resolvedOptions().timeZone) || "local";
  text($("operator-zone"), operatorZone);

  function previewBody() {
    var out = { call_settings: callSettings(), count: 5 };
    if (value("f-preview-phone")) { out.phone = value("f-preview-phone"); }
    if (value("f-from")) { out.from_number = value("f-from"); }   // the caller id: a profile may ask for a prefix
    return out;
  }

  function localTime(at) {   // an instant in the operator's own zone
    return new Date(at).toLocaleString([], { weekday: "short", year: "numeric", month: "2-digit",
      day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false });
  }

  function listItems(list, items, className) {
    list.innerHTML = "";
    items.forEach(function (sentence) {
      var li = document.createElement("li");
      li.className = className;
      text(li, sentence);
      list.appendChild(li);
    });
  }

  // The calling law's part of a preview: the profiles for the number, the times they exclude, the warnings.
  function renderLaw(data, sent) {
    var compliance = sent.call_settings.compliance;
    var applied = data.profiles || [];
    state.applied = compliance ? applied : null;
    var line = $("preview-profiles");
    line.setAttribute("data-profiles", applied.join(" "));
    if (!compliance) {
      text(line, "");
    } else if (applied.length) {
      text(line, "Calling law for this number: " + applied.join(", "));
    } else if (compliance === "auto" && !sent.phone) {
      text(line, "auto chooses the profiles for each number: enter a number to preview with to see its own");
    } else {
      text(line, "No compliance profile applies to this number");
    }
    var excluded = data.excluded || [];
    var list = $("preview-excluded");
    list.innerHTML = "";
    excluded.forEach(function (e) {
      var li = document.createElement("li");
      li.className = "excluded";
      li.setAttribute("data-at", e.at);
      li.setAttribute("data-local", e.local);
      li.setAttribute("data-profile", e.profile);
      text(li, e.local_text + " " + e.zone + " (your time " + localTime(e.at) + "): " + e.why);
      list.appendChild(li);
    });
    $("preview-excluded-box").hidden = !excluded.length;
    state.warnings = data.warnings || [];
    listItems($("preview-warning-list"), state.warnings, "compliance-warning");
    $("preview-warnings").hidden = !state.warnings.length;   // never blocking: the buttons stay as they are
  }

  // A preview's errors for fields of another step (the caller id of step 1) are also said here.
  function otherStepErrors(errors) {
    var box = $("preview-other-errors");
    (errors || []).forEach(function (e) {
      var slot = errorBox(e.field);
      if (!e.field || slot.closest("#step-3") || slot === $("general-error")) { return; }
      if (e.field === "from_number") { state.fromError = true; }
      var label = e.field === "from_number" ? "From number (step 1)" : e.field;
      text(box, (box.textContent ? box.textContent + " · " : "") + label + ": " + e.message);
    });
  }

  function clearFromError() {
    if (!state.fromError) { return; }
    state.fromError = false;
    text(errorBox("from_number"), "");
    $("f-from").removeAttribute("aria-invalid");
  }

  function preview() {
    var seq = ++state.previewSeq;
    var sent = previewBody();
    return api("POST", "/call-settings/preview", sent).then(function (r) {
      if (seq !== state.previewSeq) { return r.status === 200; }
      clearErrors($("step-3"));
      clearFromError();
      var tbody = document.querySelector("#preview tbody");
      tbody.innerHTML = "";
      var rules = $("preview-after-call");
      rules.innerHTML = "";
      if (r.status !== 200) {
        text($("preview-window"), "");
        var errors = r.data.errors || [{ message: r.data.message || "HTTP " + r.status }];
        showErrors(errors);
        otherStepErrors(errors);
        renderLaw({}, { call_settings: {} });
        body.setAttribute("data-preview", "invalid");
        return false;
      }
      text($("preview-window"), r.data.window + " · zone " + r.data.zones.join(", "));
      r.data.times.forEach(function (t) {
        var tr = tbody.insertRow();
        tr.className = "preview-time";
        tr.setAttribute("data-at", t.at);
        tr.setAttribute("data-local", t.local);
        [t.local_text + " " + t.zone, localTime(t.at), t.rule].forEach(function (v) { text(tr.insertCell(), v); });
        var law = tr.insertCell();
        law.className = "profile-rules";
        (t.profiles || []).forEach(function (p) {   // the profile rules that allow this time
          var span = document.createElement("span");
          span.className = "profile-rule";
          span.setAttribute("data-profile", p.id);
          text(span, p.id + ": " + p.rule);
          law.appendChild(span);
        });
      });
      state.afterCall = r.data.after_call || [];
      listItems(rules, state.afterCall, "after-call-rule");
      renderLaw(r.data, sent);
      body.setAttribute("data-preview", "ok");
      return true;
    });
  }

  var timer = null;
  function previewSoon() {
    window.clearTimeout(timer);
    timer = window.setTimeout(preview, 350);
  }

  function windowMode() {
    var mode = document.querySelector('input[name="window-mode"]:checked').value;
    $("simple-window").hidden = mode !== "simple";
    $("several-windows").hidden = mode !== "windows";
  }

  // -- step 4: review and start ------------------------------------------------------------------------
  function review() {
    var dl = $("review");
    dl.innerHTML = "";
    var b = batchFields();
    var cs = callSettings();
    var rows = [["Name", b.name], ["Account", b.account_id], ["Agent", b.agent_id || "(default)"],
      ["From", b.from_number || "(default)"], ["call_settings", JSON.stringify(cs)],
      ["Purpose", cs.purpose || "not said"], ["Compliance", complianceText(cs.compliance)],
      ["Contacts", state.contactsChecked ? ($("contacts-report").querySelector(".report-summary") || {}).textContent
        : "not checked yet (the import checks them when the campaign starts)"]];
    rows.forEach(function (row) {
      var dt = document.createElement("dt"); text(dt, row[0]); dl.appendChild(dt);
      var dd = document.createElement("dd"); text(dd, row[1]); dl.appendChild(dd);
    });
    [["Calling law", "review-law"], ["After the call", "review-after-call"]].forEach(function (row) {
      var dt = document.createElement("dt"); text(dt, row[0]); dl.appendChild(dt);
      var dd = document.createElement("dd"); dd.id = row[1]; dl.appendChild(dd);
    });
    reviewLists();
    preview().then(reviewLists);   // the rules and warnings as the server reads them now
  }

  function reviewLists() {
    var dd = $("review-after-call");
    if (!dd) { return; }
    dd.innerHTML = "";
    var list = document.createElement("ol");
    listItems(list, state.afterCall || [], "after-call-rule");
    dd.appendChild(list);

    var law = $("review-law");
    law.innerHTML = "";
    var said = document.createElement("p");
    if (state.applied === null) {
      text(said, "no compliance profile applied");
    } else {
      text(said, (state.applied.length ? "for the preview number: " + state.applied.join(", ")
        : "no profile for the preview number") + (state.warnings.length ? "" : "; no warning"));
    }
    law.appendChild(said);
    if (state.warnings.length) {
      var warnings = document.createElement("ul");
      warnings.setAttribute("role", "status");
      listItems(warnings, state.warnings, "compliance-warning");
      law.appendChild(warnings);
    }
  }

  function start() {
    if (state.busy || !admin) { return; }
    state.busy = true;
    clearErrors();
    var result = $("result");
    result.innerHTML = "";
    var payload = batchFields();
    payload.call_settings = callSettings();
    api("POST", "/batches", payload).then(function (r) {
      if (r.status !== 201) {
        var step = showErrors(r.data.errors || [{ message: r.data.message || "HTTP " + r.status }]);
        if (step) { show(step); }
        state.busy = false;
        return null;
      }
      var id = r.data.id;
      body.setAttribute("data-batch-id", id);
      return api("POST", "/batches/" + encodeURIComponent(id) + "/contacts", csvText(), "text/csv").then(function (c) {
        if (c.status !== 200) {
          text(errorBox("body"), "The batch " + id + " was created, but the contacts were refused: " +
            (c.data.message || "HTTP " + c.status));
          return;
        }
        $("start").disabled = true;
        renderReport(result, c.data, "imported");
        var link = document.createElement("a");
        link.href = "/";
        link.id = "started";
        text(link, "Started. See it on the dashboard");
        result.appendChild(link);
        body.setAttribute("data-started", id);
      });
    }).catch(function (error) {
      text(errorBox("body"), "Request failed: " + error.message);
      state.busy = false;
    });
  }

  // -- wiring ------------------------------------------------------------------------------------------
  function applySchema(schema) {   // bounds, defaults and descriptions from GET /call-settings/schema
    var props = schema.properties || {};
    document.querySelectorAll("[data-setting]").forEach(function (input) {
      var spec = props[input.getAttribute("data-setting")];
      if (!spec) { return; }
      input.title = spec.description || "";
      if (spec["default"] !== undefined && !input.value) { input.placeholder = String(spec["default"]); }
      var num = (spec.anyOf || []).filter(function (s) { return s.minimum !== undefined; })[0];
      if (num) { input.setAttribute("data-bounds", num.minimum + "-" + num.maximum); }
    });
    var rules = (((props.after_call || {}).anyOf || [{}])[0].properties) || {};
    document.querySelectorAll("[data-after-call]").forEach(function (input) {
      var spec = rules[input.getAttribute("data-after-call")];
      if (spec && spec.description) { input.title = spec.description; }
    });
    document.querySelectorAll("[data-describe]").forEach(function (el) {
      var spec = props[el.getAttribute("data-describe")];
      if (spec && spec.description) { el.title = spec.description; }
    });
    var zones = ((props.timezone || {}).anyOf || [{}])[0]["enum"] || [];
    var list = $("zones");
    zones.forEach(function (z) { var o = document.createElement("option"); o.value = z; list.appendChild(o); });
  }

  document.querySelectorAll("[data-goto]").forEach(function (el) {
    el.addEventListener("click", function () {
      var target = parseInt(el.getAttribute("data-goto"), 10);
      var current = parseInt(body.getAttribute("data-step"), 10);
      if (target === 4 && current === 3) {   // leaving the settings: only with settings the server accepts
        preview().then(function (ok) { if (ok) { show(4); } });
        return;
      }
      show(target);
    });
  });
  $("f-csv-file").addEventListener("change", function (ev) {
    var file = ev.target.files && ev.target.files[0];
    if (!file) { state.csv = null; return; }
    file.text().then(function (content) { state.csv = content; state.contactsChecked = false; checkContacts(); });
  });
  $("f-csv-text").addEventListener("input", function () { state.csv = null; state.contactsChecked = false; });
  $("check-contacts").addEventListener("click", checkContacts);
  $("start").addEventListener("click", start);
  document.querySelectorAll('input[name="window-mode"]').forEach(function (r) {
    r.addEventListener("change", function () { windowMode(); previewSoon(); });
  });
  $("step-3").addEventListener("input", previewSoon);
  $("f-ac-success").addEventListener("change", function () { successMode(); previewSoon(); });
  $("f-ac-opt-out-scope").addEventListener("change", previewSoon);
  $("f-purpose").addEventListener("change", previewSoon);
  document.querySelectorAll('input[name="compliance-mode"]').forEach(function (r) {
    r.addEventListener("change", function () { showComplianceMode(); previewSoon(); });
  });
  $("compliance-list").addEventListener("change", previewSoon);
  form.addEventListener("submit", function (ev) { ev.preventDefault(); });
  windowMode();
  successMode();
  showComplianceMode();
  loadProfiles();
  show(1);
  api("GET", "/call-settings/schema").then(function (r) { if (r.status === 200) { applySchema(r.data); } });
  body.setAttribute("data-ready", "1");
}());
