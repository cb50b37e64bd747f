import Dispatch
import Synchronization

/// A doorbell for one waiting loop: `wait` returns when rung (a ring while
/// nobody waits is kept for the next wait) or when the timeout passes.
final class Wakeup: Sendable {
    private struct State {
        var rung = false
        var waiter: CheckedContinuation<Void, Never>?
        var generation = 0
    }
    private let state = Mutex(State())

    func ring() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard let w = s.waiter else {
                s.rung = true
                return nil
            }
            s.waiter = nil
            return w
        }
        waiter?.resume()
    }

    func wait(timeout: Duration) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let generation = state.withLock { s -> Int? in
                if s.rung {
                    s.rung = false
                    return nil
                }
                s.waiter = c
                s.generation += 1
                return s.generation
            }
            guard let generation else { return c.resume() }
            let (secs, attos) = timeout.components
            let nanos = max(0, Int(secs) * 1_000_000_000 + Int(attos / 1_000_000_000))
            DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(nanos)) {
                let w = self.state.withLock { s -> CheckedContinuation<Void, Never>? in
                    guard s.generation == generation, let w = s.waiter else { return nil }
                    s.waiter = nil
                    return w
                }
                w?.resume()
            }
        }
    }
}
