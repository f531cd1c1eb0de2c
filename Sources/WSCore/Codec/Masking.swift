import Synchronization

// getrandom(2) is declared by the package's CWSLinux shim; copies of this file compiled elsewhere (Fuzz/, the codec
// benchmarks) have no such module and fill in 256-byte calls of getentropy(3) instead.
#if canImport(CWSLinux)
import CWSLinux
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The 32-bit masking key of a client-to-server frame (RFC 6455 section 5.3), as the four bytes that follow the
/// payload length on the wire.
package struct MaskingKey: Sendable, Hashable {
    /// The key's first byte on the wire; XORed into payload bytes 0, 4, 8, ...
    package var b0: UInt8
    /// The key's second byte; XORed into payload bytes 1, 5, 9, ...
    package var b1: UInt8
    /// The key's third byte; XORed into payload bytes 2, 6, 10, ...
    package var b2: UInt8
    /// The key's fourth byte; XORed into payload bytes 3, 7, 11, ...
    package var b3: UInt8

    /// Creates a key from its four bytes in wire order.
    /// - Parameters:
    ///   - b0: The first byte.
    ///   - b1: The second byte.
    ///   - b2: The third byte.
    ///   - b3: The fourth byte.
    package init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8) {
        self.b0 = b0
        self.b1 = b1
        self.b2 = b2
        self.b3 = b3
    }

    /// The key byte applied to payload byte `index` (`index % 4` selects it).
    /// - Parameter index: A payload byte offset; negative offsets wrap like positive ones.
    @inline(__always)
    package subscript(index: Int) -> UInt8 {
        switch index & 3 {
        case 0: self.b0
        case 1: self.b1
        case 2: self.b2
        default: self.b3
        }
    }

    /// Eight key bytes as they are applied to payload bytes `offset ..< offset + 8`, in memory order (so the
    /// value is correct on any endianness when loaded from or stored to memory).
    @inline(__always)
    fileprivate func pattern(offset: Int) -> UInt64 {
        var pattern: UInt64 = 0
        withUnsafeMutableBytes(of: &pattern) { bytes in
            for i in 0..<8 { bytes[i] = self[offset &+ i] }
        }
        return pattern
    }
}

/// XOR-masks `buffer` in place with `key`, as if the buffer started at byte `offset` of the payload (`offset % 4`
/// selects the key rotation). Masking is its own inverse, so this also unmasks.
///
/// Processes 32 and then 8 bytes at a time with unaligned 64-bit loads and stores, then the tail byte by byte.
/// - Parameters:
///   - key: The masking key.
///   - buffer: The bytes to mask in place.
///   - offset: The position of `buffer`'s first byte within the payload, for masking a payload in pieces.
package func applyMask(_ key: MaskingKey, to buffer: UnsafeMutableRawBufferPointer, offset: Int = 0) {
    guard let base = buffer.baseAddress, buffer.count > 0 else { return }
    applyMask(key, from: UnsafeRawPointer(base), to: base, count: buffer.count, offset: offset)
}

