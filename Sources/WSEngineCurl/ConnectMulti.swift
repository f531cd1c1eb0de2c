// The multi handle that drives connects on a loop, and the sockets and timer libcurl asks it for.
//
// Two kinds (see CurlConnector for which connect uses which):
// - private: one connect's own multi handle. When the connect ends, its callbacks are turned off and the handle goes
//   on in the connection's CurlHandles (libcurl's I/O needs the easy handle to stay in it);
// - shared: one per event loop (made on the loop's first connect without TLS on its path, cleaned up when the loop
//   ends), for every connect whose socket the transport takes over. Such a connect's easy handle is added, driven,
//   removed and cleaned up on the loop thread only, and no libcurl call is made for it after the takeover, so the
//   multi handle is only ever used by that thread. Removing a CONNECT_ONLY easy handle closes its connection at once
//   (libcurl 8.x, multi.c: "Better close the connection here, at once"; aborted, so nothing is left to shut down
//   later), through CURLOPT_CLOSESOCKETFUNCTION, which here keeps the socket being taken over; CURLOPT_FRESH_CONNECT
//   on every easy handle, and libcurl never reusing a CONNECT_ONLY connection, keep one connect from ever getting
//   another's connection. The multi's DNS cache is shared by the loop's plain connects.
//
// Both kinds work the same way: CURLMOPT_SOCKETFUNCTION → one SocketWatch per socket (epoll, level-triggered, per
// descriptor), CURLMOPT_TIMERFUNCTION → one loop timer; their events call curl_multi_socket_action, and every
// CURLMSG_DONE then goes to the connect of its easy handle.
import CWSCurl
import CWSLinux
import Glibc
import Synchronization
import WSCore
import WSPosix

/// One socket libcurl asked the loop to watch while connecting.
final class SocketWatch: LoopRegistrant, @unchecked Sendable {  // Loop thread only.
    unowned let multi: ConnectMulti
    let fd: Int32
    /// The epoll events currently requested; 0 when not registered.
    var events: UInt32 = 0
    /// Cleared when libcurl no longer wants the socket; stale events are then ignored.
    var active = true

    init(multi: ConnectMulti, fd: Int32) {
        self.multi = multi
        self.fd = fd
    }

    override func handleEvents(_ events: UInt32) {
        guard self.active else { return }
        self.multi.socketEvent(fd: self.fd, events: events)
    }
}

/// A multi handle driving connects on `loop` (see the file comment). Loop thread only.
final class ConnectMulti: @unchecked Sendable {  // Loop thread only (created, used and cleaned up there).
    let loop: CurlEventLoop
    let multi: UnsafeMutableRawPointer
    /// Whether this is the loop's shared multi handle (else one connect's own).
    let shared: Bool
    /// The socket being taken over while its easy handle is removed (shared only); -1 otherwise.
    private var kept: Int32 = -1
    /// Whether libcurl let go of ``kept`` during that removal (its close-socket callback was called for it).
    private var keptReleased = false
    /// The connects whose easy handles are in the multi handle, by easy handle.
    private var connectors: [UnsafeMutableRawPointer: CurlConnector] = [:]
    private var watches: [Int32: SocketWatch] = [:]
    private var timer: LoopTimer?
    private var closed = false

    /// A new multi handle with this object's callbacks; `nil` when libcurl is out of memory.
    init?(loop: CurlEventLoop, shared: Bool) {
        guard let multi = curl_multi_init() else { return nil }
        self.loop = loop
        self.multi = multi
        self.shared = shared
        liveCurlMultiHandles.add(1, ordering: .relaxed)
        createdCurlMultiHandles.add(1, ordering: .relaxed)
        // The loop (dispatcher or connector) keeps this object alive while the callbacks are set.
        cws_curl_multi_set_userdata(multi, Unmanaged.passUnretained(self).toOpaque())
        _ = cws_curl_multi_set_socketfunction(multi) { easy, fd, what, userdata, _ in
            guard let userdata else { return 0 }
            Unmanaged<ConnectMulti>.fromOpaque(userdata).takeUnretainedValue().curlWantsSocket(
                easy: easy, fd: fd, what: what)
            return 0
        }
        _ = cws_curl_multi_set_timerfunction(multi) { _, timeoutMilliseconds, userdata in
            guard let userdata else { return 0 }
            Unmanaged<ConnectMulti>.fromOpaque(userdata).takeUnretainedValue()
                .curlWantsTimer(milliseconds: timeoutMilliseconds)
            return 0
        }
    }

