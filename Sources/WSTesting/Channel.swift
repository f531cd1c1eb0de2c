import CWSOpenSSL
import Glibc
import Synchronization
import WSCore

/// Why a socket operation failed.
enum ChannelError: Error, CustomStringConvertible {
    /// The deadline passed before the socket was ready.
    case timedOut
    /// The peer closed or reset the connection, or the socket was shut down.
    case closed
    /// A system call failed.
    case system(SystemError)
    /// OpenSSL reported an error.
    case tls(String)

    var description: String {
        switch self {
        case .timedOut: "timed out"
        case .closed: "the connection is closed"
        case .system(let error): error.description
        case .tls(let message): "TLS: \(message)"
        }
    }
}

/// Makes a `SystemError` from the current `errno`.
func systemError(_ call: String, _ code: Int32 = errno) -> SystemError {
    SystemError(errno: code, call: call, text: String(cString: strerror(code)))
}

/// Milliseconds until `deadline` for `poll` (-1 for no deadline, at least 0).
func pollTimeout(until deadline: ContinuousClock.Instant?) -> Int32 {
    guard let deadline else { return -1 }
    let remaining = deadline - .now
    if remaining <= .zero { return 0 }
    let (seconds, attoseconds) = remaining.components
    let ms = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
    return Int32(clamping: ms)
}

/// One accepted TCP connection, plain or TLS, over a non-blocking socket driven with `poll`.
///
/// Reads and writes may happen on different threads at once; writes are serialized by `writeLock`, and every
/// call into the connection's OpenSSL object is serialized by the `ssl` mutex (an `SSL` object is not safe for
/// concurrent use). ``abort()`` may be called from any thread: it only calls `shutdown(2)`, which wakes a blocked
/// reader or writer. The descriptor and the `SSL` object are released in `deinit`, so no other thread can ever
/// use a reused descriptor number.
final class Channel: Sendable {
    let fd: Int32
    private let ssl: Mutex<OpaquePointer?>
    private let writeLock = Mutex<Void>(())
    private let aborted = Atomic<Bool>(false)

    /// Wraps an accepted, non-blocking socket; `ssl` is a fresh server `SSL` object bound to it, or `nil`.
    init(fd: Int32, ssl: sending OpaquePointer?) {
        self.fd = fd
        self.ssl = Mutex(ssl)
    }

    deinit {
        self.ssl.withLock { ssl in
            if let ssl { SSL_free(ssl) }
            ssl = nil
        }
        Glibc.close(self.fd)
    }

    var isTLS: Bool { self.ssl.withLock { $0 != nil } }

    /// Waits until the socket is ready for `events` (POLLIN/POLLOUT), has hung up, or failed.
    private func wait(for events: Int32, until deadline: ContinuousClock.Instant?) throws(ChannelError) {
        var pfd = pollfd(fd: self.fd, events: Int16(events), revents: 0)
        while true {
            if self.aborted.load(ordering: .acquiring) { throw .closed }
            let rc = poll(&pfd, 1, pollTimeout(until: deadline))
            if rc > 0 { return }
            if rc == 0 { throw .timedOut }
            if errno != EINTR { throw .system(systemError("poll")) }
        }
    }

    /// Runs an OpenSSL call on the `SSL` object; returns its result and, when it is not positive, the
    /// `SSL_get_error` code and the error queue's text.
    private func withSSL(_ call: (OpaquePointer) -> Int32) -> (result: Int32, error: Int32, text: String) {
        withSIGPIPESuppressed {
            self.ssl.withLock { ssl -> (Int32, Int32, String) in
                guard let ssl else { return (-1, SSL_ERROR_SYSCALL, "no TLS session") }
                ERR_clear_error()
                let result = call(ssl)
                if result > 0 { return (result, SSL_ERROR_NONE, "") }
                let error = SSL_get_error(ssl, result)
                return (result, error, error == SSL_ERROR_SSL ? Self.errorQueueText() : "")
            }
        }
    }

    /// The text of OpenSSL's error queue on this thread.
    static func errorQueueText() -> String {
        var parts: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            parts.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return parts.isEmpty ? "unknown error" : parts.joined(separator: "; ")
    }

