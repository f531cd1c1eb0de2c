import Instrumentation
import Tracing

/// Whether openings are traced: only when the application bootstrapped an instrument (a tracer, or a propagation-only
/// instrument) or bound a tracer with `withTracer`. Otherwise the opening takes the plain path and costs nothing.
enum OpeningTracing {
    /// Whether an instrument other than the no-op one is in place.
    static var isActive: Bool {
        let instrument = InstrumentationSystem.instrument
        return !(instrument is NoOpInstrument) || !(InstrumentationSystem.tracer is NoOpTracer)
    }
}

/// Writes trace context values into the handshake request's headers (e.g. W3C `traceparent` and `tracestate`).
struct HandshakeHeadersInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout HTTPHeaders) {
        carrier.remove(key)
        carrier.add(key, value)
    }
}

extension SessionOpening {
    /// The traced opening: a client span `WebSocket open` around connect and handshake, with events for the engine's
    /// connect steps and the handshake, and the span's context injected into the upgrade request so the server can
    /// join the trace. With an instrument but no tracer, the current context is injected and no span is made.
    /// Not inlined: its locals (the request, the span) would otherwise enlarge the frame of the untraced opening.
    @inline(never)
    func openTraced() async throws -> WebSocketSession {
        let tracer = InstrumentationSystem.tracer
        guard !(tracer is NoOpTracer) else {
            var request = self.handshake.request
            InstrumentationSystem.instrument.inject(
                ServiceContext.current ?? .topLevel, into: &request.headers, using: HandshakeHeadersInjector())
            return try await self.openPlain(request)
        }
        return try await tracer.withSpan("WebSocket open", ofKind: .client) { span in
            span.attributes["websocket.engine"] = self.engine.name
            span.attributes["server.address"] = self.url.host
            span.attributes["server.port"] = self.url.port
            span.attributes["url.scheme"] = self.url.scheme
            var request = self.handshake.request
            tracer.inject(span.context, into: &request.headers, using: HandshakeHeadersInjector())
            let handshake = self.handshake(for: request)
            var options = self.options(for: handshake)
            options.progress = { step in span.addEvent(SpanEvent(name: "\(step)")) }
            do {
                let transport = try await self.connect(options: options)
                span.addEvent("handshake")
                let session = try await self.handshake(over: transport, handshake)
                span.addEvent("open")
                return session
            } catch {
                self.failed(error)
                span.attributes["websocket.failure"] = ClientMetrics.failureKind(error)
                throw error
            }
        }
    }

    /// Opens without a span, with the request given (it carries the injected context).
    private func openPlain(_ request: WebSocketRequestBuilder) async throws -> WebSocketSession {
        do {
            let handshake = self.handshake(for: request)
            return try await self.handshake(
                over: try await self.connect(options: self.options(for: handshake)), handshake)
        } catch {
            self.failed(error)
            throw error
        }
    }

    /// The connect options for `handshake`: an engine that sends the opening request itself (HTTP/2) gets the one
    /// with the trace headers.
    private func options(for handshake: OpeningHandshake) -> EngineConnectOptions {
        var options = self.options
        if options.openingRequest != nil { options.openingRequest = handshake.openingRequest() }
        return options
    }

    /// The opening handshake for `request` (the prepared one with trace headers added).
    private func handshake(for request: WebSocketRequestBuilder) -> OpeningHandshake {
        OpeningHandshake(request: request, extensionFactories: self.handshake.extensionFactories)
    }
}
