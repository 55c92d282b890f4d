// Who's Looking: the jira:issueViewBackgroundScript. Invisible and always on the issue view,
// so the viewer counts as looking even while the panel is collapsed (a collapsed panel runs
// no code). It runs the shared loop (heartbeats, "away" while the page is hidden, and the
// wait that brings changes as they happen) and tells the panel each new state as
// `whoslooking:viewers` {viewers, pollSeconds, status}: after every heartbeat answer (the
// panel's watchdog counts on them), after every wait that brought a new list, and again on
// every `whoslooking:hello` (the panel may render before or after it). Contract: docs/forge.md.
import { view, events } from "@forge/bridge";
import { startPresence } from "../shared/presence.js";

const HELLO = "whoslooking:hello";
const VIEWERS = "whoslooking:viewers";

let presence = null;

function tell(state) {
  if (!state) {
    return; // No answer yet: the first one is emitted when it comes.
  }
  try {
    Promise.resolve(events.emit(VIEWERS, state)).catch(() => {});
  } catch {
    // No panel to tell, or no bridge: the next heartbeat tries again.
  }
}

async function start() {
  try {
    // Waits for the host: the context (issue, viewer) itself is not sent, since the server
    // takes both from the invocation token, never from the body.
    // A host that never answers delays the first heartbeat by 2 s at most.
    await Promise.race([view.getContext(), new Promise((resolve) => setTimeout(resolve, 2000))]);
  } catch {
    // Heartbeat anyway: the server answers 400 when there is no issue.
  }
  presence = startPresence(tell);
}

try {
  Promise.resolve(events.on(HELLO, () => tell(presence && presence.latest()))).catch(() => {});
} catch {
  // Without events the panel runs its own loop after 3 s.
}
start();
