"""The report page's inline stylesheet and script (no CDN, no network: the page is one file).

The script renders the Figure 1 browser from the JSON embedded in the page, 50 entries a page
by default, filtered by a task-id search box.  All trajectory text reaches the page through
``textContent`` (never ``innerHTML``), so product text cannot inject markup.
"""

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;
 padding:0 1.2em 3em;color:#222;line-height:1.4}
h1{margin-top:.8em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
img.plot{max-width:100%;display:block;margin:.5em 0}
pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.8em;max-height:30em}
.warn{background:#fff4e5;border:1px solid #f0c36d;padding:.5em 1em}
.muted{color:#777}.small{font-size:.85em}
nav.toc a{margin-right:1em}
.legend span{display:inline-block;margin-right:.8em}
.chip{display:inline-block;border-radius:3px;padding:0 .35em;margin:.1em;font-size:.8em;
 max-width:16em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;vertical-align:middle;
 cursor:default}
.st{font-weight:bold;border:2px solid transparent;cursor:pointer;color:#fff}
.st.solved{background:#2ca02c}.st.unsolved{background:#d62728}.st.diverged{background:#999}
.st.important{border-color:#000}
.act.beneficial{background:#c7ecc7}.act.harmful{background:#f7c4c4;text-decoration:line-through}
.act.neutral{background:#f3efc6}.act.unused{background:#eee;color:#888}
.entry{border:1px solid #ddd;border-radius:4px;padding:.5em .8em;margin:.6em 0}
.entry .head{font-weight:bold}.entry .ins{font-size:.85em;color:#444;margin:.2em 0}
details{margin:.25em 0 .25em 1em}summary{cursor:pointer;font-size:.9em}
ol.steps{font-size:.8em;margin:.2em 0}ol.steps li{margin:.15em 0}
ol.steps .a{font-family:monospace;font-weight:bold}ol.steps .o{color:#555;white-space:pre-wrap}
.ok{color:#2ca02c;font-weight:bold}.fail{color:#d62728;font-weight:bold}
.used{background:#ffe9a8;padding:0 .3em;border-radius:3px;font-size:.8em}
#fig1-controls input{font-size:1em;padding:.2em .4em;width:22em}
#fig1-controls button{margin:0 .2em}
"""

JS = r"""
(function () {
  "use strict";
  var dataEl = document.getElementById("fig1-data");
  if (!dataEl) { return; }
  var entries = JSON.parse(dataEl.textContent);
  var pageSize = parseInt(dataEl.getAttribute("data-page-size"), 10) || 50;
  var search = document.getElementById("fig1-search");
  var group = document.getElementById("fig1-group");
  var list = document.getElementById("fig1-list");
  var count = document.getElementById("fig1-count");
  var pageLabel = document.getElementById("fig1-page");
  var prev = document.getElementById("fig1-prev");
  var next = document.getElementById("fig1-next");
  var page = 0;
  var shown = entries;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function outcome(ok, reward) {
    return el("span", ok ? "ok" : "fail", (ok ? "success" : "failure") +
              (reward === null || reward === undefined ? "" : " (reward " + reward + ")"));
  }
  function stepList(steps, withLabels) {
    var ol = el("ol", "steps");
    steps.forEach(function (s) {
      var li = el("li");
      var a = el("span", "a" + (withLabels && s.l ? " act " + s.l : ""), s.a);
      li.appendChild(a);
      if (withLabels && s.l) { li.appendChild(el("span", "muted", "  [" + s.l + "]")); }
      if (s.v === false) { li.appendChild(el("span", "fail", "  invalid")); }
      if (s.th) { li.appendChild(el("div", "muted", s.th)); }
      if (s.o) { li.appendChild(el("div", "o", s.o)); }
      ol.appendChild(li);
    });
    return ol;
  }
  function stateDetails(e, idx, st) {
    var d = el("details");
    d.id = "e" + idx + "-s" + st.k;
    var wins = st.sims.filter(function (x) { return x.success; }).length;
    var sum = el("summary", null, "s" + st.k + ": " + st.status + " — " + wins + "/" +
                 (st.sims.length + st.more_sims) + " continuation(s) succeeded" +
                 (st.important ? (st.recovery ? " — recovery state" : " — important state") : ""));
    d.appendChild(sum);
    if (!st.sims.length) { d.appendChild(el("div", "muted small", "no continuation recorded")); }
    st.sims.forEach(function (sim) {
      var sd = el("details");
      var s = el("summary");
      s.appendChild(document.createTextNode("sample " + sim.sample + ": "));
      s.appendChild(outcome(sim.success, sim.reward));
      s.appendChild(document.createTextNode(", " + sim.steps.length + " agent step(s)" +
                    (sim.match && sim.match !== "exact" && sim.match !== "unchecked" ?
                     ", replay " + sim.match : "")));
      if (sim.used) { s.appendChild(document.createTextNode(" ")); s.appendChild(el("span", "used", "training sample")); }
      sd.appendChild(s);
      sd.appendChild(stepList(sim.steps, false));
      d.appendChild(sd);
    });
    if (st.more_sims) { d.appendChild(el("div", "muted small", st.more_sims + " more not shown")); }
    return d;
  }
  function render(e, idx) {
    var box = el("div", "entry fig1-entry");
    box.setAttribute("data-task", e.task);
    var head = el("div", "head");
    head.appendChild(document.createTextNode(e.task + "  "));
    head.appendChild(el("span", "muted small", e.run + " · " + e.method + " iteration " + e.it + " · expert " +
                        (e.expert.name ? e.expert.name + " " : "")));
    head.appendChild(outcome(e.expert.success, e.expert.reward));
    head.appendChild(el("span", "muted small", " · " + e.samples + " training sample(s)"));
    box.appendChild(head);
    if (e.instruction) { box.appendChild(el("div", "ins", e.instruction)); }
    e.missing.forEach(function (m) { box.appendChild(el("div", "warn small", m)); });
    var strip = el("div", "strip");
    var byK = {};
    e.states.forEach(function (st) { byK[st.k] = st; });
    var n = e.expert.steps.length;
    for (var t = 0; t <= n; t++) {
      var st = byK[t];
      if (st) {
        var chip = el("a", "chip st " + st.status + (st.important ? " important" : ""),
                      "s" + t + (st.recovery ? " ★" : ""));
        chip.href = "#e" + idx + "-s" + t;
        chip.title = "state s" + t + ": " + st.status + (st.important ?
                     (st.recovery ? " (recovery state)" : " (important state)") : "");
        chip.addEventListener("click", (function (id) {
          return function (ev) {
            ev.preventDefault();
            var d = document.getElementById(id);
            if (d) { d.open = true; d.scrollIntoView({block: "nearest"}); }
          };
        })("e" + idx + "-s" + t));
        strip.appendChild(chip);
      }
      if (t < n) {
        var s = e.expert.steps[t];
        var c = el("span", "chip act " + s.l, s.a);
        c.title = "a" + t + " [" + s.l + "]: " + s.a;
        strip.appendChild(c);
      }
    }
    box.appendChild(strip);
    e.states.forEach(function (st) { box.appendChild(stateDetails(e, idx, st)); });
    var ed = el("details");
    ed.appendChild(el("summary", null, "expert trajectory (" + n + " step(s))"));
    ed.appendChild(stepList(e.expert.steps, true));
    box.appendChild(ed);
    return box;
  }
  function apply() {
    var q = search.value.trim().toLowerCase();
    var g = group ? group.value : "";
    shown = [];
    entries.forEach(function (e, i) {
      if (q && e.task.toLowerCase().indexOf(q) < 0) { return; }
      if (g && (e.run + "|" + e.method + "|" + e.it) !== g) { return; }
      shown.push(i);
    });
    var pages = Math.max(1, Math.ceil(shown.length / pageSize));
    if (page >= pages) { page = pages - 1; }
    while (list.firstChild) { list.removeChild(list.firstChild); }
    shown.slice(page * pageSize, (page + 1) * pageSize).forEach(function (i) {
      list.appendChild(render(entries[i], i));
    });
    count.textContent = shown.length + " of " + entries.length + " expert trajectories";
    pageLabel.textContent = "page " + (page + 1) + " of " + pages;
    prev.disabled = page <= 0;
    next.disabled = page >= pages - 1;
  }
  search.addEventListener("input", function () { page = 0; apply(); });
  if (group) { group.addEventListener("change", function () { page = 0; apply(); }); }
  prev.addEventListener("click", function () { if (page > 0) { page--; apply(); } });
  next.addEventListener("click", function () { page++; apply(); });
  apply();
})();
"""
