/* The admin console (plain JavaScript, no build step). Every action is a call to the product's own HTTP API
   (README "HTTP API"), relative to /api/, carrying the function key typed in the header as x-functions-key.
   The key lives in this script's memory only: never in storage, the URL or the page. */
(function () {
  "use strict";

  var key = "";
  var refresh = null; // the pending reload of a model page while it trains
  var backtestTimer = null; // the pending poll of a running backtest
  var view = document.getElementById("view");
  var notice = document.getElementById("notice");
  var PERIODS = [["3m", "3 months"], ["6m", "6 months"], ["1y", "1 year"], ["2y", "2 years"]];
  var FIELDS = [
    ["name", "Name", "text", "Letters, digits and _ only"],
    ["businessProcessFlow", "Business process flow", "text", "Process id or unique name; required for per-stage modelling"],
    ["stateOptionSet", "State option set", "text", "Default: statecode (Status)"],
    ["wonValues", "Won values", "list", "Comma-separated option values; default: Won"],
    ["lostValues", "Lost values", "list", "Comma-separated option values; default: Lost"],
    ["filterColumn", "Filter column", "text", "Optional: one column choosing which opportunities the model covers"],
    ["filterValues", "Filter values", "list", "Comma-separated values of the filter column"],
    ["trainingPeriod", "Train with opportunities from the past", "period", ""],
    ["perStage", "Per-stage modelling", "bool", "Only at creation"]
  ];

  // -- helpers -----------------------------------------------------------------------------------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k === "onclick") node.addEventListener("click", v);
      else node.setAttribute(k, v === true ? "" : v);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }

  function svg(tag, attrs, children) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (k) { if (k === "text") node.textContent = attrs[k]; else node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) { node.appendChild(c); });
    return node;
  }

  function say(text, bad) {
    notice.textContent = text || "";
    notice.className = bad ? "bad" : "";
  }

  function api(method, path, body, headers) {
    var h = Object.assign({ Accept: "application/json" }, headers || {});
    if (key) h["x-functions-key"] = key;
    if (body !== undefined) h["Content-Type"] = "application/json";
    return fetch(path, { method: method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) }).then(function (r) {
      return r.text().then(function (text) {
        var parsed = null;
        try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = { error: { code: "NotJson", message: text.slice(0, 200) } }; }
        return { status: r.status, body: parsed, etag: r.headers.get("ETag") };
      });
    });
  }

  function errorText(res) {
    var e = res.body && res.body.error;
    return e ? e.message + " (" + e.code + ")" : "HTTP " + res.status;
  }

  function pct(v) { return typeof v === "number" ? (v * 100).toFixed(1) + "%" : "–"; }
  function num(v, d) { return typeof v === "number" ? v.toFixed(d === undefined ? 3 : d) : "–"; }
  function when(iso) { return iso ? String(iso).replace("T", " ").replace(/:\d\dZ$/, " UTC") : "–"; }
  function stamp() { return new Date().toISOString().replace(/[-:T]/g, "").slice(0, 12); }
  function pill(readiness) {
    return readiness ? el("span", { class: "pill " + String(readiness).split(" ")[0], text: readiness }) : el("span", { class: "muted", text: "–" });
  }

  // -- models ------------------------------------------------------------------------------------------

  function modelsPage() {
    view.replaceChildren(el("h2", { text: "Models" }), el("p", { class: "muted", text: "Loading…" }));
    api("GET", "models").then(function (res) {
      if (res.status !== 200) { say(errorText(res), true); return; }
      var rows = res.body.models.map(function (m) {
        return el("tr", { "data-model": m.name }, [
          el("td", {}, [el("a", { href: "#/model/" + encodeURIComponent(m.name), text: m.name })]),
          el("td", { class: "status", text: m.status }),
          el("td", {}, [pill(m.readiness)]),
          el("td", { class: "num published", text: m.publishedVersion === null ? "–" : String(m.publishedVersion) }),
          el("td", { text: when(m.lastTrainedAt) }),
          el("td", { text: m.autoRetrain ? "On" : "Off" })
        ]);
      });
      var full = res.body.count >= res.body.limit;
      view.replaceChildren(
        el("h2", { text: "Models" }),
        el("p", { class: "muted", text: res.body.count + " of at most " + res.body.limit + " models" }),
        rows.length
          ? el("table", { id: "models" }, [
              el("thead", {}, [el("tr", {}, ["Name", "Status", "Readiness", "Published version", "Last training", "Auto-retrain"].map(function (t) { return el("th", { text: t }); }))]),
              el("tbody", {}, rows)
            ])
          : el("p", { text: "No model yet: add the first one." }),
        el("div", { class: "actions" }, [
          el("button", { class: "primary", id: "add-model", disabled: full, text: "Add model", onclick: function () { location.hash = "#/add"; } })
        ])
      );
    });
  }

  // -- add a model -------------------------------------------------------------------------------------

  function addPage() {
    var form = el("form", { class: "add", novalidate: true, "aria-label": "Add a model" });
    FIELDS.forEach(function (f) {
      var id = "f-" + f[0];
      var input;
      if (f[2] === "period") {
        input = el("select", { id: id, name: f[0] }, PERIODS.map(function (p) { return el("option", { value: p[0], selected: p[0] === "2y", text: p[1] }); }));
      } else if (f[2] === "bool") {
        input = el("input", { id: id, name: f[0], type: "checkbox" });
      } else {
        input = el("input", { id: id, name: f[0], type: "text", value: f[0] === "name" ? "OpportunityScoring_" + stamp() : f[0] === "stateOptionSet" ? "statecode" : null });
      }
      input.setAttribute("aria-describedby", "hint-" + f[0] + " err-" + f[0]);
      form.appendChild(el("label", { for: id, text: f[1] }));
      form.appendChild(el("div", { class: "field" }, [
        input,
        el("div", { class: "hint", id: "hint-" + f[0], text: f[3] }),
        el("div", { class: "field-error", id: "err-" + f[0], role: "alert" })
      ]));
    });
    form.appendChild(el("span"));
    form.appendChild(el("div", { class: "actions" }, [el("button", { class: "primary", type: "submit", id: "create", text: "Get started" })]));
    var outcome = el("div", { id: "outcome" });
    form.addEventListener("submit", function (e) { e.preventDefault(); submit(form, outcome, false); });
    view.replaceChildren(el("h2", { text: "Add a model" }), form, outcome);
  }

  function configFrom(form) {
    var config = {};
    FIELDS.forEach(function (f) {
      var input = form.elements[f[0]];
      if (f[2] === "bool") { if (input.checked) config[f[0]] = true; return; }
      var value = input.value.trim();
      if (!value) return;
      if (f[2] === "list") {
        config[f[0]] = value.split(",").map(function (v) { v = v.trim(); return /^-?\d+$/.test(v) ? Number(v) : v; }).filter(function (v) { return v !== ""; });
      } else {
        config[f[0]] = value;
      }
    });
    return config;
  }

  function clearErrors(form, outcome) {
    FIELDS.forEach(function (f) {
      document.getElementById("err-" + f[0]).textContent = "";
      form.elements[f[0]].removeAttribute("aria-invalid");
    });
    outcome.replaceChildren();
  }

  function submit(form, outcome, force) {
    clearErrors(form, outcome);
    var config = configFrom(form);
    if (force) config.force = true;
    api("POST", "models", config).then(function (res) {
      var err = (res.body && res.body.error) || {};
      if (res.status === 202) {
        say("Model " + res.body.model + " created; training started (job " + res.body.job.id + ").");
        location.hash = "#/model/" + encodeURIComponent(res.body.model);
      } else if (res.status === 400 && err.field && document.getElementById("err-" + err.field)) {
        var input = form.elements[err.field];
        document.getElementById("err-" + err.field).textContent = err.rule || err.message;
        input.setAttribute("aria-invalid", "true");
        input.focus();
      } else if (res.status === 409 && err.code === "OverlappingModels") {
        var models = (err.details && err.details.models) || [];
        outcome.replaceChildren(el("div", { class: "panel warn", id: "overlap", role: "alertdialog", "aria-label": "Possible duplicate" }, [
          el("p", { text: "This model might score the same opportunities as: " + models.join(", ") + "." }),
          el("div", { class: "actions" }, [
            el("button", { type: "button", id: "go-back", text: "No, go back", onclick: function () { outcome.replaceChildren(); form.elements.filterColumn.focus(); } }),
            el("button", { type: "button", class: "primary", id: "create-anyway", text: "Yes, create model", onclick: function () { submit(form, outcome, true); } })
          ])
        ]));
        document.getElementById("create-anyway").focus();
      } else if (res.status === 422) {
        var d = err.details || {};
        var rows = Object.keys(d.needed || {}).map(function (k) {
          return el("tr", {}, [el("th", { text: k }), el("td", { class: "num found", text: String((d.found || {})[k]) }), el("td", { class: "num", text: String(d.needed[k]) })]);
        });
        outcome.replaceChildren(el("div", { class: "panel bad", id: "insufficient", role: "alert" }, [
          el("p", { text: err.message }),
          el("table", {}, [el("thead", {}, [el("tr", {}, [el("th", { text: "" }), el("th", { text: "Found" }), el("th", { text: "Needed" })])]), el("tbody", {}, rows)])
        ]));
      } else {
        outcome.replaceChildren(el("div", { class: "panel bad", role: "alert", text: errorText(res) }));
      }
    });
  }

  // -- one model ---------------------------------------------------------------------------------------

  function modelPage(name) {
    var path = "models/" + encodeURIComponent(name);
    view.replaceChildren(el("h2", { text: name }), el("p", { class: "muted", text: "Loading…" }));
    api("GET", path).then(function (res) {
      if (res.status !== 200) { view.replaceChildren(el("h2", { text: name }), el("div", { class: "panel bad", text: errorText(res) })); return; }
      var m = res.body;
      var summary = el("p", { id: "model-status" }, [
        "Status: ", el("strong", { class: "status", text: m.status }), " · readiness ", pill(m.readiness),
        " · published version ", el("strong", { class: "published", text: m.publishedVersion === null ? "none" : String(m.publishedVersion) }),
        " · last training " + when(m.lastTrainedAt) + " · auto-retrain " + (m.autoRetrain ? "on" : "off")
      ]);
      var parts = [el("h2", { text: m.name }), summary];
      if (m.error) parts.push(el("div", { class: "panel bad", role: "alert", text: "Training failed: " + (m.error.message || JSON.stringify(m.error)) }));
      if (m.status === "training" || m.status === "queued") {
        parts.push(el("div", { class: "panel", id: "training", text: "Training… this page refreshes when it ends." }));
        refresh = setTimeout(function () { if (location.hash === "#/model/" + encodeURIComponent(name)) modelPage(name); }, 1500);
      }
      parts.push(actions(m, path, res.etag));
      parts.push(versions(m, path));
      parts.push(rangesEditor(m, path, res.etag));
      var perf = el("section", { id: "performance", "aria-label": "Performance" });
      var ins = el("section", { id: "insights", "aria-label": "Attribute insights" });
      parts.push(el("div", { class: "grid2" }, [perf, ins]));
      var bt = el("section", { id: "backtest", class: "panel", "aria-label": "Backtest" });
      parts.push(bt);
      view.replaceChildren.apply(view, parts);
      if (m.latestVersion !== null) {
        performance(path, perf, null);
        insights(path, ins);
      }
      backtest(path, bt);
    });
  }

  function act(method, path, body, done, headers) {
    return api(method, path, body, headers).then(function (res) {
      if (res.status >= 400) say(errorText(res), true);
      else done(res);
      return res;
    });
  }

  function actions(m, path, etag) {
    return el("div", { class: "actions", id: "model-actions" }, [
      el("button", { id: "retrain", text: "Retrain", onclick: function () {
        act("POST", path + "/train", undefined, function (res) { say("Retraining (job " + res.body.job.id + ")."); modelPage(m.name); });
      } }),
      el("button", { id: "revert", disabled: !m.canRevert, text: "Revert version", onclick: function () {
        act("POST", path + "/revert", undefined, function () { say("Reverted."); modelPage(m.name); });
      } }),
      el("button", { id: "auto-retrain", "aria-pressed": String(!!m.autoRetrain), text: m.autoRetrain ? "Turn auto-retrain off" : "Turn auto-retrain on", onclick: function () {
        act("PATCH", path, { autoRetrain: !m.autoRetrain }, function () { modelPage(m.name); }, etag ? { "If-Match": etag } : {});
      } }),
      el("button", { id: "delete", text: "Delete", onclick: function () {
        if (!window.confirm("Delete model " + m.name + "? Its scores stop being updated.")) return;
        act("DELETE", path, undefined, function () { say("Deleted " + m.name + "."); location.hash = "#/models"; });
      } })
    ]);
  }

  function versions(m, path) {
    var rows = (m.versions || []).map(function (v) {
      return el("tr", { "data-version": String(v.version) }, [
        el("td", { class: "num", text: String(v.version) }),
        el("td", { text: when(v.trainedAt) }),
        el("td", { text: v.reason || "" }),
        el("td", { class: "num", text: num(v.auc) }),
        el("td", {}, [pill(v.readiness)]),
        el("td", { text: v.published ? "Published" : v.reverted ? "Reverted" : "" }),
        el("td", {}, [
          el("button", { class: "publish", disabled: v.published || v.reverted, text: "Publish", onclick: function () {
            act("POST", path + "/publish", { version: v.version }, function () { say("Published version " + v.version + "."); modelPage(m.name); });
          } }),
          el("button", { class: "show-performance", text: "Performance", onclick: function () {
            performance(path, document.getElementById("performance"), v.version);
          } })
        ])
      ]);
    });
    return el("section", { id: "versions", "aria-label": "Versions" }, [
      el("h3", { text: "Versions" }),
      rows.length ? el("table", {}, [
        el("thead", {}, [el("tr", {}, ["Version", "Trained", "Why", "AUC", "Readiness", "", ""].map(function (t) { return el("th", { text: t }); }))]),
        el("tbody", {}, rows)
      ]) : el("p", { class: "muted", text: "No version yet." })
    ]);
  }

  function rangesEditor(m, path, etag) {
    var ranges = (m.configuration && m.configuration.gradeRanges) || {};
    var inputs = {};
    var fields = ["A", "B", "C"].map(function (g) {
      inputs[g] = el("input", { type: "number", min: "1", max: "100", id: "min-" + g, value: String((ranges[g] || {}).min), "aria-label": "Lowest score of grade " + g });
      return el("label", {}, ["Grade " + g + " from ", inputs[g], " "]);
    });
    var error = el("div", { class: "field-error", id: "err-gradeRanges", role: "alert" });
    var form = el("form", { class: "ranges", id: "ranges", "aria-label": "Grade ranges" }, [
      el("h3", { text: "Grade ranges" }),
      el("p", { class: "muted", text: "Each grade runs from its lowest score up to the next grade's; D covers the rest down to 0." }),
      el("div", {}, fields.concat([el("button", { type: "submit", id: "save-ranges", text: "Save ranges" })])), error
    ]);
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      error.textContent = "";
      var minima = ["A", "B", "C"].map(function (g) { return Number(inputs[g].value); });
      api("PATCH", path, { gradeRanges: minima }, etag ? { "If-Match": etag } : {}).then(function (res) {
        if (res.status === 200) { say("Grade ranges saved; they apply from the next scoring run."); modelPage(m.name); }
        else error.textContent = (res.body && res.body.error && (res.body.error.rule || res.body.error.message)) || errorText(res);
      });
    });
    return form;
  }

  function performance(path, box, version) {
    box.replaceChildren(el("h3", { text: "Performance" }), el("p", { class: "muted", text: "Loading…" }));
    api("GET", path + "/performance" + (version ? "?version=" + version : "")).then(function (res) {
      if (res.status !== 200) { box.replaceChildren(el("h3", { text: "Performance" }), el("p", { text: errorText(res) })); return; }
      var p = res.body, m = p.metrics || {}, cm = m.confusion_matrix || {};
      var metric = function (label, value, id) { return el("tr", {}, [el("th", { text: label }), el("td", { class: "num", id: id, text: value })]); };
      box.replaceChildren(
        el("h3", { text: "Performance of version " + p.version }),
        el("p", {}, ["Readiness: ", pill(p.readiness), " (AUC cut-offs: ready " + (p.readinessCutoffs || {}).ready + ", OK " + (p.readinessCutoffs || {}).ok + ")"]),
        el("table", { id: "metrics" }, [el("tbody", {}, [
          metric("Accuracy", pct(m.accuracy), "m-accuracy"), metric("Precision", pct(m.precision), "m-precision"),
          metric("Recall", pct(m.recall), "m-recall"), metric("F1", num(m.f1), "m-f1"), metric("AUC", num(m.auc), "m-auc"),
          metric("Brier score", num(m.brier), "m-brier"), metric("Calibration error (ECE)", num(m.ece), "m-ece"),
          metric("Threshold", String(m.threshold) + " (chosen on the " + m.threshold_chosen_on + " fold)", "m-threshold"),
          metric("Test records", String(m.test_rows), "m-test")
        ])]),
        el("h3", { text: "Confusion matrix (test records)" }),
        el("table", { id: "confusion" }, [
          el("thead", {}, [el("tr", {}, [el("th", { text: "" }), el("th", { text: "Predicted won" }), el("th", { text: "Predicted lost" })])]),
          el("tbody", {}, [
            el("tr", {}, [el("th", { text: "Won" }), el("td", { class: "num", text: String(cm.tp) }), el("td", { class: "num", text: String(cm.fn) })]),
            el("tr", {}, [el("th", { text: "Lost" }), el("td", { class: "num", text: String(cm.fp) }), el("td", { class: "num", text: String(cm.tn) })])
          ])
        ]),
        el("h3", { text: "ROC curve" }),
        m.roc ? roc(m.roc, m.threshold) : el("p", { class: "muted", text: "Not kept for this version (trained before ROC points were stored)." }),
        el("h3", { text: "Reliability (predicted against won rate)" }),
        reliability(m.calibration || [])
      );
    });
  }

  // -- backtest: the last report of POST models/{name}/backtest, one row per cut date -----------------------

  function backtest(path, box, jobId) {
    var months = el("input", { type: "number", id: "backtest-months", min: "1", max: "12", value: "12", "aria-label": "Months to replay" });
    var run = el("button", { id: "run-backtest", text: "Run backtest", onclick: function () {
      run.disabled = true;
      api("POST", path + "/backtest", { months: Number(months.value) }).then(function (res) {
        if (res.status === 202) { say("Backtest started (job " + res.body.job.id + ")."); backtest(path, box, res.body.job.id); }
        else { run.disabled = false; say(errorText(res), true); }
      });
    } });
    var head = [el("h3", { text: "Backtest" }),
      el("p", { class: "muted", text: "Replays past months: trains this configuration as on each month's first day, scores the opportunities open then and compares with how they ended." }),
      el("div", { class: "actions" }, [el("label", {}, ["Months ", months]), run])];
    var status = el("p", { id: "backtest-status", class: "muted", role: "status" });
    box.replaceChildren.apply(box, head.concat([status]));
    var poll = function (id, progress) {
      run.disabled = true;
      var done = progress ? ", " + progress.monthsDone + " of " + progress.months + " months done" : "";
      status.textContent = "Backtest running (job " + id + done + ")… this panel refreshes when it ends.";
      backtestTimer = setTimeout(function () {
        api("GET", "jobs/" + encodeURIComponent(id)).then(function (res) {
          if (!document.body.contains(box)) return;
          if (res.status === 200 && (res.body.status === "queued" || res.body.status === "running")) return poll(id, res.body.progress);
          if (res.status === 200 && res.body.status === "failed") say("Backtest failed: " + ((res.body.error || {}).message || ""), true);
          backtest(path, box);
        });
      }, 2000);
    };
    if (jobId) return poll(jobId);
    api("GET", path + "/backtest").then(function (res) {
      if (res.status === 404 && res.body && res.body.error && res.body.error.code === "BacktestNotFound") {
        status.textContent = "No backtest yet.";
        return;
      }
      if (res.status !== 200) { status.textContent = errorText(res); return; }
      var r = res.body;
      status.textContent = "Last run " + when(r.ranAt) + " over " + r.months.length + " months, in " + Math.round(r.seconds) + " s.";
      box.appendChild(backtestTable(r));
      if (r.running) poll(r.running.id);
    });
  }

  function backtestTable(r) {
    var cols = ["Month", "Open then", "Ended since", "AUC", "ECE", "Won rate", "Mean score", "Top-decile lift"];
    var rows = r.months.map(function (mo) {
      var cells = [el("td", { text: mo.cutDate.slice(0, 7) })];
      if (mo.status !== "evaluated") {
        cells.push(el("td", { class: "num", text: String(mo.openRows) }), el("td", { colspan: "6", class: "muted skipped", text: "Not trained: " + ((mo.reason || {}).message || "") }));
      } else {
        cells.push(el("td", { class: "num", text: String(mo.scoredRows) }), el("td", { class: "num", text: String(mo.closedSince) }),
          el("td", { class: "num auc", text: num(mo.auc) }), el("td", { class: "num ece", text: num(mo.ece) }),
          el("td", { class: "num won-rate", text: pct(mo.wonRate) }), el("td", { class: "num mean", text: pct(mo.meanPredicted) }),
          el("td", { class: "num lift", text: num(mo.topDecileLift, 2) }));
      }
      return el("tr", { "data-month": mo.cutDate }, cells);
    });
    var s = r.summary || {};
    var median = el("tr", { class: "median" }, [el("th", { text: "Median" }), el("td"), el("td"),
      el("td", { class: "num", text: num(s.medianAuc) }), el("td", { class: "num", text: num(s.medianEce) }),
      el("td", { class: "num", text: pct(s.medianWonRate) }), el("td", { class: "num", text: pct(s.medianMeanPredicted) }),
      el("td", { class: "num", text: num(s.medianTopDecileLift, 2) })]);
    return el("table", { id: "backtest-table" }, [
      el("thead", {}, [el("tr", {}, cols.map(function (t) { return el("th", { text: t }); }))]),
      el("tbody", {}, rows), el("tfoot", {}, [median])
    ]);
  }

  function axes(W, H, L, B, T, R, xLabel, yLabel) {
    var x = function (v) { return L + v * (W - L - R); }, y = function (v) { return T + (1 - v) * (H - T - B); };
    return { x: x, y: y, kids: [
      svg("line", { class: "axis", x1: L, y1: y(0), x2: x(1), y2: y(0) }), svg("line", { class: "axis", x1: L, y1: y(0), x2: L, y2: y(1) }),
      svg("line", { class: "ideal", x1: x(0), y1: y(0), x2: x(1), y2: y(1) }),
      svg("text", { class: "label", x: x(0.5), y: H - 4, "text-anchor": "middle", text: xLabel }),
      svg("text", { class: "label", x: 4, y: T + 8, text: yLabel })
    ] };
  }

  /** ROC from the stored points (true- against false-positive rate per score cut); the chosen threshold marked. */
  function roc(points, threshold) {
    var a = axes(300, 220, 30, 24, 8, 8, "false positive rate", "true positive rate");
    var kids = [svg("title", { text: "ROC curve, " + points.length + " score cuts" })].concat(a.kids);
    kids.push(svg("polyline", { points: points.map(function (p) { return a.x(p.fpr) + "," + a.y(p.tpr); }).join(" ") }));
    var near = points.reduce(function (best, p) { return Math.abs(p.threshold - threshold) < Math.abs(best.threshold - threshold) ? p : best; }, points[0]);
    kids.push(svg("circle", { cx: a.x(near.fpr), cy: a.y(near.tpr), r: 4, fill: "#c50f1f", "data-threshold": near.threshold },
      [svg("title", { text: "score cut " + near.threshold + ": " + pct(near.tpr) + " of won, " + pct(near.fpr) + " of lost above it" })]));
    return svg("svg", { class: "chart", id: "roc", viewBox: "0 0 300 220", role: "img", "aria-label": "ROC curve" }, kids);
  }

  function reliability(bins) {
    var a = axes(300, 220, 30, 24, 8, 8, "predicted", "won"), x = a.x, y = a.y;
    var used = bins.filter(function (b) { return b.count > 0; });
    var kids = [svg("title", { text: "Reliability chart: " + used.length + " score bands" })].concat(a.kids);
    kids.push(svg("polyline", { points: used.map(function (b) { return x(b.mean_predicted) + "," + y(b.won_rate); }).join(" ") }));
    used.forEach(function (b) {
      kids.push(svg("circle", { cx: x(b.mean_predicted), cy: y(b.won_rate), r: 3, fill: "#0f6cbd", "data-count": b.count },
        [svg("title", { text: pct(b.mean_predicted) + " predicted, " + pct(b.won_rate) + " won (" + b.count + " records)" })]));
    });
    return svg("svg", { class: "chart", id: "reliability", viewBox: "0 0 300 220", role: "img", "aria-label": "Reliability chart" }, kids);
  }

  function insights(path, box) {
    box.replaceChildren(el("h3", { text: "Attribute insights" }), el("p", { class: "muted", text: "Loading…" }));
    api("GET", path + "/insights").then(function (res) {
      if (res.status !== 200) { box.replaceChildren(el("h3", { text: "Attribute insights" }), el("p", { text: errorText(res) })); return; }
      var d = res.body, ins = d.insights || {};
      var top = (d.topAttributes || []).map(function (t) { return el("li", { text: t.sentence }); });
      var influence = (ins.influence || []).slice(0, 15).map(function (a) {
        var bar = el("span", { class: "bar" });
        bar.style.width = Math.round(120 * (a.share || 0)) + "px";
        return el("tr", {}, [el("td", { text: a.label }), el("td", {}, [bar]), el("td", { text: a.level })]);
      });
      var stages = Object.keys(ins.per_stage || {}).map(function (stage) {
        var list = ins.per_stage[stage] || [];
        return el("li", { text: stage + ": " + (Array.isArray(list) ? list.slice(0, 5).map(function (a) { return a.label + " (" + a.level + ")"; }).join(", ") : "") });
      });
      var excluded = Object.keys(d.leakage || {}).filter(function (k) { return d.leakage[k].excluded; }).map(function (k) {
        var a = d.leakage[k];
        return el("li", { text: a.label + ": " + (a.reasons || []).join("; ") });
      });
      var rates = el("div", { id: "value-rates" });
      var select = el("select", { id: "rate-attribute", "aria-label": "Attribute" }, Object.keys(ins.value_rates || {}).map(function (k) {
        return el("option", { value: k, text: ins.value_rates[k].label });
      }));
      select.addEventListener("change", function () { valueRates(rates, ins.value_rates[select.value]); });
      box.replaceChildren.apply(box, [
        el("h3", { text: "What impacts scores" }), el("ul", { id: "top-attributes" }, top),
        el("h3", { text: "Influence" }), el("table", { id: "influence" }, [el("tbody", {}, influence)]),
        stages.length ? el("h3", { text: "Influence per stage" }) : null, stages.length ? el("ul", {}, stages) : null,
        el("h3", { text: "Win rate per value" }), select, rates,
        el("h3", { text: "Excluded attributes" }),
        excluded.length ? el("ul", { id: "excluded" }, excluded) : el("p", { class: "muted", text: "None." })
      ].filter(Boolean));
      if (select.value) valueRates(rates, ins.value_rates[select.value]);
    });
  }

  function valueRates(box, attr) {
    if (!attr) return box.replaceChildren();
    var rows = Object.keys(attr.values || {}).map(function (v) {
      var r = attr.values[v];
      var bar = el("span", { class: "bar" });
      bar.style.width = Math.round(160 * r.rate) + "px";
      var average = el("span", { class: "average", title: "Average " + pct(attr.global_rate) });
      average.style.left = Math.round(160 * attr.global_rate) + "px";
      var rel = r.rate >= attr.global_rate ? "above" : "below";
      return el("tr", {}, [el("td", { text: v === "__missing__" ? "(empty)" : v }), el("td", {}, [el("span", { class: "track" }, [bar, average])]), el("td", { class: "num", text: pct(r.rate) }),
        el("td", { class: "muted", text: rel + " the average" })]);
    });
    box.replaceChildren(el("p", { class: "muted", text: "Average win rate: " + pct(attr.global_rate) + " (the dark line)" }), el("table", {}, [el("tbody", {}, rows)]));
  }

  // -- activity --------------------------------------------------------------------------------------

  function activityPage() {
    view.replaceChildren(el("h2", { text: "Activity" }), el("p", { class: "muted", text: "Loading…" }));
    api("GET", "activity").then(function (res) {
      if (res.status !== 200) { view.replaceChildren(el("h2", { text: "Activity" }), el("div", { class: "panel bad", text: errorText(res) })); return; }
      var a = res.body, u = a.usage, limit = u.limit;
      var most = Math.max.apply(null, u.months.map(function (m) { return m.used; }).concat([limit || 1]));
      var months = u.months.map(function (m) {
        var bar = el("span", { class: "bar" });
        bar.style.width = Math.round(200 * m.used / most) + "px";
        return el("tr", { "data-month": m.month }, [el("td", { text: m.month }), el("td", {}, [bar]), el("td", { class: "num used", text: String(m.used) })]);
      });
      var sync = a.lastSync;
      var tables = sync ? Object.keys(sync.tables || {}).map(function (t) {
        var s = sync.tables[t];
        return el("tr", {}, [el("td", { text: t }), el("td", { text: s.mode }), el("td", { class: "num", text: String(s["new"]) }),
          el("td", { class: "num", text: String(s.changed) }), el("td", { class: "num", text: String(s.deleted) })]);
      }) : [];
      var runs = a.scoringRuns.map(function (r) {
        return el("tr", { "data-run": r.runId }, [el("td", { text: when(r.createdAt) }), el("td", { class: "run-status", text: r.status }),
          el("td", { text: (r.models || []).map(function (m) { return m.name ? m.name + "@" + m.version : String(m); }).join(", ") }),
          el("td", { class: "num", text: String(r.eligible) }), el("td", { class: "num scored", text: String(r.scored) }),
          el("td", { class: "num", text: String(r.written) }), el("td", { class: "num", text: String(r.writeRequests) }),
          el("td", { text: r.durationSeconds === null ? "–" : Math.round(r.durationSeconds) + " s" }),
          el("td", { text: r.message || (r.failures || []).map(function (f) { return "batch " + f.batch + ": " + f.reason; }).join("; ") })]);
      });
      var head = function (cols) { return el("thead", {}, [el("tr", {}, cols.map(function (t) { return el("th", { text: t }); }))]); };
      view.replaceChildren(
        el("h2", { text: "Activity" }),
        el("h3", { text: "Scoring usage" }),
        el("p", { id: "usage-now", text: u.counted ? u.thisMonth.used + " records scored in " + u.thisMonth.month + " of a monthly limit of " + limit
          : "No monthly limit is in force, so scored records are not counted (set LICENSE_TIER=enterprise or MONTHLY_SCORING_QUOTA)." }),
        el("table", { id: "usage" }, [el("tbody", {}, months)]),
        el("h3", { text: "Last sync" }),
        sync ? el("div", { id: "last-sync" }, [
          el("p", { text: (sync.mode || "") + " sync " + (sync.runId || "") + ", finished " + when(sync.finishedAt) + (sync.skipped ? " (skipped: " + sync.reason + ")" : "") }),
          el("table", {}, [head(["Table", "Mode", "New", "Changed", "Deleted"]), el("tbody", {}, tables)])
        ]) : el("p", { id: "last-sync", class: "muted", text: "No sync yet." }),
        el("h3", { text: "Scoring runs" }),
        runs.length ? el("table", { id: "runs" }, [head(["Started", "Status", "Models", "Eligible", "Scored", "Written", "Write requests", "Took", "Notes"]), el("tbody", {}, runs)])
          : el("p", { class: "muted", text: "No scoring run yet." })
      );
    });
  }

  // -- router ------------------------------------------------------------------------------------------

  function route() {
    clearTimeout(refresh);
    clearTimeout(backtestTimer);
    var hash = location.hash || "#/models";
    var m = /^#\/model\/(.+)$/.exec(hash);
    document.querySelectorAll("nav a").forEach(function (a) { a.removeAttribute("aria-current"); });
    if (m) return modelPage(decodeURIComponent(m[1]));
    var page = { "#/add": "add", "#/activity": "activity" }[hash] || "models";
    document.getElementById("nav-" + page).setAttribute("aria-current", "page");
    ({ add: addPage, activity: activityPage, models: modelsPage })[page]();
  }

  document.getElementById("function-key").addEventListener("input", function (e) { key = e.target.value.trim(); });
  window.addEventListener("hashchange", route);
  route();
})();
