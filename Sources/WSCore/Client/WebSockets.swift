/// The WebSockets plugin: install it in a client's configuration block to set pings, limits, extensions and
/// the content converter. Ktor's `WebSockets` plugin.
///
/// ```swift
/// config.install(WebSockets.self) { ws in
///     ws.pingInterval = .seconds(20)
///     ws.maxFrameSize = 1 << 20
///     try ws.extensions { try $0.install(.perMessageDeflate()) }
/// }
/// ```
/// Without an explicit `install`, sessions use the defaults below.
public enum WebSockets: ClientPlugin {
    /// The plugin's key, `WebSocket`.
    public static let key = "WebSocket"

    /// The default settings.
    public static func defaultConfiguration() -> Configuration { Configuration() }

    /// WebSocket settings. Every limit has a finite, safe default; raise it when you expect bigger data.
    public struct Configuration: Sendable {
        /// How often to send a ping; `nil` (the default) disables pings. When set, a session that gets no pong
        /// within ``pongTimeout`` ends with close code 1011 and ``WebSocketError/Code/pongTimeout``.
        public var pingInterval: Duration? = nil
        /// How long to wait for the pong of a ping; `nil` means the ping interval.
        public var pongTimeout: Duration? = nil
        /// The largest frame accepted from the server, in bytes (default 1 MiB, as Python websockets'
        /// `max_size`). A bigger frame ends the session with close code 1009. Checked from the frame header,
        /// before the payload is buffered: an unlimited default (Ktor's is `Long.MAX_VALUE`) would let any
        /// server make the client allocate without bound. Raise it when you expect bigger frames.
        public var maxFrameSize: Int = 1 << 20
        /// The largest message accepted from the server, after reassembly and decompression (default 1 MiB).
        /// A bigger message ends the session with close code 1009. Raise it when you expect bigger messages.
        public var maxMessageSize: Int = 1 << 20
        /// The most frames one fragmented message may have (default 65,536); more ends the session with 1009.
        /// Bounds the work an endless stream of tiny fragments can cause.
        public var maxFragments: Int = 65_536
        /// Whether received messages are handed over as they arrive, fragment by fragment, instead of whole
        /// (default `false`). With `true`, ``WebSocketSession/receiveStreamingMessage()`` streams each message in
        /// memory bounded by ``maxFrameSize`` and the incoming buffer limits, whatever its size;
        /// ``WebSocketSession/incoming`` yields the fragments (a text or binary frame, then continuation frames, the
        /// last with `fin`); ``WebSocketSession/receiveMessage()`` and ``WebSocketSession/messages`` still
        /// reassemble whole messages up to ``maxMessageSize``. ``maxFragments`` does not apply to streamed
        /// messages; ``maxStreamedMessageSize`` does.
        public var streamsIncomingMessages = false
        /// The largest message accepted from the server when messages are streamed
        /// (``streamsIncomingMessages``), after decompression; `nil` (the default) accepts any size, since a
        /// streamed message is never held whole. A bigger message ends the session with close code 1009.
        public var maxStreamedMessageSize: Int? = nil
        /// The most messages buffered in ``WebSocketSession/incoming`` before the session stops reading from the
        /// network (default 64). Together with ``maxIncomingBufferBytes`` this bounds the memory a slow consumer
        /// can cost.
        public var maxIncomingBufferMessages: Int = 64
        /// The most bytes of messages buffered in ``WebSocketSession/incoming`` before the session stops reading
        /// (default 4 MiB; one message may exceed it).
        public var maxIncomingBufferBytes: Int = 4 << 20
        /// When more than this many bytes wait to be written, `send` suspends until the network has taken them
        /// (default 4 MiB): a slow network slows the sender instead of growing memory. Cancelling the sending task
        /// ends that wait with `CancellationError`; the message stays queued and is sent.
        public var maxOutgoingBufferBytes: Int = 4 << 20
        /// How long to wait for the server's close frame and TCP close after sending ours (default 10 s); then
        /// the connection is dropped.
        public var closeTimeout: Duration = .seconds(10)
        /// The converter for ``WebSocketSession/sendSerialized(_:)`` and
        /// ``WebSocketSession/receiveDeserialized(_:)``; `nil` by default. WSSerialization provides a JSON one.
        public var contentConverter: (any WebSocketContentConverter)? = nil
        /// Whether the block entry points (``WebSocketClient/webSocket(_:request:_:)-(String,_,_)`` and the others) open the
        /// session, run their block and close the session with the session's ``WebSocketSession/executor`` as
        /// their task executor preference (default `true`): the connect, the handshake, code awaiting a message
        /// and the close then continue on the engine thread that delivered their event, with no thread hop, and
        /// what the block sends in reply leaves in the same event-loop round. Like any async code, such a block must not block
        /// its thread (no blocking I/O or long computations without `await`); set `false` to run blocks on the
        /// global concurrent executor instead.
        public var runsBlocksOnEventLoop = true
        /// When a block that runs on its event loop (``runsBlocksOnEventLoop``) holds the loop's thread this long or
        /// longer without suspending — `readLine()`, `sleep`, blocking file or network I/O, a long computation —
        /// the client's logger gets one warning for that session (at most one per session), naming its URL and
        /// saying how to move the blocking work off the loop. Meanwhile the session could not read, answer pings or
        /// run its timers, nor could the other sessions on that loop. Default 500 ms; `nil` turns the check off.
        /// The check times each piece of the block between two suspensions (two clock reads each).
        public var eventLoopHoldWarningThreshold: Duration? = .milliseconds(500)
        /// The extensions offered to the server, in order. Edit with ``extensions(_:)``.
        public var extensionsConfiguration = WebSocketExtensionsConfiguration()

        /// Creates the default settings.
        public init() {}

        /// Configures the extensions to offer (Ktor's `extensions { }` block).
        /// - Parameter block: Installs extension factories.
        public mutating func extensions(_ block: (inout WebSocketExtensionsConfiguration) throws -> Void) rethrows {
            try block(&self.extensionsConfiguration)
        }

        /// The pong timeout in effect.
        var effectivePongTimeout: Duration? { self.pongTimeout ?? self.pingInterval }
    }
}
