// Child processes for the tests without Foundation's `Process`: posix_spawn(3) with every inherited descriptor
// closed in the child, reaping that never signals a recycled PID, and a run-to-completion helper with stdin, stdout
// and stderr capture and a timeout. A target of its own (SpawnSupport) that every test target spawning processes
// depends on.
//
// Why not `Process`: on Linux its `run()` lists `/proc/self/fd` and copies each entry's whole `d_name`, which reads
// past the directory buffer; with about 1,400 descriptors open (the parallel tests open many) it crashed the test
// process.
import Foundation
import Synchronization

#if canImport(Glibc)
package import Glibc
#endif

/// Why a child process could not be started.
package struct SpawnError: Error, CustomStringConvertible, Sendable {
    /// What failed.
    package let description: String
}

/// Starts `executable arguments` with posix_spawn(3), with the given descriptors as its stdin, stdout and stderr,
/// every other descriptor closed in the child, default signal dispositions and an empty signal mask.
/// - Parameters:
///   - executable: An absolute path (no `PATH` search; use `/usr/bin/env` for that).
///   - environment: The child's whole environment; `nil` passes this process's.
///   - directory: The child's working directory; `nil` keeps this process's.
/// - Returns: The child's process ID; reap it with ``waitForExit(_:)`` or use ``ChildProcess`` instead.
package func spawnProcess(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil, directory: String? = nil,
    stdin: Int32, stdout: Int32, stderr: Int32
) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, stdin, 0)
    posix_spawn_file_actions_adddup2(&actions, stdout, 1)
    posix_spawn_file_actions_adddup2(&actions, stderr, 2)
    SpawnExtensions.closeFrom(3, in: &actions)
    if let directory {
        guard SpawnExtensions.changeDirectory(to: directory, in: &actions) else {
            throw SpawnError(description: "posix_spawn_file_actions_addchdir_np is unavailable (glibc < 2.29)")
        }
    }
    // The child starts with no blocked signals and default handlers (this process may ignore SIGPIPE, and an
    // ignored signal stays ignored across exec), as Foundation's Process does.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    var allSignals = sigset_t()
    sigfillset(&allSignals)
    posix_spawnattr_setsigdefault(&attributes, &allSignals)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    let environment = environment ?? ProcessInfo.processInfo.environment
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        for pointer in argv { free(pointer) }
        for pointer in envp { free(pointer) }
    }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
    guard result == 0 else {
        throw SpawnError(description: "posix_spawn \(executable) failed: \(String(cString: strerror(result)))")
    }
    return pid
}

/// glibc's `_np` file actions, which the Glibc module does not import: looked up at run time.
private enum SpawnExtensions {
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    typealias AddChdir =
        @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32

    /// Adds "close every descriptor from `lowest` up" (glibc 2.34); without it only close-on-exec descriptors close.
    static func closeFrom(_ lowest: Int32, in actions: inout posix_spawn_file_actions_t) {
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return }
        _ = unsafeBitCast(symbol, to: AddCloseFrom.self)(&actions, lowest)
    }

    /// Adds "change to `directory`" (glibc 2.29); `false` when unavailable or it failed.
    static func changeDirectory(to directory: String, in actions: inout posix_spawn_file_actions_t) -> Bool {
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addchdir_np") else { return false }
        return directory.withCString { unsafeBitCast(symbol, to: AddChdir.self)(&actions, $0) } == 0
    }
}

/// Waits (blocking) for a child from ``spawnProcess(_:_:environment:directory:stdin:stdout:stderr:)`` to exit.
/// - Returns: Its exit status, 128 + the signal that ended it, or -1 when it cannot be waited for.
package func waitForExit(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        if errno != EINTR { return -1 }
    }
    return decodeWaitStatus(status)
}

/// A `waitpid` status as an exit status, or 128 + the signal that ended the process.
private func decodeWaitStatus(_ status: Int32) -> Int32 {
    let signal = status & 0x7F
    return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
}