    /// The number of connects in the multi handle and of sockets watched for it (for tests).
    var counts: (connects: Int, watches: Int) { (self.connectors.count, self.watches.count) }

    // MARK: Connects (loop thread, never from inside a libcurl callback)

    /// Sets the close-socket callback of `easy` (a connect of the shared multi), so that a socket being taken over
    /// stays open.
    func keepSockets(of easy: UnsafeMutableRawPointer) -> CURLcode {
        cws_curl_setopt_closesocket(easy, sharedCloseSocket, Unmanaged.passUnretained(self).toOpaque())
    }

    /// Adds `connector`'s easy handle; libcurl starts it from the timer callback (a timeout of 0).
    func add(_ connector: CurlConnector, easy: UnsafeMutableRawPointer) -> CURLMcode {
        let code = curl_multi_add_handle(self.multi, easy)
        if code == CURLM_OK { self.connectors[easy] = connector }
        return code
    }

    /// Removes `easy` from the shared multi handle, which closes every socket of its connection except `keeping`.
    /// - Returns: `false` if libcurl kept the connection of `keeping` (it did not close it at the removal, so it may
    ///   still close that socket later); libcurl 8.x closes a CONNECT_ONLY connection at once.
    @discardableResult
    func remove(_ easy: UnsafeMutableRawPointer, keeping fd: Int32 = -1) -> Bool {
        guard self.connectors.removeValue(forKey: easy) != nil else { return true }
        self.kept = fd
        self.keptReleased = false
        _ = curl_multi_remove_handle(self.multi, easy)
        self.kept = -1
        guard fd >= 0 else { return true }
        // libcurl no longer uses the kept socket: its watch (if libcurl did not say CURL_POLL_REMOVE) goes too.
        self.unwatch(fd)
        if !self.keptReleased { curlConnectionsKeptByLibcurl.add(1, ordering: .relaxed) }
        return self.keptReleased
    }

    /// A private multi handle's connect is over: turn the callbacks off and forget the sockets and the timer (the
    /// handle lives on in the connection's CurlHandles, or is cleaned up with them).
    func detach() {
        _ = cws_curl_multi_set_socketfunction(self.multi, nil)
        _ = cws_curl_multi_set_timerfunction(self.multi, nil)
        self.connectors.removeAll()
        for fd in Array(self.watches.keys) { self.unwatch(fd) }
        self.timer?.cancel()
        self.timer = nil
    }

    /// The loop ends (shared multi; every connect has failed or finished by then): clean the handle up.
    func close() {
        guard !self.closed else { return }
        self.closed = true
        self.detach()
        _ = curl_multi_cleanup(self.multi)
        liveCurlMultiHandles.subtract(1, ordering: .relaxed)
    }

    // MARK: libcurl callbacks (loop thread, from inside curl_multi_* calls)

