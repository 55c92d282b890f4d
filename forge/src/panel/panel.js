// Who's Looking: the jira:issueContext panel. It runs only while the panel is expanded.
// The background script keeps the page's presence (heartbeats, away, waits) and answers
// `whoslooking:hello` with `whoslooking:viewers`; the panel asks until it hears back, and if
// nobody answers within 3 s it runs the same loop by itself, waits included.
// Contract: docs/forge.md.
import { view, events } from "@forge/bridge";
import { startPresence } from "../shared/presence.js";
import { renderState } from "../shared/render.js";

const HELLO = "whoslooking:hello";
const VIEWERS = "whoslooking:viewers";
const HELLO_EVERY_MS = 500;
const HELLO_FOR_MS = 3000;

const parts = {
  list: document.querySelector("ul.viewers"),
  status: document.getElementById("status"),
  hint: document.getElementById("hint"),
  loading: document.getElementById("loading"),
};

try {
  // Follows Jira's light/dark theme (sets data-color-mode on <html>); never fatal.
  Promise.resolve(view.theme.enable()).catch(() => {});
} catch {
  // An older host without theming: the light fallbacks in panel.css apply.
}

let ownLoop = null; // the panel's own heartbeat loop, while no background script answers
let heard = false;
let helloTimer = null;
let fallbackTimer = null;
let watchdog = null;
let watchedPollSeconds = null; // the background script's interval, while it is being watched

function show(state) {
  renderState(document, parts, state);
}

function emit(name, payload) {
  try {
    Promise.resolve(events.emit(name, payload)).catch(() => {});
  } catch {
    // The bridge is not there (yet): the fallback loop covers it.
  }
}

function runOwnLoop() {
  if (!ownLoop) {
    ownLoop = startPresence(show);
  }
}

// A background script that falls silent (removed, crashed) for three intervals: heartbeat here.
// While the page is hidden its heartbeats slow down to the away interval, so the watch pauses.
function armWatchdog(pollSeconds) {
  clearTimeout(watchdog);
  watchdog = null;
  watchedPollSeconds = pollSeconds;
  if (pollSeconds === null || document.hidden) {
    return;
  }
  watchdog = setTimeout(() => {
    if (!document.hidden) {
      runOwnLoop();
    }
  }, (pollSeconds * 3 + 5) * 1000);
}

document.addEventListener("visibilitychange", () => {
  if (!ownLoop && watchedPollSeconds !== null) {
    armWatchdog(watchedPollSeconds);
  }
});

function onViewers(payload) {
  if (!payload || typeof payload !== "object") {
    return;
  }
  heard = true;
  clearInterval(helloTimer);
  clearTimeout(fallbackTimer);
  if (ownLoop) {
    // The background script is here after all: one heartbeat per page is enough.
    ownLoop.stop({ leave: true });
    ownLoop = null;
  }
  const pollSeconds = Number(payload.pollSeconds) > 0 ? Number(payload.pollSeconds) : 10;
  // After "uninstalled" the background script stops for good: nothing to watch.
  armWatchdog(payload.status === "uninstalled" ? null : pollSeconds);
  show(payload);
}

try {
  Promise.resolve(events.on(VIEWERS, onViewers)).catch(runOwnLoop);
} catch {
  runOwnLoop();
}

// Ask at once and every 500 ms; the background script may have rendered before or after us.
const startedAt = Date.now();
emit(HELLO, {});
helloTimer = setInterval(() => {
  if (heard || Date.now() - startedAt >= HELLO_FOR_MS) {
    clearInterval(helloTimer);
    return;
  }
  emit(HELLO, {});
}, HELLO_EVERY_MS);
fallbackTimer = setTimeout(() => {
  if (!heard) {
    runOwnLoop();
  }
}, HELLO_FOR_MS);
