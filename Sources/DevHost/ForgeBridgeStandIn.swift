/// The `@forge/bridge` stand-in served at `/forge/bridge-standin.js`: the Custom UI's
/// `import … from "@forge/bridge"` resolves here through the import map the devhost adds to
/// each `index.html`. It talks to the issue page (`ForgePages.issue`) with `postMessage` and a
/// request id; the page answers for Forge: the context, the theme, events between the app's
/// frames, and `invokeRemote` through `POST /forge/invoke`.
enum ForgeBridgeStandIn {
    static let script = #"""
        // @forge/bridge stand-in of the local Forge host (whoslooking devhost). Not Atlassian's code.
        const INVOKE_TIMEOUT_MS = 25000;
        const pending = new Map();
        const listeners = new Map();
        let nextId = 1;
        let unloading = false;
        let colorMode = null;

        // Registered before the app's own modules run (they import this one first), so a
        // request made from the app's pagehide handler knows the page is going away.
        window.addEventListener("pagehide", function () { unloading = true; });

        class BridgeError extends Error {
          constructor(message, details) {
            super(message);
            this.name = "BridgeError";
            Object.assign(this, details || {});
          }
        }

        function jsonCopy(value, what) {
          if (value === undefined) { return undefined; }
          try {
            return JSON.parse(JSON.stringify(value));
          } catch (error) {
            throw new BridgeError(what + " must be JSON-serialisable");
          }
        }

        function ask(type, data, timeoutMs) {
          return new Promise(function (resolve, reject) {
            const id = nextId++;
            let timer = null;
            if (timeoutMs) {
              timer = setTimeout(function () {
                pending.delete(id);
                reject(new BridgeError("invokeRemote timed out after " + timeoutMs / 1000 + " s", { code: "TIMEOUT" }));
              }, timeoutMs);
            }
            pending.set(id, {
              resolve: function (value) { clearTimeout(timer); resolve(value); },
              reject: function (error) { clearTimeout(timer); reject(error); }
            });
            const message = { forgeBridge: true, type: type, id: id, data: data };
            // While the page unloads, a posted message would never be handled: hand the request
            // to the host page synchronously (the stand-in's pages are same-origin).
            if (unloading && type === "invokeRemote") {
              try {
                if (window.parent.__forgeHost && window.parent.__forgeHost.handleNow(window, message)) { return; }
              } catch (error) { /* fall back to postMessage */ }
            }
            window.parent.postMessage(message, "*");
          });
        }

        window.addEventListener("message", function (event) {
          if (event.source !== window.parent) { return; }
          const message = event.data;
          if (!message || message.forgeBridge !== true) { return; }
          if (message.type === "reply") {
            const waiting = pending.get(message.id);
            if (!waiting) { return; }
            pending.delete(message.id);
            if (message.ok) { waiting.resolve(message.value); } else { waiting.reject(new BridgeError(message.error || "bridge error")); }
          } else if (message.type === "event") {
            (listeners.get(message.name) || []).slice().forEach(function (callback) {
              try { callback(message.payload); } catch (error) { console.error(error); }
            });
          } else if (message.type === "theme" && colorMode !== null) {
            applyTheme(message.mode);
          }
        });

        function applyTheme(mode) {
          colorMode = mode === "dark" ? "dark" : "light";
          document.documentElement.setAttribute("data-color-mode", colorMode);
          document.documentElement.setAttribute("data-theme", "dark:dark light:light spacing:spacing typography:typography");
        }

        export const view = {
          getContext: function () { return ask("getContext"); },
          theme: {
            enable: function () { return ask("getTheme").then(function (mode) { applyTheme(mode); }); }
          },
          submit: function () { return Promise.reject(new BridgeError("view.submit is not available in this module")); },
          close: function () { return Promise.reject(new BridgeError("view.close is not available in this module")); },
          refresh: function () { return Promise.resolve(); }
        };

        function describe(result) {
          return "invokeRemote: the remote answered " + result.status + (result.bodyText ? " " + result.bodyText.slice(0, 200) : "");
        }