    /// Runs the TLS server handshake (a no-op for plain connections).
    func handshake(until deadline: ContinuousClock.Instant?) throws(ChannelError) {
        guard self.isTLS else { return }
        while true {
            let (result, error, text) = self.withSSL { SSL_accept($0) }
            if result == 1 { return }
            switch error {
            case SSL_ERROR_WANT_READ: try self.wait(for: POLLIN, until: deadline)
            case SSL_ERROR_WANT_WRITE: try self.wait(for: POLLOUT, until: deadline)
            case SSL_ERROR_SSL: throw .tls("handshake failed: \(text)")
            default: throw .closed
            }
        }
    }

    /// Reads what is available, waiting until `deadline` for at least one byte.
    /// - Returns: The number of bytes read; 0 at the end of the stream (also after a reset or ``abort()``).
    func read(into buffer: UnsafeMutableRawBufferPointer, until deadline: ContinuousClock.Instant?)
        throws(ChannelError) -> Int
    {
        if self.aborted.load(ordering: .acquiring) { return 0 }
        if self.isTLS {
            while true {
                let (result, error, text) = self.withSSL {
                    SSL_read($0, buffer.baseAddress, Int32(clamping: buffer.count))
                }
                if result > 0 { return Int(result) }
                switch error {
                case SSL_ERROR_WANT_READ:
                    do { try self.wait(for: POLLIN, until: deadline) } catch .closed { return 0 }
                case SSL_ERROR_WANT_WRITE:
                    do { try self.wait(for: POLLOUT, until: deadline) } catch .closed { return 0 }
                case SSL_ERROR_SSL: throw .tls(text)
                default: return 0  // close_notify, EOF or a reset
                }
            }
        }
        while true {
            let n = recv(self.fd, buffer.baseAddress, buffer.count, 0)
            if n >= 0 { return n }
            let code = errno
            switch code {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK:
                do { try self.wait(for: POLLIN, until: deadline) } catch .closed { return 0 }
            case ECONNRESET, EPIPE, ENOTCONN: return 0
            default: throw .system(systemError("recv", code))
            }
        }
    }

    /// Writes every byte, in order after earlier writes, waiting until `deadline` for the socket to take them.
    func write(_ bytes: UnsafeRawBufferPointer, until deadline: ContinuousClock.Instant?) throws(ChannelError) {
        try self.writeLock.withLock { _ throws(ChannelError) in try self.writeLocked(bytes, until: deadline) }
    }

    /// Like ``write(_:until:)``, but returns `false` instead of waiting past `deadline` for another thread's
    /// write to finish, and instead of throwing.
    func tryWrite(_ bytes: UnsafeRawBufferPointer, until deadline: ContinuousClock.Instant) -> Bool {
        while true {
            let result: Bool? = self.writeLock.withLockIfAvailable { _ in
                do {
                    try self.writeLocked(bytes, until: deadline)
                    return true
                } catch {
                    return false
                }
            }
            if let result { return result }
            if ContinuousClock.now >= deadline { return false }
            usleep(1000)
        }
    }

    private func writeLocked(_ bytes: UnsafeRawBufferPointer, until deadline: ContinuousClock.Instant?)
        throws(ChannelError)
    {
        var offset = 0
        let tls = self.isTLS
        while offset < bytes.count {
            if self.aborted.load(ordering: .acquiring) { throw .closed }
            let start = bytes.baseAddress! + offset
            let remaining = bytes.count - offset
            if tls {
                let (result, error, text) = self.withSSL { SSL_write($0, start, Int32(clamping: remaining)) }
                if result > 0 {
                    offset += Int(result)
                    continue
                }
                switch error {
                case SSL_ERROR_WANT_WRITE: try self.wait(for: POLLOUT, until: deadline)
                case SSL_ERROR_WANT_READ: try self.wait(for: POLLIN, until: deadline)
                case SSL_ERROR_SSL: throw .tls(text)
                default: throw .closed
                }
            } else {
                let n = send(self.fd, start, remaining, Int32(MSG_NOSIGNAL))
                if n >= 0 {
                    offset += n
                    continue
                }
                let code = errno
                switch code {
                case EINTR: continue
                case EAGAIN, EWOULDBLOCK: try self.wait(for: POLLOUT, until: deadline)
                case EPIPE, ECONNRESET, ENOTCONN: throw .closed
                default: throw .system(systemError("send", code))
                }
            }
        }
    }

