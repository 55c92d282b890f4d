import AsyncHTTPClient
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOFoundationCompat

/// A small W3C WebDriver client for chromedriver driving the system's headless Chromium.
public struct WebDriver: Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    let endpoint: String

    /// Starts `chromedriver` on a loopback port; stop it with `stop()`.
    public static func start() async throws -> (WebDriver, Process) {
        guard let binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"].first(where: FileManager.default.isExecutableFile(atPath:))
        else {
            throw Failure(description: "chromedriver is missing: scripts/test installs chromium and chromium-driver")
        }
        let port = try FreePort.next()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--port=\(port)", "--allowed-ips=127.0.0.1"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let driver = WebDriver(endpoint: "http://127.0.0.1:\(port)")
        for _ in 0..<100 {
            if (try? await driver.call("GET", "/status")) != nil { return (driver, process) }
            try await Task.sleep(for: .milliseconds(100))
        }
        process.terminate()
        throw Failure(description: "chromedriver did not start")
    }

    /// Ends chromedriver and its browsers: its /shutdown endpoint, then SIGKILL if it lingers.
    /// (SIGTERM alone left it running, reparented to init, whenever sessions were open.)
    public func shutdown(_ process: Process) async {
        _ = try? await call("GET", "/shutdown")
        for _ in 0..<30 where process.isRunning {
            try? await Task.sleep(for: .milliseconds(100))
        }
        Self.kill(process)
    }

    /// The synchronous last resort, for `defer`.
    public static func kill(_ process: Process) {
        if process.isRunning { _ = Glibc.kill(process.processIdentifier, SIGKILL) }
    }

    /// A new browser (its own profile: cookies and storage are not shared with other sessions).
    public func newSession() async throws -> BrowserSession {
        let capabilities: [String: Any] = [
            "capabilities": [
                "alwaysMatch": [
                    "goog:chromeOptions": [
                        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,700"]
                    ]
                ]
            ]
        ]
        let value = try await call("POST", "/session", capabilities)
        guard let id = (value as? [String: Any])?["sessionId"] as? String else { throw Failure(description: "no session id in \(value)") }
        return BrowserSession(driver: self, id: id)
    }

    @discardableResult
    func call(_ method: String, _ path: String, _ body: [String: Any]? = nil) async throws -> Any {
        var request = HTTPClientRequest(url: endpoint + path)
        request.method = .init(rawValue: method)
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: try JSONSerialization.data(withJSONObject: body)))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let data = Data(buffer: try await response.body.collect(upTo: 50 << 20))
        let json = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        let value = (json as? [String: Any])?["value"] ?? NSNull()
        guard response.status.code < 300 else { throw Failure(description: "\(method) \(path): \(response.status.code) \(value)") }
        return value
    }
}

/// One browser session.
public struct BrowserSession: Sendable {
    let driver: WebDriver
    public let id: String

    public func navigate(_ url: String) async throws {
        try await driver.call("POST", "/session/\(id)/url", ["url": url])
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the current frame.
    @discardableResult
    public func execute(_ script: String, _ args: [Any] = []) async throws -> Any {
        try await driver.call("POST", "/session/\(id)/execute/sync", ["script": script, "args": args])
    }

    /// Enters the iframe matching `selector`, or back to the top page with nil.
    public func enterFrame(_ selector: String?) async throws {
        guard let selector else {
            try await driver.call("POST", "/session/\(id)/frame", ["id": NSNull()])
            return
        }
        try await driver.call("POST", "/session/\(id)/frame", ["id": NSNull()])
        let element = try await driver.call("POST", "/session/\(id)/element", ["using": "css selector", "value": selector])
        try await driver.call("POST", "/session/\(id)/frame", ["id": element])
    }

    /// `body` run inside the iframe matching `selector`; back on the top page before it returns,
    /// thrown or not, so the session's next command never lands in the wrong document.
    public func inFrame<Result>(_ selector: String, _ body: () async throws -> Result) async throws -> Result {
        try await enterFrame(selector)
        let result: Swift.Result<Result, any Error>
        do {
            result = .success(try await body())
        } catch {
            result = .failure(error)
        }
        try await enterFrame(nil)
        return try result.get()
    }

    public func screenshot() async throws -> Data {
        guard let base64 = try await driver.call("GET", "/session/\(id)/screenshot") as? String, let data = Data(base64Encoded: base64) else {
            throw WebDriver.Failure(description: "no screenshot")
        }
        return data
    }

    public func currentWindow() async throws -> String {
        try await driver.call("GET", "/session/\(id)/window") as? String ?? ""
    }

    /// Opens a new tab and makes it the active one: the previous tab becomes hidden.
    public func openNewTab() async throws -> String {
        let value = try await driver.call("POST", "/session/\(id)/window/new", ["type": "tab"])
        guard let handle = (value as? [String: Any])?["handle"] as? String else { throw WebDriver.Failure(description: "no tab handle") }
        try await switchTo(window: handle)
        return handle
    }

    public func switchTo(window handle: String) async throws {
        try await driver.call("POST", "/session/\(id)/window", ["handle": handle])
    }

    /// Closes the current tab, as a person closing it would (pagehide runs); answers the tabs
    /// left. Switch to one of them before the next command.
    @discardableResult
    public func closeWindow() async throws -> [String] {
        try await driver.call("DELETE", "/session/\(id)/window") as? [String] ?? []
    }

    public func quit() async {
        _ = try? await driver.call("DELETE", "/session/\(id)")
    }
}
