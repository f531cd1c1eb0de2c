// The write queue both engines keep per connection. The CIO engine batches it into sendmsg (`withIOVecs`); the
// Curl engine always sends the head as one piece (`withFirstChunk`), so a send that libcurl reported as blocked
// is retried with exactly the same bytes and length, which OpenSSL requires after SSL_write returned WANT_WRITE.
package import Glibc

/// Decides whether a write made on a loop thread leaves at once or waits for the end of the loop's round, where the
/// round's writes leave together (loop thread only, one per transport).
///
/// A round's first write goes out at once when the transport's last writing round had a single write: request and
/// response traffic (one reply per message received) then costs no copy and no deferral. Once a round produces
/// several writes (a burst, or replies to a batch of reads), the next rounds gather theirs into one system call until
/// a round writes once again.
@usableFromInline package struct RoundWritePolicy {
    @usableFromInline var round: UInt = .max
    @usableFromInline var writesThisRound = 0
    @usableFromInline var writesLastRound = 0

    /// A transport that has not written yet (its first write leaves at once).
    package init() {}

    /// Counts a write made on the loop thread during `round`.
    /// - Returns: Whether it may be sent at once (if nothing is queued before it).
    @inlinable
    package mutating func countWrite(inRound round: UInt) -> Bool {
        if round != self.round {
            if self.round != .max { self.writesLastRound = self.writesThisRound }
            self.round = round
            self.writesThisRound = 0
        }
        self.writesThisRound += 1
        return self.writesThisRound == 1 && self.writesLastRound <= 1
    }
}

/// Gathering chunks that drained write queues gave back, for the next gathering chunk of any transport on the same loop
/// (loop thread only): a connection that keeps sending bursts reuses the same few blocks instead of allocating and
/// freeing one of up to 64 KiB per round, which glibc would hand back to the system (`madvise`) and fault in again.
/// At most ``maxChunks`` are kept per loop, never per connection, so thousands of connections cost nothing extra.
@usableFromInline package final class WriteChunkCache: @unchecked Sendable {  // confined to its loop's thread
    private var chunks: [[UInt8]] = []

    /// The most chunks a loop keeps (each at most ``WriteQueue/gatherLimit`` bytes of capacity and a bit).
    package static let maxChunks = 4
    /// Chunks smaller than this are not kept: malloc serves them from its bins without touching fresh pages.
    package static let minCapacity = 8_192

    /// An empty cache.
    package init() {}

    /// How many chunks are kept (for tests).
    package var count: Int { self.chunks.count }

    /// An empty chunk with the capacity of one given back, if any.
    @usableFromInline func take() -> [UInt8]? {
        self.chunks.popLast()
    }

    /// Keeps `chunk`'s storage (emptied) if there is room and it is worth keeping; else it is freed with `chunk`.
    /// `chunk` must be the only reference to its storage, or emptying it would allocate.
    @usableFromInline func giveBack(_ chunk: inout [UInt8]) {
        guard self.chunks.count < Self.maxChunks, chunk.capacity >= Self.minCapacity,
            chunk.capacity <= 2 * WriteQueue.gatherLimit + 4_096
        else { return }
        chunk.removeAll(keepingCapacity: true)
        self.chunks.append(chunk)
        chunk = []
    }
}

