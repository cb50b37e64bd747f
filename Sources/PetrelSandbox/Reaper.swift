import CPetrelLinux
import Foundation
import Synchronization

/// Waits for sandboxes to end: one thread, one epoll set of pidfds, and a
/// continuation per waiter, instead of a blocked thread per sandbox.
final class Reaper: Sendable {
    static let shared = Reaper()

    private let epfd: Int32
    private let waiters = Mutex<(next: UInt64, byToken: [UInt64: (fd: Int32, done: CheckedContinuation<Void, Never>)])>((1, [:]))

    private init() {
        epfd = petrel_epoll_create()
        let thread = Thread { [self] in loop() }
        thread.name = "petrel-reaper"
        thread.start()
    }

    /// Returns once the process behind `pidfd` has exited (it is not reaped here).
    func exited(_ pidfd: Int32) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let token = waiters.withLock { w in
                let t = w.next
                w.next += 1
                w.byToken[t] = (pidfd, c)
                return t
            }
            if petrel_epoll_add(epfd, pidfd, token) != 0 {
                // Not pollable (should not happen for a pidfd): do not hang the caller.
                if let w = waiters.withLock({ $0.byToken.removeValue(forKey: token) }) { w.done.resume() }
            }
        }
    }

    private func loop() {
        var tokens = [UInt64](repeating: 0, count: 64)
        while true {
            let n = petrel_epoll_wait(epfd, &tokens, 64, -1)
            if n < 0 { Thread.sleep(forTimeInterval: 0.01); continue }
            for t in tokens.prefix(Int(n)) {
                guard let w = waiters.withLock({ $0.byToken.removeValue(forKey: t) }) else { continue }
                _ = petrel_epoll_del(epfd, w.fd)
                w.done.resume()
            }
        }
    }
}
