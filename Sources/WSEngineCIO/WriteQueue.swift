import CWSOpenSSL
import Glibc

/// The bytes a connection still has to hand to the kernel: a FIFO of the callers' own arrays (never copied) with
/// an offset into the first one. Not thread-safe: it lives inside the connection's Mutex.
struct WriteQueue {
    private var chunks: [[UInt8]] = []
    private var head = 0
    private var headOffset = 0
    /// The number of bytes queued.
    private(set) var byteCount = 0

    /// Whether nothing is queued.
    var isEmpty: Bool { self.byteCount == 0 }

    /// Appends `bytes[offset...]` (must be non-empty).
    mutating func append(_ bytes: [UInt8], offset: Int) {
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

    /// Drops the first `count` bytes (they reached the kernel).
    mutating func consume(_ count: Int) {
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
    mutating func removeAll() {
        self.chunks = []
        self.head = 0
        self.headOffset = 0
        self.byteCount = 0
    }

    /// Calls `body` with the unsent part of the first chunk.
    func withFirstChunk<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        let offset = self.headOffset
        return self.chunks[self.head].withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[offset...])) }
    }

    /// Fills `iovecs` with up to `limit` chunks (the first from its offset) and calls `body` with the count,
    /// while the chunks' storage is pinned.
    func withIOVecs<Result>(
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
