import Foundation
import GRDB
import PetrelCore
import PetrelStore

/// The operator's object stores that may push object events to Petrel, each with the
/// bearer token its notifications carry (`NAME=TOKEN`, comma-separated).
public struct ObjectStores: Sendable {
    public var tokens: [String: String]
    public init(_ tokens: [String: String] = [:]) { self.tokens = tokens }

    public init(parsing text: String) throws(DomainError) {
        var out: [String: String] = [:]
        for (name, token, _) in try BrokerDirectory.namedEntries(text, what: "an object store is NAME=TOKEN") {
            guard token.utf8.count >= 16 else {
                throw DomainError(.invalidParameter, "the token of the object store \(name) is shorter than 16 characters")
            }
            out[name] = token
        }
        tokens = out
    }
}

/// What a bucket of an operator's object store tells functions: S3's notification
/// configuration (its `LambdaFunctionConfigurations`), owned by one account.
public struct BucketNotification: Sendable, Codable, Equatable {
    public var store: String
    public var bucket: String
    public var account: String
    public var functions: [FunctionTarget]

    public struct FunctionTarget: Sendable, Codable, Equatable {
        public var id: String
        /// The function's name (with an optional qualifier), in the owner's account.
        public var function: String
        public var qualifier: String?
        /// S3's event types (`s3:ObjectCreated:*`, `s3:ObjectRemoved:Delete`, …).
        public var events: [String]
        public var prefix: String?
        public var suffix: String?

        public init(id: String, function: String, qualifier: String?, events: [String], prefix: String?, suffix: String?) {
            self.id = id
            self.function = function
            self.qualifier = qualifier
            self.events = events
            self.prefix = prefix
            self.suffix = suffix
        }

        /// Whether an event (`ObjectCreated:Put`) on `key` is one this target asked for.
        public func wants(_ eventName: String, key: String) -> Bool {
            let full = "s3:" + eventName
            let kind = full.split(separator: ":").prefix(2).joined(separator: ":") + ":*"
            guard events.contains(where: { $0 == full || $0 == kind }) else { return false }
            if let prefix, !key.hasPrefix(prefix) { return false }
            if let suffix, !key.hasSuffix(suffix) { return false }
            return true
        }
    }

    public init(store: String, bucket: String, account: String, functions: [FunctionTarget]) {
        self.store = store
        self.bucket = bucket
        self.account = account
        self.functions = functions
    }

    /// The event types S3 names that Petrel's stores can produce.
    public static let eventTypes: Set<String> = [
        "s3:ObjectCreated:*", "s3:ObjectCreated:Put", "s3:ObjectCreated:Post", "s3:ObjectCreated:Copy",
        "s3:ObjectCreated:CompleteMultipartUpload", "s3:ObjectRemoved:*", "s3:ObjectRemoved:Delete",
    ]

    /// S3's bucket name rules (3–63 lower-case letters, digits, '.', '-').
    public static func isValidBucket(_ b: String) -> Bool {
        let lowerOrDigit: (UInt8) -> Bool = { (97...122).contains($0) || (48...57).contains($0) }
        return (3...63).contains(b.utf8.count) && b.utf8.allSatisfy { lowerOrDigit($0) || $0 == 46 || $0 == 45 }
            && lowerOrDigit(b.utf8.first!) && lowerOrDigit(b.utf8.last!)
    }
}

/// Bucket notification configurations in SQLite.
public struct BucketNotificationStore: Sendable {
    let db: PetrelDatabase
    public init(_ db: PetrelDatabase) { self.db = db }

    public func get(store: String, bucket: String) throws -> BucketNotification? {
        try db.pool.read { db in
            try String.fetchOne(
                db, sql: "SELECT record FROM bucket_notifications WHERE store = ? AND bucket = ?", arguments: [store, bucket]
            ).flatMap { try? JSONDecoder().decode(BucketNotification.self, from: Data($0.utf8)) }
        }
    }

