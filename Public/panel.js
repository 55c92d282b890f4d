// Who's Looking: the issue panel's script. Sends a heartbeat every poll interval while the
// page is visible, renders the viewers each heartbeat returns, and says goodbye on pagehide.
(function () {
  "use strict";
  var root = document.getElementById("whoslooking");
  if (!root) { return; }
  var ticket = root.getAttribute("data-ticket");
  var issueId = root.getAttribute("data-issue-id");
  var pollMs = Math.max(1, Number(root.getAttribute("data-poll-seconds")) || 10) * 1000;
  var base = "api/issues/" + encodeURIComponent(issueId);
  var list = root.querySelector(".viewers");
  var status = root.querySelector(".status");
  var timer = null;
  var stopped = false;
  var PLACEHOLDER_NAME = "Jira user";
  var DEFAULT_AVATAR = "public/avatar-default.svg";

  function resize() {
    if (window.AP && typeof window.AP.resize === "function") { window.AP.resize(); }
  }

  function openProfile(event) {
    event.preventDefault();
    var accountId = event.currentTarget.getAttribute("data-account-id");
    if (window.AP && window.AP.navigator) {
      window.AP.navigator.go("userProfile", { userAccountId: accountId });
    }
  }

  // Built from text nodes only: a name is never parsed as markup.
  function viewerItem(viewer) {
    var name = viewer.displayName || PLACEHOLDER_NAME;
    var item = document.createElement("li");
    item.className = viewer.you ? "viewer you" : "viewer";
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
    item.appendChild(link);
    return item;
  }

  function render(viewers) {
    var fragment = document.createDocumentFragment();
    viewers.forEach(function (viewer) { fragment.appendChild(viewerItem(viewer)); });
    list.replaceChildren(fragment);
    resize();
  }

  function showStatus(text) {
    status.textContent = text;
    status.hidden = !text;
    resize();
  }

  function schedule() {
    clearTimeout(timer);
    if (!stopped && !document.hidden) { timer = setTimeout(beat, pollMs); }
  }

  function beat() {
    if (stopped || document.hidden) { return; }
    fetch(base + "/heartbeat", { method: "POST", headers: { "Authorization": "Ticket " + ticket } })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          stopped = true;
          showStatus("Reload the page to see who is looking.");
          return null;
        }
        if (!response.ok) { throw new Error("heartbeat answered " + response.status); }
        return response.json();
      })
      .then(function (body) {
        if (!body) { return; }
        ticket = body.ticket;
        if (body.pollSeconds) { pollMs = body.pollSeconds * 1000; }
        showStatus("");
        render(body.viewers);
      })
      .catch(function () { showStatus("Reconnecting…"); })
      .then(schedule);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { clearTimeout(timer); } else { beat(); }
  });

  window.addEventListener("pagehide", function () {
    stopped = true;
    clearTimeout(timer);
    var url = base + "/leave";
    if (navigator.sendBeacon && navigator.sendBeacon(url, ticket)) { return; }
    fetch(url, { method: "POST", body: ticket, keepalive: true });
  });

  Array.prototype.forEach.call(root.querySelectorAll("a.profile"), function (link) {
    link.addEventListener("click", openProfile);
  });
  resize();
  schedule();
})();
