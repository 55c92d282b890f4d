import Connect
import Foundation
import Hummingbird

/// `GET /atlassian-connect.json`: what an admin installs.
struct DescriptorController {
    let descriptor: AppDescriptor

    func addRoutes(to router: Router<AppRequestContext>) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let body = (try? encoder.encode(descriptor)) ?? Data()
        router.get("atlassian-connect.json") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "application/json", .cacheControl: "no-cache"],
                body: .init(byteBuffer: ByteBuffer(bytes: body))
            )
        }
    }
}
