/// The bytes a connection still has to hand to libcurl: a FIFO of the callers' own arrays (never copied, except
/// the unsent tail of a partly sent one) with an offset into the first. Not thread-safe: it lives inside the
/// connection's Mutex.
///
/// The head is always sent as one piece from its offset, so a send that libcurl reported as blocked is retried with
/// exactly the same bytes and length — which OpenSSL requires after SSL_write returned WANT_WRITE.
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
        self.byteCount += bytes.count - offset
        if self.head == self.chunks.count {
            self.headOffset = offset
            self.chunks.append(bytes)
        } else {
            self.chunks.append(offset == 0 ? bytes : Array(bytes[offset...]))
        }
    }

    /// Drops the first `count` bytes (libcurl took them); `count` never exceeds the head's unsent part.
    mutating func consume(_ count: Int) {
        guard count > 0 else { return }
        self.byteCount -= count
        self.headOffset += count
        if self.headOffset == self.chunks[self.head].count {
            self.chunks[self.head] = []
            self.head += 1
            self.headOffset = 0
            if self.head == self.chunks.count {
                self.chunks.removeAll(keepingCapacity: self.chunks.count <= 64)
                self.head = 0
            } else if self.head >= 32 && self.head * 2 >= self.chunks.count {
                self.chunks.removeFirst(self.head)
                self.head = 0
            }
        }
    }

    /// Drops everything.
    mutating func removeAll() {
        self.chunks = []
        self.head = 0
        self.headOffset = 0
        self.byteCount = 0
    }

    /// Calls `body` with the unsent part of the first chunk (the queue must not be empty).
    func withFirstChunk<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        let offset = self.headOffset
        return self.chunks[self.head].withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[offset...])) }
    }
}
