// A real (if minimal) swift-metrics backend for measuring what metrics cost a session: every handler adds to an
// atomic, as a production backend's counters do. Used when WSBENCH_METRICS=counting (Docs/notes/performance-history.md).
import CoreMetrics
import Synchronization

/// A swift-metrics factory whose handlers count into atomics.
final class CountingMetricsFactory: MetricsFactory {
    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler { CountingHandler() }
    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        CountingHandler()
    }
    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler { CountingHandler() }
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        CountingHandler()
    }
    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler { CountingHandler() }
    func destroyCounter(_ handler: any CounterHandler) {}
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    func destroyMeter(_ handler: any MeterHandler) {}
    func destroyRecorder(_ handler: any RecorderHandler) {}
    func destroyTimer(_ handler: any TimerHandler) {}
}

/// Every kind of handler: adds what it is given to one atomic.
private final class CountingHandler: CounterHandler, FloatingPointCounterHandler, MeterHandler, RecorderHandler,
    TimerHandler
{
    let total = Atomic<Int64>(0)
    func increment(by amount: Int64) { self.total.add(amount, ordering: .relaxed) }
    func increment(by amount: Double) { self.total.add(Int64(amount), ordering: .relaxed) }
    func decrement(by amount: Double) { self.total.subtract(Int64(amount), ordering: .relaxed) }
    func reset() { self.total.store(0, ordering: .relaxed) }
    func set(_ value: Int64) { self.total.store(value, ordering: .relaxed) }
    func set(_ value: Double) { self.total.store(Int64(value), ordering: .relaxed) }
    func record(_ value: Int64) { self.total.add(value, ordering: .relaxed) }
    func record(_ value: Double) { self.total.add(Int64(value), ordering: .relaxed) }
    func recordNanoseconds(_ duration: Int64) { self.total.add(duration, ordering: .relaxed) }
}
