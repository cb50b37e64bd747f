import Foundation
import Glibc
import PetrelSandbox
import Testing

/// A sandbox's /tmp is encrypted at rest (fscrypt) under a key of its own that
/// only the kernel holds: what a function writes is not on its disk in clear,
/// and a disk recycled for the next sandbox gets a new key.
@Suite("Encrypted /tmp", .serialized)
struct ScratchEncryptionTests {
    /// Reads the whole block device (its buffers flushed first, so what is read is what the
    /// disk holds): whether any of `needles` is on it, and how many bytes are not zero.
    static func scan(_ device: String, for needles: [String]) throws -> (found: [String], nonZeroBytes: Int) {
        let fd = open(device, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Fixtures.Failure(description: "open \(device): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        _ = ioctl(fd, 0x1261) // BLKFLSBUF
        let chunk = 8 << 20
        let overlap = 256
        var buf = [UInt8](repeating: 0, count: chunk + overlap)
        var found = Set<String>()
        var nonZero = 0
        var carried = 0
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress! + carried, chunk) }
            guard n > 0 else { break }
            let total = carried + n
            // Foundation's search and libc's memcmp: this loop runs unoptimized in a debug build.
            let data = Data(buf[0..<total])
            for needle in needles where !found.contains(needle) && data.range(of: Data(needle.utf8)) != nil { found.insert(needle) }
            let zero = [UInt8](repeating: 0, count: 4096)
            buf.withUnsafeBytes { raw in
                var block = carried
                while block + 4096 <= total {
                    if memcmp(raw.baseAddress! + block, zero, 4096) != 0 { nonZero += 4096 }
                    block += 4096
                }
            }
            // Keep the last bytes for a needle that straddles two chunks.
            carried = min(overlap, total)
            buf.withUnsafeMutableBytes { raw in raw.baseAddress!.copyMemory(from: raw.baseAddress! + total - carried, byteCount: carried) }
        }
        return (found.sorted(), nonZero)
    }

    @Test("what a function writes to /tmp is not on its disk in clear, and every sandbox, on a recycled disk too, has a key of its own")
    func encryptedAtRest() async throws {
        _ = try Fixtures.engine() // root check with a clear reason
        // An engine that keeps released disks (a pool of one): the second sandbox gets the first one's disk.
        let engine = try Fixtures.newEngine(pool: 1)
        var markers: [String] = []
        var keys: [String] = []
        var devices: [String] = []
        var images: [String] = []
        do {
            defer { engine.shutdown() }
            for round in 0..<2 {
                // Written as the file's contents and as its name.
                let marker = "PETREL-MARKER-\(round)-\(UInt64.random(in: 0...UInt64.max))"
                markers.append(marker)
                let run = try Fixtures.start(["scratch", marker], timeout: .seconds(120), engine: engine)
                #expect(await run.out.waitFor("WRITTEN", seconds: 60), "\(run.out.text)")
                let out = run.out.text
                #expect(out.contains("TMP_ENTRIES\n"), "/tmp starts empty, whatever the disk held before: \(out)")
                // fscrypt v2, AES-256-XTS contents (1), AES-256-CTS names (4).
                let policy = out.split(separator: "\n").first { $0.hasPrefix("POLICY ") }.map(String.init) ?? ""
                #expect(policy.hasPrefix("POLICY v2 contents 1 names 4 key "), "\(out)")
                keys.append(String(policy.split(separator: " ").last ?? ""))
                let device = run.sandbox.resources.loopDevice
                devices.append(device)
                images.append(run.sandbox.resources.scratchImage)
                let scan = try Self.scan(device, for: markers)
                #expect(scan.found.isEmpty, "in clear on \(device): \(scan.found)")
                // The 16 MiB did reach the disk (as ciphertext): the search above looked at them.
                #expect(scan.nonZeroBytes >= 16 << 20, "only \(scan.nonZeroBytes) bytes on \(device) are not zero")
                run.sandbox.kill()
                _ = await run.finish()
            }
        }
        #expect(devices.count == 2 && devices[0] == devices[1], "the second sandbox was to get the first one's disk: \(devices)")
        #expect(keys.count == 2 && keys[0] != keys[1] && keys.allSatisfy { $0.count == 32 }, "\(keys)")
        // shutdown() detached the kept disk.
        for (device, image) in zip(devices, images) {
            var attached = true
            for _ in 0..<400 where attached {
                attached = ScratchDisk.isAttached(device: device, image: image)
                if attached { usleep(5000) }
            }
            #expect(!attached, "\(device) is still attached to \(image)")
        }
    }
}