        // Resolves {status, headers, body}; rejects as Forge does: a 401 (kept for token
        // failures), a 3xx, a body that is not JSON (or a non-2xx without one, or a content-type
        // other than application/json), a network error, the 25 s timeout.
        export function invokeRemote(options) {
          try {
            if (!options || typeof options.path !== "string" || options.path === "") {
              throw new BridgeError("invokeRemote needs a path");
            }
            const method = (options.method || "GET").toUpperCase();
            if (["GET", "POST", "PUT", "DELETE", "PATCH"].indexOf(method) < 0) {
              throw new BridgeError("invokeRemote: method " + method + " is not supported");
            }
            if (options.body !== undefined && options.body !== null && (typeof options.body !== "object" || Array.isArray(options.body))) {
              throw new BridgeError("invokeRemote: body must be a JSON object");
            }
            const request = {
              path: options.path, method: method,
              headers: jsonCopy(options.headers || {}, "headers"), body: jsonCopy(options.body, "body")
            };
            return ask("invokeRemote", request, INVOKE_TIMEOUT_MS).then(function (result) {
              if (result.error) {
                throw new BridgeError("invokeRemote failed: " + result.error + (result.message ? " (" + result.message + ")" : ""), { code: result.error.toUpperCase() });
              }
              const status = result.status;
              const contentType = (result.headers && result.headers["content-type"]) || "";
              if (status === 401) { throw new BridgeError(describe(result), { status: status }); }
              if (status >= 300 && status < 400) { throw new BridgeError(describe(result) + " (redirects are not followed)", { status: status }); }
              if (result.bodyLength > 0 && !result.bodyIsJSON) { throw new BridgeError(describe(result) + " (not JSON)", { status: status }); }
              if ((status < 200 || status >= 300) && !result.bodyIsJSON) { throw new BridgeError(describe(result) + " (no JSON body)", { status: status }); }
              if (result.bodyLength > 0 && contentType && !/^application\/json\b/i.test(contentType)) {
                throw new BridgeError(describe(result) + " (content-type " + contentType + ")", { status: status });
              }
              return { status: status, headers: result.headers || {}, body: result.body === null ? undefined : result.body };
            });
          } catch (error) {
            return Promise.reject(error);
          }
        }

        export const events = {
          emit: function (name, payload) {
            try {
              if (typeof name !== "string" || name === "") { throw new BridgeError("events.emit needs an event name"); }
              return ask("emit", { name: name, payload: jsonCopy(payload, "payload") }).then(function () {});
            } catch (error) {
              return Promise.reject(error);
            }
          },
          on: function (name, callback) {
            if (typeof callback !== "function") { return Promise.reject(new BridgeError("events.on needs a callback")); }
            const list = listeners.get(name) || [];
            list.push(callback);
            listeners.set(name, list);
            return Promise.resolve({
              unsubscribe: function () {
                listeners.set(name, (listeners.get(name) || []).filter(function (other) { return other !== callback; }));
              }
            });
          }
        };

        export const router = {
          navigate: function (target) { return ask("navigate", jsonCopy(target, "target")); },
          open: function (target) { return ask("navigate", jsonCopy(target, "target")); },
          reload: function () { return ask("reload"); }
        };

        export function showFlag(options) {
          console.info("showFlag (stand-in):", options && options.title);
          return { close: function () { return Promise.resolve(); } };
        }

        function unavailable(name) {
          return function () { return Promise.reject(new BridgeError(name + " is not provided by the local Forge stand-in")); };
        }
        export const invoke = unavailable("invoke");
        export const requestJira = unavailable("requestJira");
        export const requestConfluence = unavailable("requestConfluence");
        export const requestRemote = unavailable("requestRemote");
        export const realtime = { subscribe: unavailable("realtime.subscribe"), publish: unavailable("realtime.publish") };

        // Custom UI iframes follow their content's height, as in Jira.
        function reportHeight() {
          const height = Math.ceil(document.documentElement.getBoundingClientRect().height);
          window.parent.postMessage({ forgeBridge: true, type: "resize", height: height }, "*");
        }
        if (typeof ResizeObserver === "function") {
          const observe = function () { new ResizeObserver(reportHeight).observe(document.documentElement); };
          if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", observe); } else { observe(); }
        }
        """#
}
