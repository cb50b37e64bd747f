import CPetrelLinux
import Foundation
import Synchronization

/// One thread, one epoll set, for everything the engine waits on without
/// blocking a thread each: sandboxes ending (their pidfds become readable) and
/// what sandboxes write to their output pipes.
///
/// A handler runs on the watcher's thread whenever its fd is readable (or hung
/// up) and returns false once it is done with the fd. The watcher then drops
/// the fd from its set and, when asked to, closes it (in that order, so a reused
/// fd number is never dropped by mistake); such a handler must not close it itself.
public final class FDWatcher: Sendable {
    public static let shared = FDWatcher()

    private struct Entry {
        var fd: Int32
        var closeWhenDone: Bool
        var onReadable: @Sendable () -> Bool
    }
    private let epfd: Int32
    private let entries = Mutex<(next: UInt64, byToken: [UInt64: Entry])>((1, [:]))

    private init() {
        epfd = petrel_epoll_create()
        let thread = Thread { [self] in loop() }
        thread.name = "petrel-fdwatch"
        thread.start()
    }

    /// Calls `onReadable` whenever `fd` has input or was hung up, until it returns false.
    public func watch(_ fd: Int32, closeWhenDone: Bool, onReadable: @escaping @Sendable () -> Bool) throws {
        let token = entries.withLock { e in
            let t = e.next
            e.next += 1
            e.byToken[t] = Entry(fd: fd, closeWhenDone: closeWhenDone, onReadable: onReadable)
            return t
        }
        if petrel_epoll_add(epfd, fd, token) != 0 {
            let err = errno
            _ = entries.withLock { $0.byToken.removeValue(forKey: token) }
            throw SandboxError(.system, "epoll_ctl: cannot watch fd \(fd)", errno: err)
        }
    }

    private func loop() {
        var tokens = [UInt64](repeating: 0, count: 64)
        while true {
            let n = petrel_epoll_wait(epfd, &tokens, 64, -1)
            if n < 0 {
                Thread.sleep(forTimeInterval: 0.01)
                continue
            }
            for t in tokens.prefix(Int(n)) {
                guard let e = entries.withLock({ $0.byToken[t] }) else { continue }
                if !e.onReadable() {
                    _ = petrel_epoll_del(epfd, e.fd)
                    _ = entries.withLock { $0.byToken.removeValue(forKey: t) }
                    if e.closeWhenDone { close(e.fd) }
                }
            }
        }
    }
}

/// Waits for sandboxes to end, through the watcher: a pidfd turns readable when
/// its process exits (it is not reaped here).
enum Reaper {
    static func exited(_ pidfd: Int32) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            do {
                try FDWatcher.shared.watch(pidfd, closeWhenDone: false) {
                    c.resume()
                    return false
                }
            } catch {
                // Not pollable (should not happen for a pidfd): do not hang the caller.
                c.resume()
            }
        }
    }
}
