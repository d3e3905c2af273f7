// Fano's control panel: the only script (served by the panel; the Content-Security-Policy allows no other).
// It hooks behaviour by data- attributes, so templates carry no inline script:
//   data-live="/live/overview"  an element whose [data-part=NAME] children are replaced by the server's
//                               server-sent events of type NAME (HTML rendered and escaped by the server)
//   data-since="EPOCH"          an element whose text is the time elapsed since EPOCH, ticking every second
(function () {
  "use strict";

  // durations worded as fanoctl words them (shared/formatting.py duration), ticking in the page
  function fmt(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d" + String(Math.floor(s % 86400 / 3600)).padStart(2, "0") + "h";
  }

  // the server's clock minus ours (world time may be scaled; the page tells us the server's now)
  var skew = 0;
  function tick() {
    var now = Date.now() / 1000 + skew;
    document.querySelectorAll("[data-since]").forEach(function (el) {
      var t = parseFloat(el.getAttribute("data-since"));
      if (!isNaN(t)) el.textContent = fmt(now - t);
    });
  }

  function banner(text) {
    var el = document.getElementById("banner");
    if (!el) return;
    if (text) { el.textContent = text; el.hidden = false; } else { el.hidden = true; el.textContent = ""; }
  }

  function follow(root) {
    var url = root.getAttribute("data-live");
    var dot = document.getElementById("live-dot");
    var source = new EventSource(url);
    function part(name) {
      source.addEventListener(name, function (ev) {
        var target = root.querySelector('[data-part="' + name + '"]');
        if (target) target.innerHTML = ev.data;
        tick();
      });
    }
    ["accounts", "quotas", "queue", "recent", "health", "research"].forEach(part);
    source.addEventListener("clock", function (ev) {
      var t = parseFloat(ev.data);
      if (!isNaN(t)) skew = t - Date.now() / 1000;
    });
    source.addEventListener("status", function (ev) {
      var st = JSON.parse(ev.data);
      root.setAttribute("data-broker", st.broker);
      root.setAttribute("data-seq", String(st.seq || 0));
      banner(st.broker === "up" ? "" : "The broker is unavailable (" + (st.detail || "not answering") +
        "); this page recovers by itself when it is back.");
      if (dot) dot.className = "live-dot" + (st.broker === "up" ? " on" : "");
    });
    source.onerror = function () {
      // the panel itself is away (restarting): EventSource reconnects by itself
      banner("The panel is not answering; reconnecting…");
      if (dot) dot.className = "live-dot";
    };
    source.onopen = function () { banner(""); };
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.querySelector("[data-now]");
    if (root) {
      var t = parseFloat(root.getAttribute("data-now"));
      if (!isNaN(t)) skew = t - Date.now() / 1000;
    }
    document.querySelectorAll("[data-live]").forEach(follow);
    tick();
    setInterval(tick, 1000);
  });
})();
