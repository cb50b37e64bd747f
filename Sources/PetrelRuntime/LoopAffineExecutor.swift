import NIOCore
import NIOPosix
import Synchronization

/// Task executors on the NIO event loops, so that an invocation's task follows
/// its I/O instead of bouncing between the cooperative pool and the loops.
///
/// The API server's tasks run under `LoopAffineExecutor` (a job runs on the
/// loop whose thread made it runnable: a request is handled on the loop that
/// read it). An invocation then pins itself to its connection's loop
/// (`LoopExecutors.executor(for:)`), and the dispatcher prefers an instance
/// whose Runtime API lives on that same loop: a warm invocation then makes no
/// thread hand-off in the daemon at all, and the work is spread over the loops
/// as the connections are. Work that blocks must not run on these executors;
/// the API moves everything but invocations off them.
public final class LoopAffineExecutor: TaskExecutor {
    let loops: [any EventLoop]
    /// Its own round robin for jobs made runnable off the loops: `group.next()` would
    /// disturb the group's even spreading of new connections over the loops.
    let turn = Atomic<Int>(0)

    public init(group: any EventLoopGroup) {
        loops = Array(group.makeIterator())
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let loop =
            MultiThreadedEventLoopGroup.currentEventLoop
            ?? loops[turn.wrappingAdd(1, ordering: .relaxed).oldValue % loops.count]
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// Runs every job on one event loop.
public final class LoopExecutor: TaskExecutor {
    public let loop: any EventLoop

    init(loop: any EventLoop) { self.loop = loop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// One `LoopExecutor` per loop of a group, made once.
public final class LoopExecutors: Sendable {
    private let executors: [LoopExecutor]

    public init(group: any EventLoopGroup) {
        executors = group.makeIterator().map { LoopExecutor(loop: $0) }
    }

    /// The executor of `loop`, nil when it is not one of the group's.
    public func executor(for loop: any EventLoop) -> LoopExecutor? {
        executors.first { $0.loop === loop }
    }
}
