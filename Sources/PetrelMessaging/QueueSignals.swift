import Dispatch
import Synchronization

/// Long polls waiting on queues: a send to a queue wakes every receive waiting on it
/// at once; a waiter also wakes at its timeout (when a delayed or in-flight message
/// may have become visible, or the poll is over).
final class QueueSignals: Sendable {
    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Void, Never>
    }
    private struct State {
        var waiters: [Int64: [Waiter]] = [:]
        var next: UInt64 = 0
    }
    private let state = Mutex(State())

    func ring(_ queue: Int64) {
        let woken = state.withLock { $0.waiters.removeValue(forKey: queue) ?? [] }
        for w in woken { w.continuation.resume() }
    }

    func ringAll() {
        let woken = state.withLock { s -> [Waiter] in
            defer { s.waiters = [:] }
            return s.waiters.values.flatMap { $0 }
        }
        for w in woken { w.continuation.resume() }
    }

    /// Waits until `queue` is rung or `timeoutMillis` pass.
    func wait(_ queue: Int64, timeoutMillis: Int64) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let id = state.withLock { s -> UInt64 in
                s.next += 1
                s.waiters[queue, default: []].append(Waiter(id: s.next, continuation: c))
                return s.next
            }
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Int(max(1, timeoutMillis)))) {
                let w = self.state.withLock { s -> Waiter? in
                    guard var list = s.waiters[queue], let i = list.firstIndex(where: { $0.id == id }) else { return nil }
                    let w = list.remove(at: i)
                    s.waiters[queue] = list.isEmpty ? nil : list
                    return w
                }
                w?.continuation.resume()
            }
        }
    }
}
