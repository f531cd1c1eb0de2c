// The write queue both engines keep per connection. The CIO engine batches it into sendmsg (`withIOVecs`); the
// Curl engine always sends the head as one piece (`withFirstChunk`), so a send that libcurl reported as blocked
// is retried with exactly the same bytes and length, which OpenSSL requires after SSL_write returned WANT_WRITE.
package import Glibc

/// The bytes a connection still has to hand to the kernel (or libcurl): a FIFO of the callers' own arrays (never
/// copied, except the unsent tail of a partly sent one) with an offset into the first one. Not thread-safe: it lives
/// inside the connection's Mutex.
package struct WriteQueue {
    private var chunks: [[UInt8]] = []
    private var head = 0
    private var headOffset = 0
    /// The number of bytes queued.
    package private(set) var byteCount = 0

    /// Whether nothing is queued.
    package var isEmpty: Bool { self.byteCount == 0 }

    /// An empty queue.
    package init() {}

    /// Appends `bytes[offset...]` (must be non-empty).
    package mutating func append(_ bytes: [UInt8], offset: Int) {
        assert(offset < bytes.count)
        if self.head == self.chunks.count {
            self.headOffset = offset
        } else if offset > 0 {
            self.chunks.append(Array(bytes[offset...]))
            self.byteCount += bytes.count - offset
            return
        }
        self.chunks.append(bytes)
        self.byteCount += bytes.count - offset
    }

    /// Drops the first `count` bytes (they reached the kernel or libcurl took them).
    package mutating func consume(_ count: Int) {
        var remaining = count
        self.byteCount -= count
        while remaining > 0 {
            let available = self.chunks[self.head].count - self.headOffset
            if remaining >= available {
                remaining -= available
                self.chunks[self.head] = []
                self.head += 1
                self.headOffset = 0
            } else {
                self.headOffset += remaining
                remaining = 0
            }
        }
        if self.head == self.chunks.count {
            self.chunks.removeAll(keepingCapacity: self.chunks.count <= 64)
            self.head = 0
        } else if self.head >= 32 && self.head * 2 >= self.chunks.count {
            self.chunks.removeFirst(self.head)
            self.head = 0
        }
    }

    /// Drops everything.
    package mutating func removeAll() {
        self.chunks = []
        self.head = 0
        self.headOffset = 0
        self.byteCount = 0
    }

    /// Calls `body` with the unsent part of the first chunk.
    package func withFirstChunk<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        let offset = self.headOffset
        return self.chunks[self.head].withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[offset...])) }
    }

    /// Fills `iovecs` with up to `limit` chunks (the first from its offset) and calls `body` with the count,
    /// while the chunks' storage is pinned.
    package func withIOVecs<Result>(
        _ iovecs: UnsafeMutablePointer<iovec>, limit: Int, _ body: (Int) -> Result
    ) -> Result {
        let count = min(limit, self.chunks.count - self.head)
        return self.fill(iovecs, index: 0, count: count, body)
    }

    private func fill<Result>(
        _ iovecs: UnsafeMutablePointer<iovec>, index: Int, count: Int, _ body: (Int) -> Result
    ) -> Result {
        if index == count { return body(count) }
        let offset = index == 0 ? self.headOffset : 0
        return self.chunks[self.head + index].withUnsafeBytes { bytes in
            iovecs[index] = iovec(
                iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress! + offset),
                iov_len: bytes.count - offset)
            return self.fill(iovecs, index: index + 1, count: count, body)
        }
    }
}
