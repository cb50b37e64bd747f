import Foundation
import PetrelStore

/// A message attribute as SQS and SNS carry it: a data type (`String`, `Number`,
/// `Binary`, each with an optional `.custom` suffix) and a string or binary value
/// (the store's type: the rows are the store's).
public typealias MessageAttribute = QueueRows.Attribute

extension QueueRows.Attribute {

    /// The bytes it counts toward a message's size (name, type and value).
    func size(_ name: String) -> Int { name.utf8.count + dataType.utf8.count + (stringValue?.utf8.count ?? 0) + (binaryValue?.count ?? 0) }

    /// SQS's checks: at most 10 attributes, names of 1–256 of letters, digits, `_`, `-`
    /// and `.` (not starting with `AWS.` or `Amazon.`, nor with or around a `.`), a known
    /// type, a value of that type.
    public static func check(_ all: [String: MessageAttribute]) throws(MessagingError) {
        guard all.count <= 10 else {
            throw .invalidParameter("Number of message attributes [\(all.count)] exceeds the allowed maximum [10].")
        }
        for (name, a) in all {
            let ok =
                !name.isEmpty && name.utf8.count <= 256 && !name.hasPrefix(".") && !name.hasSuffix(".") && !name.contains("..")
                && !name.lowercased().hasPrefix("aws.") && !name.lowercased().hasPrefix("amazon.")
                && name.utf8.allSatisfy {
                    ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 95 || $0 == 45 || $0 == 46
                }
            guard ok else { throw .invalidParameter("Message attribute name '\(name)' is not valid.") }
            let base = a.dataType.split(separator: ".", maxSplits: 1).first.map(String.init) ?? ""
            switch base {
            case "String":
                guard let s = a.stringValue, !s.isEmpty else {
                    throw .invalidParameter(
                        "Message attribute '\(name)' must contain a non-empty message attribute value for message attribute type 'String'.")
                }
            case "Number":
                guard let s = a.stringValue, Double(s) != nil else {
                    throw .invalidParameter(
                        "Message attribute '\(name)' has an invalid message attribute value for message attribute type 'Number'.")
                }
            case "Binary":
                guard let b = a.binaryValue, !b.isEmpty else {
                    throw .invalidParameter(
                        "Message attribute '\(name)' must contain a non-empty message attribute value for message attribute type 'Binary'.")
                }
            default:
                throw .invalidParameter(
                    "The type of message (user) attribute '\(name)' is invalid. You must use only the following supported type prefixes: Binary, Number, String."
                )
            }
        }
    }

    public static func size(_ all: [String: MessageAttribute]) -> Int { all.reduce(0) { $0 + $1.value.size($1.key) } }

    /// The MD5 SQS answers for a message's attributes (nil when there are none).
    public static func md5(_ all: [String: MessageAttribute]) -> String? { QueueRows.md5(all) }

    public static func md5Hex(_ bytes: some DataProtocol) -> String { QueueRows.md5Hex(bytes) }
}