/// A spawned child process that is reaped exactly once and never signalled after that (so a recycled PID is never
/// hit). Its owner must end it: ``terminate(grace:)`` (blocking) or ``terminateInBackground(signal:grace:)``.
package final class ChildProcess: Sendable {
    /// The child's process ID.
    package let pid: pid_t
    /// The exit status once reaped (128 + signal for a signalled child).
    private let reaped = Mutex<Int32?>(nil)

    /// Starts `executable arguments`; see ``spawnProcess(_:_:environment:directory:stdin:stdout:stderr:)``.
    package init(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, directory: String? = nil,
        stdin: Int32, stdout: Int32, stderr: Int32
    ) throws {
        self.pid = try spawnProcess(
            executable, arguments, environment: environment, directory: directory, stdin: stdin, stdout: stdout,
            stderr: stderr)
    }

    /// The exit status, or `nil` while the child runs (reaps it without blocking when it has exited).
    package var exitStatus: Int32? {
        self.reaped.withLock { reaped in
            if reaped == nil {
                var status: Int32 = 0
                let result = waitpid(self.pid, &status, WNOHANG)
                if result == self.pid {
                    reaped = decodeWaitStatus(status)
                } else if result < 0 && errno == ECHILD {
                    reaped = -1
                }
            }
            return reaped
        }
    }

    /// Whether the child still runs.
    package var isRunning: Bool { self.exitStatus == nil }

    /// Sends `signal` unless the child has been reaped.
    package func signal(_ signal: Int32) {
        self.reaped.withLock { reaped in
            if reaped == nil { _ = kill(self.pid, signal) }
        }
    }

    /// Waits (blocking, polling every 5 ms) until the child exits, at most `timeout` when one is given.
    /// - Returns: The exit status, or `nil` when the child still runs.
    @discardableResult
    package func wait(timeout: Duration? = nil) -> Int32? {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            if let status = self.exitStatus { return status }
            if let deadline, ContinuousClock.now >= deadline { return nil }
            usleep(5_000)
        }
    }

    /// Sends `signal` (SIGTERM by default), waits up to `grace`, then SIGKILL; blocks until the child is reaped.
    /// - Returns: The exit status.
    @discardableResult
    package func terminate(signal: Int32 = SIGTERM, grace: Duration = .seconds(5)) -> Int32 {
        self.signal(signal)
        if let status = self.wait(timeout: grace) { return status }
        self.signal(SIGKILL)
        return self.wait() ?? -1
    }

    /// ``terminate(signal:grace:)`` on a thread of its own, so the caller (a cooperative thread, a `deinit`) never
    /// blocks.
    package func terminateInBackground(signal: Int32 = SIGTERM, grace: Duration = .seconds(5)) {
        if self.exitStatus != nil { return }
        self.signal(signal)
        Thread.detachNewThread { self.terminate(signal: signal, grace: grace) }
    }
}

/// What ``runToCompletion(_:_:environment:directory:input:mergeOutput:timeout:gracePeriod:)`` collected.
package struct CompletedProcess: Sendable {
    /// The exit status, or 128 + the signal that ended the process.
    package var status: Int32
    /// Everything written to stdout (and stderr too when merged).
    package var stdout: [UInt8]
    /// Everything written to stderr (empty when merged into `stdout`).
    package var stderr: [UInt8]
    /// Whether the timeout ran out and the process was signalled.
    package var timedOut: Bool

    /// `stdout` as text.
    package var stdoutText: String { String(decoding: self.stdout, as: UTF8.self) }
    /// `stderr` as text.
    package var stderrText: String { String(decoding: self.stderr, as: UTF8.self) }
}

