// Who's Looking: the issue panel's script. Contract: docs/live-presence.md.
//
// Two loops run side by side:
//
// - Heartbeats keep this tab listed (and renew the ticket). While the page is visible, one
//   every poll interval (state active); when it is hidden, one with `?state=away` after
//   AWAY_GRACE_MS (so that a tab being closed sends only its leave) and then one every away
//   poll interval; when it is visible again, one at once (active). Each answer whose version
//   differs from the one shown is rendered.
// - A wait makes the list live. While the page is visible, exactly one
//   `POST wait?version=V` is outstanding; the server answers it when the issue's viewers
//   differ from V (changed: true, with the new list: render it and wait again at once) or
//   after WAIT_SECONDS (changed: false: wait again at once). A 503 waits Retry-After seconds,
//   any other failure one poll interval, before the next wait; the heartbeats go on meanwhile.
//   Hiding the page aborts the wait.
//
// On pagehide it says goodbye with sendBeacon; back from the back/forward cache, both loops
// start again. A 401 or 403 to either request stops both: only a reload gets a new ticket.
(function () {
  "use strict";
  var PLACEHOLDER_NAME = "Jira user";
  var DEFAULT_AVATAR = "public/avatar-default.svg";
  var MAX_SECONDS = 600; // the longest interval or pause taken from the server
  // A wait that ends without a change sooner than this (a proxy cutting it short) is not
  // followed by the next one at once: never more than one wait a second.
  var MIN_UNCHANGED_WAIT_MS = 1000;
  // How long the page stays hidden before its away heartbeat goes. Closing a tab hides this
  // frame in a task of its own, before its pagehide (Chromium, measured: 10 to 30 ms before),
  // so an away heartbeat sent at once was already in flight when the leave went, and a server
  // that took it after the leave listed the closed tab again, as away, for minutes. pagehide
  // cancels this timer: a closing tab sends only its leave. (LiveBrowserTests closes tabs.)
  var AWAY_GRACE_MS = 500;
  var root = document.getElementById("whoslooking");
  if (!root) { return; }
  var ticket = root.getAttribute("data-ticket");
  var issueId = root.getAttribute("data-issue-id");
  var pollMs = secondsAttribute("data-poll-seconds", 10) * 1000;
  var awayPollMs = secondsAttribute("data-away-poll-seconds", 60) * 1000;
  // The version of the list the server rendered; without one the first wait is answered at
  // once with the current list.
  var version = root.getAttribute("data-version") || "";
  var base = "api/issues/" + encodeURIComponent(issueId);
  var list = root.querySelector(".viewers");
  var status = root.querySelector(".status");

  var stopped = false; // refused (401/403): never again
  var left = false; // pagehide: until the page is shown again
  // Bumped by every hide, show, pagehide and stop: an answer to a request sent before then
  // renders nothing and starts nothing.
  var generation = 0;

  var beatTimer = null;
  var beating = false; // a heartbeat is outstanding: heartbeats go one at a time, in order
  // Numbers this tab's heartbeats and its leave (seq): the server ignores one older than the
  // last it wrote, so a heartbeat written after the leave cannot bring a closed tab back.
  var seq = 0;
  var beatAgain = false; // …and another was asked for meanwhile (a hide or a show)

  var waitTimer = null;
  var waiting = false; // a wait is outstanding
  var waitAbort = null; // its AbortController, to end it when the page is hidden
  var waitNotBefore = 0; // Date.now() before which no wait starts (Retry-After, failures)

  function secondsAttribute(name, fallback) {
    var value = Number(root.getAttribute(name));
    return value > 0 ? Math.min(MAX_SECONDS, Math.max(1, value)) : fallback;
  }

  function resize() {
    if (window.AP && typeof window.AP.resize === "function") { window.AP.resize(); }
  }

  function openProfile(event) {
    event.preventDefault();
    var link = event.currentTarget;
    var item = link.closest ? link.closest("li.viewer") : null;
    var accountId = link.getAttribute("data-account-id") || (item && item.getAttribute("data-account-id"));
    if (accountId && window.AP && window.AP.navigator) {
      window.AP.navigator.go("userProfile", { userAccountId: accountId });
    }
  }

  function twoDigits(number) {
    return (number < 10 ? "0" : "") + number;
  }

  // "Looking since HH:MM" in the browser's local time, or null when `since` is not a date.
  function sinceTitle(since) {
    if (typeof since !== "string" || since === "") { return null; }
    var date = new Date(since);
    if (isNaN(date.getTime())) { return null; }
    return "Looking since " + twoDigits(date.getHours()) + ":" + twoDigits(date.getMinutes());
  }

  // li.viewer[data-account-id][data-state][title] > a.profile[data-account-id] > img.avatar +
  // span.name (+ span.you-label) (+ span.state-label "away"); class `away` when away.
  // Built from text nodes only: a name is never parsed as markup.
  function viewerItem(viewer) {
    var name = viewer.displayName || PLACEHOLDER_NAME;
    var away = viewer.state === "away";
    var item = document.createElement("li");
    item.className = "viewer" + (viewer.you ? " you" : "") + (away ? " away" : "");
    item.setAttribute("data-account-id", viewer.accountId);
    item.setAttribute("data-state", away ? "away" : "active");
    var title = sinceTitle(viewer.since);
    if (title !== null) { item.title = title; }
    var link = document.createElement("a");
    link.href = "#";
    link.className = "profile";
    link.setAttribute("data-account-id", viewer.accountId);
    link.addEventListener("click", openProfile);
    var avatar = document.createElement("img");
    avatar.className = "avatar";
    avatar.width = 24;
    avatar.height = 24;
    avatar.alt = name;
    avatar.src = viewer.avatarUrl || DEFAULT_AVATAR;
    var label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    link.appendChild(avatar);
    link.appendChild(label);
    if (viewer.you) {
      var you = document.createElement("span");
      you.className = "you-label";
      you.textContent = " (you)";
      link.appendChild(you);
    }
    if (away) {
      // In words, not only dimmed: the dimming alone reaches nobody who cannot see it.
      var state = document.createElement("span");
      state.className = "state-label";
      state.textContent = "away";
      link.appendChild(state);
    }
    item.appendChild(link);
    return item;
  }

  function render(viewers) {
    var fragment = document.createDocumentFragment();
    viewers.forEach(function (viewer) {
      if (viewer && typeof viewer.accountId === "string" && viewer.accountId !== "") {
        fragment.appendChild(viewerItem(viewer));
      }
    });
    list.replaceChildren(fragment);
    resize();
  }

  // A list with its version: rendered only when it differs from what is shown (an answer
  // without a version is always rendered, as before versions existed).
  function show(viewers, newVersion) {
    if (!Array.isArray(viewers)) { return; }
    var known = typeof newVersion === "string";
    if (known && newVersion === version) { return; }
    version = known ? newVersion : "";
    render(viewers);
  }

  function showStatus(text) {
    status.textContent = text;
    status.hidden = !text;
    resize();
  }

  function here() {
    return !stopped && !left;
  }

  function cancelTimers() {
    clearTimeout(beatTimer);
    clearTimeout(waitTimer);
    beatTimer = null;
    waitTimer = null;
  }

  function abortWait() {
    if (waitAbort) { waitAbort.abort(); }
  }

  // The ticket was refused (expired, or the app uninstalled): both loops end.
  function refuse() {
    stopped = true;
    generation += 1;
    cancelTimers();
    abortWait();
    showStatus("Reload the page to see who is looking.");
  }

  function scheduleBeat() {
    clearTimeout(beatTimer);
    beatTimer = null;
    if (here()) { beatTimer = setTimeout(beat, document.hidden ? awayPollMs : pollMs); }
  }

  function beat() {
    clearTimeout(beatTimer);
    beatTimer = null;
    if (!here()) { return; }
    if (beating) {
      // Sent after the outstanding one answers, so the server sees the states in order.
      beatAgain = true;
      return;
    }
    beating = true;
    var mine = generation;
    seq += 1;
    var url = base + "/heartbeat?seq=" + seq + (document.hidden ? "&state=away" : "");
    fetch(url, { method: "POST", headers: { "Authorization": "Ticket " + ticket } })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) { return { refused: true }; }
        if (!response.ok) { throw new Error("heartbeat answered " + response.status); }
        return response.json().then(function (body) { return { body: body }; });
      })
      .then(function (answer) {
        if (mine !== generation) { return; }
        if (answer.refused) {
          refuse();
          return;
        }
        var body = answer.body || {};
        if (typeof body.ticket === "string" && body.ticket) { ticket = body.ticket; }
        if (Number(body.pollSeconds) > 0) { pollMs = Math.min(MAX_SECONDS, Math.max(1, Number(body.pollSeconds))) * 1000; }
        if (Number(body.awayPollSeconds) > 0) { awayPollMs = Math.min(MAX_SECONDS, Math.max(1, Number(body.awayPollSeconds))) * 1000; }
        showStatus("");
        show(body.viewers, body.version);
      })
      .catch(function () {
        if (mine === generation) { showStatus("Reconnecting…"); }
      })
      .then(function () {
        beating = false;
        if (mine === generation) { scheduleBeat(); }
        if (beatAgain) {
          beatAgain = false;
          beat();
        }
      });
  }

  function mayWaitNow() {
    return here() && !document.hidden;
  }

  // Starts the next wait now, or when the last failure's pause is over. Safe to call at any
  // time: it does nothing while the page may not wait, and never starts a second wait.
  function startWaiting() {
    clearTimeout(waitTimer);
    waitTimer = null;
    if (!mayWaitNow()) { return; }
    var delayMs = waitNotBefore - Date.now();
    if (delayMs > 0) {
      waitTimer = setTimeout(waitOnce, delayMs);
    } else {
      waitOnce();
    }
  }

  // Seconds from a Retry-After header (delta-seconds or an HTTP date), 1 to 600, or null.
  function retryAfterSeconds(value) {
    if (typeof value !== "string" || value.trim() === "") { return null; }
    var text = value.trim();
    var seconds = /^\d+(\.\d+)?$/.test(text) ? Number(text) : (Date.parse(text) - Date.now()) / 1000;
    if (!isFinite(seconds)) { return null; }
    return Math.min(MAX_SECONDS, Math.max(1, Math.ceil(seconds)));
  }

  function waitOnce() {
    clearTimeout(waitTimer);
    waitTimer = null;
    if (!mayWaitNow() || waiting) { return; }
    waiting = true;
    var mine = generation;
    var sent = version;
    var startedAt = Date.now();
    var controller = typeof AbortController === "function" ? new AbortController() : null;
    waitAbort = controller;
    var retryLater = { retryMs: pollMs };
    fetch(base + "/wait?version=" + encodeURIComponent(sent), {
      method: "POST",
      headers: { "Authorization": "Ticket " + ticket },
      signal: controller ? controller.signal : undefined
    })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) { return { refused: true }; }
        if (response.status === 503) {
          var seconds = retryAfterSeconds(response.headers.get("Retry-After"));
          return { retryMs: seconds === null ? pollMs : seconds * 1000 };
        }
        if (!response.ok) { return retryLater; }
        return response.json().then(function (body) {
          if (body && body.changed === false) { return { unchanged: true }; }
          // A change must bring a list and a new version: otherwise waiting again at once would
          // only get the same answer.
          if (body && body.changed === true && Array.isArray(body.viewers) &&
              typeof body.version === "string" && body.version !== sent) {
            return { viewers: body.viewers, version: body.version };
          }
          return retryLater;
        });
      })
      .catch(function () { return retryLater; }) // network failure, bad JSON, or aborted
      .then(function (outcome) {
        waiting = false;
        if (waitAbort === controller) { waitAbort = null; }
        if (mine !== generation) {
          startWaiting(); // only if this page should be waiting now
          return;
        }
        if (outcome.refused) {
          refuse();
          return;
        }
        if (outcome.viewers) {
          waitNotBefore = 0;
          try {
            show(outcome.viewers, outcome.version);
          } finally {
            startWaiting(); // a list that failed to render must not end the waits
          }
          return;
        }
        waitNotBefore = outcome.unchanged ? startedAt + MIN_UNCHANGED_WAIT_MS : Date.now() + outcome.retryMs;
        startWaiting();
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (!here()) { return; }
    generation += 1;
    cancelTimers();
    if (document.hidden) {
      abortWait();
      // The away heartbeat goes after AWAY_GRACE_MS: when the tab is being closed, pagehide
      // comes first, cancels the timer and sends the leave, so no away heartbeat can reach the
      // server after the leave and list the tab again.
      beatTimer = setTimeout(beat, AWAY_GRACE_MS);
    } else {
      beat();
      startWaiting();
    }
  });

  window.addEventListener("pagehide", function () {
    if (!here()) { return; }
    left = true;
    generation += 1;
    cancelTimers();
    abortWait();
    seq += 1;
    var url = base + "/leave?seq=" + seq;
    if (navigator.sendBeacon && navigator.sendBeacon(url, ticket)) { return; }
    fetch(url, { method: "POST", body: ticket, keepalive: true });
  });

  window.addEventListener("pageshow", function (event) {
    // Back from the back/forward cache: the server was told we left, so come back.
    if (event.persisted && left && !stopped) {
      left = false;
      generation += 1;
      beat();
      startWaiting();
    }
  });

  // The first list came with the page: its items get the profile links and local-time titles
  // (from `data-since`, when the server sends it: only the browser knows its time zone).
  Array.prototype.forEach.call(root.querySelectorAll("a.profile"), function (link) {
    link.addEventListener("click", openProfile);
  });
  Array.prototype.forEach.call(root.querySelectorAll("li.viewer[data-since]"), function (item) {
    var title = sinceTitle(item.getAttribute("data-since"));
    if (title !== null) { item.title = title; }
  });
  resize();
  // The page load recorded this tab as active: the next heartbeat is one interval away, and the
  // first wait starts at once. A page loaded hidden says it is away at once instead.
  if (document.hidden) {
    beatTimer = setTimeout(beat, 0);
  } else {
    scheduleBeat();
    startWaiting();
  }
})();