    /// Stores `n` unless another account owns the bucket's configuration (that one is answered).
    public func put(_ n: BucketNotification) throws -> BucketNotification? {
        let record = String(decoding: try JSONEncoder().encode(n), as: UTF8.self)
        return try db.pool.write { db in
            if let existing = try String.fetchOne(
                db, sql: "SELECT record FROM bucket_notifications WHERE store = ? AND bucket = ?", arguments: [n.store, n.bucket]),
                let e = try? JSONDecoder().decode(BucketNotification.self, from: Data(existing.utf8)), e.account != n.account
            {
                return e
            }
            if n.functions.isEmpty {
                try db.execute(sql: "DELETE FROM bucket_notifications WHERE store = ? AND bucket = ?", arguments: [n.store, n.bucket])
            } else {
                try db.execute(
                    sql: "INSERT OR REPLACE INTO bucket_notifications (store, bucket, account, record) VALUES (?, ?, ?, ?)",
                    arguments: [n.store, n.bucket, n.account, record])
            }
            return nil
        }
    }
}

/// One object event, whichever store said it: what S3's record is made of.
public struct ObjectEvent: Sendable, Equatable {
    public var bucket: String
    /// The object's key, not encoded.
    public var key: String
    /// S3's name without `s3:` (`ObjectCreated:Put`, `ObjectRemoved:Delete`).
    public var eventName: String
    public var size: Int?
    public var eTag: String?
    /// Milliseconds since 1970.
    public var time: Int64
    /// An S3 record as the store sent it (MinIO, Ceph): passed on as it is but for the configuration id.
    public var record: [String: AnyJSON]?

    public init(bucket: String, key: String, eventName: String, size: Int?, eTag: String?, time: Int64) {
        self.bucket = bucket
        self.key = key
        self.eventName = eventName
        self.size = size
        self.eTag = eTag
        self.time = time
    }

