// The overview's chart: deliveries and failed attempts per minute of the last
// hour, from /api/throughput, drawn with uPlot and redrawn every 2 s. The
// endpoint table refreshes itself through htmx (hx-trigger="every 2s").
"use strict";
(function () {
  function start() {
    var box = document.getElementById("throughput");
    if (!box || typeof uPlot === "undefined") return;
    var source = box.getAttribute("data-source");
    var plot = null;
    function total(values) { return values.reduce(function (a, b) { return a + b; }, 0); }
    function draw(series) {
      var data = [series.minute, series.delivered, series.failed];
      box.setAttribute("data-delivered", String(total(series.delivered)));
      box.setAttribute("data-failed", String(total(series.failed)));
      if (plot) { plot.setData(data); return; }
      plot = new uPlot({
        width: Math.max(box.clientWidth, 320), height: 220,
        series: [
          {},
          { label: "delivered", stroke: "#15803d", fill: "rgba(21,128,61,0.08)", width: 2 },
          { label: "failed", stroke: "#b91c1c", width: 2 }
        ],
        axes: [{}, { label: "per minute" }]
      }, data, box);
      box.setAttribute("data-drawn", "true");
    }
    function refresh() {
      fetch(source, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (series) { if (series) draw(series); })
        .catch(function () {});
    }
    refresh();
    setInterval(refresh, 2000);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
