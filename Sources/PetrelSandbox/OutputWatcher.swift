import CPetrelLinux
import Foundation
import Synchronization

/// Watches file descriptors for input on one thread (one epoll set), for
/// reading what sandboxes write to their stdout/stderr pipes. A handler runs on
/// the watcher's thread whenever its fd is readable (or hung up) and returns
/// false once it is done with the fd (end of file); the watcher then drops the
/// fd from the set and closes it (in that order, so a reused fd number is never
/// dropped by mistake). The handler must not close it itself.
public final class OutputWatcher: Sendable {
    public static let shared = OutputWatcher()

    private let epfd: Int32
    private let handlers = Mutex<(next: UInt64, byToken: [UInt64: (fd: Int32, onReadable: @Sendable () -> Bool)])>((1, [:]))

    private init() {
        epfd = petrel_epoll_create()
        let thread = Thread { [self] in loop() }
        thread.name = "petrel-output"
        thread.start()
    }

    /// Calls `onReadable` whenever `fd` has input or was hung up, until it returns false.
    public func watch(_ fd: Int32, onReadable: @escaping @Sendable () -> Bool) throws {
        let token = handlers.withLock { h in
            let t = h.next
            h.next += 1
            h.byToken[t] = (fd, onReadable)
            return t
        }
        if petrel_epoll_add(epfd, fd, token) != 0 {
            _ = handlers.withLock { $0.byToken.removeValue(forKey: token) }
            throw SandboxError(.system, "epoll_ctl: cannot watch fd \(fd)", errno: errno)
        }
    }

    private func loop() {
        var tokens = [UInt64](repeating: 0, count: 64)
        while true {
            let n = petrel_epoll_wait(epfd, &tokens, 64, -1)
            if n < 0 { Thread.sleep(forTimeInterval: 0.01); continue }
            for t in tokens.prefix(Int(n)) {
                guard let h = handlers.withLock({ $0.byToken[t] }) else { continue }
                if !h.onReadable() {
                    _ = petrel_epoll_del(epfd, h.fd)
                    _ = handlers.withLock { $0.byToken.removeValue(forKey: t) }
                    close(h.fd)
                }
            }
        }
    }
}
