// The Curl engine's one epoll loop (the thread, wakeups, tasks and timers are WSPosix's PosixEventLoop). It drives
// two kinds of registrants:
// - while connecting, the sockets libcurl asks for through CURLMOPT_SOCKETFUNCTION (one SocketWatch each, with the
//   events libcurl wants), plus libcurl's timeouts (CURLMOPT_TIMERFUNCTION) on the loop's timer heap, for the loop's
//   shared multi handle and for each connect that has its own (see ConnectMulti);
// - once connected, the transport's socket (CURLINFO_ACTIVESOCKET), LEVEL-TRIGGERED, with an interest set that
//   follows the transport's state: EPOLLIN while reading is wanted, EPOLLOUT while bytes are queued, and no
//   registration at all when neither is (so EPOLLHUP/EPOLLERR of a paused idle socket cannot spin the loop).
// Level-triggered is the simple, safe choice here because libcurl, not this module, owns the socket: whatever a
// curl_easy_recv/send left behind is reported again by epoll_wait. (Decrypted bytes that libcurl or OpenSSL
// buffered are not visible to epoll; transports read until CURLE_AGAIN, see CurlTransport.)
import CWSLinux
import Glibc
import WSCore
import WSPosix

/// The Curl engine's loop: the shared epoll loop with the Curl registrants.
typealias CurlEventLoop = PosixEventLoop<CurlLoopDispatcher>

/// Something registered with the loop's epoll instance while connecting; the loop calls ``handleEvents(_:)`` on its
/// thread with the registrant's address, tagged with bit 0, as the epoll data (transports use their untagged address).
class LoopRegistrant: @unchecked Sendable {  // Stateless; handleEvents runs on the loop thread only.
    /// An epoll event for this registrant (loop thread).
    func handleEvents(_ events: UInt32) {}

    /// The epoll data that routes events here: this object's address with bit 0 set (never 0, which is the wakeup
    /// eventfd).
    final var epollData: UInt64 { UInt64(UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())) | 1 }
}

/// How the Curl loop reaches its registrants. Loop thread only.
final class CurlLoopDispatcher: EventLoopDispatcher {
    /// The pending connects and open transports.
    var registrants = LoopRegistrants<CurlConnector, CurlTransport, WebSocketError>()
    /// Scratch iovecs for the `sendmsg` of transports that own their socket, made on the first use.
    private var iovecs: IOVecScratch?
    /// The multi handle of the loop's connects without TLS on their path, made on the first one.
    var connectMulti: ConnectMulti?

    /// The scratch iovecs (loop thread only).
    var iovecScratch: IOVecScratch {
        if let iovecs = self.iovecs { return iovecs }
        let iovecs = IOVecScratch()
        self.iovecs = iovecs
        return iovecs
    }

    /// Routes an event: data with the low bit set is a ``LoopRegistrant``'s address, otherwise a ``CurlTransport``'s.
    func handleEvent(data: UInt64, events: UInt32) {
        if data & 1 == 1 {
            let pointer = UnsafeRawPointer(bitPattern: UInt(data & ~1))!
            Unmanaged<LoopRegistrant>.fromOpaque(pointer).takeUnretainedValue().handleEvents(events)
        } else {
            let pointer = UnsafeRawPointer(bitPattern: UInt(data))!
            Unmanaged<CurlTransport>.fromOpaque(pointer).takeUnretainedValue().handleEvents(events)
        }
    }

    /// Cleans up the shared multi handle (every connect has finished by now).
    func loopDidEnd() {
        self.connectMulti?.close()
        self.connectMulti = nil
    }

    func fail(_ connector: CurlConnector, stopping reason: WebSocketError) { connector.fail(reason) }
    func finish(_ transport: CurlTransport, stopping reason: WebSocketError) {
        transport.finish(error: reason)
    }
}

extension PosixEventLoop where Dispatcher == CurlLoopDispatcher {
    /// Creates the loop and starts its thread; the process being out of descriptors or threads is fatal here.
    static func start(name: String, readBufferSize: Int) -> CurlEventLoop {
        do {
            return try CurlEventLoop(name: name, readBufferSize: readBufferSize, dispatcher: CurlLoopDispatcher())
        } catch {
            preconditionFailure("cannot start the Curl event loop: \(systemError(error.call, error.code))")
        }
    }

    /// The loop's shared multi handle for connects without TLS on their path, made on the first use; `nil` when
    /// libcurl is out of memory (loop thread only).
    var sharedConnectMulti: ConnectMulti? {
        if let multi = self.dispatcher.connectMulti { return multi }
        let multi = ConnectMulti(loop: self, shared: true)
        self.dispatcher.connectMulti = multi
        return multi
    }

    /// Scratch iovecs for `sendmsg` batching (loop thread only).
    var iovecScratch: IOVecScratch { self.dispatcher.iovecScratch }

    // MARK: epoll registration (any thread; callers serialize per descriptor)

    /// Sets the level-triggered interest of `fd` to `events` for the registrant that `data` routes to: adds,
    /// modifies or (for 0) removes the registration. `registered` says whether `fd` is currently registered by it.
    /// - Returns: 0, or the `errno` of a failed `epoll_ctl`.
    func setInterest(fd: Int32, events: UInt32, registered: Bool, data: UInt64) -> Int32 {
        if events == 0 {
            guard registered else { return 0 }
            _ = self.epollControl(EPOLL_CTL_DEL, fd: fd, events: events, data: data)
            return 0
        }
        if registered {
            let result = self.epollControl(EPOLL_CTL_MOD, fd: fd, events: events, data: data)
            guard result == ENOENT else { return result }
            return self.epollControl(EPOLL_CTL_ADD, fd: fd, events: events, data: data)
        }
        let result = self.epollControl(EPOLL_CTL_ADD, fd: fd, events: events, data: data)
        guard result == EEXIST else { return result }
        // A stale registration of a reused descriptor number: take it over.
        return self.epollControl(EPOLL_CTL_MOD, fd: fd, events: events, data: data)
    }
}

/// A session timer on the Curl loop's timer heap (a struct around the loop's timer: returned as an existential, it
/// fits in place and costs no allocation).
struct LoopTimerHandle: WebSocketTransportTimer {
    /// The loop's timer.
    let timer: LoopTimer

    /// Stops the timer from firing (any thread).
    func cancel() { self.timer.cancel() }
}
