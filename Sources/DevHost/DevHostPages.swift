import Foundation

/// The stand-in's HTML and scripts.
enum DevHostPages {
    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
            .replacingOccurrences(of: "'", with: "&#39;")
    }

    static let style = """
        body{font-family:-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#172b4d;background:#f4f5f7}
        header{background:#0747a6;color:#fff;padding:10px 20px;font-weight:600}
        header a{color:#fff}
        main{display:flex;gap:24px;padding:20px}
        .issue{flex:1;background:#fff;border-radius:3px;padding:20px;min-height:300px}
        aside{width:280px;background:#fff;border-radius:3px;padding:12px}
        aside h3{font-size:12px;text-transform:uppercase;color:#5e6c84;margin:0 0 8px}
        iframe{border:0;width:100%;height:40px;display:block}
        table{border-collapse:collapse}td,th{padding:6px 12px;text-align:left}
        """

    /// `forge`: the Forge section (`ForgePages.indexSection`), empty without Forge.
    static func index(installed: Bool, appURL: String, forge: String = "") -> String {
        let rows = Cast.issues.map { issue in
            let links = Cast.people.filter { $0.accountType == "atlassian" }.map { person in
                #"<a href="/browse/\#(issue.key)?as=\#(person.accountId)">\#(escape(person.displayName))</a>"#
            }.joined(separator: " · ")
            return "<tr><td><b>\(issue.key)</b> \(escape(issue.summary))</td><td>\(links)</td></tr>"
        }.joined(separator: "\n")
        return """
            <!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Local Jira stand-in</title><style>\(style)</style></head>
            <body><header>Local Jira stand-in</header><main><div class="issue">
            <p>App: \(escape(appURL)) — \(installed ? "installed" : "<b>not installed yet</b> (is the app running?)")
            <form method="post" action="/reinstall" style="display:inline"><button>Reinstall</button></form></p>
            <p>Open an issue as a person; open the same issue as someone else in another browser (or a private window) to see each other.</p>
            <table><tr><th>Issue</th><th>Open as</th></tr>\(rows)</table>\(forge)</div></main></body></html>
            """
    }

    /// An issue page with the app's panel in an iframe, and the host half of the AP bridge.
    static func issue(_ issue: Cast.Issue, viewer: Cast.Person?, panelURL: String?, contextToken: String?) -> String {
        let panel =
            panelURL.map { #"<iframe id="app-panel" title="Who's Looking" src="\#(escape($0))"></iframe>"# }
            ?? "<p>The app is not installed yet.</p>"
        return """
            <!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>\(issue.key) \(escape(issue.summary))</title><style>\(style)</style></head>
            <body><header><a href="/">Local Jira</a> / \(issue.projectKey) / \(issue.key) — viewing as \(escape(viewer?.displayName ?? "anonymous"))</header>
            <main><div class="issue"><h1>\(issue.key): \(escape(issue.summary))</h1><p>Description of the issue.</p></div>
            <aside><h3>Who's Looking</h3>\(panel)</aside></main>
            <script>
            (function () {
              var frame = document.getElementById("app-panel");
              if (!frame) { return; }
              var contextToken = \(contextToken.map { "\"\($0)\"" } ?? "null");
              window.addEventListener("message", function (event) {
                if (event.source !== frame.contentWindow || !event.data || !event.data.apBridge) { return; }
                var message = event.data;
                if (message.type === "resize") { frame.style.height = Math.max(20, Math.ceil(message.height)) + "px"; }
                if (message.type === "navigate" && message.target === "userProfile" && message.context) {
                  window.location.href = "/people/" + encodeURIComponent(message.context.userAccountId);
                }
                if (message.type === "getToken") {
                  frame.contentWindow.postMessage({ apBridge: true, type: "token", id: message.id, token: contextToken }, "*");
                }
              });
            })();
            </script></body></html>
            """
    }

    static func profile(_ person: Cast.Person?) -> String {
        """
        <!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Profile</title><style>\(style)</style></head>
        <body><header><a href="/">Local Jira</a> / People</header><main><div class="issue">
        <h1 class="profile-name">\(escape(person?.displayName ?? "Unknown person"))</h1></div></main></body></html>
        """
    }

    static func avatar(_ person: Cast.Person) -> String {
        let initial = escape(String(person.displayName.first(where: { $0.isLetter }) ?? "?"))
        return """
            <svg xmlns="http://www.w3.org/2000/svg" width="48" height="48" viewBox="0 0 48 48">
            <circle cx="24" cy="24" r="24" fill="\(person.color ?? "#97a0af")"/>
            <text x="24" y="31" font-family="sans-serif" font-size="22" fill="#fff" text-anchor="middle">\(initial)</text></svg>
            """
    }

    /// What the panel uses of Atlassian's all.js: resize (the iframe really grows), navigation to a
    /// profile, context tokens and events, over postMessage to the host page.
    static let allJS = """
        (function () {
          "use strict";
          var pending = {};
          var nextId = 1;
          var listeners = {};
          function send(message) {
            message.apBridge = true;
            window.parent.postMessage(message, "*");
          }
          function contentHeight() {
            var content = document.querySelector(".ac-content") || document.body;
            var rect = content.getBoundingClientRect();
            return Math.ceil(rect.top + rect.height + 4);
          }
          window.addEventListener("message", function (event) {
            var message = event.data;
            if (!message || !message.apBridge || event.source !== window.parent) { return; }
            if (message.type === "token" && pending[message.id]) {
              pending[message.id](message.token);
              delete pending[message.id];
            }
            if (message.type === "event" && listeners[message.name]) {
              listeners[message.name].forEach(function (callback) { callback(message.data); });
            }
          });
          window.AP = {
            resize: function (width, height) {
              send({ type: "resize", height: height ? parseInt(height, 10) : contentHeight() });
            },
            sizeToParent: function () {},
            navigator: {
              go: function (target, context) { send({ type: "navigate", target: target, context: context }); }
            },
            context: {
              getToken: function (callback) {
                var id = nextId++;
                var promise = new Promise(function (resolve) { pending[id] = resolve; });
                send({ type: "getToken", id: id });
                if (callback) { promise.then(callback); }
                return promise;
              },
              getContext: function (callback) {
                var context = { jira: {} };
                if (callback) { callback(context); }
                return Promise.resolve(context);
              }
            },
            events: {
              on: function (name, callback) { (listeners[name] = listeners[name] || []).push(callback); },
              off: function (name, callback) {
                listeners[name] = (listeners[name] || []).filter(function (c) { return c !== callback; });
              },
              emit: function (name, data) { send({ type: "event", name: name, data: data }); }
            }
          };
          window.addEventListener("load", function () { window.AP.resize(); });
        })();
        """
}
