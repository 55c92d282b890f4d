import Connect
import Hummingbird

/// The issue panel's iframe entry point. Jira loads it with a JWT carrying the request's own
/// qsh. The presence feature fills it; for now it proves who is looking at what.
struct PanelController {
    let authentication: ConnectJWTMiddleware

    func addRoutes(to router: Router<AppRequestContext>) {
        router.group(RouterPath(AppDescriptor.Route.panel))
            .add(middleware: authentication)
            .get { request, context in
                let issueKey = request.uri.queryParameters.get("issueKey") ?? ""
                let viewer = context.identity?.accountID == nil ? "anonymous visitor" : "signed-in user"
                let html = """
                    <!DOCTYPE html>
                    <html lang="en"><head><meta charset="utf-8"><title>Who's Looking</title></head>
                    <body><div class="ac-content"><p>Who's Looking on \(HTML.escape(issueKey)) (\(viewer)).</p></div></body></html>
                    """
                return Response(
                    status: .ok,
                    headers: [.contentType: "text/html; charset=utf-8"],
                    body: .init(byteBuffer: ByteBuffer(string: html))
                )
            }
    }
}

enum HTML {
    /// Text made safe to place in HTML content or a quoted attribute.
    static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.count)
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
