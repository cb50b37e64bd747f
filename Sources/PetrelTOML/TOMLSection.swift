// Typed, strict access to one table of a TOML document: a key of the wrong type
// or a key nobody knows is an error that names the file's section and key, so a
// typo in a policy is refused instead of silently ignored.

public struct TOMLSection: Sendable {
    public let path: String
    public let values: [String: TOMLValue]

    public init(path: String = "", values: [String: TOMLValue]) {
        self.path = path
        self.values = values
    }

    public init(parsing text: String) throws(TOMLError) {
        self.init(values: try TOML.parse(text))
    }

    func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func wrong(_ key: String, _ want: String, _ got: TOMLValue) -> TOMLError {
        TOMLError(line: 0, message: "\(name(key)) must be \(want), not \(got.typeName)")
    }

    public func section(_ key: String) throws(TOMLError) -> TOMLSection {
        switch values[key] {
        case nil: return TOMLSection(path: name(key), values: [:])
        case .table(let t): return TOMLSection(path: name(key), values: t)
        case let v?: throw wrong(key, "a table", v)
        }
    }

    public func string(_ key: String) throws(TOMLError) -> String? {
        switch values[key] {
        case nil: return nil
        case .string(let s): return s
        case let v?: throw wrong(key, "a string", v)
        }
    }

    public func int(_ key: String) throws(TOMLError) -> Int? {
        switch values[key] {
        case nil: return nil
        case .integer(let n): return Int(n)
        case let v?: throw wrong(key, "an integer", v)
        }
    }

    public func bool(_ key: String) throws(TOMLError) -> Bool? {
        switch values[key] {
        case nil: return nil
        case .bool(let b): return b
        case let v?: throw wrong(key, "true or false", v)
        }
    }

    public func strings(_ key: String) throws(TOMLError) -> [String]? {
        switch values[key] {
        case nil: return nil
        case .array(let a):
            var out: [String] = []
            for item in a {
                guard case .string(let s) = item else { throw wrong(key, "an array of strings", item) }
                out.append(s)
            }
            return out
        case let v?: throw wrong(key, "an array of strings", v)
        }
    }

    public func ints(_ key: String) throws(TOMLError) -> [Int]? {
        switch values[key] {
        case nil: return nil
        case .array(let a):
            var out: [Int] = []
            for item in a {
                guard case .integer(let n) = item else { throw wrong(key, "an array of integers", item) }
                out.append(Int(n))
            }
            return out
        case let v?: throw wrong(key, "an array of integers", v)
        }
    }

    /// Fails on any key not in `known`.
    public func rejectUnknown(_ known: Set<String>) throws(TOMLError) {
        for k in values.keys.sorted() where !known.contains(k) {
            let choices = known.sorted().joined(separator: ", ")
            throw TOMLError(line: 0, message: "unknown key \(name(k)) (known here: \(choices))")
        }
    }
}
