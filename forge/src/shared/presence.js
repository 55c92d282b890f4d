// Who's Looking: the presence loop that the background script runs, and the panel too when
// no background script answers. Contracts: docs/forge.md, docs/live-presence.md.
//
// Two loops run side by side:
//
// - Heartbeats keep this tab listed. POST /forge/heartbeat {tabId, state} at once, then every
//   `pollSeconds` with state "active" while the page is visible; when it is hidden, one with
//   state "away" after AWAY_GRACE_MS (so that a tab being closed sends only its leave) and then
//   every `awayPollSeconds`; when it is visible again, one at once with state "active".
//   POST /forge/leave on pagehide; back from the back/forward cache, heartbeats start again.
// - A wait makes the list live. While the page is visible, exactly one POST /forge/wait
//   {tabId, version} is outstanding: the server holds it until the viewers differ from
//   `version` (changed: true, with the new list: render it and wait again at once) or for
//   WAIT_SECONDS (changed: false: wait again at once). A 503 waits `Retry-After` seconds, any
//   other failure `pollSeconds`, before the next wait; the heartbeats go on meanwhile, so the
//   list is never staler than one poll interval. Hidden pages do not wait.
//
// After every heartbeat answer (or failure), and after every wait that brought a new list, it
// reports {viewers, pollSeconds, status} where status is
//   ok            2xx with viewers
//   anonymous     2xx with `anonymous: true` (nobody logged in); no waits then
//   reconnecting  invokeRemote rejected (401, network, timeout, non-JSON) or another non-2xx:
//                 the heartbeat is tried again after pollSeconds (awayPollSeconds when hidden)
//   uninstalled   403 {"error": "app uninstalled"} to a heartbeat or a wait: both loops stop
//                 for good
// A failed wait never changes the status: the heartbeats say whether the server is reachable.
import { invokeRemote } from "@forge/bridge";

export const HEARTBEAT_PATH = "/forge/heartbeat";
export const WAIT_PATH = "/forge/wait";
export const LEAVE_PATH = "/forge/leave";
export const DEFAULT_POLL_SECONDS = 10;
export const DEFAULT_AWAY_POLL_SECONDS = 60;
const MIN_SECONDS = 1;
const MAX_SECONDS = 600;
// A wait that ends without a change sooner than this (a proxy cutting it short, a server that
// does not hold it) is not followed by the next one at once: never more than one a second.
const MIN_UNCHANGED_WAIT_MS = 1000;
// How long the page stays hidden before its away heartbeat goes. Closing a tab hides this frame
// in a task of its own, before its pagehide (Chromium, measured: 10 to 30 ms before), so an
// away heartbeat sent at once was already in flight when the leave went, and a server that took
// it after the leave listed the closed tab again, as away, for minutes. pagehide cancels this
// timer: a closing tab sends only its leave. (LiveBrowserTests closes tabs.)
export const AWAY_GRACE_MS = 500;

