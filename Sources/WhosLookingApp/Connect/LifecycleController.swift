import Tenants
import Connect
import Foundation
import Hummingbird
import Logging

/// `POST /installed` and `POST /uninstalled`: accepted only with Atlassian's RS256 signature
/// (signed install), so nobody can replace a tenant's shared secret.
struct LifecycleController {
    let appKey: String
    let appBaseURL: String
    let verifier: ConnectTokenVerifier
    let installKeys: InstallKeyProvider
    let tenants: TenantRepository

    func addRoutes(to router: Router<AppRequestContext>) {
        router.post(RouterPath(AppDescriptor.Route.installed)) { request, context in
            try await handle(request, context: context, event: "installed")
        }
        router.post(RouterPath(AppDescriptor.Route.uninstalled)) { request, context in
            try await handle(request, context: context, event: "uninstalled")
        }
    }

    func handle(_ request: Request, context: AppRequestContext, event: String) async throws -> Response {
        let body = try await request.body.collect(upTo: context.maxUploadSize)
        guard let payload = try? JSONDecoder().decode(LifecyclePayload.self, from: body) else {
            throw HTTPError(.badRequest, message: "body is not a lifecycle JSON object")
        }
        if let problem = payload.problem(for: event, appKey: appKey) {
            throw HTTPError(.badRequest, message: problem)
        }
        let clientKey = payload.clientKey!
        do {
            let token = try ConnectJWTMiddleware.token(in: request)
            _ = try await verifier.verifyRS256(
                token, method: request.method.rawValue, target: request.uri.description,
                appBaseURL: appBaseURL, clientKey: clientKey, keys: installKeys
            )
        } catch let rejection as TokenRejection {
            context.logger.warning("lifecycle callback refused", metadata: ["event": "\(event)", "reason": "\(rejection.reason)"])
            if rejection == .keyServerUnavailable {
                throw HTTPError(.serviceUnavailable, message: rejection.reason)
            }
            throw HTTPError(.unauthorized, message: rejection.reason)
        }

        if event == "installed" {
            try await tenants.install(TenantInstallation(
                clientKey: clientKey,
                baseURL: LifecyclePayload.acceptableSiteURL(payload.baseUrl!)!,
                displayURL: payload.displayUrl.flatMap(LifecyclePayload.acceptableSiteURL),
                productType: payload.productType ?? "jira",
                description: payload.description,
                oauthClientID: payload.oauthClientId,
                installationID: payload.installationId,
                sharedSecret: payload.sharedSecret!
            ))
            context.logger.info("tenant installed", metadata: ["tenant": "\(clientKey)", "site": "\(payload.baseUrl!)"])
        } else {
            let known = try await tenants.uninstall(clientKey: clientKey)
            context.logger.info("tenant uninstalled", metadata: ["tenant": "\(clientKey)", "known": "\(known)"])
        }
        return Response(status: .noContent)
    }
}
