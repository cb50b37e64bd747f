import Foundation
import PetrelSandbox
import PetrelStore
import PetrelSystem
import Synchronization

/// Everything an instance writes to stdout/stderr, plus the platform's own
/// lines (START, END, REPORT), in order. Lines go to the log store in batches
/// (stream per instance) and, while an invocation runs, into its tail.
final class InstanceLog: Sendable {
    let group: String
    let stream: String
    let sink: LogSink
    /// The read end of the instance's output pipe (non-blocking); -1 once it reached
    /// its end (the fd watcher closes it then).
    private struct State {
        var fd: Int32
        var partial: [UInt8] = []
        var batch: [LogChunk.Line] = []
        var tail: [String]? = nil
        /// The journal sequence number of the last batch handed on.
        var lastSeq: UInt64?
    }
    private let state: Mutex<State>

    init(group: String, stream: String, sink: LogSink, fd: Int32) {
        self.group = group
        self.stream = stream
        self.sink = sink
        state = Mutex(State(fd: fd))
    }

    /// Reads the pipe whenever it has output, on the fd watcher's thread.
    func start() throws {
        try FDWatcher.shared.watch(state.withLock { $0.fd }, closeWhenDone: true) { [self] in readAvailable() }
    }

    /// Reads whatever is in the pipe now; false at its end. The lock is held across
    /// the read, so the watcher and `drain()` never interleave their bytes.
    @discardableResult
    func readAvailable() -> Bool {
        // Runs at every response (drain): a stack buffer, not a zeroed heap array each time.
        withUnsafeTemporaryAllocation(byteCount: 16_384, alignment: 1) { buf in
            state.withLock { s in
                guard s.fd >= 0 else { return false }
                while true {
                    let n: Int?
                    do { n = try Sys.readSome(s.fd, into: buf) } catch { n = 0 } // a read error ends the log as its end would
                    guard let n else { return true } // nothing more for now
                    if n > 0 {
                        received(UnsafeRawBufferPointer(rebasing: buf[0..<n]), &s)
                        continue
                    }
                    // End of file (every process in the sandbox is gone) or an error: done.
                    if !s.partial.isEmpty {
                        Self.emit(&s, String(decoding: s.partial, as: UTF8.self))
                        s.partial.removeAll()
                    }
                    flushLocked(&s)
                    s.fd = -1
                    return false
                }
            }
        }
    }

    /// What the function printed before it answered goes into the log before END:
    /// called when the runtime posts its answer.
    func drain() { readAvailable() }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
    static func nowMs() -> Double { Date().timeIntervalSince1970 * 1000 }

    /// Bytes from the pipe: split into lines (a line longer than 256 KiB is cut).
    private func received(_ bytes: UnsafeRawBufferPointer, _ s: inout State) {
        for b in bytes {
            if b == 0x0a {
                Self.emit(&s, String(decoding: s.partial, as: UTF8.self))
                s.partial.removeAll(keepingCapacity: true)
            } else {
                s.partial.append(b)
                if s.partial.count >= 262_144 {
                    Self.emit(&s, String(decoding: s.partial, as: UTF8.self))
                    s.partial.removeAll(keepingCapacity: true)
                }
            }
        }
        if s.batch.count >= 512 { flushLocked(&s) }
    }

    /// A line of the platform's own (START, END, REPORT, INIT_START).
    func platform(_ line: String) {
        state.withLock { s in Self.emit(&s, line) }
    }

    /// Starts collecting the tail of one invocation.
    /// `keep`: go on with the tail already collecting (a cold start's init output belongs to it).
    /// Nothing is collected when the caller did not ask for the tail (`wanted` false).
    func beginTail(wanted: Bool, keep: Bool) {
        state.withLock { s in
            if !wanted { s.tail = nil } else if !keep || s.tail == nil { s.tail = [] }
        }
    }

    /// Ends the invocation's tail: its last 4 KB (when `build`), and flushes the batch; with
    /// the journal sequence number of the invocation's last batch (nil when it has none).
    func endTail(build: Bool = true) -> (tail: String, seq: UInt64?) {
        state.withLock { s in
            let lines = s.tail ?? []
            s.tail = nil
            flushLocked(&s)
            guard build, !lines.isEmpty else { return ("", s.lastSeq) }
            let text = lines.map { $0 + "\n" }.joined()
            let bytes = Array(text.utf8)
            return (bytes.count <= 4096 ? text : String(decoding: bytes.suffix(4096), as: UTF8.self), s.lastSeq)
        }
    }

    /// Writes out what is pending (partial line included).
    func flush() {
        state.withLock { s in
            if !s.partial.isEmpty {
                Self.emit(&s, String(decoding: s.partial, as: UTF8.self))
                s.partial.removeAll()
            }
            flushLocked(&s)
        }
    }

    private func flushLocked(_ s: inout State) {
        guard !s.batch.isEmpty else { return }
        if let seq = sink.write(group: group, stream: stream, lines: s.batch) { s.lastSeq = seq }
        s.batch.removeAll(keepingCapacity: true)
    }

    private static func emit(_ s: inout State, _ line: String) {
        s.batch.append(LogChunk.Line(now(), line))
        if s.tail != nil {
            s.tail!.append(line)
            if s.tail!.count > 2_000 { s.tail!.removeFirst(s.tail!.count - 1_000) }
        }
    }
}
