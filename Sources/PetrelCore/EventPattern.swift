import Foundation

/// Lambda's event-filtering patterns (event source mappings' `FilterCriteria`) and
/// SNS subscription filter policies: one grammar. A pattern is a JSON object whose
/// leaves are arrays of conditions; an event matches when every key of the pattern
/// matches (a nested object matches the nested field) and a leaf matches when any
/// of its conditions matches the field's value (or any element of it, when it is
/// an array). Conditions: a string, number or null compared exactly, and objects
/// `prefix`, `suffix`, `equals-ignore-case`, `anything-but` (a value, a list, or a
/// `prefix`/`suffix`), `numeric` (`=`, `<`, `<=`, `>`, `>=` with up to two bounds)
/// and `exists`. A top-level `$or` takes a list of patterns, any of which may match.
public struct EventPattern: Sendable, Equatable {
    indirect enum Node: Sendable, Equatable {
        case fields([String: Node])
        case any([Condition])
        case or([Node])
    }

    enum Condition: Sendable, Equatable {
        case exact(String)
        case number(Double)
        case null
        case prefix(String)
        case suffix(String)
        case ignoringCase(String)
        case anythingBut([Condition])
        case numeric([(op: String, value: Double)])
        case exists(Bool)

        static func == (a: Condition, b: Condition) -> Bool { "\(a)" == "\(b)" }
    }

    let root: Node

