import Glibc
import Testing
import WSPosix

@testable import WSEngineCurl

@Suite("Curl engine helpers")
struct CurlHelperTests {
    @Test("PEM in memory on a libcurl too old for it: the reason names both versions and the ways out")
    func pemTooOld() {
        let what = "trusted CA certificates in memory (CURLOPT_CAINFO_BLOB)"
        let reason = tooOldReason(
            loaded: 0x07_4C_00, loadedText: "7.76.0", minimum: trustPEMVersion, minimumText: "7.77", for: what)
        #expect(
            reason
                == "trusted CA certificates in memory (CURLOPT_CAINFO_BLOB) needs libcurl 7.77 or newer, and this "
                + "process loaded libcurl 7.76.0: give PEM files instead, install a newer libcurl (Debian 12: "
                + "bookworm-backports), or use the CIO engine")
        #expect(
            tooOldReason(
                loaded: 0x07_4D_00, loadedText: "7.77.0", minimum: trustPEMVersion, minimumText: "7.77", for: what)
                == nil)
        #expect(
            tooOldReason(
                loaded: 0x07_46_00, loadedText: "7.70.0", minimum: clientPEMVersion, minimumText: "7.71", for: "x")
                != nil)
    }

    @Test("the reason for a libcurl without WebSockets names the version, the fix and the alternative")
    func unsupportedReason() {
        let reason = LoadedCurl.webSocketUnsupportedReason(
            version: "7.88.1", hasWebSockets: false, initializationFailure: nil)
        #expect(
            reason
                == "the loaded libcurl 7.88.1 was built without WebSocket support (needs 7.86+ with ws/wss; on "
                + "Debian 12 install libcurl4-openssl-dev from bookworm-backports) — use the CIO engine instead")
        #expect(
            LoadedCurl.webSocketUnsupportedReason(version: "8.14.1", hasWebSockets: true, initializationFailure: nil)
                == nil)
        #expect(
            LoadedCurl.webSocketUnsupportedReason(version: "8.14.1", hasWebSockets: true, initializationFailure: "x")?
                .contains("use the CIO engine instead") == true)
    }

    @Test("header values never reach the trace; request and status lines do")
    func headerRedaction() {
        #expect(headerLineWithoutValue("Proxy-Authorization: Basic dGVzdGVyOnB3") == "Proxy-Authorization: <redacted>")
        #expect(headerLineWithoutValue("Authorization:Bearer abc") == "Authorization: <redacted>")
        #expect(headerLineWithoutValue("CONNECT example.com:443 HTTP/1.1") == "CONNECT example.com:443 HTTP/1.1")
        #expect(
            headerLineWithoutValue("HTTP/1.1 407 Proxy Authentication Required")
                == "HTTP/1.1 407 Proxy Authentication Required")
    }

    @Test("URL credentials are removed from libcurl's informational text")
    func credentialRedaction() {
        #expect(
            redactingCredentials("Uses proxy env variable http_proxy == 'http://user:pw@proxy:3128'")
                == "Uses proxy env variable http_proxy == 'http://***@proxy:3128'")
        #expect(
            redactingCredentials("socks5h://a@b:1080 and https://c:d@e/") == "socks5h://***@b:1080 and https://***@e/")
        #expect(redactingCredentials("Connected to 127.0.0.1 port 80") == "Connected to 127.0.0.1 port 80")
        #expect(redactingCredentials("mail me@example.com") == "mail me@example.com")
    }

    @Test("a lone reply per round leaves at once; after a round with several writes, a round's writes wait for its end")
    func roundWritePolicy() {
        var policy = RoundWritePolicy()
        // The write rounds of a session, and whether each write left at once.
        let rounds: [UInt] = [1, 2, 3, 4, 4, 4, 5, 5, 7, 9, 9, 10, 11]
        let atOnce = rounds.map { policy.countWrite(inRound: $0) }
        #expect(
            atOnce == [
                // Request/response traffic: one write per round, each sent at once.
                true, true, true,
                // A burst: its first write still leaves at once (the last round wrote once), the rest wait.
                true, false, false,
                // After a burst, rounds gather even their first write (replies to batches of reads leave together) ...
                false, false, false,
                // ... until a round writes once (7): the next one's first write leaves at once again.
                true, false, false, true,
            ])
    }

    @Test(
        "the write queue keeps a lone write as it is, gathers small writes that follow each other, never grows a head it handed out, and counts bytes"
    )
    func writeQueue() {
        var queue = WriteQueue()
        queue.append([1, 2, 3, 4], offset: 1)
        queue.append([5, 6], offset: 0)
        #expect(queue.byteCount == 5)
        // Small writes are gathered into one piece.
        #expect(queue.withFirstChunk { Array($0) } == [2, 3, 4, 5, 6])
        // A send of that piece may have blocked: it is retried with exactly the same bytes, so it must not grow.
        queue.append([7, 8, 9], offset: 2)
        #expect(queue.byteCount == 6)
        #expect(queue.withFirstChunk { Array($0) } == [2, 3, 4, 5, 6])
        queue.consume(2)
        #expect(queue.withFirstChunk { Array($0) } == [4, 5, 6])
        queue.consume(3)
        #expect(queue.withFirstChunk { Array($0) } == [9])
        queue.consume(1)
        #expect(queue.isEmpty && queue.byteCount == 0)
        // Big writes are queued as they are, from their offset.
        let big = [UInt8](repeating: 7, count: 5_000)
        queue.append(big, offset: 10)
        queue.append([1], offset: 0)
        #expect(queue.byteCount == 4_991)
        #expect(queue.withFirstChunk { $0.count } == 4_990)
        queue.consume(4_990)
        #expect(queue.withFirstChunk { Array($0) } == [1])
        queue.consume(1)
        #expect(queue.isEmpty)
        // A lone small write is queued as it is; a small write after a head handed out starts a new chunk, and the
        // writes after it gather there.
        queue.append([1, 2, 3], offset: 1)
        #expect(queue.withFirstChunk { Array($0) } == [2, 3])
        queue.append([4], offset: 0)
        #expect(queue.withFirstChunk { Array($0) } == [2, 3])
        queue.append([5, 6], offset: 0)
        queue.append([7], offset: 0)
        #expect(queue.byteCount == 6)
        queue.consume(2)
        #expect(queue.withFirstChunk { Array($0) } == [4, 5, 6, 7])
        queue.consume(4)
        #expect(queue.isEmpty)
        // A lone small write that was partly sent (not handed out) is gathered from where the send stopped.
        queue.append([1, 2, 3, 4], offset: 0)
        queue.consume(1)
        queue.append([5], offset: 0)
        #expect(queue.byteCount == 4)
        #expect(queue.withFirstChunk { Array($0) } == [2, 3, 4, 5])
        queue.consume(4)
        #expect(queue.isEmpty)
        // Copied writes (frames encoded in a temporary buffer): gathered, a handed-out head never grows, a big one is
        // queued whole, and they mix with array writes in order.
        [UInt8]([1, 2]).withUnsafeBytes { queue.append(copying: $0) }
        [UInt8]([3]).withUnsafeBytes { queue.append(copying: $0) }
        #expect(queue.withFirstChunk { Array($0) } == [1, 2, 3])
        [UInt8]([4, 5]).withUnsafeBytes { queue.append(copying: $0) }
        queue.append([6], offset: 0)
        let bigCopy = [UInt8](repeating: 9, count: 5_000)
        bigCopy.withUnsafeBytes { queue.append(copying: $0) }
        #expect(queue.byteCount == 5_006)
        #expect(queue.withFirstChunk { Array($0) } == [1, 2, 3])
        queue.consume(3)
        #expect(queue.withFirstChunk { Array($0) } == [4, 5, 6])
        queue.consume(3)
        #expect(queue.withFirstChunk { $0.count } == 5_000)
        queue.consume(5_000)
        #expect(queue.isEmpty && queue.byteCount == 0)
    }

    @Test(
        "a gathering chunk starts with room for what the queue gathered last time it was busy, and forgets it after a quiet spell"
    )
    func writeQueueGatherSizing() {
        var queue = WriteQueue()
        let piece = [UInt8](repeating: 0xAB, count: 500)
        // Where the first chunk's storage is (it moves when the chunk grows past its capacity).
        func firstChunkBase(_ queue: WriteQueue) -> UInt {
            let iov = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
            defer { iov.deallocate() }
            return queue.withIOVecs(iov, limit: 1) { _ in UInt(bitPattern: iov.pointee.iov_base) }
        }
        func burst(_ count: Int) -> [UInt] {
            var bases: [UInt] = []
            for _ in 0..<count {
                piece.withUnsafeBytes { queue.append(copying: $0) }
                bases.append(firstChunkBase(queue))
            }
            return bases
        }
        // The first burst grows its chunk from 1 KiB (the storage moves as it doubles).
        let first = burst(100)
        #expect(Set(first).count > 1)
        queue.consume(50_000)
        #expect(queue.isEmpty)
        // The next burst of the same size stays in the chunk it started with: one allocation, no copying on growth.
        let second = burst(100)
        #expect(Set(second).count == 1)
        #expect(queue.byteCount == 50_000)
        queue.consume(50_000)
        // A quiet spell (two small writes) brings the next chunk back to 1 KiB: it moves again as a burst follows.
        _ = burst(2)
        queue.consume(1_000)
        let third = burst(10)
        #expect(Set(third).count > 1)
        queue.consume(5_000)
        #expect(queue.isEmpty && queue.byteCount == 0)
    }

    @Test(
        "drained gathering chunks go back to the loop's cache (at most four, not small ones, never a caller's array) and the next gathering chunk of any queue reuses one"
    )
    func writeQueueChunkCache() {
        let spares = WriteChunkCache()
        func firstChunkBase(_ queue: WriteQueue) -> UInt {
            let iov = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
            defer { iov.deallocate() }
            return queue.withIOVecs(iov, limit: 1) { _ in UInt(bitPattern: iov.pointee.iov_base) }
        }
        func burst(_ queue: inout WriteQueue, _ count: Int, of size: Int, byte: UInt8) {
            let piece = [UInt8](repeating: byte, count: size)
            for _ in 0..<count { piece.withUnsafeBytes { queue.append(copying: $0, spares: spares) } }
        }
        var queue = WriteQueue()
        // A burst of 50,000 bytes gathers into one chunk; when it is sent, the chunk goes to the cache.
        burst(&queue, 100, of: 500, byte: 1)
        let first = firstChunkBase(queue)
        queue.consume(50_000, spares: spares)
        #expect(queue.isEmpty && spares.count == 1)
        // The next burst, even in another queue, gathers into that chunk's storage (taken, so the cache is empty),
        // and its bytes are its own.
        var other = WriteQueue()
        burst(&other, 1, of: 500, byte: 2)
        #expect(spares.count == 0)
        #expect(firstChunkBase(other) == first)
        burst(&other, 9, of: 500, byte: 3)
        #expect(firstChunkBase(other) == first)
        #expect(
            other.withFirstChunk { Array($0) } == [UInt8](repeating: 2, count: 500)
                + [UInt8](repeating: 3, count: 4_500))
        // Sent off the loop thread (no cache passed), it is freed, not kept.
        other.consume(5_000)
        #expect(other.isEmpty && spares.count == 0)
        // A caller's array is queued as it is and never kept, even when it is big.
        let big = [UInt8](repeating: 9, count: 20_000)
        queue.append(big, offset: 0, spares: spares)
        queue.consume(20_000, spares: spares)
        #expect(spares.count == 0 && big == [UInt8](repeating: 9, count: 20_000))
        // A small gathering chunk (two small writes after a quiet spell: 1 KiB) is left to malloc.
        var quiet = WriteQueue()
        burst(&quiet, 2, of: 100, byte: 4)
        quiet.consume(200, spares: spares)
        #expect(spares.count == 0)
        // Six full chunks (16 writes of 4,000 bytes each, up to the 64 KiB limit): four are kept.
        burst(&queue, 96, of: 4_000, byte: 5)
        queue.consume(384_000, spares: spares)
        #expect(queue.isEmpty && spares.count == WriteChunkCache.maxChunks)
    }

    @Test("durations become libcurl milliseconds of at least 1")
    func milliseconds() {
        #expect(Duration.zero.curlMilliseconds == 1)
        #expect(Duration.microseconds(1500).curlMilliseconds == 2)
        #expect(Duration.seconds(10).curlMilliseconds == 10_000)
        #expect(Duration.seconds(-3).curlMilliseconds == 1)
    }
}
