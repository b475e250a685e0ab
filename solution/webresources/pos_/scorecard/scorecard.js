/* The seller's score card (plain JavaScript, no build step).

   The form library (form.js) calls window.setClientApiContext(xrm, formContext) on load and on tab changes.
   The card reads the opportunity's msdyn_predictivescores row by its alternate key through xrm.WebApi and
   draws: score, grade, trend, scored on; the top 5 raising and lowering reasons (insight on hover and focus);
   Details (every reason, score-over-time chart from the reasons JSON's history); About (grade ranges, what
   impacts scores, from about.js beside this file: window.POS_ABOUT). Texts come from strings.js (window.POS_STRINGS).
   Holds no secret: every read goes through the signed-in user's Xrm.WebApi. */
(function () {
  "use strict";

  var S = window.POS_STRINGS;
  var ENTITY = "msdyn_predictivescore";
  var SELECT = "?$select=msdyn_score,msdyn_grade,msdyn_scoretrend,msdyn_scoredon,msdyn_scorereasons";
  var GRADES = ["A", "B", "C", "D"];
  var TREND_ARROWS = ["↑", "→", "↓", "–"];
  var GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
  var NOT_FOUND = [0x80040217, -2147220969, 0x8006088a, -2147088246];
  var DEFAULT_RANGES = { A: { min: 75, max: 100 }, B: { min: 50, max: 74 }, C: { min: 25, max: 49 }, D: { min: 0, max: 24 } };
  var TOP = 5;

  var current = { xrm: null, id: null, promise: null, view: "summary", about: window.POS_ABOUT || {} };

  function fmt(template, values) {
    return String(template).replace(/\{(\w+)\}/g, function (all, key) {
      return values && values[key] !== undefined && values[key] !== null ? String(values[key]) : all;
    });
  }

  /** Record ids arrive as "{6F9619FF-8B86-D011-B42D-00C04FC964FF}" on forms; the key wants the bare
      lower-case GUID. Returns "" when the value is not a GUID (an unsaved record has no id). */
  function normaliseId(id) {
    var bare = String(id === undefined || id === null ? "" : id).trim().replace(/^\{|\}$/g, "").toLowerCase();
    return GUID.test(bare) ? bare : "";
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function svg(tag, attrs, children) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { node.appendChild(c); });
    return node;
  }

  function formatDate(iso) {
    if (!iso) return "";
    var d = new Date(String(iso).slice(0, 10) + "T00:00:00Z");
    if (isNaN(d.getTime())) return String(iso);
    return new Intl.DateTimeFormat(S.locale, { day: "numeric", month: "short", year: "numeric", timeZone: "UTC" }).format(d);
  }

  // whole points, halves away from zero (Math.round alone takes -12.5 to -12 but 12.5 to 13)
  function wholePoints(points) {
    return (points < 0 ? -1 : 1) * Math.round(Math.abs(points));
  }

  function pointsText(points) {
    return fmt(points >= 0 ? S.pointsUp : S.pointsDown, { points: Math.abs(wholePoints(points)) });
  }

  function card() { return document.getElementById("card"); }

  function showState(kind, message) {
    var root = card();
    root.setAttribute("aria-busy", "false");
    root.setAttribute("data-state", kind);
    var titles = { notScored: S.notScoredTitle, notSaved: S.notSavedTitle, notEnough: S.notEnoughTitle, error: S.errorTitle };
    var body = [el("p", { class: "state-title", text: titles[kind] || "" }), el("p", { class: "state", text: message })];
    if (kind === "error") {
      var retry = el("button", { class: "retry", type: "button", text: S.retry });
      retry.addEventListener("click", function () { current.promise = null; load(); });
      body.push(retry);
    }
    root.replaceChildren(el("section", { class: "state-box", role: kind === "error" ? "alert" : "status" }, body));
  }

  function isNotFound(error) {
    if (!error) return false;
    return error.status === 404 || NOT_FOUND.indexOf(error.errorCode) >= 0;
  }

  function parseReasons(text) {
    if (typeof text !== "string" || !text) return null;
    try {
      var value = JSON.parse(text);
      return value && typeof value === "object" && Array.isArray(value.positive) ? value : null;
    } catch (e) {
      return null;
    }
  }

  function gradeRanges(model) {
    var about = current.about || {};
    var own = about.models && model && about.models[model] && about.models[model].gradeRanges;
    return { ranges: own || about.gradeRanges || DEFAULT_RANGES, own: !!own };
  }

  // -- views -------------------------------------------------------------------------------------------

  var tooltipSeq = 0;

  function reasonItem(reason) {
    var tipId = "tip-" + (++tooltipSeq);
    var points = Number(reason.points) || 0;
    var button = el("button", {
      type: "button",
      class: "reason",
      "aria-describedby": tipId,
      "data-attribute": reason.attribute || ""
    }, [
      el("span", { class: "headline", text: reason.headline || fmt(S.reasonValue, reason) }),
      el("span", { class: "points " + (points >= 0 ? "up" : "down"), "aria-label": fmt(S.pointsLabel, { points: wholePoints(points) }), text: pointsText(points) })
    ]);
    var tip = el("div", { class: "tooltip", role: "tooltip", id: tipId, text: reason.insight || "", hidden: "" });
    function show() { if (reason.insight) tip.hidden = false; }
    function hide() { tip.hidden = true; }
    button.addEventListener("mouseenter", show);
    button.addEventListener("mouseleave", hide);
    button.addEventListener("focus", show);
    button.addEventListener("blur", hide);
    button.addEventListener("keydown", function (e) { if (e.key === "Escape") hide(); });
    return el("li", {}, [button, tip]);
  }

  function reasonList(title, reasons, emptyText, cls) {
    var items = reasons.slice(0, TOP).map(reasonItem);
    return el("section", { class: cls, "aria-label": title }, [
      el("h2", { text: title }),
      items.length ? el("ul", { class: "reasons" }, items) : el("p", { class: "empty", text: emptyText })
    ]);
  }

  function summaryView(row) {
    if (!row.reasons) return el("div", {}, [el("p", { class: "note", "data-state": "notEnough", text: S.notEnough })]);
    return el("div", {}, [
      reasonList(S.raising, row.reasons.positive || [], S.noRaising, "raising"),
      reasonList(S.lowering, row.reasons.negative || [], S.noLowering, "lowering")
    ]);
  }

  function detailsView(row) {
    var history = row.reasons && Array.isArray(row.reasons.history) ? row.reasons.history : [];
    var parts = [el("h2", { text: S.chartTitle }), chart(history)];
    if (!row.reasons) {
      parts.push(el("p", { class: "note", text: S.notEnough }));
      return el("div", {}, parts);
    }
    var all = (row.reasons.positive || []).concat(row.reasons.negative || []);
    var body = all.map(function (r) {
      var points = Number(r.points) || 0;
      return el("tr", {}, [
        el("td", {}, [el("div", { text: r.headline || "" }), el("div", { class: "note", text: r.insight || "" })]),
        el("td", { text: fmt(S.reasonValue, { label: r.label, value: r.value }) }),
        el("td", { class: "num points " + (points >= 0 ? "up" : "down"), text: pointsText(points) })
      ]);
    });
    parts.push(el("h2", { text: S.allReasons }));
    if (typeof row.reasons.baseline === "number") {
      parts.push(el("p", { class: "note", text: fmt(S.baseline, {
        baseline: Math.round(row.reasons.baseline),
        delta: Math.round(row.score - row.reasons.baseline)
      }) }));
    }
    parts.push(el("table", { class: "all" }, [el("tbody", {}, body)]));
    return el("div", {}, parts);
  }

  /** Inline SVG: one circle per written score (x by date order, y by score 0-100), joined by a line,
      grade-coloured, each with a <title>; a visually hidden table repeats the points for screen readers. */
  function chart(history) {
    var points = history.filter(function (p) { return p && typeof p.score === "number"; });
    if (points.length < 2) return el("p", { class: "note", "data-chart": "empty", text: S.chartTooFew });
    var W = 320, H = 140, L = 28, R = 8, T = 8, B = 22;
    var x = function (i) { return L + (points.length === 1 ? 0 : i * (W - L - R) / (points.length - 1)); };
    var y = function (s) { return T + (100 - s) * (H - T - B) / 100; };
    var first = points[0], last = points[points.length - 1];
    var label = fmt(S.chartLabel, {
      count: points.length, first: first.score, firstDate: formatDate(first.date), last: last.score, lastDate: formatDate(last.date)
    });
    var children = [svg("title", { text: label })];
    [0, 25, 50, 75, 100].forEach(function (s) {
      children.push(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(s), y2: y(s) }));
      children.push(svg("text", { class: "label", x: L - 4, y: y(s) + 3, "text-anchor": "end", text: String(s) }));
    });
    children.push(svg("text", { class: "label", x: L, y: H - 6, text: formatDate(first.date) }));
    children.push(svg("text", { class: "label", x: W - R, y: H - 6, "text-anchor": "end", text: formatDate(last.date) }));
    children.push(svg("polyline", { points: points.map(function (p, i) { return x(i) + "," + y(p.score); }).join(" ") }));
    points.forEach(function (p, i) {
      var grade = GRADES.indexOf(p.grade) >= 0 ? p.grade : "";
      children.push(svg("circle", {
        cx: x(i), cy: y(p.score), r: 4, fill: "var(--grade-" + (grade || "b").toLowerCase() + ")",
        "data-score": p.score, "data-date": p.date || "", "data-grade": grade
      }, [svg("title", { text: fmt(S.chartPoint, { date: formatDate(p.date), score: p.score, grade: grade }) })]));
    });
    var rows = points.map(function (p) {
      return el("tr", {}, [el("td", { text: formatDate(p.date) }), el("td", { text: String(p.score) }), el("td", { text: p.grade || "" })]);
    });
    var table = el("table", { class: "visually-hidden" }, [
      el("caption", { text: S.chartTitle }),
      el("thead", {}, [el("tr", {}, [el("th", { text: S.chartDate }), el("th", { text: S.chartScore }), el("th", { text: S.chartGrade })])]),
      el("tbody", {}, rows)
    ]);
    var figure = svg("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": label }, children);
    var wrap = el("figure", { class: "chart-wrap", style: "margin:0" });
    wrap.appendChild(figure);
    wrap.appendChild(table);
    return wrap;
  }

  function aboutView(row) {
    var model = row.reasons && row.reasons.model;
    var found = gradeRanges(model);
    var grades = el("table", { class: "grades" }, [el("tbody", {}, GRADES.map(function (g, i) {
      var r = found.ranges[g] || DEFAULT_RANGES[g];
      return el("tr", {}, [
        el("th", { scope: "row" }, [el("span", { class: "grade grade-" + g, "aria-label": fmt(S.gradeLabel, { grade: g }), text: g })]),
        el("td", { class: "range", "data-grade": g, text: fmt(S.gradeRange, r) }),
        el("td", { text: S["gradeMeaning" + i] })
      ]);
    }))]);
    var parts = [el("p", { text: S.aboutScore }), el("h2", { text: S.aboutGrades }), grades];
    if (!found.own) parts.push(el("p", { class: "note", text: S.aboutRangesDefault }));
    parts.push(el("h2", { text: S.aboutImpacts }));
    var about = current.about || {};
    var top = (about.models && model && about.models[model] && about.models[model].topAttributes) || [];
    if (top.length) {
      parts.push(el("ul", { class: "impacts" }, top.map(function (t) { return el("li", { text: t.sentence || t.label }); })));
    }
    parts.push(el("p", { class: "note", text: S.aboutImpactsGeneric }));
    if (model) parts.push(el("p", { class: "note", text: fmt(S.model, { model: model + "@" + row.reasons.version }) }));
    return el("div", {}, parts);
  }

  var VIEWS = [["summary", "tabSummary", summaryView], ["details", "tabDetails", detailsView], ["about", "tabAbout", aboutView]];

  function render(row) {
    var root = card();
    root.setAttribute("aria-busy", "false");
    root.setAttribute("data-state", row.reasons ? "scored" : "notEnough");
    var grade = GRADES[row.grade] || "";
    var trend = row.trend >= 0 && row.trend <= 3 ? row.trend : 3;
    var trendText = S["trend" + trend];
    var head = el("header", { class: "head" }, [
      el("span", { class: "score", id: "score", "aria-label": fmt(S.scoreLabel, { score: row.score }), text: String(row.score) }),
      grade ? el("span", { class: "grade grade-" + grade, id: "grade", "aria-label": fmt(S.gradeLabel, { grade: grade }), text: grade }) : null,
      el("span", { class: "trend trend-" + trend, id: "trend", "data-trend": String(trend), "aria-label": fmt(S.trendLabel, { trend: trendText }) }, [
        el("span", { "aria-hidden": "true", text: TREND_ARROWS[trend] + " " }),
        el("span", { text: trendText })
      ]),
      el("span", { class: "meta", id: "scoredon", text: fmt(S.scoredOn, { date: formatDate(row.scoredOn) }) })
    ]);
    var tabs = el("div", { role: "tablist", "aria-label": S.tabsLabel });
    var panels = [];
    VIEWS.forEach(function (v) {
      var selected = current.view === v[0];
      var tab = el("button", {
        role: "tab", type: "button", id: "tab-" + v[0], "aria-controls": "panel-" + v[0],
        "aria-selected": String(selected), tabindex: selected ? "0" : "-1", text: S[v[1]]
      });
      tab.addEventListener("click", function () { select(v[0]); });
      tab.addEventListener("keydown", onTabKey);
      tabs.appendChild(tab);
      var panel = el("section", { role: "tabpanel", id: "panel-" + v[0], "aria-labelledby": "tab-" + v[0], tabindex: "0" }, [v[2](row)]);
      if (!selected) panel.hidden = true;
      panels.push(panel);
    });
    root.replaceChildren.apply(root, [el("h1", { class: "visually-hidden", text: S.title }), head, tabs].concat(panels));
  }

  function select(view, focus) {
    current.view = view;
    VIEWS.forEach(function (v) {
      var tab = document.getElementById("tab-" + v[0]);
      var panel = document.getElementById("panel-" + v[0]);
      if (!tab || !panel) return;
      var on = v[0] === view;
      tab.setAttribute("aria-selected", String(on));
      tab.setAttribute("tabindex", on ? "0" : "-1");
      panel.hidden = !on;
      if (on && focus) tab.focus();
    });
  }

  function onTabKey(e) {
    var names = VIEWS.map(function (v) { return v[0]; });
    var i = names.indexOf(current.view);
    var next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: names.length - 1 }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    select(names[(next + names.length) % names.length], true);
  }

  // -- data --------------------------------------------------------------------------------------------

  function load() {
    if (!current.id) {
      showState("notSaved", S.notSaved);
      return Promise.resolve("notSaved");
    }
    var id = current.id;
    var key = "msdyn_entityid='" + id + "',msdyn_entitytype='opportunity'";
    card().setAttribute("aria-busy", "true");
    current.promise = Promise.resolve(current.xrm.WebApi.retrieveRecord(ENTITY, key, SELECT)).then(
      function (result) {
        if (id !== current.id) return "stale";
        var raw = result || {};
        if (typeof raw.msdyn_score !== "number") {
          showState("notEnough", S.notEnough);
          return "notEnough";
        }
        render({
          score: raw.msdyn_score,
          grade: raw.msdyn_grade,
          trend: raw.msdyn_scoretrend,
          scoredOn: raw.msdyn_scoredon,
          reasons: parseReasons(raw.msdyn_scorereasons)
        });
        return "scored";
      },
      function (error) {
        if (id !== current.id) return "stale";
        current.promise = null; // a failed read is tried again on the next call
        if (isNotFound(error)) {
          showState("notScored", S.notScored);
          return "notScored";
        }
        showState("error", fmt(S.errorDetail, { message: (error && error.message) || String(error) }));
        return "error";
      }
    );
    return current.promise;
  }

  /** Called by the form (form.js) with the client API; again on tab changes. Idempotent: the same record
      with the same client API is read once and drawn once; another record is read afresh. */
  window.setClientApiContext = function (xrm, formContext) {
    var id = normaliseId(formContext && formContext.data && formContext.data.entity && formContext.data.entity.getId());
    if (current.xrm === xrm && current.id === id && current.promise) return current.promise;
    current.xrm = xrm;
    current.id = id;
    current.promise = null;
    return load();
  };

  window.PosScoreCardPage = { normaliseId: normaliseId };

  document.addEventListener("DOMContentLoaded", function () {
    if (!current.xrm) {
      var s = document.getElementById("state");
      if (s) s.textContent = S.loading;
    }
  });
})();