/// Runs `executable arguments` to completion on the calling thread (blocking: call it from a thread of its own,
/// never from the cooperative pool), feeding `input` to its stdin and collecting stdout and stderr.
/// - Parameters:
///   - input: Written to stdin, which is then closed; `nil` gives the child `/dev/null`.
///   - mergeOutput: Send stderr to the stdout pipe (one interleaved stream).
///   - timeout: After this the child gets SIGTERM (SIGKILL `gracePeriod` later), or SIGKILL at once without a
///     `gracePeriod`.
package func runToCompletion(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil, directory: String? = nil,
    input: [UInt8]? = nil, mergeOutput: Bool = false, timeout: Duration, gracePeriod: Duration? = nil
) throws -> CompletedProcess {
    func makePipe() throws -> (read: Int32, write: Int32) {
        guard let ends = closeOnExecPipe() else { throw SpawnError(description: "pipe2() failed (errno \(errno))") }
        return ends
    }
    var opened: [Int32] = []
    defer { for fd in opened { close(fd) } }
    let stdoutPipe = try makePipe()
    opened += [stdoutPipe.read, stdoutPipe.write]
    let stderrPipe = try mergeOutput ? stdoutPipe : makePipe()
    if !mergeOutput { opened += [stderrPipe.read, stderrPipe.write] }
    let childStdin: Int32
    var inputWrite: Int32 = -1
    if input != nil {
        let stdinPipe = try makePipe()
        opened += [stdinPipe.read, stdinPipe.write]
        childStdin = stdinPipe.read
        inputWrite = stdinPipe.write
    } else {
        childStdin = open("/dev/null", O_RDONLY | O_CLOEXEC)
        guard childStdin >= 0 else { throw SpawnError(description: "cannot open /dev/null (errno \(errno))") }
        opened.append(childStdin)
    }
    let child = try ChildProcess(
        executable, arguments, environment: environment, directory: directory, stdin: childStdin,
        stdout: stdoutPipe.write, stderr: stderrPipe.write)

    // From here on this function owns the descriptors it keeps: our read ends and the stdin write end.
    var stdoutRead = stdoutPipe.read
    var stderrRead = mergeOutput ? -1 : stderrPipe.read
    opened.removeAll()
    close(stdoutPipe.write)
    if !mergeOutput { close(stderrPipe.write) }
    close(childStdin)
    if inputWrite >= 0 { _ = fcntl(inputWrite, F_SETFL, fcntl(inputWrite, F_GETFL) | O_NONBLOCK) }
    let pending = input ?? []
    var written = 0
    if inputWrite >= 0 && pending.isEmpty {
        close(inputWrite)
        inputWrite = -1
    }

    var stdout: [UInt8] = []
    var stderr: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    let deadline = ContinuousClock.now + timeout
    var timedOut = false
    var signalledAt: ContinuousClock.Instant?
    var killed = false
    var exitedAt: ContinuousClock.Instant?
    while true {
        let now = ContinuousClock.now
        if exitedAt == nil && child.exitStatus != nil { exitedAt = now }
        if let exitedAt {
            // Done once the output ended; a grandchild that keeps the pipes open gets a second, not forever.
            if (stdoutRead < 0 && stderrRead < 0) || now - exitedAt > .seconds(1) { break }
        } else if let signalledAt {
            if !killed, let gracePeriod, now - signalledAt >= gracePeriod {
                child.signal(SIGKILL)
                killed = true
            }
        } else if now >= deadline {
            timedOut = true
            signalledAt = now
            if gracePeriod == nil {
                child.signal(SIGKILL)
                killed = true
            } else {
                child.signal(SIGTERM)
            }
        }
        if inputWrite >= 0 && exitedAt != nil {
            close(inputWrite)
            inputWrite = -1
        }

        var descriptors: [pollfd] = []
        if stdoutRead >= 0 { descriptors.append(pollfd(fd: stdoutRead, events: Int16(POLLIN), revents: 0)) }
        if stderrRead >= 0 { descriptors.append(pollfd(fd: stderrRead, events: Int16(POLLIN), revents: 0)) }
        if inputWrite >= 0 { descriptors.append(pollfd(fd: inputWrite, events: Int16(POLLOUT), revents: 0)) }
        if descriptors.isEmpty {
            usleep(5_000)
            continue
        }
        let ready = poll(&descriptors, nfds_t(descriptors.count), 20)
        if ready <= 0 { continue }
        for descriptor in descriptors where descriptor.revents != 0 {
            if descriptor.fd == inputWrite {
                let result = pending[written...].withUnsafeBytes { writeWithoutSIGPIPE(inputWrite, $0) }
                if result > 0 { written += result }
                if written == pending.count || (result < 0 && errno != EAGAIN && errno != EINTR) {
                    close(inputWrite)
                    inputWrite = -1
                }
                continue
            }
            let count = chunk.withUnsafeMutableBytes { read(descriptor.fd, $0.baseAddress, $0.count) }
            if count < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            if count > 0 {
                if descriptor.fd == stdoutRead { stdout += chunk[0..<count] } else { stderr += chunk[0..<count] }
                continue
            }
            close(descriptor.fd)
            if descriptor.fd == stdoutRead { stdoutRead = -1 } else { stderrRead = -1 }
        }
    }
    for fd in [stdoutRead, stderrRead, inputWrite] where fd >= 0 { close(fd) }
    let status = child.wait() ?? -1
    return CompletedProcess(status: status, stdout: stdout, stderr: stderr, timedOut: timedOut)
}