    /// Ends the sending direction gracefully: a TLS close_notify, then a TCP FIN. Reading still works.
    func shutdownWrite() {
        self.writeLock.withLock { _ in
            if self.isTLS { _ = self.withSSL { SSL_shutdown($0) } }
            _ = Glibc.shutdown(self.fd, Int32(SHUT_WR))
        }
    }

    /// Drops the connection at once in both directions; wakes any thread blocked on it. Safe from any thread.
    func abort() {
        self.aborted.store(true, ordering: .releasing)
        _ = Glibc.shutdown(self.fd, Int32(SHUT_RDWR))
    }

    /// Whether ``abort()`` was called.
    var isAborted: Bool { self.aborted.load(ordering: .acquiring) }
}

// @unchecked Sendable: SSL_CTX is immutable after init; SSL_new on it is thread-safe.
/// An OpenSSL server context loaded from a certificate chain and a private key in PEM files.
final class TLSServerContext: @unchecked Sendable {
    private let context: OpaquePointer

    init(certificateFile: String, privateKeyFile: String) throws(WebSocketTestServerError) {
        ERR_clear_error()
        guard let context = SSL_CTX_new(TLS_server_method()) else {
            throw WebSocketTestServerError("SSL_CTX_new failed: \(Channel.errorQueueText())")
        }
        _ = cws_ssl_ctx_set_min_proto(context, cws_tls1_2_version())
        _ = SSL_CTX_set_options(context, UInt64(cws_ssl_op_no_compression()))
        _ = cws_ssl_ctx_set_mode(context, cws_ssl_mode_partial_write())
        guard SSL_CTX_use_certificate_chain_file(context, certificateFile) == 1 else {
            let text = Channel.errorQueueText()
            SSL_CTX_free(context)
            throw WebSocketTestServerError("cannot load the TLS certificate '\(certificateFile)': \(text)")
        }
        guard SSL_CTX_use_PrivateKey_file(context, privateKeyFile, SSL_FILETYPE_PEM) == 1 else {
            let text = Channel.errorQueueText()
            SSL_CTX_free(context)
            throw WebSocketTestServerError("cannot load the TLS private key '\(privateKeyFile)': \(text)")
        }
        guard SSL_CTX_check_private_key(context) == 1 else {
            let text = Channel.errorQueueText()
            SSL_CTX_free(context)
            throw WebSocketTestServerError("the TLS private key does not match the certificate: \(text)")
        }
        self.context = context
    }

    deinit { SSL_CTX_free(self.context) }

    /// A new server-side `SSL` object bound to `fd`, or `nil` when OpenSSL fails.
    func makeSSL(fd: Int32) -> OpaquePointer? {
        guard let ssl = SSL_new(self.context) else { return nil }
        guard SSL_set_fd(ssl, fd) == 1 else {
            SSL_free(ssl)
            return nil
        }
        SSL_set_accept_state(ssl)
        return ssl
    }
}

/// Runs `body` with SIGPIPE blocked on the calling thread and discards a SIGPIPE that `body` raised, so that
/// OpenSSL's socket writes (plain `write(2)`, no `MSG_NOSIGNAL`) to a closed peer fail with EPIPE instead of
/// killing the process, without changing the process's signal handling.
func withSIGPIPESuppressed<T>(_ body: () -> T) -> T {
    var sigpipe = sigset_t()
    sigemptyset(&sigpipe)
    sigaddset(&sigpipe, SIGPIPE)
    var pendingBefore = sigset_t()
    sigpending(&pendingBefore)
    let wasPending = sigismember(&pendingBefore, SIGPIPE) == 1
    var previousMask = sigset_t()
    pthread_sigmask(SIG_BLOCK, &sigpipe, &previousMask)
    let result = body()
    if !wasPending {
        var pendingAfter = sigset_t()
        sigpending(&pendingAfter)
        if sigismember(&pendingAfter, SIGPIPE) == 1 {
            var noWait = timespec(tv_sec: 0, tv_nsec: 0)
            _ = sigtimedwait(&sigpipe, nil, &noWait)
        }
    }
    pthread_sigmask(SIG_SETMASK, &previousMask, nil)
    return result
}
