import CPetrelLinux
import Foundation
import Glibc
import PetrelSandbox
import Synchronization
import Testing

/// The sandbox's network namespace: nothing gets in, port 25 does not get out.
/// The "outside" is the test's own listener on the sandbox's own veth gateway
/// address; no traffic goes anywhere else.
@Suite("Network isolation", .serialized)
struct NetworkTests {
    @Test("an inbound connection from the host to a listener inside the sandbox is refused")
    func inbound() async throws {
        let run = try Fixtures.start(["listen", "8080", "3"], timeout: .seconds(30), network: .host)
        #expect(await run.out.waitFor("LISTENING"), "the listener did not start: \(run.out.text)")
        let address = try #require(run.sandbox.resources.address)
        let outcome = HostSocket.connect(address, 8080, timeoutMs: 2000)
        #expect(outcome != "ok", "the host reached a listener inside the sandbox")
        let (report, output) = await run.finish()
        #expect(report.exitCode == 0)
        // The listener was up (it accepted its own loopback connection) and saw nothing from outside.
        #expect(Fixtures.result(output, "listen") == "loopback=1 external=0", "\(output)")
        Fixtures.expectReleased(run.sandbox.resources)
    }

    @Test("outbound TCP port 25 is refused while another port on the same address works")
    func port25() async throws {
        // Gateway address exists once the sandbox's network does, so: start a sandbox that
        // waits, put listeners on its gateway, then let the probes connect.
        let run = try Fixtures.start(
            [
                "/bin/sh", "-c",
                "sleep 1; /var/task/sandbox-probe connect-gateway 25; /var/task/sandbox-probe connect-gateway 8025",
            ],
            timeout: .seconds(30), network: .host, probe: false)
        let gateway = try #require(run.sandbox.resources.gateway)
        let smtp = try HostListener(address: gateway, port: 25)
        let other = try HostListener(address: gateway, port: 8025)
        let (report, output) = await run.finish()
        smtp.stop()
        other.stop()
        #expect(report.exitCode == 0)
        let lines = output.split(separator: "\n").filter { $0.hasPrefix("RESULT connect") }
        #expect(lines.count == 2, "\(output)")
        #expect(lines.first == "RESULT connect ECONNREFUSED", "port 25: \(output)")
        #expect(lines.last == "RESULT connect ok", "port 8025: \(output)")
        #expect(output.contains("READ hello"), "\(output)")
        #expect(smtp.accepted == 0, "a connection to port 25 left the sandbox")
        #expect(other.accepted == 1)
        Fixtures.expectReleased(run.sandbox.resources)
    }

    @Test("a policy's denied networks are unreachable, while the same port is reachable without the rule")
    func policyCIDRs() async throws {
        var policy = SandboxPolicy.default
        policy.network.denyCIDRs = ["10.213.0.0/16"] // every host-mode gateway
        let script = "sleep 1; /var/task/sandbox-probe connect-gateway 8027"
        let denied = try Fixtures.start(["/bin/sh", "-c", script], timeout: .seconds(30), network: .host, policy: policy, probe: false)
        let allowed = try Fixtures.start(["/bin/sh", "-c", script], timeout: .seconds(30), network: .host, probe: false)
        let l1 = try HostListener(address: try #require(denied.sandbox.resources.gateway), port: 8027)
        let l2 = try HostListener(address: try #require(allowed.sandbox.resources.gateway), port: 8027)
        let (_, out1) = await denied.finish()
        let (_, out2) = await allowed.finish()
        l1.stop()
        l2.stop()
        #expect(Fixtures.result(out1, "connect") == "EHOSTUNREACH", "\(out1)")
        #expect(l1.accepted == 0)
        #expect(Fixtures.result(out2, "connect") == "ok", "\(out2)")
        #expect(l2.accepted == 1)
        Fixtures.expectReleased(denied.sandbox.resources)
        Fixtures.expectReleased(allowed.sandbox.resources)
    }

    @Test("a listener the daemon opens at an abstract name inside a sandbox is reachable from inside only")
    func abstractListener() async throws {
        // Abstract AF_UNIX names belong to a network namespace: the Runtime API's socket
        // in one sandbox is not reachable from the host, nor from another sandbox.
        let name = "petrel-test-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        let run = try Fixtures.start(
            ["/bin/sh", "-c", "sleep 1; /var/task/sandbox-probe connect-abstract \(name)"],
            timeout: .seconds(30), probe: false, listen: [.abstract(name), .tcp(9001), .abstract(name)])
        let other = try Fixtures.start(
            ["/bin/sh", "-c", "sleep 1; /var/task/sandbox-probe connect-abstract \(name)"],
            timeout: .seconds(30), probe: false)
        #expect(run.sandbox.listeners.count == 2)
        #expect(run.sandbox.listeners[.tcp(9001)] != nil)
        let listener = try #require(run.sandbox.listeners[.abstract(name)])
        defer { run.sandbox.listeners.values.forEach { _ = close($0) } }
        #expect(HostSocket.connectAbstract(name) == "ECONNREFUSED", "the host reached a sandbox's abstract socket")
        var p = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        #expect(poll(&p, 1, 15_000) == 1, "nobody connected from inside")
        let conn = accept(listener, nil, nil)
        #expect(conn >= 0)
        if conn >= 0 {
            _ = "hello".withCString { write(conn, $0, 5) }
            close(conn)
        }
        let (report, output) = await run.finish()
        let (_, otherOutput) = await other.finish()
        #expect(report.exitCode == 0)
        #expect(Fixtures.result(output, "connect") == "ok", "\(output)")
        #expect(output.contains("READ hello"), "\(output)")
        #expect(Fixtures.result(otherOutput, "connect") == "ECONNREFUSED", "another sandbox reached it: \(otherOutput)")
        Fixtures.expectReleased(run.sandbox.resources)
        Fixtures.expectReleased(other.sandbox.resources)
    }

    @Test("an abstract name that is empty or longer than sun_path allows is refused, and nothing opened before it stays open")
    func abstractNameLimits() async throws {
        func sockets() -> Int {
            ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [])
                .filter { Fixtures.readlink("/proc/self/fd/" + $0)?.hasPrefix("socket:") == true }.count
        }
        let before = sockets()
        for bad in ["", String(repeating: "n", count: 107)] {
            #expect(throws: SandboxError.self, "name of \(bad.utf8.count) bytes") {
                _ = try Fixtures.start(["/bin/true"], probe: false, listen: [.tcp(9001), .abstract(bad)])
            }
        }
        // The TCP listener opened before the bad name is closed again, as is the sandbox's own.
        #expect(sockets() == before)
        // 106 bytes is the longest name: it works.
        let run = try Fixtures.start(["/bin/true"], probe: false, listen: [.abstract(String(repeating: "n", count: 106))])
        #expect(run.sandbox.listeners.count == 1)
        run.sandbox.listeners.values.forEach { _ = close($0) }
        let (report, _) = await run.finish()
        #expect(report.exitCode == 0)
        Fixtures.expectReleased(run.sandbox.resources)
    }

    @Test("with network none there is no route out")
    func noneMode() async throws {
        let (_, output) = try await Fixtures.probe(["connect", "10.213.0.1", "80"], network: SandboxPolicy.NetworkMode.none)
        #expect(Fixtures.result(output, "connect") == "ENETUNREACH", "\(output)")
    }

    @Test("a policy's denied ports are refused too")
    func policyPorts() async throws {
        var policy = SandboxPolicy.default
        policy.network.denyTCPPorts = [8026]
        let run = try Fixtures.start(
            ["/bin/sh", "-c", "sleep 1; /var/task/sandbox-probe connect-gateway 8026"],
            timeout: .seconds(30), network: .host, policy: policy, probe: false)
        let listener = try HostListener(address: try #require(run.sandbox.resources.gateway), port: 8026)
        let (_, output) = await run.finish()
        listener.stop()
        #expect(Fixtures.result(output, "connect") == "ECONNREFUSED", "\(output)")
        #expect(listener.accepted == 0)
        Fixtures.expectReleased(run.sandbox.resources)
    }
}