    /// The events of a store's notification: S3-shaped records (`{"Records": [...]}`, as MinIO's
    /// webhook and Ceph's HTTP endpoint send them), or a SeaweedFS filer event (its
    /// webhook's `{"event_type", "key": "/buckets/BUCKET/KEY", "message": {old_entry, new_entry}}`).
    /// Directories, and paths outside `/buckets`, are no objects and give nothing.
    public static func parse(_ data: Data, now: Int64) throws(DomainError) -> [ObjectEvent] {
        guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw DomainError(.invalidParameter, "An object event is a JSON object.")
        }
        if let records = o["Records"] as? [[String: Any]] {
            return try records.map { r throws(DomainError) in
                guard let s3 = r["s3"] as? [String: Any], let b = (s3["bucket"] as? [String: Any])?["name"] as? String,
                    let obj = s3["object"] as? [String: Any], let rawKey = obj["key"] as? String,
                    var name = r["eventName"] as? String
                else {
                    throw DomainError(.invalidParameter, "An S3 record needs eventName, s3.bucket.name and s3.object.key.")
                }
                if name.hasPrefix("s3:") { name.removeFirst(3) }
                let key = rawKey.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? rawKey
                var e = ObjectEvent(
                    bucket: b, key: key, eventName: name, size: obj["size"] as? Int, eTag: obj["eTag"] as? String, time: now)
                e.record = AnyJSON.from(r)
                return e
            }
        }
        guard let type = o["event_type"] as? String, let path = o["key"] as? String, let message = o["message"] as? [String: Any] else {
            throw DomainError(.invalidParameter, "Not an object event: neither S3 records nor a SeaweedFS filer event.")
        }
        let new = message["new_entry"] as? [String: Any]
        let old = message["old_entry"] as? [String: Any]
        func object(_ path: String) -> (bucket: String, key: String)? {
            let parts = path.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: true)
            guard parts.count == 3, parts[0] == "buckets", !parts[1].hasPrefix(".") else { return nil }
            return (String(parts[1]), String(parts[2]))
        }
        func isFile(_ e: [String: Any]?) -> Bool { e != nil && (e?["is_directory"] as? Bool) != true }
        func created(_ path: String, _ e: [String: Any]) -> ObjectEvent? {
            guard let (b, k) = object(path) else { return nil }
            let attributes = e["attributes"] as? [String: Any] ?? [:]
            var etag: String?
            if let md5 = attributes["md5"] as? String, let raw = Data(base64Encoded: md5) {
                etag = raw.map { String(format: "%02x", $0) }.joined()
            }
            let mtime = (attributes["mtime"] as? Int).map { Int64($0) * 1000 } ?? now
            return ObjectEvent(
                bucket: b, key: k, eventName: "ObjectCreated:Put", size: attributes["file_size"] as? Int ?? 0, eTag: etag, time: mtime)
        }
        var out: [ObjectEvent] = []
        switch type {
        case "create", "update":
            if isFile(new), let new, let e = created(path, new) { out.append(e) }
        case "delete":
            if isFile(old), let (b, k) = object(path) {
                out.append(ObjectEvent(bucket: b, key: k, eventName: "ObjectRemoved:Delete", size: nil, eTag: nil, time: now))
            }
        case "rename":
            if isFile(old), let (b, k) = object(path) {
                out.append(ObjectEvent(bucket: b, key: k, eventName: "ObjectRemoved:Delete", size: nil, eTag: nil, time: now))
            }
            if isFile(new), let new, let parent = message["new_parent_path"] as? String, let name = new["name"] as? String,
                var e = created(parent + "/" + name, new)
            {
                e.eventName = "ObjectCreated:Copy"
                out.append(e)
            }
        default:
            break
        }
        return out
    }

    /// S3's event record for one configuration (`Records[]` of the function's event).
    public func s3Record(configurationID: String, region: String, sequence: UInt64) -> [String: Any] {
        if var r = record {
            if case .object(var s3)? = r["s3"] {
                s3["configurationId"] = .string(configurationID)
                r["s3"] = .object(s3)
            }
            return AnyJSON.object(r).value as? [String: Any] ?? [:]
        }
        var object: [String: Any] = [
            "key": (key.addingPercentEncoding(withAllowedCharacters: Self.keyCharacters) ?? key).replacingOccurrences(of: "%20", with: "+"),
            "sequencer": String(format: "%016llX", sequence),
        ]
        if let size { object["size"] = size }
        if let eTag { object["eTag"] = eTag }
        return [
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": region, "eventTime": PlatformClock.iso8601(millis: time),
            "eventName": eventName, "userIdentity": ["principalId": "petrel"], "requestParameters": ["sourceIPAddress": "127.0.0.1"],
            "responseElements": ["x-amz-request-id": FastIDs.uuid(), "x-amz-id-2": FastIDs.uuid()],
            "s3": [
                "s3SchemaVersion": "1.0", "configurationId": configurationID,
                "bucket": ["name": bucket, "ownerIdentity": ["principalId": "petrel"], "arn": "arn:aws:s3:::\(bucket)"],
                "object": object,
            ],
        ]
    }

    /// What S3 leaves as it is in a record's key (spaces become '+').
    static let keyCharacters = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_.~/!*'()"))
}

/// A JSON value that is `Sendable` (an S3 record passed through).
public indirect enum AnyJSON: Sendable, Equatable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case null
    case array([AnyJSON])
    case object([String: AnyJSON])

    public static func from(_ o: [String: Any]) -> [String: AnyJSON] { o.mapValues(AnyJSON.init) }

    public init(_ v: Any) {
        switch v {
        case let s as String: self = .string(s)
        // (JSONSerialization's booleans are NSNumbers of type 'c'.)
        case let n as NSNumber: self = String(cString: n.objCType) == "c" ? .bool(n.boolValue) : .number(n.doubleValue)
        case let a as [Any]: self = .array(a.map(AnyJSON.init))
        case let o as [String: Any]: self = .object(o.mapValues(AnyJSON.init))
        default: self = .null
        }
    }

    public var value: Any {
        switch self {
        case .string(let s): return s
        case .number(let n): return n == n.rounded() && abs(n) < 1e15 ? Int(n) as Any : n
        case .bool(let b): return b
        case .null: return NSNull()
        case .array(let a): return a.map(\.value)
        case .object(let o): return o.mapValues(\.value)
        }
    }
}
