import Foundation
import Glibc
import PetrelSystem
import Synchronization

/// Function output on its way to the log store, written where a `kill -9` of
/// the daemon cannot take it: each batch of lines is appended (one write) to a
/// journal segment before the invocation that printed it is answered, and the
/// store's transaction that takes the batch records its sequence number as
/// applied. At the next start, what the journal holds beyond that number is put
/// in the store first. Segments (`<seq>.journal`, about 4 MiB each) go once
/// everything in them is applied, so the journal stays small.
///
/// A batch that cannot be journaled (a full disk) still goes to the store; only
/// a crash before its transaction loses it. `sync(through:)` makes batches
/// durable against the machine's crash too (asynchronous events call it before
/// their outcome is committed).
public final class LogJournal: Sendable {
    public let directory: String
    static let segmentLimit = 1 << 20
    static let magic: UInt32 = 0x504c_4a31 // "PLJ1"

    public struct Entry: Sendable, Equatable {
        public var seq: UInt64
        public var group: String
        public var stream: String
        public var lines: [LogChunk.Line]
    }

    private struct State {
        var fd: Int32 = -1
        var path = ""
        var size = 0
        /// The current segment mapped into memory (its space allocated): records are copied
        /// there, without a system call. nil: written with pwrite (the space could not be had).
        var map: UnsafeMutableRawPointer?
        var capacity = 0
        var nextSeq: UInt64
        /// The last sequence number written to the current segment.
        var lastInSegment: UInt64 = 0
        /// Closed segments and the last sequence number each holds.
        var closed: [(path: String, last: UInt64)] = []
        var syncedThrough: UInt64 = 0
    }
    private let state: Mutex<State>

    /// Opens the journal in `directory` (made when missing) with nothing in it:
    /// call `recover` first to move what an earlier process left into the store.
    public init(directory: String, nextSeq: UInt64) throws {
        self.directory = directory
        try Sys.mkdirs(directory, 0o700)
        state = Mutex(State(nextSeq: max(nextSeq, 1)))
    }

    deinit { state.withLock { Self.closeSegment(&$0) } }

    /// What earlier processes journaled after `applied` (in order), the highest sequence
    /// number seen, and the segments that held them (to remove once the store has them).
    public static func recover(directory: String, after applied: UInt64) -> (entries: [Entry], last: UInt64, segments: [String]) {
        var entries: [Entry] = []
        var last = applied
        let segments = Sys.listDirectory(directory).filter { $0.hasSuffix(".journal") }.map { directory + "/" + $0 }
        for path in segments {
            guard let data = FileManager.default.contents(atPath: path) else { continue }
            for e in parse([UInt8](data)) {
                last = max(last, e.seq)
                if e.seq > applied { entries.append(e) }
            }
        }
        entries.sort { $0.seq < $1.seq }
        return (entries, last, segments)
    }