/// Host-side sockets for the tests (only to addresses the test's sandboxes created).
enum HostSocket {
    static func address(_ host: String, _ port: Int) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &a.sin_addr)
        return a
    }

    /// "ok" or the errno name.
    static func connect(_ host: String, _ port: Int, timeoutMs: Int32) -> String {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(s) }
        var a = address(host, port)
        let r = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r < 0 && errno != EINPROGRESS { return String(cString: petrel_errno_name(errno)) }
        var p = pollfd(fd: s, events: Int16(POLLOUT), revents: 0)
        if poll(&p, 1, timeoutMs) == 0 { return "ETIMEDOUT" }
        var err: Int32 = 0
        var len = socklen_t(4)
        getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len)
        return err == 0 ? "ok" : String(cString: petrel_errno_name(err))
    }
}

extension HostSocket {
    /// Connects to an abstract AF_UNIX name from the test's own network namespace: "ok" or the errno name.
    static func connectAbstract(_ name: String) -> String {
        let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(s) }
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8)
        withUnsafeMutableBytes(of: &a.sun_path) { path in
            for (i, b) in bytes.prefix(path.count - 2).enumerated() { path[i + 1] = b }
        }
        let len = socklen_t(MemoryLayout<sockaddr_un>.size) // the whole NUL-padded sun_path, as petreld binds
        let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(s, $0, len) } }
        return r == 0 ? "ok" : String(cString: petrel_errno_name(errno))
    }
}

/// A listener on an address of the test's own that says "hello" and counts connections.
final class HostListener: Sendable {
    private let fd: Int32
    private let state = Mutex<(accepted: Int, stop: Bool)>((0, false))
    private let done = Mutex<Bool>(false)

    init(address: String, port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
        var a = HostSocket.address(address, port)
        let r = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0, listen(fd, 8) == 0 else {
            close(fd)
            throw Fixtures.Failure(description: "cannot listen on \(address):\(port): \(String(cString: strerror(errno)))")
        }
        let t = Thread { [self] in
            while !state.withLock({ $0.stop }) {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 50) > 0 else { continue }
                let c = accept(fd, nil, nil)
                guard c >= 0 else { continue }
                _ = "hello".withCString { write(c, $0, 5) }
                close(c)
                state.withLock { $0.accepted += 1 }
            }
            close(fd)
            done.withLock { $0 = true }
        }
        t.start()
    }

    var accepted: Int { state.withLock { $0.accepted } }

    func stop() {
        state.withLock { $0.stop = true }
        while !done.withLock({ $0 }) { Thread.sleep(forTimeInterval: 0.01) }
    }
}
