// Who's Looking: the heartbeat loop that the background script runs, and the panel too when
// no background script answers. Contract: docs/forge.md.
//
// POST /forge/heartbeat {tabId} at once, then every `pollSeconds` (from the answer) while the
// page is visible, and at once when it becomes visible again; POST /forge/leave on pagehide.
// After every answer (or failure) it reports {viewers, pollSeconds, status} where status is
//   ok            2xx with viewers
//   anonymous     2xx with `anonymous: true` (nobody logged in)
//   reconnecting  invokeRemote rejected (401, network, timeout, non-JSON) or another non-2xx:
//                 tried again after pollSeconds
//   uninstalled   403 {"error": "app uninstalled"}: the loop stops for good
import { invokeRemote } from "@forge/bridge";

export const HEARTBEAT_PATH = "/forge/heartbeat";
export const LEAVE_PATH = "/forge/leave";
export const DEFAULT_POLL_SECONDS = 10;
const MIN_POLL_SECONDS = 1;
const MAX_POLL_SECONDS = 600;

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

/** pollSeconds from an answer, or the previous value when it is missing or absurd. */
function pollSecondsOf(body, previous) {
  const value = body ? Number(body.pollSeconds) : NaN;
  if (!Number.isFinite(value) || value <= 0) {
    return previous;
  }
  return Math.min(MAX_POLL_SECONDS, Math.max(MIN_POLL_SECONDS, value));
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
    }));
}

/**
 * What one heartbeat answer means. `previous` is the last state: a failure keeps its viewers
 * (shown under "Reconnecting…") and its poll interval.
 */
export function interpretHeartbeat(response, previous) {
  const status = Number(response ? response.status : NaN);
  const body = bodyOf(response);
  const pollSeconds = pollSecondsOf(body, previous.pollSeconds);
  if (status >= 200 && status < 300 && body) {
    if (body.anonymous === true) {
      return { viewers: [], pollSeconds, status: "anonymous" };
    }
    return { viewers: viewersOf(body.viewers), pollSeconds, status: "ok" };
  }
  if (status === 403 && body && body.error === "app uninstalled") {
    return { viewers: [], pollSeconds: previous.pollSeconds, status: "uninstalled" };
  }
  return { viewers: previous.viewers, pollSeconds: previous.pollSeconds, status: "reconnecting" };
}

/** The state after invokeRemote rejected. */
export function failedHeartbeat(previous) {
  return { viewers: previous.viewers, pollSeconds: previous.pollSeconds, status: "reconnecting" };
}

/**
 * Starts the loop. `onUpdate(state)` gets every new state {viewers, pollSeconds, status}.
 * Returns {tabId, latest(), stop({leave})}; `stop` ends the loop, and with `leave: true` also
 * tells the server this tab is gone (used when the panel hands over to a background script).
 */
export function startPresence(onUpdate, { tabId = newTabId() } = {}) {
  let state = { viewers: [], pollSeconds: DEFAULT_POLL_SECONDS, status: "ok" };
  let answered = false;
  let timer = null;
  let inFlight = false;
  let stopped = false; // stop() or uninstalled: never again
  let left = false; // pagehide: until the page is shown again
  let generation = 0; // answers from before a stop are dropped

  const publish = (next) => {
    state = next;
    answered = true;
    try {
      onUpdate({ viewers: state.viewers, pollSeconds: state.pollSeconds, status: state.status });
    } catch (error) {
      console.error("whoslooking: update failed", error);
    }
  };

  const cancel = () => {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
  };

  const active = () => !stopped && !left && !document.hidden;

  const schedule = () => {
    cancel();
    if (active()) {
      timer = setTimeout(beat, state.pollSeconds * 1000);
    }
  };

  function beat() {
    cancel();
    if (!active() || inFlight) {
      return;
    }
    inFlight = true;
    const mine = generation;
    invokeRemote({ path: HEARTBEAT_PATH, method: "POST", body: { tabId } })
      .then(
        (response) => interpretHeartbeat(response, state),
        () => failedHeartbeat(state),
      )
      .then((next) => {
        inFlight = false;
        if (mine !== generation) {
          return;
        }
        if (next.status === "uninstalled") {
          stopped = true;
          cancel();
        }
        publish(next);
        schedule();
      });
  }

  const leave = () => {
    invokeRemote({ path: LEAVE_PATH, method: "POST", body: { tabId } }).catch(() => {});
  };

  const onVisibility = () => {
    if (document.hidden) {
      cancel();
    } else {
      beat();
    }
  };

  const onPageHide = () => {
    if (stopped || left) {
      return;
    }
    left = true;
    generation += 1;
    cancel();
    leave();
  };

  const onPageShow = (event) => {
    // Back from the back/forward cache: the server was told we left, so come back.
    if (event.persisted && left && !stopped) {
      left = false;
      beat();
    }
  };

  document.addEventListener("visibilitychange", onVisibility);
  window.addEventListener("pagehide", onPageHide);
  window.addEventListener("pageshow", onPageShow);
  beat();

  return {
    tabId,
    /** The last state, or null before the first answer. */
    latest: () => (answered ? { viewers: state.viewers, pollSeconds: state.pollSeconds, status: state.status } : null),
    stop({ leave: sayGoodbye = false } = {}) {
      if (stopped) {
        return;
      }
      const wasHere = !left;
      stopped = true;
      generation += 1;
      cancel();
      document.removeEventListener("visibilitychange", onVisibility);
      window.removeEventListener("pagehide", onPageHide);
      window.removeEventListener("pageshow", onPageShow);
      if (sayGoodbye && wasHere) {
        leave();
      }
    },
  };
}