    /// CURLMOPT_SOCKETFUNCTION: watch `fd` for `what` (CURL_POLL_IN/OUT/INOUT), or stop (CURL_POLL_REMOVE).
    fileprivate func curlWantsSocket(easy: UnsafeMutableRawPointer?, fd: Int32, what: Int32) {
        var events: UInt32 = 0
        switch what {
        case CURL_POLL_IN: events = EPOLLIN.rawValue
        case CURL_POLL_OUT: events = EPOLLOUT.rawValue
        case CURL_POLL_INOUT: events = EPOLLIN.rawValue | EPOLLOUT.rawValue
        default: events = 0
        }
        if events == 0 {
            self.unwatch(fd)
            return
        }
        let watch: SocketWatch
        if let existing = self.watches[fd] {
            watch = existing
        } else {
            watch = SocketWatch(multi: self, fd: fd)
            self.watches[fd] = watch
        }
        guard watch.events != events else { return }
        let result = self.loop.setInterest(fd: fd, events: events, registered: watch.events != 0, data: watch.epollData)
        if result == 0 {
            watch.events = events
        } else if let easy, let connector = self.connectors[easy] {
            // Failing from inside a libcurl callback is not allowed: fail right after this callback.
            self.loop.execute { connector.cannotWatch(error: systemError("epoll_ctl", result)) }
        }
    }

    /// CURLMOPT_TIMERFUNCTION: call curl_multi_socket_action(CURL_SOCKET_TIMEOUT) after `milliseconds`
    /// (-1: no timeout). Never calls libcurl from inside the callback.
    fileprivate func curlWantsTimer(milliseconds: Int) {
        self.timer?.cancel()
        self.timer = nil
        guard milliseconds >= 0 else { return }
        self.timer = self.loop.schedule(afterNanoseconds: UInt64(milliseconds) &* 1_000_000) { [self] in
            self.timer = nil
            self.drive(fd: cws_curl_socket_timeout(), mask: 0)
        }
    }

    /// CURLOPT_CLOSESOCKETFUNCTION of the shared multi's connects: closes `fd` unless it is being taken over.
    fileprivate func closeSocket(_ fd: Int32) -> Int32 {
        guard fd != self.kept else {
            self.keptReleased = true
            return 0
        }
        self.unwatch(fd)  // Before the number can be reused.
        return Glibc.close(fd)
    }

    private func unwatch(_ fd: Int32) {
        guard let watch = self.watches.removeValue(forKey: fd) else { return }
        watch.active = false
        _ = self.loop.setInterest(fd: fd, events: 0, registered: watch.events != 0, data: watch.epollData)
        watch.events = 0
        self.loop.retire(watch)
    }

    // MARK: Driving libcurl (loop thread)

    /// An epoll event on a watched socket.
    fileprivate func socketEvent(fd: Int32, events: UInt32) {
        var mask: Int32 = 0
        if events & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLRDHUP.rawValue) != 0 { mask |= CURL_CSELECT_IN }
        if events & EPOLLOUT.rawValue != 0 { mask |= CURL_CSELECT_OUT }
        if events & EPOLLERR.rawValue != 0 { mask |= CURL_CSELECT_ERR }
        self.drive(fd: fd, mask: mask)
    }

    private func drive(fd: Int32, mask: Int32) {
        var running: Int32 = 0
        let code = curl_multi_socket_action(self.multi, fd, mask, &running)
        guard code == CURLM_OK else {
            // A failure of the multi handle itself (out of memory, internal error): every connect in it fails.
            let text = String(cString: curl_multi_strerror(code))
            for connector in Array(self.connectors.values) { connector.multiFailed(text) }
            return
        }
        // Each finished connect removes its easy handle before the next message is read.
        var easy: UnsafeMutableRawPointer?
        var result = CURLE_OK
        while cws_curl_multi_next_done(self.multi, &easy, &result) != 0 {
            guard let done = easy, let connector = self.connectors[done] else { continue }
            connector.transferDone(result)
        }
    }
}

/// CURLOPT_CLOSESOCKETFUNCTION of the shared multi's connects (CURLOPT_CLOSESOCKETDATA is the ConnectMulti, which
/// outlives every connection of its handle: they are all closed by curl_multi_cleanup at the latest).
private let sharedCloseSocket: curl_closesocket_callback = { clientp, socket in
    guard let clientp else { return Glibc.close(socket) }
    return Unmanaged<ConnectMulti>.fromOpaque(clientp).takeUnretainedValue().closeSocket(socket)
}
