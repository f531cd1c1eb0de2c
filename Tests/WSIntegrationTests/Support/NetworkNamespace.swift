// A throw-away network namespace joined to the test's namespace by a veth pair (Tests/Fixtures/netns.sh), for
// faults that need a real network path: packets dropped mid-session, a throttled link. Servers are started inside
// it from a thread that has joined the namespace with setns(2); the client stays in the test's namespace.
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A network namespace `ws8-<pid>-<n>` with a veth pair: 10.213.N.1 here, 10.213.N.2 inside. Deleted by
/// ``tearDown()`` (call it in a `defer`).
final class NetworkNamespace: Sendable {
    /// The namespace's name.
    let name: String
    /// The subnet index N.
    let index: Int
    /// The address inside the namespace (where servers listen).
    var insideAddress: String { "10.213.\(self.index).2" }

    private static let counter = Atomic<Int>(0)
    private static let script = TestEnvironment.fixturesDirectory.appendingPathComponent("netns.sh").path

    /// Whether namespaces can be tried here at all: root, `ip` and `tc` present, and not inside the DNS test's child
    /// (which runs in an empty namespace). Checked without running anything, because trait conditions must not
    /// spawn processes; ``create()`` runs the full check (`netns.sh check`) and cancels the test when it fails.
    static let mayBeAvailable: Bool =
        geteuid() == 0
        && ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].contains { FileManager.default.isExecutableFile(atPath: $0) }
        && ["/usr/sbin/tc", "/sbin/tc", "/usr/bin/tc"].contains { FileManager.default.isExecutableFile(atPath: $0) }
        && ProcessInfo.processInfo.environment["WS_TEST_DNS_CHILD"] == nil

    /// Why namespaces cannot be used here, `nil` when they can; the first call runs `netns.sh check` (and sweeps
    /// leftovers of earlier runs), later calls return the same answer.
    static func unavailableReason() async -> String? {
        await ProbeResult.shared.value {
            guard mayBeAvailable else { return "needs root and iproute2 (ip, tc)" }
            let result = await runProcess("/bin/bash", [script, "check"])
            if result.status != 0 {
                return
                    "network namespaces unavailable: \(result.output.trimmingCharacters(in: .whitespacesAndNewlines))"
            }
            _ = await runProcess("/bin/bash", [script, "sweep"])
            return nil
        }
    }

    /// The cached result of the full check.
    private actor ProbeResult {
        /// The one cache.
        static let shared = ProbeResult()
        private var result: String??

        /// The cached answer, computing it on the first call.
        func value(_ compute: @Sendable () async -> String?) async -> String? {
            if let result { return result }
            let computed = await compute()
            self.result = .some(computed)
            return computed
        }
    }

    /// Whether `drop` uses nftables (otherwise it takes the link down).
    static let hasNftables: Bool =
        FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft")
        || FileManager.default.isExecutableFile(atPath: "/sbin/nft")

    /// Wraps a namespace `netns.sh up` created.
    private init(name: String, index: Int) {
        self.name = name
        self.index = index
    }

    /// Creates a namespace and its veth pair (trying another subnet index if one is taken); cancels the running
    /// test (reported as skipped, with the reason) when namespaces do not work here.
    static func create() async throws -> NetworkNamespace {
        if let reason = await Self.unavailableReason() { try Test.cancel(Comment(rawValue: reason)) }
        var failure = ""
        for _ in 0..<5 {
            let n = Self.counter.add(1, ordering: .relaxed).newValue
            let index = Int((UInt32(getpid()) &* 7 &+ UInt32(n)) % 250) + 1
            let name = "ws8-\(getpid())-\(n)"
            let result = await runProcess("/bin/bash", [Self.script, "up", name, String(index)])
            if result.status == 0 { return NetworkNamespace(name: name, index: index) }
            // Another test process may own that subnet index (netns.sh cleaned up what it made): try the next.
            failure = result.output
        }
        throw TestPeerError(description: "netns.sh up failed: \(failure)")
    }

    /// Deletes the namespace and the veth pair.
    func tearDown() async {
        _ = await runProcess("/bin/bash", [Self.script, "down", self.name, String(self.index)])
    }

    /// Silently drops every packet into and out of the namespace.
    func dropAll() async throws {
        let result = await runProcess("/bin/bash", [Self.script, "drop", self.name, String(self.index)])
        guard result.status == 0 else { throw TestPeerError(description: "netns.sh drop failed: \(result.output)") }
    }

    /// Undoes ``dropAll()``: packets flow again.
    func undrop() async throws {
        let result = await runProcess("/bin/bash", [Self.script, "undrop", self.name, String(self.index)])
        guard result.status == 0 else { throw TestPeerError(description: "netns.sh undrop failed: \(result.output)") }
    }

    /// Limits both directions of the veth pair to `rate` (a tc rate such as `1mbit`).
    func shape(rate: String) async throws {
        let result = await runProcess("/bin/bash", [Self.script, "shape", self.name, String(self.index), rate])
        guard result.status == 0 else { throw TestPeerError(description: "netns.sh shape failed: \(result.output)") }
    }

    /// Runs `body` on a thread that has joined the namespace; sockets it creates (a server's listener) live there.
    func inside<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        let path = "/var/run/netns/\(self.name)"
        return try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                let original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
                let target = open(path, O_RDONLY | O_CLOEXEC)
                defer {
                    if original >= 0 { Glibc.close(original) }
                    if target >= 0 { Glibc.close(target) }
                }
                guard original >= 0, target >= 0, joinNamespace(target) else {
                    continuation.resume(
                        throwing: TestPeerError(description: "setns into \(path) failed (errno \(errno))"))
                    return
                }
                let result = Result { try body() }
                _ = joinNamespace(original)
                continuation.resume(with: result)
            }
        }
    }
}

/// setns(2) for a network namespace, looked up at run time (Glibc's module map does not export it).
private func joinNamespace(_ fd: Int32) -> Bool {
    typealias SetNS = @convention(c) (Int32, Int32) -> Int32
    guard let symbol = dlsym(nil, "setns") else { return false }
    let cloneNewNet: Int32 = 0x4000_0000  // CLONE_NEWNET
    return unsafeBitCast(symbol, to: SetNS.self)(fd, cloneNewNet) == 0
}
