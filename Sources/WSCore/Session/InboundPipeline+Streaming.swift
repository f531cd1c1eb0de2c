// The streaming half of the receiving pipeline: with WebSockets.Configuration.streamsIncomingMessages, every data
// frame becomes an event of its own (decompressed by the extensions fragment by fragment, its text cut at a
// character boundary) instead of being reassembled into a whole message.

extension InboundPipeline {
    /// Turns one data frame into the fragment to hand over: a text or binary frame for the first frame of a message
    /// (with `fin` set if it is the only one), then continuation frames, the last with `fin` set.
    /// - Parameters:
    ///   - frame: A data frame from the decoder.
    ///   - dropData: Our close was sent: the frame is checked but not handed over (nor passed to the extensions).
    /// - Returns: The fragment, or `nil` when it is dropped.
    /// - Throws: ``ProtocolViolation`` (the same close codes as whole-message receive) or an extension's error.
    mutating func nextStreamed(_ frame: ParsedFrame, dropData: Bool) throws -> Frame? {
        let (kind, isFirst) = try self.streamer!.begin(frame.opcode)
        if isFirst { self.streamedMessageIsTransformed = !self.extensions.isEmpty && !frame.reservedBits.isEmpty }
        if dropData {
            if frame.fin { self.streamer!.reset() }
            return nil
        }
        var fragment = Frame(
            kind: isFirst ? kind : .continuation, fin: frame.fin, data: frame.payload, reservedBits: frame.reservedBits)
        if !self.extensions.isEmpty {
            // Each fragment inflates to at most maxMessageSize bytes: the bound whole-message receive puts on a
            // message bounds every chunk of a streamed one.
            let context = WebSocketExtensionContext(maxMessageSize: self.maxMessageSize)
            do {
                for ext in self.extensions.reversed() {
                    fragment = try ext.processIncomingFragment(fragment, context: context)
                }
            } catch {
                self.streamer!.reset()
                throw error
            }
        }
        fragment.data = try self.streamer!.chunk(fragment.data, fin: frame.fin)
        fragment.dataIsValidUTF8 = kind == .text
        return fragment
    }
}
