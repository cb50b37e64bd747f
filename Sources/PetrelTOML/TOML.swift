import TOMLKit

// Petrel's configuration and policy files are read by TOMLKit (toml++ underneath),
// then turned into plain values that `TOMLSection` reads strictly.

public indirect enum TOMLValue: Equatable, Sendable {
    case string(String)
    case integer(Int64)
    case double(Double)
    case bool(Bool)
    case array([TOMLValue])
    case table([String: TOMLValue])
    /// A date, a time or both, as the file wrote it (no Petrel key takes one).
    case date(String)

    public var typeName: String {
        switch self {
        case .string: "a string"
        case .integer: "an integer"
        case .double: "a number"
        case .bool: "a boolean"
        case .array: "an array"
        case .table: "a table"
        case .date: "a date"
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
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let e as TOMLParseError {
            throw TOMLError(line: e.source.begin.line, message: e.description)
        } catch {
            throw TOMLError(line: 0, message: "\(error)")
        }
        return convert(table)
    }

    static func convert(_ table: TOMLTable) -> [String: TOMLValue] {
        var out: [String: TOMLValue] = [:]
        for key in table.keys {
            if let v = table[key] { out[key] = convert(v.tomlValue) }
        }
        return out
    }

    static func convert(_ v: TOMLKit.TOMLValue) -> TOMLValue {
        switch v.type {
        case .table: return .table(convert(v.table!))
        case .array: return .array(v.array!.map { convert($0.tomlValue) })
        case .string: return .string(v.string!)
        case .int: return .integer(Int64(v.int!))
        case .double: return .double(v.double!)
        case .bool: return .bool(v.bool!)
        case .date, .time, .dateTime: return .date(v.debugDescription)
        }
    }
}