    /// Parses `json`; a pattern Lambda or SNS would refuse is refused with the reason.
    public init(json: String) throws(DomainError) {
        guard let data = json.data(using: .utf8),
            let object = (try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])) as? [String: Any]
        else {
            throw DomainError(.invalidParameter, "Invalid filter pattern definition: the pattern \(json) is not a JSON object.")
        }
        root = try Self.node(object, path: "")
        guard Self.leaves(root) > 0 else {
            throw DomainError(.invalidParameter, "Invalid filter pattern definition: the pattern \(json) has no conditions.")
        }
    }

    static func leaves(_ n: Node) -> Int {
        switch n {
        case .fields(let f): f.values.map(leaves).reduce(0, +)
        case .any(let c): c.count
        case .or(let o): o.map(leaves).reduce(0, +)
        }
    }

    static func invalid(_ path: String, _ why: String) -> DomainError {
        DomainError(.invalidParameter, "Invalid filter pattern definition at \(path.isEmpty ? "the top" : path): \(why).")
    }

    static func node(_ object: [String: Any], path: String) throws(DomainError) -> Node {
        var fields: [String: Node] = [:]
        for (key, value) in object {
            let here = path.isEmpty ? key : path + "." + key
            if key == "$or" {
                guard let list = value as? [Any], list.count >= 2 else { throw invalid(here, "$or takes a list of at least two patterns") }
                var alternatives: [Node] = []
                for item in list {
                    guard let o = item as? [String: Any] else { throw invalid(here, "each $or alternative must be an object") }
                    alternatives.append(try node(o, path: here))
                }
                fields["$or"] = .or(alternatives)
            } else if let nested = value as? [String: Any] {
                fields[key] = try node(nested, path: here)
            } else if let list = value as? [Any] {
                guard !list.isEmpty else { throw invalid(here, "a list of conditions may not be empty") }
                var conditions: [Condition] = []
                for item in list { conditions.append(try condition(item, path: here)) }
                fields[key] = .any(conditions)
            } else {
                throw invalid(here, "a field's value must be a list of conditions or an object")
            }
        }
        return .fields(fields)
    }

    static func condition(_ item: Any, path: String) throws(DomainError) -> Condition {
        if item is NSNull { return .null }
        if let n = item as? NSNumber {
            guard !isBool(n) else { return .exact(n.boolValue ? "true" : "false") }
            return .number(n.doubleValue)
        }
        if let s = item as? String { return .exact(s) }
        guard let o = item as? [String: Any], o.count == 1, let (op, arg) = o.first else {
            throw invalid(path, "a condition is a string, a number, null or an object of one operator")
        }
        switch op {
        case "prefix", "suffix", "equals-ignore-case":
            guard let s = arg as? String else { throw invalid(path, "\(op) takes a string") }
            return op == "prefix" ? .prefix(s) : op == "suffix" ? .suffix(s) : .ignoringCase(s.lowercased())
        case "exists":
            guard let b = arg as? Bool else { throw invalid(path, "exists takes true or false") }
            return .exists(b)
        case "anything-but":
            if let list = arg as? [Any] {
                var inner: [Condition] = []
                for x in list {
                    let c = try condition(x, path: path)
                    guard case .exact = c else {
                        if case .number = c { inner.append(c) } else { throw invalid(path, "anything-but lists strings or numbers") }
                        continue
                    }
                    inner.append(c)
                }
                return .anythingBut(inner)
            }
            let c = try condition(arg, path: path)
            switch c {
            case .exact, .number, .prefix, .suffix: return .anythingBut([c])
            default: throw invalid(path, "anything-but takes a value, a list, a prefix or a suffix")
            }
        case "numeric":
            guard let list = arg as? [Any], list.count == 2 || list.count == 4 else {
                throw invalid(path, "numeric takes one or two comparisons, such as [\">\", 0, \"<=\", 5]")
            }
            var bounds: [(String, Double)] = []
            for i in stride(from: 0, to: list.count, by: 2) {
                guard let o = list[i] as? String, ["=", "<", "<=", ">", ">="].contains(o), let v = list[i + 1] as? NSNumber, !isBool(v)
                else { throw invalid(path, "numeric takes an operator (=, <, <=, >, >=) followed by a number") }
                bounds.append((o, v.doubleValue))
            }
            return .numeric(bounds)
        default:
            throw invalid(path, "unknown operator \(op)")
        }
    }

    /// Whether `event` (as JSONSerialization reads JSON) matches.
    public func matches(_ event: Any) -> Bool { Self.match(root, event) }

    static func match(_ node: Node, _ value: Any?) -> Bool {
        switch node {
        case .or(let alternatives):
            return alternatives.contains { match($0, value) }
        case .fields(let fields):
            let object = value as? [String: Any]
            for (key, sub) in fields {
                if key == "$or" {
                    guard match(sub, value) else { return false }
                    continue
                }
                guard match(sub, object?[key]) else { return false }
            }
            return true
        case .any(let conditions):
            return conditions.contains { test($0, value) }
        }
    }

    static func test(_ c: Condition, _ value: Any?) -> Bool {
        if case .exists(let wanted) = c {
            let present: Bool
            if let list = value as? [Any] { present = !list.isEmpty } else { present = value != nil && !(value is [String: Any]) }
            return present == wanted
        }
        guard let value else { return false }
        if let list = value as? [Any] {
            if case .anythingBut = c { return list.allSatisfy { test(c, $0) } }
            return list.contains { test(c, $0) }
        }
        switch c {
        case .null: return value is NSNull
        case .exact(let s): return string(value) == s
        case .number(let n): return number(value) == n
        case .prefix(let p): return string(value)?.hasPrefix(p) ?? false
        case .suffix(let s): return string(value)?.hasSuffix(s) ?? false
        case .ignoringCase(let s): return string(value)?.lowercased() == s
        case .anythingBut(let inner): return !(value is NSNull) && !inner.contains { test($0, value) }
        case .numeric(let bounds):
            guard let n = number(value) else { return false }
            return bounds.allSatisfy { b in
                switch b.op {
                case "=": n == b.value
                case "<": n < b.value
                case "<=": n <= b.value
                case ">": n > b.value
                default: n >= b.value
                }
            }
        case .exists: return false
        }
    }

    /// JSONSerialization reads `true` and `false` as NSNumbers of type `c`.
    static func isBool(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

    static func string(_ v: Any) -> String? {
        if let s = v as? String { return s }
        if let n = v as? NSNumber, isBool(n) { return n.boolValue ? "true" : "false" }
        return nil
    }

    static func number(_ v: Any) -> Double? {
        if let n = v as? NSNumber, !isBool(n) { return n.doubleValue }
        if let s = v as? String { return Double(s) }
        return nil
    }
}