/// `write(2)` with SIGPIPE blocked on this thread: a reader that went away gives EPIPE instead of killing the
/// test process. A SIGPIPE the write raised is consumed before the mask is restored.
private func writeWithoutSIGPIPE(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int {
    var block = sigset_t()
    sigemptyset(&block)
    sigaddset(&block, SIGPIPE)
    var previous = sigset_t()
    pthread_sigmask(SIG_BLOCK, &block, &previous)
    let result = write(fd, bytes.baseAddress, bytes.count)
    let code = errno
    if result < 0 && code == EPIPE && sigismember(&previous, SIGPIPE) == 0 {
        var pending = sigset_t()
        sigpending(&pending)
        if sigismember(&pending, SIGPIPE) == 1 {
            var zero = timespec()
            _ = sigtimedwait(&block, nil, &zero)
        }
    }
    pthread_sigmask(SIG_SETMASK, &previous, nil)
    errno = code
    return result
}

/// A pipe whose two ends are close-on-exec, made atomically with pipe2(2) (looked up at run time: the Glibc module
/// does not import it), so a child spawned meanwhile by another thread does not inherit them.
/// - Returns: The read and write ends, or `nil` with `errno` set.
package func closeOnExecPipe() -> (read: Int32, write: Int32)? {
    typealias Pipe2 = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
    var ends: [Int32] = [-1, -1]
    if let symbol = dlsym(nil, "pipe2") {
        guard unsafeBitCast(symbol, to: Pipe2.self)(&ends, O_CLOEXEC) == 0 else { return nil }
    } else {
        guard pipe(&ends) == 0 else { return nil }
        for fd in ends { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    }
    return (ends[0], ends[1])
}

/// Runs `body` on a thread of its own and awaits its result, so blocking process work never holds a thread of the
/// cooperative pool (there are only two on the CI machine).
package func onDedicatedThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}

/// A child that prints the port it listens on as its first line and then serves until its standard input closes:
/// the engine tests' Python peers (`server.py MODE HOST ...`). It exits when this object goes away.
package final class PortAnnouncingChild: Sendable {
    /// The port the child announced.
    package let port: Int
    /// The child.
    package let process: ChildProcess
    /// Our end of the child's stdin; closing it makes the child exit.
    private let stdinWrite: Int32

    /// Starts `/usr/bin/env arguments` and reads the port from its first line of output (blocking; call it with
    /// ``onDedicatedThread(_:)``).
    /// - Parameters:
    ///   - arguments: The command and its arguments, looked up on `PATH`.
    ///   - stderr: Where the child's standard error goes (its stdout pipe if `nil`; the caller keeps the descriptor).
    ///   - what: The child's name for the error when it announces no port.
    package init(_ arguments: [String], stderr: Int32?, what: String) throws {
        guard let input = closeOnExecPipe() else { throw SpawnError(description: "pipe2() failed (errno \(errno))") }
        guard let output = closeOnExecPipe() else {
            close(input.read)
            close(input.write)
            throw SpawnError(description: "pipe2() failed (errno \(errno))")
        }
        defer {
            close(input.read)
            close(output.read)
        }
        let process: ChildProcess
        do {
            process = try ChildProcess(
                "/usr/bin/env", arguments, stdin: input.read, stdout: output.write, stderr: stderr ?? output.write)
        } catch {
            close(input.write)
            close(output.write)
            throw error
        }
        close(output.write)
        guard let port = Int(readLine(output.read).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            close(input.write)
            process.terminateInBackground()
            throw SpawnError(description: "\(what) did not start")
        }
        self.port = port
        self.process = process
        self.stdinWrite = input.write
    }

    deinit {
        close(self.stdinWrite)
        self.process.terminateInBackground()
    }
}

/// Reads from `fd` up to the first newline (or the end of the stream), blocking.
private func readLine(_ fd: Int32) -> String {
    var bytes: [UInt8] = []
    var byte: UInt8 = 0
    while true {
        let count = read(fd, &byte, 1)
        if count < 0 && errno == EINTR { continue }
        if count <= 0 || byte == UInt8(ascii: "\n") { break }
        bytes.append(byte)
    }
    return String(decoding: bytes, as: UTF8.self)
}
