import Hummingbird

/// A heartbeat's answer, `{"viewers":[…],"ticket":"…","pollSeconds":N}` (Connect) or
/// `{"viewers":[…],"pollSeconds":N}` (Forge, where Forge vouches for every call and no ticket
/// is needed), written straight into the response buffer: JSONEncoder was a sixth of a
/// heartbeat's CPU profile, and this shape never changes.
struct HeartbeatResponse: ResponseGenerator {
    let viewers: [ViewerItem]
    var ticket: String?
    let pollSeconds: Int
    /// Forge: the caller is not logged in; nothing was recorded.
    var anonymous = false

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var body = ByteBuffer()
        body.reserveCapacity(160 + (ticket?.utf8.count ?? 0) + viewers.count * 160)
        body.writeStaticString(#"{"viewers":["#)
        for (index, viewer) in viewers.enumerated() {
            if index > 0 { body.writeStaticString(",") }
            body.writeStaticString(#"{"accountId":"#)
            body.writeJSONString(viewer.accountId)
            if let name = viewer.displayName {
                body.writeStaticString(#","displayName":"#)
                body.writeJSONString(name)
            }
            if let avatar = viewer.avatarUrl {
                body.writeStaticString(#","avatarUrl":"#)
                body.writeJSONString(avatar)
            }
            body.writeStaticString(viewer.you ? #","you":true}"# : #","you":false}"#)
        }
        body.writeStaticString("]")
        if let ticket {
            body.writeStaticString(#","ticket":"#)
            body.writeJSONString(ticket)
        }
        body.writeStaticString(#","pollSeconds":"#)
        body.writeString(String(pollSeconds))
        body.writeStaticString(anonymous ? #","anonymous":true}"# : "}")
        return Response(
            status: .ok,
            headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: body)
        )
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
