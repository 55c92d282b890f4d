import Hummingbird

/// A heartbeat's answer, `{"viewers":[…],"version":"…","ticket":"…","pollSeconds":N,"awayPollSeconds":M}`
/// (Connect) or the same without a ticket (Forge, where Forge vouches for every call), written
/// straight into the response buffer: JSONEncoder was a sixth of a heartbeat's CPU profile,
/// and this shape never changes. Fields: docs/live-presence.md.
struct HeartbeatResponse: ResponseGenerator {
    let viewers: [ViewerItem]
    var version: String?
    var ticket: String?
    let pollSeconds: Int
    var awayPollSeconds: Int?
    /// Forge: the caller is not logged in; nothing was recorded.
    var anonymous = false

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var body = ByteBuffer()
        body.reserveCapacity(200 + (ticket?.utf8.count ?? 0) + viewers.count * 200)
        body.writeStaticString("{")
        body.writeViewers(viewers)
        if let version {
            body.writeStaticString(#","version":"#)
            body.writeJSONString(version)
        }
        if let ticket {
            body.writeStaticString(#","ticket":"#)
            body.writeJSONString(ticket)
        }
        body.writeStaticString(#","pollSeconds":"#)
        body.writeString(String(pollSeconds))
        if let awayPollSeconds {
            body.writeStaticString(#","awayPollSeconds":"#)
            body.writeString(String(awayPollSeconds))
        }
        body.writeStaticString(anonymous ? #","anonymous":true}"# : "}")
        return .json(body)
    }
}

/// A wait's answer: `{"changed":true,"viewers":[…],"version":"…"}` when the issue's viewers
/// differ from what the panel has, else `{"changed":false,"version":"…"}` (or, for an
/// anonymous Forge caller, `{"changed":false,"anonymous":true}`).
struct WaitResponse: ResponseGenerator {
    var viewers: [ViewerItem]?
    var version: String
    var anonymous = false

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var body = ByteBuffer()
        body.reserveCapacity(80 + (viewers?.count ?? 0) * 200)
        if let viewers {
            body.writeStaticString(#"{"changed":true,"#)
            body.writeViewers(viewers)
        } else {
            body.writeStaticString(#"{"changed":false"#)
        }
        if anonymous {
            body.writeStaticString(#","anonymous":true}"#)
        } else {
            body.writeStaticString(#","version":"#)
            body.writeJSONString(version)
            body.writeStaticString("}")
        }
        return .json(body)
    }
}

extension Response {
    static func json(_ body: ByteBuffer) -> Response {
        Response(
            status: .ok,
            headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: body)
        )
    }
}

extension ByteBuffer {
    /// `"viewers":[{"accountId","displayName"?,"avatarUrl"?,"you","state","since"}…]`
    mutating func writeViewers(_ viewers: [ViewerItem]) {
        writeStaticString(#""viewers":["#)
        for (index, viewer) in viewers.enumerated() {
            if index > 0 { writeStaticString(",") }
            writeStaticString(#"{"accountId":"#)
            writeJSONString(viewer.accountId)
            if let name = viewer.displayName {
                writeStaticString(#","displayName":"#)
                writeJSONString(name)
            }
            if let avatar = viewer.avatarUrl {
                writeStaticString(#","avatarUrl":"#)
                writeJSONString(avatar)
            }
            writeStaticString(viewer.you ? #","you":true"# : #","you":false"#)
            writeStaticString(viewer.away ? #","state":"away","since":""# : #","state":"active","since":""#)
            writeString(viewer.since)
            writeStaticString(#""}"#)
        }
        writeStaticString("]")
    }
}

extension ByteBuffer {
    /// A JSON string literal (RFC 8259): quotes, backslashes and control characters escaped,
    /// everything else as UTF-8.
    mutating func writeJSONString(_ value: String) {
        writeInteger(UInt8(ascii: "\""))
        let utf8 = value.utf8
        var pendingStart = utf8.startIndex
        var index = utf8.startIndex
        while index != utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte < 0x20 {
                writeBytes(utf8[pendingStart..<index])
                switch byte {
                case UInt8(ascii: "\""): writeStaticString(#"\""#)
                case UInt8(ascii: "\\"): writeStaticString(#"\\"#)
                case UInt8(ascii: "\n"): writeStaticString(#"\n"#)
                case UInt8(ascii: "\r"): writeStaticString(#"\r"#)
                case UInt8(ascii: "\t"): writeStaticString(#"\t"#)
                default:
                    writeStaticString(#"\u00"#)
                    writeInteger(Self.hexDigits[Int(byte >> 4)])
                    writeInteger(Self.hexDigits[Int(byte & 0xF)])
                }
                pendingStart = utf8.index(after: index)
            }
            index = utf8.index(after: index)
        }
        writeBytes(utf8[pendingStart..<index])
        writeInteger(UInt8(ascii: "\""))
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
}