    /// Records in `bytes`, up to the first that is cut short or damaged.
    static func parse(_ bytes: [UInt8]) -> [Entry] {
        var out: [Entry] = []
        var at = 0
        func u32(_ i: Int) -> UInt32 { bytes[i..<i + 4].enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) } }
        while at + 12 <= bytes.count, u32(at) == magic {
            let length = Int(u32(at + 4))
            let crc = u32(at + 8)
            let start = at + 12
            guard length <= bytes.count - start else { break }
            let body = bytes[start..<start + length]
            guard body.withUnsafeBytes({ Checksum.crc32($0) }) == crc, let e = decode(body) else { break }
            out.append(e)
            at = start + length
        }
        return out
    }

    static func decode(_ body: ArraySlice<UInt8>) -> Entry? {
        var i = body.startIndex
        func string() -> String? {
            guard let n = LogChunk.readVarint(body, &i), Int(n) <= body.endIndex - i else { return nil }
            defer { i += Int(n) }
            return String(decoding: body[i..<i + Int(n)], as: UTF8.self)
        }
        guard let seq = LogChunk.readVarint(body, &i), let group = string(), let stream = string(),
            let base = LogChunk.readVarint(body, &i), let count = LogChunk.readVarint(body, &i), count < 1 << 24
        else { return nil }
        var lines: [LogChunk.Line] = []
        var ts = LogChunk.unzigzag(base)
        for _ in 0..<count {
            guard let delta = LogChunk.readVarint(body, &i), let message = string() else { return nil }
            ts = ts &+ LogChunk.unzigzag(delta)
            lines.append(LogChunk.Line(ts, message))
        }
        return Entry(seq: seq, group: group, stream: stream, lines: lines)
    }

    /// One record: magic, body length, the body's CRC-32, the body. Built in one buffer (this
    /// runs for every invocation), the header filled in once the body is there.
    static func record(seq: UInt64, group: String, stream: String, lines: [LogChunk.Line]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(group.utf8.count + stream.utf8.count + lines.reduce(28) { $0 + $1.message.utf8.count + 4 })
        out.append(contentsOf: repeatElement(0, count: 12))
        func string(_ s: String) {
            LogChunk.appendVarint(&out, UInt64(s.utf8.count))
            out.append(contentsOf: s.utf8)
        }
        LogChunk.appendVarint(&out, seq)
        string(group)
        string(stream)
        let base = lines.first?.timestamp ?? 0
        LogChunk.appendVarint(&out, LogChunk.zigzag(base))
        LogChunk.appendVarint(&out, UInt64(lines.count))
        var previous = base
        for l in lines {
            LogChunk.appendVarint(&out, LogChunk.zigzag(l.timestamp &- previous))
            previous = l.timestamp
            string(l.message)
        }
        let crc = out.withUnsafeBytes { Checksum.crc32(UnsafeRawBufferPointer(rebasing: $0[12...])) }
        for (i, v) in [magic, UInt32(out.count - 12), crc].enumerated() {
            for k in 0..<4 { out[i * 4 + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(k))) }
        }
        return out
    }

    /// Journals a batch and, under the same lock (so that the store sees batches in the
    /// order of their numbers), hands it on with its sequence number, or nil when it
    /// could not be journaled (`failed` counts those).
    public func append(group: String, stream: String, lines: [LogChunk.Line], then handOn: (UInt64?) -> Void) {
        state.withLock { s in
            let seq = s.nextSeq
            let bytes = Self.record(seq: seq, group: group, stream: stream, lines: lines)
            if write(bytes, seq: seq, &s) {
                s.nextSeq += 1
                handOn(seq)
            } else {
                handOn(nil)
            }
        }
    }

    private func write(_ bytes: [UInt8], seq: UInt64, _ s: inout State) -> Bool {
        if s.fd >= 0, s.map != nil, s.size + bytes.count > s.capacity { retire(&s) }
        if s.fd < 0 {
            let path = directory + "/" + String(format: "%016llx", seq) + ".journal"
            guard let fd = try? Sys.open(path, O_RDWR | O_CREAT, 0o600) else { return false }
            (s.fd, s.path, s.size, s.map, s.capacity) = (fd, path, 0, nil, 0)
            // The segment's space allocated at once and mapped: a record is then a copy into
            // the page cache (which the daemon's death does not touch), with no system call,
            // no inode update and no block allocation per record. Zeros end a segment for
            // `parse` as a damaged record would. Only where the space could be had: a write
            // through a mapping to space the disk cannot give would kill the process.
            let capacity = max(Self.segmentLimit, bytes.count)
            if posix_fallocate(fd, 0, off_t(capacity)) == 0 {
                let m = mmap(nil, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                if let m, m != MAP_FAILED { (s.map, s.capacity) = (m, capacity) }
            }
        }
        if let map = s.map {
            bytes.withUnsafeBytes { b in (map + s.size).copyMemory(from: b.baseAddress!, byteCount: b.count) }
        } else {
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { b in pwrite(s.fd, b.baseAddress! + done, b.count - done, off_t(s.size + done)) }
                if n < 0 && errno == EINTR { continue }
                // A record not written whole is written over by the next one (parsing stops at what is left of it).
                guard n > 0 else { return false }
                done += n
            }
        }
        s.size += bytes.count
        s.lastInSegment = seq
        if s.size >= Self.segmentLimit { retire(&s) }
        return true
    }

    /// Closes the current segment; it stays until the store holds what it has.
    private func retire(_ s: inout State) {
        s.closed.append((s.path, s.lastInSegment))
        Self.closeSegment(&s)
    }

    private static func closeSegment(_ s: inout State) {
        if let map = s.map { munmap(map, s.capacity) }
        Sys.close(s.fd)
        (s.fd, s.map, s.capacity) = (-1, nil, 0)
    }

    /// The store has every batch up to `seq`: segments holding nothing later go.
    public func applied(through seq: UInt64) {
        let gone = state.withLock { s -> [String] in
            let (done, keep) = (s.closed.filter { $0.last <= seq }, s.closed.filter { $0.last > seq })
            s.closed = keep
            return done.map(\.path)
        }
        for path in gone { try? Sys.unlink(path) }
    }

    /// Makes every batch up to `seq` durable on disk (fdatasync), unless it is already.
    public func sync(through seq: UInt64) throws {
        let (fd, path, closed, target) = state.withLock { s -> (Int32, String, [String], UInt64) in
            guard seq > s.syncedThrough else { return (-1, "", [], 0) }
            // Closed segments holding nothing newer than the last sync were synced by it.
            let unsynced = s.closed.filter { $0.last > s.syncedThrough }.map(\.path)
            return (s.fd >= 0 ? dup(s.fd) : -1, s.path, unsynced, s.nextSeq - 1)
        }
        guard target > 0 else { return }
        // fdatasync writes a file's dirty pages however they were dirtied, through the mapping too.
        for path in closed {
            if let f = try? Sys.open(path, O_RDONLY) {
                defer { Sys.close(f) }
                try Sys.call("fdatasync", path) { fdatasync(f) }
            }
        }
        if fd >= 0 {
            defer { Sys.close(fd) }
            try Sys.call("fdatasync", path) { fdatasync(fd) }
        }
        state.withLock { $0.syncedThrough = max($0.syncedThrough, target) }
    }

    /// Opens the journal in `directory` for this process: first, what an earlier process
    /// journaled beyond what `store` holds is stored (a `kill -9` leaves the last batches
    /// there) and its segments removed. `lost`: lines found but not stored (the store
    /// refused them: a full disk); `error` says why.
    public static func open(directory: String, store: LogStore) throws -> (
        journal: LogJournal, replayed: Int, lost: Int, error: (any Error)?
    ) {
        let found = recover(directory: directory, after: try store.journalApplied())
        let lines = found.entries.reduce(0) { $0 + $1.lines.count }
        var stored = 0
        var failure: (any Error)?
        do {
            var from = 0
            while from < found.entries.count {
                let part = found.entries[from..<min(found.entries.count, from + 1_000)]
                try store.append(part.map { (group: $0.group, stream: $0.stream, lines: $0.lines) }, journaled: part.last!.seq)
                stored += part.reduce(0) { $0 + $1.lines.count }
                from += part.count
            }
        } catch {
            failure = error
        }
        for path in found.segments { try? Sys.unlink(path) }
        let journal = try LogJournal(directory: directory, nextSeq: found.last + 1)
        return (journal, stored, lines - stored, failure)
    }
}
