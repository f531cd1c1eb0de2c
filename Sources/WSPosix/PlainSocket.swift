// Plain TCP I/O on a non-blocking socket, shared by the engines' transports for connections without TLS: the CIO
// engine's ws:// connections, and the Curl engine's once it has taken the socket over from libcurl. Each call
// retries EINTR and reports EAGAIN as "blocked", any other errno as a failure for the caller to word. The per-message
// calls (send, recv) are @inlinable, so each engine's transport gets them inline, as when each had its own copy.
// EWOULDBLOCK is EAGAIN on Linux (errno(3)).
public import Glibc  // public: the @inlinable functions below name Glibc declarations

/// Scratch iovecs for `sendmsg` batching, one set per loop (loop thread only).
package final class IOVecScratch {
    /// The iovecs.
    package let iovecs: UnsafeMutablePointer<iovec>
    /// The number of ``iovecs``: IOV_MAX, at most 1,024.
    package let count: Int

    /// Allocates IOV_MAX iovecs (16 when the system does not say).
    package init() {
        let iovMax = sysconf(Int32(_SC_IOV_MAX))
        self.count = iovMax > 0 ? min(iovMax, 1024) : 16
        self.iovecs = .allocate(capacity: self.count)
    }

    deinit { self.iovecs.deallocate() }
}

/// Sends `bytes` with `send(MSG_NOSIGNAL)` until all are taken or the socket is full.
/// - Returns: `.sent(count)`, fewer than `bytes.count` when the socket is full, or `.failed(errno)`.
@inlinable
package func plainSend(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> TransportSendOutcome<Int32> {
    var sent = 0
    while sent < bytes.count {
        let result = Glibc.send(fd, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
        if result >= 0 {
            sent += result
            continue
        }
        let code = errno
        if code == EINTR { continue }
        if code == EAGAIN { break }
        return .failed(code)
    }
    return .sent(sent)
}

/// Sends the queue with `sendmsg(MSG_NOSIGNAL)`, up to `scratch.count` chunks per call, consuming what was sent.
/// - Parameters:
///   - spares: The loop's chunk cache (this runs on the loop thread): sent gathering chunks go back to it.
/// - Returns: `.drained`, `.blocked` when the socket is full, or `.failed(errno)`.
package func plainSendQueue(
    _ fd: Int32, _ queue: inout WriteQueue, _ scratch: IOVecScratch, spares: WriteChunkCache
) -> TransportQueueOutcome<Int32> {
    let iovecs = scratch.iovecs
    while !queue.isEmpty {
        let result = queue.withIOVecs(iovecs, limit: scratch.count) { count -> Int in
            var message = msghdr()
            message.msg_iov = iovecs
            message.msg_iovlen = count
            return sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
        }
        if result >= 0 {
            queue.consume(result, spares: spares)
            continue
        }
        let code = errno
        if code == EINTR { continue }
        if code == EAGAIN { return .blocked }
        return .failed(code)
    }
    return .drained
}

/// What one `recv` produced.
@usableFromInline package enum PlainReceiveResult {
    /// This many bytes (more than 0).
    case data(Int)
    /// The peer ended the stream.
    case endOfStream
    /// Nothing to read now (EAGAIN).
    case wouldBlock
    /// `recv` failed with this errno.
    case failed(Int32)
}

/// One `recv` of up to `capacity` bytes into `buffer`, retried on EINTR.
@inlinable
package func plainReceive(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ capacity: Int) -> PlainReceiveResult {
    while true {
        let result = recv(fd, buffer, capacity, 0)
        if result > 0 { return .data(result) }
        if result == 0 { return .endOfStream }
        let code = errno
        if code == EINTR { continue }
        if code == EAGAIN { return .wouldBlock }
        return .failed(code)
    }
}
