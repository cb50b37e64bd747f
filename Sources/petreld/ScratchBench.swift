import ArgumentParser
import CPetrelLinux
import Foundation
import Glibc
import PetrelSandbox

/// The /tmp rows of `Scripts/bench sandbox`: what a function sees of its
/// encrypted /tmp (write with fsync, read from the disk, many small files)
/// beside the same commands on the same kind of disk without encryption (an
/// ext4 image of the same size and options on a loop device, mounted on the
/// host), rounds alternating, same run.
enum ScratchBench {
    /// The commands, run by `sh` in /tmp (or the peer's directory) as `$1`; each prints `<what> <seconds>`.
    static let script = #"""
        t() { date +%s.%N; }
        cd "$1"
        a=$(t); dd if=/dev/zero of=big bs=1M count=256 conv=fsync 2>/dev/null; b=$(t); echo "write $(echo "$b - $a" | awk '{print $1 - $3}')"
        dd if=big iflag=nocache count=0 2>/dev/null
        a=$(t); dd if=big of=/dev/null bs=1M 2>/dev/null; b=$(t); echo "read $(echo "$b - $a" | awk '{print $1 - $3}')"
        rm big
        a=$(t); i=0; while [ $i -lt 2000 ]; do echo x > s$i; i=$((i+1)); done; sync -f .; b=$(t); echo "files $(echo "$b - $a" | awk '{print $1 - $3}')"
        rm -f s*
        """#

    struct Sample {
        var write: Double
        var read: Double
        var files: Double
    }

    static func parse(_ out: String) throws -> Sample {
        var v: [String: Double] = [:]
        for line in out.split(separator: "\n") {
            let p = line.split(separator: " ")
            if p.count == 2, let d = Double(p[1]) { v[String(p[0])] = d }
        }
        guard let w = v["write"], let r = v["read"], let f = v["files"] else { throw ValidationError("the /tmp benchmark printed: \(out)") }
        return Sample(write: w, read: r, files: f)
    }

    /// Runs the script in a sandbox of `engine` (its /tmp), output captured.
    static func inSandbox(_ engine: SandboxEngine) async throws -> Sample {
        var fds: [Int32] = [-1, -1]
        guard petrel_pipe_cloexec(&fds) == 0 else { throw ValidationError("pipe2 failed") }
        let devnull = try Sys.open("/dev/null", O_RDWR)
        defer { close(devnull) }
        let spec = SandboxSpec(
            command: ["/bin/sh", "-c", script, "sh", "/tmp"], memoryMB: 1769, ephemeralStorageMB: 512,
            stdin: devnull, stdout: fds[1], stderr: fds[1])
        let sandbox: Sandbox
        do { sandbox = try engine.spawn(spec) } catch {
            close(fds[0])
            close(fds[1])
            throw error
        }
        close(fds[1])
        let out = (try? Sys.readAll(fds[0], path: "the sandbox's output")) ?? ""
        close(fds[0])
        _ = await sandbox.wait()
        return try parse(out)
    }

    /// Runs the script on the host in `dir`.
    static func onHost(_ dir: String) throws -> Sample {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script, "sh", dir]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return try parse(out)
    }

    /// The kernel's implementation of xts(aes), as /proc/crypto names it.
    static func xtsDriver() -> String {
        let text = (try? String(contentsOfFile: "/proc/crypto", encoding: .utf8)) ?? ""
        for block in text.components(separatedBy: "\n\n") where block.contains("name         : xts(aes)") {
            for line in block.split(separator: "\n") where line.hasPrefix("driver") {
                return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "?"
            }
        }
        return "unknown (xts(aes) is not loaded)"
    }

    /// A plain ext4 image like a sandbox's (512 MB, no journal, 4 KiB blocks), unencrypted, mounted at a
    /// directory of its own; `body` gets the directory. Everything is undone afterwards.
    static func withPlainDisk<T>(in stateDirectory: String, _ body: (String) async throws -> T) async throws -> T {
        let base = stateDirectory + "/bench-plain-\(getpid())"
        try FileManager.default.createDirectory(atPath: base + "/mnt", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let image = base + "/disk.img"
        guard FileManager.default.createFile(atPath: image, contents: nil), truncate(image, 512 << 20) == 0 else {
            throw ValidationError("cannot make \(image)")
        }
        try run([
            "/usr/sbin/mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard", image,
        ])
        try run(["/bin/mount", "-o", "loop,nosuid,nodev", image, base + "/mnt"])
        defer { try? run(["/bin/umount", base + "/mnt"]) }
        return try await body(base + "/mnt")
    }

    static func run(_ argv: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0])
        p.arguments = Array(argv.dropFirst())
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw ValidationError("\(argv.joined(separator: " ")) failed") }
    }

    /// The table: the median of `rounds` alternating rounds of each.
    static func report(engine: SandboxEngine, stateDirectory: String, rounds: Int) async throws {
        var ours: [Sample] = []
        var plain: [Sample] = []
        try await withPlainDisk(in: stateDirectory) { dir in
            for _ in 0..<rounds {
                ours.append(try await inSandbox(engine))
                plain.append(try onHost(dir))
            }
        }
        func median(_ s: [Sample], _ k: KeyPath<Sample, Double>) -> Double { SandboxBench.percentile(s.map { $0[keyPath: k] }, 50) }
        let rows: [(String, KeyPath<Sample, Double>, (Double) -> String)] = [
            ("write 256 MiB, fsync (MB/s)", \.write, { String(format: "%.0f", 268.435456 / $0) }),
            ("read 256 MiB from the disk (MB/s)", \.read, { String(format: "%.0f", 268.435456 / $0) }),
            ("create 2,000 small files, sync (ms)", \.files, { String(format: "%.0f", $0 * 1000) }),
        ]
        print("")
        print(
            "/tmp as a function sees it (median of \(rounds) alternating rounds): Petrel's encrypted /tmp beside the same ext4 disk unencrypted"
        )
        SandboxBench.printTable(
            ["measure", "petrel /tmp (encrypted)", "plain ext4 loop disk", "petrel vs plain"],
            rows.map { name, k, fmt in
                let a = median(ours, k)
                let b = median(plain, k)
                return [name, fmt(a), fmt(b), String(format: "%.2fx time", a / b)]
            })
        print("Encrypted: fscrypt v2, AES-256-XTS contents and AES-256-CTS names, a random key per sandbox held by the kernel only.")
        print("  Reads served from the page cache are not decrypted again; 'read from the disk' drops the file's cache first.")
        print("  The plain disk's reads come from its image's page cache on the host; so do Petrel's, which then decrypt:")
        print("  the difference is the kernel's AES code, here \(xtsDriver()).")
    }
}
