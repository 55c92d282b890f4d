import Foundation

/// The Forge stand-in's HTML: the issue page that hosts the Custom UI frames and answers for
/// `@forge/bridge`, and the Forge part of the index page.
enum ForgePages {
    static let escape = DevHostPages.escape

    /// The JSON of `object` for use inside a `<script>` element (no `<`, `>` or `&` left).
    static func scriptJSON(_ object: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("null".utf8)
        return String(decoding: data, as: UTF8.self).replacingOccurrences(of: "<", with: "\\u003c")
            .replacingOccurrences(of: ">", with: "\\u003e").replacingOccurrences(of: "&", with: "\\u0026")
    }

    static let style = """
        html[data-color-mode=dark] body{background:#1d2125;color:#c7d1db}
        html[data-color-mode=dark] .issue,html[data-color-mode=dark] aside{background:#22272b}
        html[data-color-mode=dark] header{background:#0c3a6b}
        #forge-panel-toggle{display:flex;width:100%;align-items:center;gap:6px;background:none;border:0;padding:4px 0;
          font:inherit;font-size:12px;font-weight:600;text-transform:uppercase;color:inherit;cursor:pointer;text-align:left}
        #forge-panel-toggle::before{content:"▸";display:inline-block;transition:transform .1s}
        #forge-panel-toggle[aria-expanded=true]::before{transform:rotate(90deg)}
        #forge-panel-area{padding-top:6px}
        #forge-status{color:#5e6c84}
        """

