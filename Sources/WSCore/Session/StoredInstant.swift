/// A `ContinuousClock.Instant` in a form whose size the compiler knows, for the state a session keeps.
///
/// `ContinuousClock.Instant` is not frozen (the standard library keeps the right to change its layout), so a struct
/// that holds one has a layout known only at run time: code that reaches a field behind it, or a struct that holds such
/// a struct, asks the type's metadata for the offset first, on every access. The session's state is touched on every
/// message sent and received, so it holds instants as their distance from a reference instant taken once per
/// process: a `Duration`, which is frozen, exact to the attosecond.
struct StoredInstant: Sendable, Hashable {
    /// The instant every stored instant is measured from.
    private static let reference = ContinuousClock.now

    private let sinceReference: Duration

    /// Stores `instant`.
    /// - Parameter instant: An instant of the continuous clock.
    init(_ instant: ContinuousClock.Instant) {
        self.sinceReference = instant - Self.reference
    }

    /// The instant stored.
    var instant: ContinuousClock.Instant { Self.reference + self.sinceReference }
}
