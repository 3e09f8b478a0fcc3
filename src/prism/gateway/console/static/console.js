// The Prism console's one script: confirmations, live overview charts, live request events.
"use strict";

document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

var SVG = "http://www.w3.org/2000/svg";
var METRICS = [
  { index: 1, label: "requests/s", format: function (v) { return v.toFixed(2); } },
  { index: 2, label: "error rate", format: function (v) { return (v * 100).toFixed(1) + "%"; } },
  { index: 3, label: "p50", format: function (v) { return (v * 1000).toFixed(1) + " ms"; } },
  { index: 4, label: "p99", format: function (v) { return (v * 1000).toFixed(1) + " ms"; } },
];

function plot(container, points, metric, windowSeconds) {
  var width = 300, height = 90;
  var now = Date.now() / 1000;
  var values = points.map(function (p) { return p[metric.index]; }).filter(function (v) { return v !== null; });
  var top = Math.max.apply(null, values.concat([metric.index === 2 ? 0.01 : 1e-9]));
  var path = "";
  points.forEach(function (p) {
    var v = p[metric.index];
    if (v === null) { return; }
    var x = width - ((now - p[0]) / windowSeconds) * width;
    var y = height - 4 - (v / top) * (height - 8);
    path += (path ? " L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
  });
  var box = document.createElement("div");
  box.className = "plot";
  var label = document.createElement("div");
  label.className = "label";
  var last = values.length ? metric.format(values[values.length - 1]) : "no traffic";
  label.innerHTML = "";
  label.appendChild(document.createTextNode(metric.label + " "));
  var strong = document.createElement("span");
  strong.className = "now";
  strong.textContent = last;
  label.appendChild(strong);
  var svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", metric.label + ": " + last);
  var base = document.createElementNS(SVG, "line");
  base.setAttribute("x1", "0"); base.setAttribute("x2", String(width));
  base.setAttribute("y1", String(height - 4)); base.setAttribute("y2", String(height - 4));
  base.setAttribute("stroke", "#d0d7de");
  svg.appendChild(base);
  var line = document.createElementNS(SVG, "path");
  line.setAttribute("d", path || "M0 0");
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", metric.index === 2 ? "#b42318" : "#0a5bd3");
  line.setAttribute("stroke-width", "2");
  line.setAttribute("vector-effect", "non-scaling-stroke");
  svg.appendChild(line);
  box.appendChild(label);
  box.appendChild(svg);
  container.appendChild(box);
}

function draw(root, snapshot) {
  var windowSeconds = snapshot.window;
  root.querySelectorAll("figure.chart").forEach(function (figure) {
    var points = snapshot.namespaces[figure.getAttribute("data-ns")] || [];
    var plots = figure.querySelector(".plots");
    plots.textContent = "";
    METRICS.forEach(function (metric) { plot(plots, points, metric, windowSeconds); });
  });
  Object.keys(snapshot.streaming || {}).forEach(function (name) {
    var cell = document.querySelector('[data-count="' + name + '"]');
    if (cell) { cell.textContent = String(snapshot.streaming[name]); }
  });
  root.setAttribute("data-updated", String(Date.now()));
}

function overview() {
  var root = document.querySelector(".charts[data-stream]");
  if (!root) { return; }
  draw(root, JSON.parse(root.getAttribute("data-initial")));
  var source = new EventSource(root.getAttribute("data-stream"));
  source.addEventListener("sample", function (event) { draw(root, JSON.parse(event.data)); });
}

function requestEvents() {
  var list = document.querySelector("ol.events[data-events]");
  if (!list) { return; }
  var source = new EventSource(list.getAttribute("data-events"));
  source.onmessage = null;
  var add = function (event) {
    var item = document.createElement("li");
    var text = event.data;
    try {
      var body = JSON.parse(event.data);
      var rest = {};
      Object.keys(body).forEach(function (k) {
        if (["type", "request_id", "seq", "timestamp", "percentage", "message"].indexOf(k) < 0) { rest[k] = body[k]; }
      });
      text = "#" + (body.seq === undefined ? event.lastEventId : body.seq) + " " + (body.timestamp || "") + " " + event.type;
      if (body.percentage !== undefined) { text += " " + body.percentage + "%"; }
      if (body.message) { text += " " + body.message; }
      if (Object.keys(rest).length) { text += " " + JSON.stringify(rest); }
    } catch (e) { /* shown as sent */ }
    item.textContent = text;
    list.appendChild(item);
  };
  ["acknowledgment", "response", "progress", "complete", "error", "status", "message"].forEach(
    function (name) { source.addEventListener(name, add); }
  );
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) { list.setAttribute("data-closed", "true"); }
  });
}

function refresh() {
  var hint = document.querySelector("[data-refresh]");
  if (!hint) { return; }
  var every = Math.max(2, Number(hint.getAttribute("data-refresh"))) * 1000;
  var leaving = false;
  // A click on a link or a sent form is a navigation of the user's: never reload over it.
  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("a")) { leaving = true; }
  });
  document.addEventListener("submit", function (event) { if (!event.defaultPrevented) { leaving = true; } });
  var tick = function () {
    var busy = document.activeElement && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(document.activeElement.tagName);
    if (leaving) { return; }
    if (busy) { window.setTimeout(tick, every); } else { window.location.reload(); }
  };
  window.setTimeout(tick, every);
}

document.addEventListener("DOMContentLoaded", function () { overview(); requestEvents(); refresh(); });
