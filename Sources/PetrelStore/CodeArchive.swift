import Foundation
import PetrelCore
import ZIPFoundation

/// Unpacks a function's ZIP safely: no absolute paths, no `..`, no links that
/// leave the package or dangle, and never more than `maxUnzippedBytes` written
/// whatever the archive claims (zip bombs stop there).
public enum CodeArchive {
    public static let maxZippedBytes = 50 * 1024 * 1024
    public static let maxUnzippedBytes = 262_144_000
    public static let maxEntries = 100_000

    /// Extracts `zip` into `directory` (which must not exist yet) and returns the
    /// number of bytes written. On any failure the directory is removed.
    @discardableResult
    public static func extract(_ zip: Data, into directory: String, limit: Int = maxUnzippedBytes) throws -> Int {
        let fm = FileManager.default
        let archive: Archive
        do {
            archive = try Archive(data: zip, accessMode: .read)
        } catch {
            throw unreadable
        }
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        do {
            let total = try unpack(archive, into: directory, limit: limit)
            return total
        } catch {
            try? fm.removeItem(atPath: directory)
            throw error
        }
    }

    static let unreadable = StoreError(code: .invalid, "Could not unzip uploaded file. Please check your file, then try to upload again.")

    private static func unpack(_ archive: Archive, into root: String, limit: Int) throws -> Int {
        var total = 0
        var count = 0
        var links: [(path: String, target: String)] = []
        for entry in archive {
            count += 1
            guard count <= maxEntries else {
                throw StoreError(code: .invalid, "The ZIP has more than \(maxEntries) entries.")
            }
            let rel = try safeRelativePath(entry.path)
            if rel.isEmpty { continue }
            let dest = root + "/" + rel
            switch entry.type {
            case .directory:
                try makeDirectories(root: root, rel: rel)
            case .symlink:
                var target = Data()
                _ = try archive.extract(entry, skipCRC32: false) { target.append($0) }
                guard let t = String(data: target, encoding: .utf8), !t.isEmpty, !t.contains("\0") else { throw unreadable }
                links.append((rel, t))
            case .file:
                let parent = parentPath(rel)
                if !parent.isEmpty { try makeDirectories(root: root, rel: parent) }
                let mode = UInt16(truncatingIfNeeded: entryMode(entry))
                let fd = open(dest, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, (mode & 0o111) != 0 ? 0o755 : 0o644)
                guard fd >= 0 else {
                    throw StoreError(code: .invalid, "The ZIP holds \(rel) twice or under a file's name.")
                }
                defer { close(fd) }
                do {
                    _ = try archive.extract(entry, skipCRC32: false) { chunk in
                        total += chunk.count
                        guard total <= limit else { throw tooLarge(limit) }
                        try chunk.withUnsafeBytes { buf in
                            var off = 0
                            while off < buf.count {
                                let n = write(fd, buf.baseAddress! + off, buf.count - off)
                                if n < 0 {
                                    if errno == EINTR { continue }
                                    throw POSIXError(.init(rawValue: errno) ?? .EIO)
                                }
                                off += n
                            }
                        }
                    }
                } catch let e as StoreError {
                    throw e
                } catch is POSIXError {
                    throw StoreError("Petrel could not write the unzipped code.")
                } catch {
                    throw unreadable
                }
                fchmod(fd, (mode & 0o111) != 0 ? 0o755 : 0o644)
            }
        }
        // Links last, so nothing is ever written through one.
        for link in links {
            try checkLinkTarget(link.target, from: link.path)
            let dest = root + "/" + link.path
            let parent = parentPath(link.path)
            if !parent.isEmpty { try makeDirectories(root: root, rel: parent) }
            guard symlink(link.target, dest) == 0 else {
                throw StoreError(code: .invalid, "The ZIP holds \(link.path) twice or under a file's name.")
            }
        }
        let realRoot = (try? resolved(root)) ?? root
        for link in links {
            guard let real = try? resolved(root + "/" + link.path),
                real == realRoot || real.hasPrefix(realRoot + "/")
            else {
                throw StoreError(
                    code: .invalid,
                    "The link \(link.path) in the ZIP points outside the package or to nothing (\(link.target)); links must point to a file or directory inside it."
                )
            }
        }
        return total
    }

    /// `a/b/c` → `a/b`, `c` → `` (Foundation's NSString version traps on one-character names).
    static func parentPath(_ rel: String) -> String {
        rel.split(separator: "/").dropLast().joined(separator: "/")
    }

    static func tooLarge(_ limit: Int) -> StoreError {
        StoreError(code: .invalid, "Unzipped size must be smaller than \(limit) bytes")
    }

    /// The entry's path made relative and checked: no absolute path, no `..`, no NUL.
    static func safeRelativePath(_ path: String) throws -> String {
        guard !path.hasPrefix("/"), !path.hasPrefix("\\"), !path.contains("\0"), !path.contains("\\") else {
            throw StoreError(
                code: .invalid,
                "The ZIP entry \"\(path)\" has an absolute or malformed path; every path must be relative and inside the package.")
        }
        let parts = path.split(separator: "/").filter { $0 != "." }
        guard !parts.contains("..") else {
            throw StoreError(code: .invalid, "The ZIP entry \"\(path)\" leaves the package (\"..\"); every path must stay inside it.")
        }
        return parts.joined(separator: "/")
    }

    /// A link's target, read lexically from the link's directory, must stay inside.
    static func checkLinkTarget(_ target: String, from linkPath: String) throws {
        guard !target.hasPrefix("/") else {
            throw StoreError(
                code: .invalid, "The link \(linkPath) in the ZIP points to the absolute path \(target); links must stay inside the package."
            )
        }
        var stack = linkPath.split(separator: "/").dropLast().map(String.init)
        for part in target.split(separator: "/") where part != "." {
            if part == ".." {
                guard !stack.isEmpty else {
                    throw StoreError(code: .invalid, "The link \(linkPath) in the ZIP points outside the package (\(target)).")
                }
                stack.removeLast()
            } else {
                stack.append(String(part))
            }
        }
    }

    private static func makeDirectories(root: String, rel: String) throws {
        var path = root
        for part in rel.split(separator: "/") {
            path += "/" + part
            if mkdir(path, 0o755) != 0 {
                var st = stat()
                guard errno == EEXIST, lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
                    throw StoreError(code: .invalid, "The ZIP uses \(rel) both as a directory and as a file or link.")
                }
            }
        }
    }

    private static func entryMode(_ entry: Entry) -> Int {
        (entry.fileAttributes[.posixPermissions] as? NSNumber)?.intValue ?? 0o644
    }

    private static func resolved(_ path: String) throws -> String {
        guard let p = realpath(path, nil) else { throw POSIXError(.init(rawValue: errno) ?? .ENOENT) }
        defer { free(p) }
        return String(cString: p)
    }
}