/// XOR-masks `count` bytes from `source` into `destination` in one pass (copy and mask together); `source` and
/// `destination` may be the same memory (masking in place), but must not otherwise overlap.
/// - Parameters:
///   - key: The masking key.
///   - source: The bytes to mask.
///   - destination: Where the masked bytes go.
///   - count: How many bytes.
///   - offset: The position of the first byte within the payload.
package func applyMask(
    _ key: MaskingKey, from source: UnsafeRawPointer, to destination: UnsafeMutableRawPointer, count: Int,
    offset: Int = 0
) {
    guard count > 0 else { return }
    let base = destination
    let pattern = key.pattern(offset: offset)
    var i = 0
    while count &- i >= 32 {
        let a = source.loadUnaligned(fromByteOffset: i, as: UInt64.self)
        let b = source.loadUnaligned(fromByteOffset: i &+ 8, as: UInt64.self)
        let c = source.loadUnaligned(fromByteOffset: i &+ 16, as: UInt64.self)
        let d = source.loadUnaligned(fromByteOffset: i &+ 24, as: UInt64.self)
        base.storeBytes(of: a ^ pattern, toByteOffset: i, as: UInt64.self)
        base.storeBytes(of: b ^ pattern, toByteOffset: i &+ 8, as: UInt64.self)
        base.storeBytes(of: c ^ pattern, toByteOffset: i &+ 16, as: UInt64.self)
        base.storeBytes(of: d ^ pattern, toByteOffset: i &+ 24, as: UInt64.self)
        i &+= 32
    }
    while count &- i >= 8 {
        let a = source.loadUnaligned(fromByteOffset: i, as: UInt64.self)
        base.storeBytes(of: a ^ pattern, toByteOffset: i, as: UInt64.self)
        i &+= 8
    }
    // `i` is a multiple of 8, so the tail starts at the pattern's first byte again.
    withUnsafeBytes(of: pattern) { patternBytes in
        var j = 0
        while i < count {
            base.storeBytes(
                of: source.load(fromByteOffset: i, as: UInt8.self) ^ patternBytes[j],
                toByteOffset: i,
                as: UInt8.self
            )
            i &+= 1
            j &+= 1
        }
    }
}

/// XOR-masks an array in place with `key`, as the raw-buffer overload does.
/// - Parameters:
///   - key: The masking key.
///   - bytes: The bytes to mask in place.
///   - offset: The position of `bytes`' first byte within the payload.
package func applyMask(_ key: MaskingKey, to bytes: inout [UInt8], offset: Int = 0) {
    bytes.withUnsafeMutableBytes { applyMask(key, to: $0, offset: offset) }
}

/// Masking keys from a CSPRNG (Linux `getrandom(2)`), fetched in batches so that a key costs no system call on
/// average. A session that sends a few frames stays small: its first 16 keys (a 64-byte pool) come from
/// ``SharedKernelRandom``, so opening sessions share one system call. A session that keeps sending gets larger
/// batches, each four times the last: 64 keys, then 256, then 1,024 per call (a 4 KiB pool), so a stream of small
/// messages makes one `getrandom` per 1,024 frames instead of one per 64. Every byte of a batch is used once.
///
/// Not thread-safe: a value type owned by one sender (copies share nothing and draw fresh randomness, but a
/// copy made before a refill repeats the keys still buffered, so do not copy a generator to get "another" one).
package struct MaskingKeyGenerator: Sendable {
    /// The first batch (16 keys), served from ``SharedKernelRandom``.
    package static let firstBatchSize = 64
    /// The largest batch (1,024 keys): the pool a session that keeps sending holds.
    package static let largestBatchSize = 4_096
    private var pool: [UInt8] = []
    private var index = 0

    /// Creates a generator; the first call to ``next()`` fetches the first batch.
    package init() {}

    /// The size of the current batch in bytes (0 before the first key).
    package var batchSize: Int { self.pool.count }

    /// The next random masking key.
    @inline(__always)
    package mutating func next() -> MaskingKey {
        self.next(refillingWith: fillRandom)
    }

    /// The next masking key, refilling the pool with `fill` when it is used up (tests pass a deterministic source).
    /// - Parameter fill: Fills its buffer with fresh random bytes.
    @inline(__always)
    package mutating func next(refillingWith fill: (UnsafeMutableRawBufferPointer) -> Void) -> MaskingKey {
        if self.index &+ 4 > self.pool.count { self.refill(fill) }
        let i = self.index
        self.index = i &+ 4
        return self.pool.withUnsafeBufferPointer { p in MaskingKey(p[i], p[i &+ 1], p[i &+ 2], p[i &+ 3]) }
    }

    @inline(never)
    private mutating func refill(_ fill: (UnsafeMutableRawBufferPointer) -> Void) {
        let size =
            self.pool.isEmpty ? Self.firstBatchSize : min(self.pool.count &* 4, Self.largestBatchSize)
        if self.pool.count != size { self.pool = [UInt8](repeating: 0, count: size) }
        self.pool.withUnsafeMutableBytes { fill($0) }
        self.index = 0
    }
}