/// The bytes a connection still has to hand to the kernel (or libcurl): a FIFO of chunks with an offset into the first
/// one. Writes are kept as the callers' own arrays (never copied, except the unsent tail of a partly sent one) unless
/// small writes follow each other: those are copied into a chunk of the queue's own that gathers them, so a burst of
/// small messages leaves as one contiguous buffer instead of one iovec each. On the loop thread those chunks come from
/// and go back to the loop's ``WriteChunkCache`` (passed as `spares`). Not thread-safe: it lives inside the
/// connection's Mutex.
@usableFromInline package struct WriteQueue: Sendable {
    /// A queued buffer: a caller's array, or one of the queue's own (a gathering chunk, which may be reused).
    private struct Chunk {
        var bytes: [UInt8]
        /// A gathering chunk the queue made: as the last chunk it takes more small writes, and no one else holds it, so
        /// its storage may go to a ``WriteChunkCache`` once sent.
        var gathers: Bool
    }

    private var chunks: [Chunk] = []
    private var head = 0
    private var headOffset = 0
    /// The last chunk is a caller's small write, kept as it is until another small write follows it.
    private var lastIsSmall = false
    /// The head chunk was handed out by ``withFirstChunk(_:)``: a caller that saw that send block retries with exactly
    /// the same bytes (OpenSSL requires it after WANT_WRITE), so the head chunk must not grow until it is consumed.
    private var headPinned = false
    /// The number of bytes queued.
    @usableFromInline package private(set) var byteCount = 0
    /// Bytes copied into gathering chunks since the queue was last empty.
    private var gatheredSinceEmpty = 0
    /// What the queue gathered before it last became empty: a new gathering chunk starts with that much room (within
    /// ``gatherStart`` ... ``gatherLimit``), so a sender that bursts every round allocates its chunk once per round
    /// instead of doubling it up from 1 KiB, and nothing is kept while the queue is empty.
    private var gatherHint = 0

    /// Writes up to this size are gathered into the queue's own chunks.
    static let smallWrite = 4_096
    /// A gathering chunk's first capacity.
    static let gatherStart = 1_024
    /// A gathering chunk stops taking writes at this size.
    static let gatherLimit = 65_536

    /// Whether nothing is queued.
    @usableFromInline package var isEmpty: Bool { self.byteCount == 0 }

    /// An empty queue.
    package init() {}

    /// Appends `bytes[offset...]` (must be non-empty).
    /// - Parameters:
    ///   - bytes: The caller's array, queued as it is unless it is small and gathered.
    ///   - offset: Where its unsent part starts.
    ///   - spares: The loop's chunk cache when called on the loop thread: a new gathering chunk comes from it.
    package mutating func append(_ bytes: [UInt8], offset: Int, spares: WriteChunkCache? = nil) {
        assert(offset < bytes.count)
        let count = bytes.count - offset
        if count <= Self.smallWrite,
            bytes.withUnsafeBytes({ self.gather(UnsafeRawBufferPointer(rebasing: $0[offset...]), spares: spares) })
        {
            return
        }
        // Kept as the caller's array, not copied: a big write, or a small one that may stay alone (one message per
        // round costs no copy); a small one is gathered with the next small write if one follows.
        self.byteCount += count
        self.lastIsSmall = count <= Self.smallWrite
        if self.head == self.chunks.count {
            self.headOffset = offset
        } else if offset > 0 {
            self.chunks.append(Chunk(bytes: Array(bytes[offset...]), gathers: false))
            return
        }
        self.chunks.append(Chunk(bytes: bytes, gathers: false))
    }

    /// Appends a copy of `bytes` (must be non-empty): small writes go into a chunk of the queue's own, so a sender
    /// that encodes a frame in a temporary buffer allocates nothing per message when messages follow each other.
    /// - Parameters:
    ///   - bytes: What to copy.
    ///   - spares: The loop's chunk cache when called on the loop thread: a new gathering chunk comes from it.
    package mutating func append(copying bytes: UnsafeRawBufferPointer, spares: WriteChunkCache? = nil) {
        assert(!bytes.isEmpty)
        guard bytes.count <= Self.smallWrite else {
            self.append([UInt8](bytes), offset: 0)
            return
        }
        if self.gather(bytes, spares: spares) { return }
        // Small to start with (thousands of connections may each hold one) unless the last burst was bigger; it
        // doubles as writes arrive.
        var gathering = self.newGatheringChunk(self.gatheringCapacity(bytes.count), spares: spares)
        gathering.append(contentsOf: bytes)
        if self.head == self.chunks.count { self.headOffset = 0 }
        self.chunks.append(Chunk(bytes: gathering, gathers: true))
        self.byteCount += bytes.count
        self.gatheredSinceEmpty += bytes.count
        self.lastIsSmall = false
    }

    /// Appends `bytes[offset...]` (must be non-empty): the caller's `array` itself when there is one (`bytes` is its
    /// storage), else a copy.
    /// - Parameters:
    ///   - bytes: The bytes.
    ///   - array: The array whose storage `bytes` is, or `nil`.
    ///   - offset: Where the unsent part starts.
    ///   - spares: The loop's chunk cache when called on the loop thread: a new gathering chunk comes from it.
    @usableFromInline package mutating func append(
        _ bytes: UnsafeRawBufferPointer, array: [UInt8]?, from offset: Int, spares: WriteChunkCache? = nil
    ) {
        if let array {
            self.append(array, offset: offset, spares: spares)
        } else {
            self.append(copying: UnsafeRawBufferPointer(rebasing: bytes[offset...]), spares: spares)
        }
    }

    /// An empty chunk to gather into, with room for at least `capacity` bytes: a cached one when there is one.
    private func newGatheringChunk(_ capacity: Int, spares: WriteChunkCache?) -> [UInt8] {
        var chunk = spares?.take() ?? []
        chunk.reserveCapacity(capacity)
        return chunk
    }

    /// Adds small `bytes` to the last chunk if it is a gathering chunk with room, or gathers them together with the
    /// last chunk if that is a lone small write; `false` if neither applies (nothing was added).
    private mutating func gather(_ bytes: UnsafeRawBufferPointer, spares: WriteChunkCache?) -> Bool {
        let last = self.chunks.count - 1
        // The last chunk may change: it exists and is not a head handed out for a send that may be retried.
        guard last >= self.head, !(last == self.head && self.headPinned) else { return false }
        if self.chunks[last].gathers && self.chunks[last].bytes.count + bytes.count <= Self.gatherLimit {
            self.chunks[last].bytes.append(contentsOf: bytes)
        } else if self.lastIsSmall {
            // A second small write in a row: both go into a chunk of the queue's own, which gathers what follows.
            let start = last == self.head ? self.headOffset : 0
            let previous = self.chunks[last].bytes.count - start
            var gathering = self.newGatheringChunk(self.gatheringCapacity(previous + bytes.count), spares: spares)
            self.chunks[last].bytes.withUnsafeBufferPointer { gathering.append(contentsOf: $0[start...]) }
            self.gatheredSinceEmpty += previous
            gathering.append(contentsOf: bytes)
            self.chunks[last] = Chunk(bytes: gathering, gathers: true)
            if last == self.head { self.headOffset = 0 }
            self.lastIsSmall = false
        } else {
            return false
        }
        self.byteCount += bytes.count
        self.gatheredSinceEmpty += bytes.count
        return true
    }

    /// The capacity of a new gathering chunk that starts with `count` bytes.
    private func gatheringCapacity(_ count: Int) -> Int {
        max(count, min(max(Self.gatherStart, self.gatherHint), Self.gatherLimit))
    }

    /// Drops the first `count` bytes (they reached the kernel or libcurl took them).
    /// - Parameters:
    ///   - count: How many bytes were sent.
    ///   - spares: The loop's chunk cache when called on the loop thread: sent gathering chunks go back to it.
    package mutating func consume(_ count: Int, spares: WriteChunkCache? = nil) {
        var remaining = count
        self.byteCount -= count
        while remaining > 0 {
            let available = self.chunks[self.head].bytes.count - self.headOffset
            if remaining >= available {
                remaining -= available
                if let spares, self.chunks[self.head].gathers {
                    spares.giveBack(&self.chunks[self.head].bytes)
                }
                self.chunks[self.head].bytes = []
                self.head += 1
                self.headOffset = 0
                self.headPinned = false
            } else {
                self.headOffset += remaining
                remaining = 0
            }
        }
        if self.head == self.chunks.count {
            self.chunks.removeAll(keepingCapacity: self.chunks.count <= 64)
            self.head = 0
            self.gatherHint = self.gatheredSinceEmpty
            self.gatheredSinceEmpty = 0
            self.lastIsSmall = false
        } else if self.head >= 32 && self.head * 2 >= self.chunks.count {
            self.chunks.removeFirst(self.head)
            self.head = 0
        }
    }

    /// Drops everything.
    @usableFromInline package mutating func removeAll() {
        self.chunks = []
        self.head = 0
        self.headOffset = 0
        self.byteCount = 0
        self.gatheredSinceEmpty = 0
        self.gatherHint = 0
        self.lastIsSmall = false
        self.headPinned = false
    }

    /// Calls `body` with the unsent part of the first chunk. The chunk does not change until it is consumed, so a send
    /// that blocked can be retried with exactly the same bytes.
    package mutating func withFirstChunk<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        self.headPinned = true
        let offset = self.headOffset
        return self.chunks[self.head].bytes.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[offset...])) }
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
        return self.chunks[self.head + index].bytes.withUnsafeBytes { bytes in
            iovecs[index] = iovec(
                iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress! + offset),
                iov_len: bytes.count - offset)
            return self.fill(iovecs, index: index + 1, count: count, body)
        }
    }
}
