// Who's Looking: the panel's DOM. Built from elements and text nodes only: a display name is
// never parsed as markup. Contract (class names, #status texts): docs/forge.md.

export const STATUS_TEXT = Object.freeze({
  ok: "",
  anonymous: "Log in to see who's looking",
  reconnecting: "Reconnecting…",
  uninstalled: "Who's Looking is no longer installed on this site",
});

const PLACEHOLDER_NAME = "Jira user";

/** Up to two initials for the badge shown when there is no avatar: letters and digits only. */
export function initialsOf(name) {
  const firsts = name
    .split(/\s+/u)
    .map((word) => (word.match(/[\p{L}\p{N}]/u) || [""])[0])
    .filter(Boolean);
  if (firsts.length === 0) {
    return "?";
  }
  return (firsts[0] + (firsts.length > 1 ? firsts[firsts.length - 1] : "")).toUpperCase();
}

/** li.viewer[data-account-id] > img.avatar + span.initials + span.name (+ span.you-label). */
export function viewerItem(doc, viewer) {
  const name = viewer.displayName || PLACEHOLDER_NAME;
  const item = doc.createElement("li");
  item.className = viewer.you ? "viewer you" : "viewer";
  item.setAttribute("data-account-id", viewer.accountId);

  // The initials show until the avatar has loaded, and stay if it never does (no URL,
  // blocked, broken): no broken-image icon. `src` stays the avatar URL either way.
  const avatar = doc.createElement("img");
  avatar.className = "avatar";
  avatar.width = 24;
  avatar.height = 24;
  avatar.alt = name;
  avatar.hidden = true;
  avatar.setAttribute("referrerpolicy", "no-referrer");
  const badge = doc.createElement("span");
  badge.className = "initials";
  badge.setAttribute("aria-hidden", "true");
  badge.textContent = initialsOf(name);
  if (viewer.avatarUrl) {
    avatar.addEventListener("load", () => {
      avatar.hidden = false;
      badge.hidden = true;
    }, { once: true });
    avatar.src = viewer.avatarUrl;
  }

  const label = doc.createElement("span");
  label.className = "name";
  label.textContent = name;
  label.title = name;

  item.append(avatar, badge, label);
  if (viewer.you) {
    const you = doc.createElement("span");
    you.className = "you-label";
    you.textContent = "(you)";
    item.append(you);
  }
  return item;
}

// What each list item shows, to tell whether it can stay as it is.
const drawn = new WeakMap();
const signature = (viewer) => JSON.stringify([viewer.accountId, viewer.displayName || "", viewer.avatarUrl || "", viewer.you === true]);

/**
 * Shows one state {viewers, status} in the panel. `parts` are the page's elements:
 * {list: ul.viewers, status: #status, hint: "Nobody else is looking", loading: "Loading…"}.
 */
export function renderState(doc, parts, state) {
  const status = Object.prototype.hasOwnProperty.call(STATUS_TEXT, state.status) ? state.status : "ok";
  const viewers = Array.isArray(state.viewers) ? state.viewers : [];
  // Anonymous and uninstalled show no list; reconnecting keeps the last one it had.
  const shown = status === "ok" || status === "reconnecting" ? viewers : [];

  parts.loading.hidden = true;
  // An unchanged viewer keeps its element, so its avatar is not loaded again every heartbeat.
  const previous = new Map();
  for (const item of parts.list.children) {
    previous.set(item.getAttribute("data-account-id"), item);
  }
  const items = shown.map((viewer) => {
    const kept = previous.get(viewer.accountId);
    const key = signature(viewer);
    if (kept && drawn.get(kept) === key) {
      previous.delete(viewer.accountId);
      return kept;
    }
    const item = viewerItem(doc, viewer);
    drawn.set(item, key);
    return item;
  });
  parts.list.replaceChildren(...items);
  parts.list.hidden = shown.length === 0;

  const others = shown.filter((viewer) => !viewer.you).length;
  parts.hint.hidden = !(status === "ok" && others === 0);

  parts.status.textContent = STATUS_TEXT[status];
  parts.status.hidden = STATUS_TEXT[status] === "";
}
