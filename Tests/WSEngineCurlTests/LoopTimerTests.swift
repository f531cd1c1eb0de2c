// The shared event loop's timer heap (WSPosix, used by both engines): timers scheduled from any thread fire once,
// cancelled ones never fire, and cancelled entries leave the heap once they are half of it instead of staying until
// their deadlines.
import EngineTestSupport
import Glibc
import Synchronization
import Testing
import WSPosix

/// A loop with no sockets: only tasks and timers.
private final class NoSockets: EventLoopDispatcher {
    var registrants = LoopRegistrants<NoSockets, NoSockets, String>()
    func handleEvent(data: UInt64, events: UInt32) {}
    func fail(_ connector: NoSockets, stopping reason: String) {}
    func finish(_ transport: NoSockets, stopping reason: String) {}
}

private final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

@Suite("Event-loop timers")
struct LoopTimerTests {
    @Test("cancelled timers never fire and leave the heap once they are half of it; the others still fire")
    func cancelledTimersLeaveTheHeap() async throws {
        let loop = try PosixEventLoop(name: "timer test", readBufferSize: 1024, dispatcher: NoSockets())
        defer {
            loop.initiateStop(error: "test over")
            pthread_join(loop.thread, nil)
        }
        let cancelledFired = Counter()
        let kept = Counter()
        let doomed = (0..<150).map { _ in
            loop.scheduleFromAnyThread(after: .milliseconds(200)) { cancelledFired.value.add(1, ordering: .relaxed) }
        }
        let others = (0..<50).map { _ in loop.scheduleFromAnyThread(after: .seconds(60)) {} }
        _ = loop.scheduleFromAnyThread(after: .milliseconds(100)) { kept.value.add(1, ordering: .relaxed) }
        for timer in doomed { timer.cancel() }
        // Two loop rounds: the first puts the timers on the heap, the second starts after the loop looked at it.
        let count = await withCheckedContinuation { (continuation: CheckedContinuation<Int, Never>) in
            loop.execute { loop.execute { continuation.resume(returning: loop.timerCount) } }
        }
        #expect(count == 51, "150 of 201 timers were cancelled; \(count) are still on the heap")
        // A timer due after the cancelled ones: once it fired, so would have any of them that was still armed.
        let marker = Counter()
        _ = loop.scheduleFromAnyThread(after: .milliseconds(300)) { marker.value.add(1, ordering: .relaxed) }
        #expect(await eventually { marker.value.load(ordering: .relaxed) == 1 })
        #expect(kept.value.load(ordering: .relaxed) == 1)
        #expect(cancelledFired.value.load(ordering: .relaxed) == 0)
        for timer in others { timer.cancel() }
    }

    @Test("loop-thread timers cancelled and rescheduled again and again do not pile up on the heap")
    func rescheduledLoopTimers() async throws {
        let loop = try PosixEventLoop(name: "timer test", readBufferSize: 1024, dispatcher: NoSockets())
        defer {
            loop.initiateStop(error: "test over")
            pthread_join(loop.thread, nil)
        }
        // As libcurl's timer callback does: every call replaces the previous timer.
        let count = await withCheckedContinuation { (continuation: CheckedContinuation<Int, Never>) in
            loop.execute {
                var current: LoopTimer?
                for i in 0..<1_000 {
                    current?.cancel()
                    // Each new deadline is earlier, so the live timer sits on top of the dead ones.
                    current = loop.schedule(afterNanoseconds: 60_000_000_000 - UInt64(i) * 1_000_000) {}
                }
                loop.execute { continuation.resume(returning: loop.timerCount) }
            }
        }
        #expect(count < 100, "999 of 1,000 timers were cancelled; \(count) are still on the heap")
    }
}