/// Fills `buffer` from the kernel CSPRNG (`getrandom(2)`, retrying on EINTR and after a short read), falling back to
/// ``SystemRandomNumberGenerator`` where that call is unavailable. Requests under 256 bytes (a handshake key, a new
/// session's first masking keys) are served from ``SharedKernelRandom``, so opening a session costs a fraction of a
/// system call instead of two.
func fillRandom(_ buffer: UnsafeMutableRawBufferPointer) {
    if buffer.count < SharedKernelRandom.capacity {
        SharedKernelRandom.fill(buffer)
    } else {
        fillFromKernel(buffer)
    }
}

/// Fills `buffer` (any size) with `getrandom(2)`: one call up to 256 bytes, which the kernel never cuts short once
/// its generator is seeded; a larger request may return early when a signal arrives, so the rest is asked for
/// again (and EINTR retried). Where the call fails (ENOSYS on an ancient kernel, or a seccomp filter) the rest comes
/// from the standard library's generator.
func fillFromKernel(_ buffer: UnsafeMutableRawBufferPointer) {
    guard let base = buffer.baseAddress else { return }
    var filled = 0
    #if canImport(CWSLinux)
    while filled < buffer.count {
        let result = getrandom(base + filled, buffer.count - filled, 0)
        if result > 0 {
            filled += result
        } else if result < 0 && errno == EINTR {
            continue
        } else {
            break
        }
    }
    #else
    while filled < buffer.count, getentropy(base + filled, min(256, buffer.count - filled)) == 0 {
        filled += min(256, buffer.count - filled)
    }
    #endif
    guard filled < buffer.count else { return }
    var rng = SystemRandomNumberGenerator()
    while filled < buffer.count {
        let word = rng.next()
        withUnsafeBytes(of: word) { wordBytes in
            let n = min(8, buffer.count - filled)
            for k in 0..<n { base.storeBytes(of: wordBytes[k], toByteOffset: filled + k, as: UInt8.self) }
            filled += n
        }
    }
}

/// A process-wide buffer of kernel CSPRNG output, handed out in slices: every byte goes to one caller once and is
/// cleared when taken. Safe to share: the bytes are independent, and what they become (masking keys, handshake
/// nonces) is sent in clear anyway; what matters is that nobody can predict them before they are sent.
enum SharedKernelRandom {
    /// The pool's size: what one `getrandom` call returns without being cut short.
    static let capacity = 256

    /// The pool's storage (allocated once, never freed).
    private struct Storage: @unchecked Sendable {  // read and written only under `pool`'s Mutex
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: SharedKernelRandom.capacity, alignment: 8)
    }

    private struct Pool: ~Copyable {
        let storage = Storage()
        /// Bytes before `next` were handed out (and cleared).
        var next = SharedKernelRandom.capacity
    }

    private static let pool = Mutex(Pool())

    /// Fills `buffer` (fewer than ``capacity`` bytes) with unused bytes of the pool, refilling it first if it has too few.
    static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let target = buffer.baseAddress, buffer.count > 0 else { return }
        precondition(buffer.count < Self.capacity, "SharedKernelRandom serves fewer than \(Self.capacity) bytes")
        Self.pool.withLock { pool in
            if pool.next + buffer.count > Self.capacity {
                fillFromKernel(pool.storage.bytes)
                pool.next = 0
            }
            let source = pool.storage.bytes.baseAddress! + pool.next
            target.copyMemory(from: source, byteCount: buffer.count)
            source.initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count)
            pool.next += buffer.count
        }
    }
}