    /// The part of the index page about the Forge installation.
    static func indexSection(status: ForgeSite.InstallationStatus, installationId: String, cloudId: String, appId: String) -> String {
        let rows = Cast.issues.map { issue in
            var links = Cast.people.filter { $0.accountType == "atlassian" }.map { person in
                #"<a href="/forge/browse/\#(issue.key)?as=\#(person.accountId)">\#(escape(person.displayName))</a>"#
            }
            links.append(#"<a href="/forge/browse/\#(issue.key)">anonymous</a>"#)
            links.append(#"<a href="/forge/browse/\#(issue.key)?as=alice&amp;collapsed=1">Alice, collapsed</a>"#)
            links.append(#"<a href="/forge/browse/\#(issue.key)?as=alice&amp;theme=dark">Alice, dark</a>"#)
            return "<tr><td><b>\(issue.key)</b> \(escape(issue.summary))</td><td>\(links.joined(separator: " · "))</td></tr>"
        }.joined(separator: "\n")
        let state: String
        switch status {
        case .installed: state = "installed"
        case .uninstalled: state = "<b>uninstalled</b>"
        case .notInstalled: state = "<b>not installed yet</b> (is the app running with FORGE_APP_ID?)"
        }
        return """
            <h2>Forge</h2>
            <p id="forge-state">Forge — \(state)
            <form method="post" action="/forge/uninstall-app" style="display:inline"><button>Uninstall</button></form>
            <form method="post" action="/forge/reinstall-app" style="display:inline"><button>Reinstall</button></form></p>
            <p>App <code>\(escape(appId))</code>, installation <code>\(escape(installationId))</code>, cloudId <code>\(escape(cloudId))</code>,
            <a href="/forge/jwks.json">JWKS</a>.</p>
            <table><tr><th>Issue</th><th>Open in the Forge app as</th></tr>\(rows)</table>
            """
    }

    /// An issue page with the app's background script (invisible) and its `jira:issueContext`
    /// panel (created when expanded), and the host half of the bridge stand-in.
    /// `via`: the app instance its `invokeRemote` calls go to (1: the installed one).
    static func issue(
        _ issue: Cast.Issue, viewer: Cast.Person?, forge: ForgeSite, installed: Bool, collapsed: Bool, dark: Bool, via: Int = 1
    ) -> String {
        let theme = dark ? "dark" : "light"
        var context: [String: Any] = [
            "cloudId": forge.cloudId, "siteUrl": forge.siteURL, "locale": "en-US", "timezone": "Europe/Stockholm",
            "environmentType": "DEVELOPMENT", "environmentId": forge.configuration.environmentId,
            "extension": [
                "issue": ["id": issue.id, "key": issue.key, "type": "Task", "typeId": "10002"],
                "project": ["id": issue.projectId, "key": issue.projectKey, "type": "software"],
                "location": "\(forge.siteURL)/forge/browse/\(issue.key)",
            ] as [String: Any],
        ]
        if let viewer { context["accountId"] = viewer.accountId }
        func frame(_ module: ForgeSite.Module, resource: String, name: String) -> [String: Any] {
            [
                "moduleKey": module.key, "type": module.type, "localId": forge.localId(module),
                "src": "/forge/app/\(resource)/index.html?frame=\(name)",
            ]
        }
        let config: [String: Any] = [
            "as": viewer?.accountId ?? NSNull(), "issueKey": issue.key, "theme": theme, "collapsed": collapsed, "context": context, "via": via,
            "frames": [
                "background": frame(.background, resource: "background", name: "background"),
                "panel": frame(.panel, resource: "panel", name: "panel"),
            ],
        ]
        let panel =
            installed
            ? """
            <button id="forge-panel-toggle" type="button" aria-expanded="false" aria-controls="forge-panel-area">Who's Looking</button>
            <div id="forge-panel-area" hidden></div>
            <div id="forge-bg-container" hidden></div>
            """
            : #"<h3>Who's Looking</h3><p id="forge-status">Who's Looking (Forge) is not installed on this site.</p>"#
        return """
            <!DOCTYPE html><html lang="en" data-color-mode="\(theme)"><head><meta charset="utf-8"><title>\(issue.key) \(escape(issue.summary))</title>
            <style>\(DevHostPages.style)\(style)</style></head>
            <body><header><a href="/">Local Jira</a> / \(issue.projectKey) / \(issue.key) — viewing as \(escape(viewer?.displayName ?? "anonymous")) (Forge)</header>
            <main><div class="issue"><h1>\(issue.key): \(escape(issue.summary))</h1><p>Description of the issue.</p></div>
            <aside>\(panel)</aside></main>
            \(installed ? "<script>\n(function (config) {\n\(hostScript)\n})(\(scriptJSON(config)));\n</script>" : "")
            </body></html>
            """
    }

    /// The page's half of the bridge: which frame is which, the context and theme it asks for,
    /// events between the app's frames, and `invokeRemote` proxied to `POST /forge/invoke`.
    static let hostScript = #"""
        "use strict";
        var frames = { background: null, panel: null };
        // Frames removed by a collapse: their last requests are still answered.
        var retired = [];
        var log = [];
        window.__forgeLog = log;

        function frameName(source) {
          for (var name in frames) {
            if (frames[name] && frames[name].contentWindow === source) { return name; }
          }
          for (var i = 0; i < retired.length; i++) {
            if (retired[i].window === source) { return retired[i].name; }
          }
          return null;
        }

        function contextFor(name) {
          var module = config.frames[name];
          var context = JSON.parse(JSON.stringify(config.context));
          context.localId = module.localId;
          context.moduleKey = module.moduleKey;
          context.extension.type = module.type;
          return context;
        }

        function reply(target, id, ok, value, error) {
          try {
            target.postMessage({ forgeBridge: true, type: "reply", id: id, ok: ok, value: value, error: error }, "*");
          } catch (ignored) { /* the frame is gone */ }
        }

        function invoke(name, request) {
          var module = config.frames[name];
          var entry = { frame: name, path: request.path, method: request.method, at: Date.now() };
          log.push(entry);
          if (log.length > 500) { log.shift(); }
          return fetch("/forge/invoke", {
            method: "POST", keepalive: true, headers: { "Content-Type": "application/json" },
            body: JSON.stringify({
              as: config.as, issueKey: config.issueKey, moduleKey: module.moduleKey, localId: module.localId,
              path: request.path, method: request.method, headers: request.headers, body: request.body, via: config.via
            })
          }).then(function (response) {
            if (!response.ok) {
              return response.text().then(function (text) { throw new Error("the Forge stand-in refused the call: " + response.status + " " + text); });
            }
            return response.json();
          }).then(function (result) {
            entry.status = result.status;
            entry.error = result.error;
            return result;
          });
        }

        function navigate(target) {
          if (!target) { return; }
          if (typeof target === "string") {
            if (target.charAt(0) === "/") { window.location.href = target; }
            return;
          }
          if (target.target === "userProfile" && target.accountId) {
            window.location.href = "/people/" + encodeURIComponent(target.accountId);
          } else if (target.target === "issue" && target.issueKey) {
            window.location.href = "/forge/browse/" + encodeURIComponent(target.issueKey) + (config.as ? "?as=" + encodeURIComponent(config.as) : "");
          }
        }

        function handle(source, name, message) {
          var id = message.id;
          switch (message.type) {
          case "getContext":
            reply(source, id, true, contextFor(name));
            break;
          case "getTheme":
            reply(source, id, true, config.theme);
            break;
          case "invokeRemote":
            invoke(name, message.data || {}).then(function (result) {
              reply(source, id, true, result);
            }, function (error) {
              reply(source, id, false, null, String((error && error.message) || error));
            });
            break;
          case "emit":
            for (var other in frames) {
              var frame = frames[other];
              if (frame && frame.contentWindow && frame.contentWindow !== source) {
                frame.contentWindow.postMessage({ forgeBridge: true, type: "event", name: message.data.name, payload: message.data.payload }, "*");
              }
            }
            reply(source, id, true, null);
            break;
          case "navigate":
            reply(source, id, true, null);
            navigate(message.data);
            break;
          case "reload":
            reply(source, id, true, null);
            window.location.reload();
            break;
          case "resize":
            if (name === "panel" && frames.panel && typeof message.height === "number") {
              frames.panel.style.height = Math.max(20, Math.min(2000, message.height)) + "px";
            }
            break;
          default:
            if (id !== undefined) { reply(source, id, false, null, "unknown bridge request " + message.type); }
          }
        }

        window.addEventListener("message", function (event) {
          var message = event.data;
          if (!message || message.forgeBridge !== true) { return; }
          var name = frameName(event.source);
          if (!name) { return; }
          handle(event.source, name, message);
        });

        // A frame that is unloading cannot wait for a posted message to be handled: the
        // stand-in's bridge hands over its last requests here (same-origin, stand-in only).
        window.__forgeHost = {
          handleNow: function (source, message) {
            var name = frameName(source);
            if (!name) { return false; }
            handle(source, name, message);
            return true;
          }
        };

        function makeFrame(name, id, title, container) {
          var frame = document.createElement("iframe");
          frame.id = id;
          frame.title = title;
          frame.src = config.frames[name].src;
          frame.style.height = "40px";
          container.appendChild(frame);
          frames[name] = frame;
          return frame;
        }

        var toggle = document.getElementById("forge-panel-toggle");
        var area = document.getElementById("forge-panel-area");
        function expand() {
          toggle.setAttribute("aria-expanded", "true");
          area.hidden = false;
          if (!frames.panel) { makeFrame("panel", "forge-panel", "Who's Looking", area); }
        }
        function collapse() {
          toggle.setAttribute("aria-expanded", "false");
          area.hidden = true;
          if (frames.panel) {
            var frame = frames.panel;
            retired.push({ name: "panel", window: frame.contentWindow });
            frames.panel = null;
            frame.remove();
          }
        }
        toggle.addEventListener("click", function () {
          if (toggle.getAttribute("aria-expanded") === "true") { collapse(); } else { expand(); }
        });

        makeFrame("background", "forge-bg", "Who's Looking (background)", document.getElementById("forge-bg-container"));
        if (!config.collapsed) { expand(); }
        """#
}
