/// An ordered list of HTTP header fields with case-insensitive lookup, as sent in the opening handshake or
/// received in the server's response.
///
/// ```swift
/// request.headers["Authorization"] = "Bearer \(token)"
/// ```
public struct HTTPHeaders: Sendable, Hashable, Sequence, ExpressibleByDictionaryLiteral, CustomStringConvertible {
    /// One header field.
    public struct Field: Sendable, Hashable {
        /// The field name as given.
        public var name: String
        /// The field value.
        public var value: String
        /// Creates a field.
        /// - Parameters:
        ///   - name: The field name.
        ///   - value: The field value.
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    /// The fields in order.
    public private(set) var fields: [Field] = []

    /// Creates an empty header list.
    public init() {}

    /// Makes room for `count` fields, for a parser that knows how many follow.
    mutating func reserveCapacity(_ count: Int) { self.fields.reserveCapacity(count) }

    /// Creates a header list from pairs, in order.
    /// - Parameter elements: Name and value pairs.
    public init(dictionaryLiteral elements: (String, String)...) {
        self.fields = elements.map { Field(name: $0.0, value: $0.1) }
    }

    /// The first value of the field `name` (case-insensitive); setting replaces every field of that name, and
    /// `nil` removes them.
    public subscript(name: String) -> String? {
        get { self.fields.first { Self.equalNames($0.name, name) }?.value }
        set {
            self.remove(name)
            if let newValue { self.fields.append(Field(name: name, value: newValue)) }
        }
    }

    /// Every value of the field `name` (case-insensitive), in order.
    /// - Parameter name: The field name.
    public func values(for name: String) -> [String] {
        self.fields.filter { Self.equalNames($0.name, name) }.map(\.value)
    }

    /// Appends a field, keeping fields of the same name.
    /// - Parameters:
    ///   - name: The field name.
    ///   - value: The field value.
    public mutating func add(_ name: String, _ value: String) {
        self.fields.append(Field(name: name, value: value))
    }

    /// Removes every field named `name` (case-insensitive).
    /// - Parameter name: The field name.
    public mutating func remove(_ name: String) {
        self.fields.removeAll { Self.equalNames($0.name, name) }
    }

    /// Whether a field named `name` exists (case-insensitive).
    /// - Parameter name: The field name.
    public func contains(_ name: String) -> Bool {
        self.fields.contains { Self.equalNames($0.name, name) }
    }

    /// The number of fields.
    public var count: Int { self.fields.count }

    /// Iterates the fields in order.
    public func makeIterator() -> IndexingIterator<[Field]> { self.fields.makeIterator() }

    /// One `Name: value` line per field; values of `Authorization`, `Cookie` and `Proxy-Authorization` are
    /// redacted so headers can be logged safely.
    public var description: String {
        self.fields.map { field in
            let sensitive = ["authorization", "proxy-authorization", "cookie"].contains(Self.lowercase(field.name))
            return "\(field.name): \(sensitive ? "<redacted>" : field.value)"
        }.joined(separator: "\n")
    }

    /// Whether two header names (or other HTTP tokens) are equal ignoring ASCII case, as RFC 9110 compares field
    /// names; non-ASCII bytes must match exactly. Used across WSCore for header, token and extension names.
    /// - Parameters:
    ///   - a: A name.
    ///   - b: The other name.
    package static func equalNames(_ a: String, _ b: String) -> Bool {
        let a = a.utf8
        let b = b.utf8
        guard a.count == b.count else { return false }
        // Native strings: compare their UTF-8 storage directly (an iterator pair per byte otherwise).
        let direct = a.withContiguousStorageIfAvailable { a in
            b.withContiguousStorageIfAvailable { b in
                for i in 0..<a.count where asciiLower(a[i]) != asciiLower(b[i]) { return false }
                return true
            }
        }
        if let direct, let equal = direct { return equal }
        return zip(a, b).allSatisfy { asciiLower($0) == asciiLower($1) }
    }

    /// `s` with ASCII letters lowercased and every other byte unchanged (no locale, no Unicode case mapping), for
    /// comparing and looking up HTTP header names, tokens and URL schemes.
    /// - Parameter s: The text to lowercase.
    package static func lowercase(_ s: String) -> String {
        String(decoding: s.utf8.map(asciiLower), as: UTF8.self)
    }

    @inline(__always)
    private static func asciiLower(_ c: UInt8) -> UInt8 { (c >= 65 && c <= 90) ? c | 0x20 : c }
}
