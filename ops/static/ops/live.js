/* The admin's live pages: follow an event stream of the API (server-sent events) and
   redraw on each event that concerns the page, without a reload; while the stream is
   broken, poll instead, until it comes back.

   HubLive.follow({
     url: "/api/v1/orders/42/events",     // the stream to follow
     accepts: function (type, data) {...}, // optional: which events concern the page
     refresh: function () {...},           // redraw; returns a Promise
     onSnapshot: function (data) {...},    // optional: the state the stream starts from
     pollMs: 1500,                         // the fallback's interval
     minIntervalMs: 250                    // at most one redraw this often
   });
   HubLive.mode is "stream", "polling" or "connecting"; document.body.dataset.liveMode too. */
(function () {
  "use strict";
  var TYPES = [
    "order.status", "server.status", "tenant.status", "rollout.status", "rolloutstage.status",
    "tenantupdate.status", "rollout.progress", "job.status", "step.status", "step.log",
    "alert.opened", "alert.resolved", "alerts.synced"
  ];

  function setMode(mode) {
    window.HubLive.mode = mode;
    document.body.dataset.liveMode = mode;
    document.dispatchEvent(new CustomEvent("hub-live-mode", {detail: mode}));
  }

  function follow(opts) {
    var pollMs = opts.pollMs || 1500;
    var minInterval = opts.minIntervalMs || 250;
    var running = false, again = false, lastRun = 0, timer = null, pollTimer = null, source = null;

    function run() {
      timer = null;
      if (running) { again = true; return; }
      running = true; again = false; lastRun = Date.now();
      Promise.resolve().then(opts.refresh).catch(function () {}).then(function () {
        running = false;
        if (again) { schedule(); }
      });
    }
    function schedule() {
      if (timer !== null) { return; }
      timer = setTimeout(run, Math.max(0, minInterval - (Date.now() - lastRun)));
    }
    function startPolling() {
      if (pollTimer !== null) { return; }
      setMode("polling");
      pollTimer = setInterval(schedule, pollMs);
      schedule();
    }
    function stopPolling() {
      if (pollTimer !== null) { clearInterval(pollTimer); pollTimer = null; }
    }
    function onEvent(e) {
      var data = null;
      try { data = JSON.parse(e.data); } catch (err) { return; }
      if (!opts.accepts || opts.accepts(e.type, data)) { schedule(); }
    }
    function connect() {
      setMode("connecting");
      source = new EventSource(opts.url, {withCredentials: true});
      source.onopen = function () { stopPolling(); setMode("stream"); };
      source.addEventListener("snapshot", function (e) {
        if (opts.onSnapshot) {
          try { opts.onSnapshot(JSON.parse(e.data)); } catch (err) { schedule(); }
        } else { schedule(); }
      });
      TYPES.forEach(function (type) { source.addEventListener(type, onEvent); });
      source.onerror = function () {
        startPolling();
        if (source.readyState === EventSource.CLOSED) {
          // Refused outright (not a stream): try again later, polling meanwhile.
          source = null;
          setTimeout(connect, 10000);
        }
        // Otherwise the browser reconnects by itself, with Last-Event-ID.
      };
    }
    if (!window.EventSource) { startPolling(); return; }
    connect();
  }

  /* Redraw parts of the page from a fresh copy of the same page. */
  function refreshRegions(selectors) {
    return function () {
      return fetch(window.location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html");
          selectors.forEach(function (selector) {
            var now = document.querySelector(selector), next = fresh.querySelector(selector);
            if (now && next) { now.replaceWith(document.importNode(next, true)); }
          });
        });
    };
  }

  window.HubLive = {mode: "connecting", follow: follow, refreshRegions: refreshRegions};
})();
