import Foundation
import Glibc
import PetrelSandbox
import Testing

@Suite("Engine", .serialized)
struct EngineTests {
    @Test("starting an engine removes a dead daemon's scratch images, never a live one's")
    func staleImages() throws {
        _ = try Fixtures.engine() // root check with a clear reason
        let dir = "/var/tmp/petrel-tests/state/scratch"
        // A pid that is surely dead: a child we started and reaped.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()
        let dead = "\(dir)/\(child.processIdentifier)-1.img", live = "\(dir)/1-1.img"
        defer { try? FileManager.default.removeItem(atPath: live); try? FileManager.default.removeItem(atPath: dead) }
        #expect(FileManager.default.createFile(atPath: dead, contents: nil))
        #expect(FileManager.default.createFile(atPath: live, contents: nil))
        let engine = try SandboxEngine(configuration: SandboxEngineConfiguration(
            stateDirectory: "/var/tmp/petrel-tests/state", runDirectory: "/var/tmp/petrel-tests/run",
            rootfsSkeleton: Fixtures.repo + "/rootfs", preparedPoolSize: 0))
        defer { engine.shutdown() }
        #expect(!FileManager.default.fileExists(atPath: dead), "a dead daemon's image was kept")
        #expect(FileManager.default.fileExists(atPath: live), "a live daemon's image was removed")
    }
}
