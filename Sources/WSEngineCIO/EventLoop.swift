// The CIO engine's epoll loops (the thread, wakeups, tasks and timers are WSPosix's PosixEventLoop). Sockets are
// registered EDGE-TRIGGERED (EPOLLET) once, for EPOLLIN|EPOLLOUT|EPOLLRDHUP, and never modified afterwards: pausing
// reads and queueing writes cost no epoll_ctl. Each registrant remembers that an edge arrived (`readable`) and
// reads until EAGAIN, within a per-wakeup budget (the rest is re-queued as a task, for fairness). Writers get an
// EPOLLOUT edge after any send that returned EAGAIN.
import CWSLinux
import Glibc
import WSCore
import WSPosix

/// A CIO loop: the shared epoll loop with the CIO registrants.
typealias EventLoop = PosixEventLoop<CIOLoopDispatcher>

/// How a CIO loop reaches its registrants, and its scratch iovecs and TLS record buffer. Loop thread only.
final class CIOLoopDispatcher: EventLoopDispatcher {
    /// Scratch iovecs for `sendmsg` batching.
    let iovecScratch = IOVecScratch()
    /// Scratch for gathering queued TLS writes into one record's plaintext (``tlsRecordSize`` bytes), allocated on
    /// the first use: a loop that only runs ws:// never touches it.
    private var tlsRecordScratch: UnsafeMutableRawPointer?
    /// The pending connects and open transports.
    var registrants = LoopRegistrants<Connector, CIOTransport, WebSocketError>()

    init() {}

    deinit {
        self.tlsRecordScratch?.deallocate()
    }

    /// The largest plaintext of one TLS record (2^14 bytes, TLS 1.2 and 1.3).
    static let tlsRecordSize = 16_384

    /// The TLS record scratch buffer, ``tlsRecordSize`` bytes, reused by every write on this loop.
    var tlsRecordBuffer: UnsafeMutableRawPointer {
        if let buffer = self.tlsRecordScratch { return buffer }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.tlsRecordSize, alignment: 16)
        self.tlsRecordScratch = buffer
        return buffer
    }

    /// Routes an event: data with the low bit set is a ``Connector``'s address, otherwise a ``CIOTransport``'s.
    func handleEvent(data: UInt64, events: UInt32) {
        if data & 1 == 1 {
            let pointer = UnsafeRawPointer(bitPattern: UInt(data & ~1))!
            Unmanaged<Connector>.fromOpaque(pointer).takeUnretainedValue().handleEvents(events)
        } else {
            let pointer = UnsafeRawPointer(bitPattern: UInt(data))!
            Unmanaged<CIOTransport>.fromOpaque(pointer).takeUnretainedValue().handleEvents(events)
        }
    }

    func fail(_ connector: Connector, stopping reason: WebSocketError) { connector.fail(reason) }
    func finish(_ transport: CIOTransport, stopping reason: WebSocketError) {
        transport.finish(error: reason)
    }
}

extension PosixEventLoop where Dispatcher == CIOLoopDispatcher {
    /// Creates a loop and starts its thread.
    /// - Throws: `.network` when the process is out of descriptors or threads.
    static func start(name: String, readBufferSize: Int) throws(WebSocketError) -> EventLoop {
        do {
            return try EventLoop(name: name, readBufferSize: readBufferSize, dispatcher: CIOLoopDispatcher())
        } catch {
            let underlying = systemError(error.call, error.code)
            throw WebSocketError(
                .network, "cannot start the CIO event loop: \(underlying)", underlying: underlying)
        }
    }

    /// Scratch iovecs for `sendmsg` batching (loop thread only).
    var iovecScratch: IOVecScratch { self.dispatcher.iovecScratch }
    /// The scratch iovecs (loop thread only).
    var iovecs: UnsafeMutablePointer<iovec> { self.dispatcher.iovecScratch.iovecs }
    /// The number of ``iovecs``: IOV_MAX.
    var iovecCount: Int { self.dispatcher.iovecScratch.count }
    /// Scratch for one TLS record's plaintext, `CIOLoopDispatcher.tlsRecordSize` bytes (loop thread only).
    var tlsRecordBuffer: UnsafeMutableRawPointer { self.dispatcher.tlsRecordBuffer }

    // MARK: Registration (loop thread)

    private static var edgeTriggered: UInt32 {
        EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
    }

    /// Registers `fd` edge-triggered for input and output, with `data` identifying the registrant.
    func register(fd: Int32, data: UInt64) -> Int32 {
        self.epollControl(EPOLL_CTL_ADD, fd: fd, events: Self.edgeTriggered, data: data)
    }

    /// Points an existing registration of `fd` at a new registrant (re-arming the edge).
    func reregister(fd: Int32, data: UInt64) -> Int32 {
        self.epollControl(EPOLL_CTL_MOD, fd: fd, events: Self.edgeTriggered, data: data)
    }

    /// Removes `fd` from epoll (explicitly, before the caller closes it: a forked child may still hold the file).
    func deregister(fd: Int32) {
        _ = self.epollControl(EPOLL_CTL_DEL, fd: fd, events: 0, data: 0)
    }
}

/// A session timer on a CIO loop's timer heap (a struct around the loop's timer: returned as an existential, it
/// fits in place and costs no allocation).
struct LoopTimerHandle: WebSocketTransportTimer {
    /// The loop's timer.
    let timer: LoopTimer

    /// Stops the timer from firing (any thread).
    func cancel() { self.timer.cancel() }
}