/** A new tab id (a UUID), one per loop. */
export function newTabId() {
  const cryptoObject = globalThis.crypto;
  if (cryptoObject && typeof cryptoObject.randomUUID === "function") {
    return cryptoObject.randomUUID();
  }
  // Only in an insecure context, which Forge never serves: RFC 4122 version 4 by hand.
  const bytes = new Uint8Array(16);
  cryptoObject.getRandomValues(bytes);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The answer's body as an object: the bridge may hand it over parsed or as text. */
function bodyOf(response) {
  const body = response ? response.body : undefined;
  if (typeof body === "string") {
    try {
      return JSON.parse(body);
    } catch {
      return null;
    }
  }
  return body && typeof body === "object" ? body : null;
}

/** A number of seconds from an answer, or `previous` when it is missing or absurd. */
function secondsOf(value, previous) {
  const number = Number(value);
  if (value === null || value === undefined || !Number.isFinite(number) || number <= 0) {
    return previous;
  }
  return Math.min(MAX_SECONDS, Math.max(MIN_SECONDS, number));
}

/** The version of a list, when the answer carries one (an opaque string). */
function versionOf(body) {
  return body && typeof body.version === "string" ? body.version : null;
}

/** Only well-formed viewers, with the fields the panel uses. */
function viewersOf(list) {
  if (!Array.isArray(list)) {
    return [];
  }
  return list
    .filter((viewer) => viewer && typeof viewer.accountId === "string" && viewer.accountId !== "")
    .map((viewer) => ({
      accountId: viewer.accountId,
      displayName: typeof viewer.displayName === "string" ? viewer.displayName : "",
      avatarUrl: typeof viewer.avatarUrl === "string" && viewer.avatarUrl !== "" ? viewer.avatarUrl : null,
      you: viewer.you === true,
      // Anything but "away" is shown as looking: a server newer than this script may add states.
      state: viewer.state === "away" ? "away" : "active",
      since: typeof viewer.since === "string" && viewer.since !== "" ? viewer.since : null,
    }));
}

/**
 * A header of an invokeRemote answer, by case-insensitive name: the bridge's `headers` may be a
 * plain object (values strings or arrays of strings) or a Headers-like object with `get`.
 */
export function headerOf(response, name) {
  const headers = response ? response.headers : null;
  if (!headers || typeof headers !== "object") {
    return null;
  }
  if (typeof headers.get === "function") {
    const value = headers.get(name);
    return typeof value === "string" ? value : null;
  }
  const wanted = name.toLowerCase();
  for (const key of Object.keys(headers)) {
    if (key.toLowerCase() === wanted) {
      const value = Array.isArray(headers[key]) ? headers[key][0] : headers[key];
      return value === undefined || value === null ? null : String(value);
    }
  }
  return null;
}

/**
 * Seconds to wait from a `Retry-After` value (delta-seconds or an HTTP date), at least 1 and at
 * most 600; null when there is no usable value.
 */
export function retryAfterSeconds(value, now = Date.now()) {
  if (typeof value !== "string" || value.trim() === "") {
    return null;
  }
  const text = value.trim();
  let seconds = /^\d+(\.\d+)?$/.test(text) ? Number(text) : (Date.parse(text) - now) / 1000;
  if (!Number.isFinite(seconds)) {
    return null;
  }
  seconds = Math.ceil(seconds);
  return Math.min(MAX_SECONDS, Math.max(MIN_SECONDS, seconds));
}

/** The state before any answer. */
export function initialState() {
  return {
    viewers: [],
    pollSeconds: DEFAULT_POLL_SECONDS,
    awayPollSeconds: DEFAULT_AWAY_POLL_SECONDS,
    version: null,
    status: "ok",
  };
}

/**
 * What one heartbeat answer means: the next state {viewers, pollSeconds, awayPollSeconds,
 * version, status}. `previous` is the last state: a failure keeps its viewers (shown under
 * "Reconnecting…"), its version and its intervals.
 */
export function interpretHeartbeat(response, previous) {
  const status = Number(response ? response.status : NaN);
  const body = bodyOf(response);
  const pollSeconds = secondsOf(body ? body.pollSeconds : null, previous.pollSeconds);
  const awayPollSeconds = secondsOf(body ? body.awayPollSeconds : null, previous.awayPollSeconds);
  if (status >= 200 && status < 300 && body) {
    if (body.anonymous === true) {
      return { viewers: [], pollSeconds, awayPollSeconds, version: null, status: "anonymous" };
    }
    return { viewers: viewersOf(body.viewers), pollSeconds, awayPollSeconds, version: versionOf(body), status: "ok" };
  }
  if (status === 403 && body && body.error === "app uninstalled") {
    return { ...previous, viewers: [], version: null, status: "uninstalled" };
  }
  return { ...previous, status: "reconnecting" };
}

/** The state after invokeRemote rejected a heartbeat. */
export function failedHeartbeat(previous) {
  return { ...previous, status: "reconnecting" };
}

/**
 * What one wait answer means, for a wait sent with version `sent`:
 *   {kind: "changed", state}        a new list (state = previous with new viewers and version)
 *   {kind: "unchanged"}             held until WAIT_SECONDS without a change
 *   {kind: "uninstalled", state}    403 {"error": "app uninstalled"}
 *   {kind: "retry", afterSeconds}   anything else: 503 after Retry-After (pollSeconds when the
 *                                   header is missing), other failures after pollSeconds
 * A "changed" answer without a list, or with no version or the version that was sent, is a
 * failure too: waiting again at once would only get the same answer. So is an anonymous one.
 */
export function interpretWait(response, previous, sent) {
  const status = Number(response ? response.status : NaN);
  const body = bodyOf(response);
  const retry = { kind: "retry", afterSeconds: previous.pollSeconds };
  if (status >= 200 && status < 300 && body) {
    if (body.anonymous === true) {
      // Logged out since the last heartbeat: the next heartbeat says so and ends the waits.
      return retry;
    }
    if (body.changed === false) {
      return { kind: "unchanged" };
    }
    const version = versionOf(body);
    if (body.changed === true && Array.isArray(body.viewers) && version !== null && version !== sent) {
      return { kind: "changed", state: { ...previous, viewers: viewersOf(body.viewers), version } };
    }
    return retry;
  }
  if (status === 403 && body && body.error === "app uninstalled") {
    return { kind: "uninstalled", state: { ...previous, viewers: [], version: null, status: "uninstalled" } };
  }
  if (status === 503) {
    const seconds = retryAfterSeconds(headerOf(response, "retry-after"));
    return { kind: "retry", afterSeconds: seconds === null ? previous.pollSeconds : seconds };
  }
  return retry;
}

/** After invokeRemote rejected a wait (401, network, timeout, non-JSON): try after pollSeconds. */
export function failedWait(previous) {
  return { kind: "retry", afterSeconds: previous.pollSeconds };
}

/**
 * Starts both loops. `onUpdate(state)` gets every new state {viewers, pollSeconds, status}.
 * Returns {tabId, latest(), stop({leave})}; `stop` ends the loops, and with `leave: true` also
 * tells the server this tab is gone (used when the panel hands over to a background script).
 */
export function startPresence(onUpdate, { tabId = newTabId() } = {}) {
  let state = initialState();
  let answered = false;
  let stopped = false; // stop() or uninstalled: never again
  let left = false; // pagehide: until the page is shown again
  // Bumped by every hide, show, pagehide and stop: an answer to a request sent before then
  // renders nothing and starts nothing (invokeRemote cannot be cancelled, only ignored).
  let generation = 0;

  let beatTimer = null;
  let beating = false; // a heartbeat is outstanding: heartbeats go one at a time, in order
  // Numbers this tab's heartbeats and its leave (seq): the server ignores one older than the
  // last it wrote, so a heartbeat written after the leave cannot bring a closed tab back.
  let seq = 0;
  let beatAgain = false; // …and another was asked for meanwhile (a hide or a show)

  let waitTimer = null;
  let waiting = false; // a wait is outstanding, possibly one whose answer will be ignored
  let mayWait = false; // a heartbeat has answered with a list: the server knows this tab
  let waitNotBefore = 0; // Date.now() before which no wait starts (Retry-After, failures)

  const snapshot = () => ({ viewers: state.viewers, pollSeconds: state.pollSeconds, status: state.status });

  const publish = (next) => {
    state = next;
    answered = true;
    try {
      onUpdate(snapshot());
    } catch (error) {
      console.error("whoslooking: update failed", error);
    }
  };

  const here = () => !stopped && !left;

  const cancelTimers = () => {
    clearTimeout(beatTimer);
    clearTimeout(waitTimer);
    beatTimer = null;
    waitTimer = null;
  };

  // Uninstalled: both loops end for good, and any answer still to come is ignored.
  const halt = () => {
    stopped = true;
    generation += 1;
    cancelTimers();
  };

  const scheduleBeat = () => {
    clearTimeout(beatTimer);
    beatTimer = null;
    if (here()) {
      const seconds = document.hidden ? state.awayPollSeconds : state.pollSeconds;
      beatTimer = setTimeout(beat, seconds * 1000);
    }
  };

  function beat() {
    clearTimeout(beatTimer);
    beatTimer = null;
    if (!here()) {
      return;
    }
    if (beating) {
      // Sent after the outstanding one answers, so the server sees the states in order.
      beatAgain = true;
      return;
    }
    beating = true;
    const mine = generation;
    seq += 1;
    const body = { tabId, state: document.hidden ? "away" : "active", seq };
    invokeRemote({ path: HEARTBEAT_PATH, method: "POST", body })
      .then((response) => interpretHeartbeat(response, state))
      .catch(() => failedHeartbeat(state))
      .then((next) => {
        beating = false;
        if (mine === generation) {
          if (next.status === "uninstalled") {
            halt();
          }
          publish(next);
          if (next.status === "ok") {
            mayWait = true;
          }
          scheduleBeat();
          // The first list starts the waits; later ones find a wait outstanding or paused.
          if (!waiting && waitTimer === null) {
            startWaiting();
          }
        }
        if (beatAgain) {
          beatAgain = false;
          beat();
        }
      });
  }

  const mayWaitNow = () => here() && !document.hidden && mayWait && state.status !== "anonymous";

  // Starts the next wait now, or when the last failure's pause is over. Safe to call at any
  // time: it does nothing while the page may not wait, and never starts a second wait.
  function startWaiting() {
    clearTimeout(waitTimer);
    waitTimer = null;
    if (!mayWaitNow()) {
      return;
    }
    const delayMs = waitNotBefore - Date.now();
    if (delayMs > 0) {
      waitTimer = setTimeout(waitOnce, delayMs);
    } else {
      waitOnce();
    }
  }

  function waitOnce() {
    clearTimeout(waitTimer);
    waitTimer = null;
    // One wait at a time: while one is outstanding (even one to be ignored), its answer starts
    // the next. One left over from a hide usually comes back at once (going away, and coming
    // back, change the version), at the latest after WAIT_SECONDS.
    if (!mayWaitNow() || waiting) {
      return;
    }
    waiting = true;
    const mine = generation;
    const sent = state.version === null ? "" : state.version;
    const startedAt = Date.now();
    invokeRemote({ path: WAIT_PATH, method: "POST", body: { tabId, version: sent } })
      .then((response) => interpretWait(response, state, sent))
      .catch(() => failedWait(state))
      .then((outcome) => {
        waiting = false;
        if (mine !== generation) {
          startWaiting(); // only if this tab should be waiting now
          return;
        }
        switch (outcome.kind) {
          case "changed":
            waitNotBefore = 0;
            publish(outcome.state);
            break;
          case "unchanged":
            waitNotBefore = startedAt + MIN_UNCHANGED_WAIT_MS;
            break;
          case "uninstalled":
            halt();
            publish(outcome.state);
            return;
          default:
            waitNotBefore = Date.now() + outcome.afterSeconds * 1000;
        }
        startWaiting();
      });
  }

  const leave = () => {
    seq += 1;
    invokeRemote({ path: LEAVE_PATH, method: "POST", body: { tabId, seq } }).catch(() => {});
  };

  const onVisibility = () => {
    if (!here()) {
      return;
    }
    generation += 1;
    cancelTimers();
    if (document.hidden) {
      // The away heartbeat goes after AWAY_GRACE_MS: when the tab is being closed, pagehide
      // comes first, cancels the timer and sends the leave, so no away heartbeat can reach the
      // server after the leave and list the tab again.
      beatTimer = setTimeout(beat, AWAY_GRACE_MS);
    } else {
      beat();
      startWaiting();
    }
  };

  const onPageHide = () => {
    if (!here()) {
      return;
    }
    left = true;
    generation += 1;
    cancelTimers();
    leave();
  };

  const onPageShow = (event) => {
    // Back from the back/forward cache: the server was told we left, so come back.
    if (event.persisted && left && !stopped) {
      left = false;
      generation += 1;
      beat();
      startWaiting();
    }
  };

  document.addEventListener("visibilitychange", onVisibility);
  window.addEventListener("pagehide", onPageHide);
  window.addEventListener("pageshow", onPageShow);
  beat();

  return {
    tabId,
    /** The last state {viewers, pollSeconds, status}, or null before the first answer. */
    latest: () => (answered ? snapshot() : null),
    stop({ leave: sayGoodbye = false } = {}) {
      if (stopped) {
        return;
      }
      const wasHere = !left;
      halt();
      document.removeEventListener("visibilitychange", onVisibility);
      window.removeEventListener("pagehide", onPageHide);
      window.removeEventListener("pageshow", onPageShow);
      if (sayGoodbye && wasHere) {
        leave();
      }
    },
  };
}
