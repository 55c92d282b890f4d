// Who's Looking: the panel's DOM. Built from elements and text nodes only: a display name is
// never parsed as markup. Contract (class names, data attributes, #status texts):
// docs/forge.md and docs/live-presence.md.

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

const twoDigits = (number) => String(number).padStart(2, "0");

/**
 * "Looking since HH:MM" in the browser's local time (24-hour, as Jira shows times in panels)
 * from an ISO 8601 `since`; null when it is missing or not a date.
 */
export function sinceTitle(since) {
  if (typeof since !== "string" || since === "") {
    return null;
  }
  const date = new Date(since);
  if (Number.isNaN(date.getTime())) {
    return null;
  }
  return `Looking since ${twoDigits(date.getHours())}:${twoDigits(date.getMinutes())}`;
}

/**
 * li.viewer[data-account-id][data-state][title] > img.avatar + span.initials + span.name
 * (+ span.you-label) (+ span.state-label "away"). An away person's item also has class `away`.
 */
export function viewerItem(doc, viewer) {
  const name = viewer.displayName || PLACEHOLDER_NAME;
  const away = viewer.state === "away";
  const item = doc.createElement("li");
  item.className = ["viewer", viewer.you ? "you" : "", away ? "away" : ""].filter(Boolean).join(" ");
  item.setAttribute("data-account-id", viewer.accountId);
  item.setAttribute("data-state", away ? "away" : "active");
  const title = sinceTitle(viewer.since);
  if (title !== null) {
    item.title = title;
  }

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
  if (away) {
    // Said in words, not only by the dimming: colour and opacity alone reach nobody who
    // cannot see them.
    const stateLabel = doc.createElement("span");
    stateLabel.className = "state-label";
    stateLabel.textContent = "away";
    item.append(stateLabel);
  }
  return item;
}

// What each list item shows, to tell whether it can stay as it is.
const drawn = new WeakMap();
const signature = (viewer) => JSON.stringify([
  viewer.accountId,
  viewer.displayName || "",
  viewer.avatarUrl || "",
  viewer.you === true,
  viewer.state === "away" ? "away" : "active",
  viewer.since || "",
]);

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
