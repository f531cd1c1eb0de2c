// Reading a reconnecting session's state stream in tests, with a wall-clock guard against hanging: shared by the
// in-memory tests (WSTestingTests) and the real-server tests (WSIntegrationTests).
package import Testing
package import WSCore

/// The next state, or `nil` and a recorded test failure after `seconds` of wall-clock time (a guard against hanging,
/// not a wait).
package func nextState(
    _ states: inout AsyncStream<ReconnectingWebSocketSession.State>.Iterator, within seconds: Int = 10,
    sourceLocation: SourceLocation = #_sourceLocation
) async -> ReconnectingWebSocketSession.State? {
    let box = StateIteratorBox(states)
    let state = await withTaskGroup(of: ReconnectingWebSocketSession.State??.self) { group in
        group.addTask { .some(await box.next()) }
        group.addTask {
            try? await Task.sleep(for: .seconds(seconds))
            return nil
        }
        let first = await group.next()!
        group.cancelAll()
        return first
    }
    states = box.iterator
    guard let state else {
        // Cancelling the read ended the subscription: every later call returns nil at once.
        Issue.record("no state change within \(seconds) s (the subscription has ended)", sourceLocation: sourceLocation)
        return nil
    }
    return state
}

/// The first state that is not `connecting`: a connect that succeeds or fails at once may end before the
/// subscription, whose first state is then already the next one.
package func stateAfterConnecting(
    _ states: inout AsyncStream<ReconnectingWebSocketSession.State>.Iterator, within seconds: Int = 10,
    sourceLocation: SourceLocation = #_sourceLocation
) async -> ReconnectingWebSocketSession.State? {
    let state = await nextState(&states, within: seconds, sourceLocation: sourceLocation)
    guard case .connecting = state else { return state }
    return await nextState(&states, within: seconds, sourceLocation: sourceLocation)
}

/// Carries an iterator into a child task and back.
private final class StateIteratorBox: @unchecked Sendable {
    // Safe: only one task at a time uses `iterator` (the child task, then the parent after the group ends).
    var iterator: AsyncStream<ReconnectingWebSocketSession.State>.Iterator
    init(_ iterator: AsyncStream<ReconnectingWebSocketSession.State>.Iterator) { self.iterator = iterator }
    func next() async -> ReconnectingWebSocketSession.State? { await self.iterator.next() }
}
