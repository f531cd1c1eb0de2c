// Name resolution off the event loops: getaddrinfo blocks, so a small pool of detached pthreads runs it and hands
// each result back through a completion (which hops to the requesting loop).
import CWSLinux
import Glibc
import Synchronization
import WSCore
import WSPosix

/// The result of resolving a host name.
enum ResolveResult: Sendable {
    /// The addresses, in getaddrinfo's (RFC 6724) order.
    case success([SocketAddress])
    /// Why resolution failed (`.dnsFailure`).
    case failure(WebSocketError)
}

/// A pool of up to `maxThreads` resolver threads, started on demand and stopped by ``stop()``.
final class Resolver: @unchecked Sendable {  // `state` Mutex; `semaphore` is a thread-safe POSIX semaphore.
    // Thread rules: `state` is a Mutex; `semaphore` is a POSIX semaphore (thread-safe by design), freed in deinit,
    // which runs only after every resolver thread has exited (each thread retains `self`).

    private struct Job {
        let host: String
        let port: Int
        let completion: @Sendable (ResolveResult) -> Void
    }
    private struct State {
        var jobs: [Job] = []
        var head = 0
        var threads = 0
        var idle = 0
        var stopped = false
    }
    private let state = Mutex(State())
    private let semaphore: UnsafeMutablePointer<sem_t>
    private let maxThreads: Int

    init(maxThreads: Int) {
        self.maxThreads = max(1, maxThreads)
        self.semaphore = .allocate(capacity: 1)
        sem_init(self.semaphore, 0, 0)
    }

    deinit {
        sem_destroy(self.semaphore)
        self.semaphore.deallocate()
    }

    /// Resolves `host` on a resolver thread and calls `completion` there.
    /// - Returns: `false` if the resolver has stopped (the completion will not be called).
    func resolve(host: String, port: Int, completion: @escaping @Sendable (ResolveResult) -> Void) -> Bool {
        let (accepted, spawn) = self.state.withLock { state -> (Bool, Bool) in
            guard !state.stopped else { return (false, false) }
            state.jobs.append(Job(host: host, port: port, completion: completion))
            let pending = state.jobs.count - state.head
            if state.idle < pending && state.threads < self.maxThreads {
                state.threads += 1
                state.idle += 1
                return (true, true)
            }
            return (true, false)
        }
        guard accepted else { return false }
        if spawn && startThread(name: "CIO resolver", detached: true, { [self] in self.work() }) == nil {
            // Out of threads: an existing thread takes the job later; with none at all, give the job back.
            let orphaned = self.state.withLock { state -> Bool in
                state.threads -= 1
                state.idle -= 1
                guard state.threads == 0 else { return false }
                state.jobs.removeLast()
                return true
            }
            if orphaned { return false }
        }
        sem_post(self.semaphore)
        return true
    }

    /// Stops the threads once their current lookup ends; queued lookups are dropped.
    func stop() {
        let threads = self.state.withLock { state -> Int in
            state.stopped = true
            state.jobs.removeAll()
            state.head = 0
            return state.threads
        }
        for _ in 0..<threads { sem_post(self.semaphore) }
    }

    private func work() {
        while true {
            while sem_wait(self.semaphore) != 0 && errno == EINTR {}
            let job = self.state.withLock { state -> Job? in
                if state.stopped {
                    state.threads -= 1
                    return nil
                }
                guard state.head < state.jobs.count else { return nil }
                let job = state.jobs[state.head]
                state.head += 1
                if state.head == state.jobs.count {
                    state.jobs.removeAll(keepingCapacity: true)
                    state.head = 0
                }
                state.idle -= 1
                return job
            }
            guard let job else {
                if self.state.withLock({ $0.stopped }) { return }
                continue
            }
            let result = Self.lookup(host: job.host, port: job.port)
            self.state.withLock { $0.idle += 1 }
            job.completion(result)
        }
    }

    /// Runs getaddrinfo (blocking) for TCP addresses of any family.
    static func lookup(host: String, port: Int) -> ResolveResult {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_protocol = Int32(IPPROTO_TCP)
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0 else {
            let reason: String
            var underlying: SystemError?
            if status == EAI_SYSTEM {
                let error = systemError("getaddrinfo")
                reason = error.text
                underlying = error
            } else {
                reason = String(cString: gai_strerror(status))
            }
            return .failure(
                WebSocketError(
                    .dnsFailure, "could not resolve host '\(host)': \(reason)", underlying: underlying))
        }
        defer { freeaddrinfo(list) }
        var addresses: [SocketAddress] = []
        var entry = list
        while let current = entry {
            if let address = current.pointee.ai_addr,
                let socketAddress = SocketAddress(copying: address, length: current.pointee.ai_addrlen)
            {
                addresses.append(socketAddress)
            }
            entry = current.pointee.ai_next
        }
        guard !addresses.isEmpty else {
            return .failure(
                WebSocketError(.dnsFailure, "could not resolve host '\(host)': no IPv4 or IPv6 address"))
        }
        return .success(addresses)
    }
}
