// A reader for the subset of TOML that Petrel's configuration and policy files
// use: comments, [tables] and [dotted.tables], bare and quoted keys, basic and
// literal strings, integers (with _), floats, booleans and (multi-line) arrays.
// TOMLKit, the usual library, needs a package this machine does not have.

public indirect enum TOMLValue: Equatable, Sendable {
    case string(String)
    case integer(Int64)
    case double(Double)
    case bool(Bool)
    case array([TOMLValue])
    case table([String: TOMLValue])

    public var typeName: String {
        switch self {
        case .string: "a string"
        case .integer: "an integer"
        case .double: "a number"
        case .bool: "a boolean"
        case .array: "an array"
        case .table: "a table"
        }
    }
}

public struct TOMLError: Error, CustomStringConvertible, Sendable {
    public var line: Int
    public var message: String
    public var description: String { line > 0 ? "line \(line): \(message)" : message }
}

public enum TOML {
    /// Parses a document into its root table.
    public static func parse(_ text: String) throws(TOMLError) -> [String: TOMLValue] {
        var p = Parser(Array(text.utf8))
        return try p.document()
    }
}

private struct Parser {
    let b: [UInt8]
    var i = 0
    var line = 1
    init(_ b: [UInt8]) { self.b = b }

    func fail(_ m: String) -> TOMLError { TOMLError(line: line, message: m) }
    var atEnd: Bool { i >= b.count }
    var peek: UInt8 { i < b.count ? b[i] : 0 }

    mutating func skipSpaces() { while !atEnd, peek == 0x20 || peek == 0x09 { i += 1 } }
    mutating func skipComment() { if peek == UInt8(ascii: "#") { while !atEnd, peek != 0x0A { i += 1 } } }
    /// Spaces, newlines and comments (inside arrays).
    mutating func skipBlank() {
        while !atEnd {
            if peek == 0x20 || peek == 0x09 || peek == 0x0D {
                i += 1
            } else if peek == 0x0A {
                i += 1
                line += 1
            } else if peek == UInt8(ascii: "#") {
                skipComment()
            } else {
                break
            }
        }
    }
    mutating func endOfLine() throws(TOMLError) {
        skipSpaces()
        skipComment()
        if peek == 0x0D { i += 1 }
        if atEnd { return }
        guard peek == 0x0A else { throw fail("unexpected text after a value") }
        i += 1
        line += 1
    }

    mutating func document() throws(TOMLError) -> [String: TOMLValue] {
        var root: [String: TOMLValue] = [:]
        var current: [String] = []
        var definedTables = Set<[String]>()
        while true {
            skipBlank()
            if atEnd { break }
            if peek == UInt8(ascii: "[") {
                i += 1
                if peek == UInt8(ascii: "[") { throw fail("arrays of tables ([[…]]) are not supported") }
                skipSpaces()
                let path = try keyPath()
                skipSpaces()
                guard peek == UInt8(ascii: "]") else { throw fail("expected ] after the table name") }
                i += 1
                guard definedTables.insert(path).inserted else { throw fail("table [\(path.joined(separator: "."))] is defined twice") }
                try ensureTable(&root, path)
                current = path
                try endOfLine()
                continue
            }
            let path = try keyPath()
            skipSpaces()
            guard peek == UInt8(ascii: "=") else { throw fail("expected = after the key \(path.joined(separator: "."))") }
            i += 1
            skipSpaces()
            let v = try value()
            try insert(&root, current + path, v)
            try endOfLine()
        }
        return root
    }

    mutating func keyPath() throws(TOMLError) -> [String] {
        var parts: [String] = []
        while true {
            skipSpaces()
            parts.append(try key())
            skipSpaces()
            if peek == UInt8(ascii: ".") {
                i += 1
                continue
            }
            return parts
        }
    }

    mutating func key() throws(TOMLError) -> String {
        if peek == UInt8(ascii: "\"") || peek == UInt8(ascii: "'") { return try string() }
        let start = i
        while !atEnd, isBare(peek) { i += 1 }
        guard i > start else { throw fail("expected a key") }
        return String(decoding: b[start..<i], as: UTF8.self)
    }

    func isBare(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F || c == 0x2D
    }

    mutating func value() throws(TOMLError) -> TOMLValue {
        switch peek {
        case UInt8(ascii: "\""), UInt8(ascii: "'"): return .string(try string())
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "{"): throw fail("inline tables are not supported")
        default:
            let start = i
            while !atEnd, peek != 0x0A, peek != 0x0D, peek != UInt8(ascii: "#"), peek != UInt8(ascii: ","),
                peek != UInt8(ascii: "]"), peek != 0x20, peek != 0x09
            { i += 1 }
            let word = String(decoding: b[start..<i], as: UTF8.self)
            if word == "true" { return .bool(true) }
            if word == "false" { return .bool(false) }
            let digits = String(word.filter { $0 != "_" })
            if let n = Int64(digits) { return .integer(n) }
            if digits.hasPrefix("0x"), let n = Int64(digits.dropFirst(2), radix: 16) { return .integer(n) }
            if let d = Double(digits), digits.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }) { return .double(d) }
            throw fail(word.isEmpty ? "expected a value" : "cannot read the value \"\(word)\"")
        }
    }

    mutating func array() throws(TOMLError) -> TOMLValue {
        i += 1
        var items: [TOMLValue] = []
        while true {
            skipBlank()
            if peek == UInt8(ascii: "]") {
                i += 1
                return .array(items)
            }
            if atEnd { throw fail("unterminated array") }
            items.append(try value())
            skipBlank()
            if peek == UInt8(ascii: ",") {
                i += 1
                continue
            }
            skipBlank()
            guard peek == UInt8(ascii: "]") else { throw fail("expected , or ] in an array") }
        }
    }

    mutating func string() throws(TOMLError) -> String {
        let quote = peek
        i += 1
        var out: [UInt8] = []
        while true {
            guard !atEnd, peek != 0x0A else { throw fail("unterminated string") }
            let c = peek
            i += 1
            if c == quote { break }
            if c == UInt8(ascii: "\\") && quote == UInt8(ascii: "\"") {
                let e = peek
                i += 1
                switch e {
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "u"):
                    guard i + 4 <= b.count, let v = UInt32(String(decoding: b[i..<i + 4], as: UTF8.self), radix: 16),
                        let s = Unicode.Scalar(v)
                    else { throw fail("bad \\u escape") }
                    i += 4
                    out.append(contentsOf: Array(String(Character(s)).utf8))
                default: throw fail("unknown escape \\\(Character(Unicode.Scalar(e)))")
                }
            } else {
                out.append(c)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    func ensureTable(_ t: inout [String: TOMLValue], _ path: [String]) throws(TOMLError) {
        guard let first = path.first else { return }
        var sub: [String: TOMLValue]
        switch t[first] {
        case nil: sub = [:]
        case .table(let s): sub = s
        default: throw fail("\(first) is already a value, not a table")
        }
        try ensureTable(&sub, Array(path.dropFirst()))
        t[first] = .table(sub)
    }

    func insert(_ t: inout [String: TOMLValue], _ path: [String], _ v: TOMLValue) throws(TOMLError) {
        let k = path[0]
        if path.count == 1 {
            guard t[k] == nil else { throw fail("the key \(k) is defined twice") }
            t[k] = v
            return
        }
        var sub: [String: TOMLValue]
        switch t[k] {
        case nil: sub = [:]
        case .table(let s): sub = s
        default: throw fail("\(k) is already a value, not a table")
        }
        try insert(&sub, Array(path.dropFirst()), v)
        t[k] = .table(sub)
    }
}
