import CPetrelZlib
import Foundation

/// One stored chunk of a log stream: consecutive lines written together (one
/// instance's output of one invocation, usually), packed and compressed into
/// one row. What a line costs is then about its compressed text, not a row and
/// two index entries of its own.
///
/// The blob: a format byte, the unpacked size (varint), then the packed lines,
/// raw deflate with `dictionary` preset (format 1) or as they are (format 0,
/// when deflate would not make them smaller). Packed lines: for each, the
/// zigzag varint of its timestamp minus the previous one's (the first's minus
/// the chunk's `base`), the varint of its length, its UTF-8 bytes.
public enum LogChunk {
    public struct Line: Sendable, Equatable {
        public var timestamp: Int64
        public var message: String
        public init(_ timestamp: Int64, _ message: String) {
            self.timestamp = timestamp
            self.message = message
        }
    }

    /// The text every function's log repeats. Deflate finds its matches best near
    /// the end, so the most frequent come last. Chunks written with it must always
    /// be read with it: a change is a new format byte, never an edit.
    static let dictionary: [UInt8] = Array(
        [
            "Traceback (most recent call last):\n  File \"/var/task/\", line , in \n[ERROR] Runtime.ExitError",
            "\tStatus: timeout\tStatus: error\tError Type: Runtime.OutOfMemory",
            "INIT_START Runtime Version: python3.11\tRuntime Version ARN: petrel:python3.11",
            "INIT_START Runtime Version: nodejs20.x\tRuntime Version ARN: petrel:nodejs20.x",
            " MB\tInit Duration: ",
            "END RequestId: ",
            "START RequestId: ",
            " Version: $LATEST",
            "REPORT RequestId: ",
            "\tDuration: 0. ms\tBilled Duration: 1 ms\tMemory Size: 128 MB\tMax Memory Used: ",
            "\tDuration:  ms\tBilled Duration:  ms\tMemory Size: 1769 MB\tMax Memory Used:  MB",
        ].joined().utf8)

    /// Packs and compresses `lines`; `base` is the first line's timestamp.
    static func encode(_ lines: ArraySlice<Line>, base: Int64) -> [UInt8] {
        var packed: [UInt8] = []
        packed.reserveCapacity(lines.reduce(0) { $0 + $1.message.utf8.count + 4 })
        var previous = base
        for l in lines {
            appendVarint(&packed, zigzag(l.timestamp &- previous))
            previous = l.timestamp
            appendVarint(&packed, UInt64(l.message.utf8.count))
            packed.append(contentsOf: l.message.utf8)
        }
        var out: [UInt8] = []
        if let deflated = deflate(packed), deflated.count < packed.count {
            out.append(1)
            appendVarint(&out, UInt64(packed.count))
            out += deflated
        } else {
            out.append(0)
            appendVarint(&out, UInt64(packed.count))
            out += packed
        }
        return out
    }

    struct Corrupt: Error, CustomStringConvertible {
        var description: String
    }

    /// The lines of a blob written by `encode`.
    static func decode(_ blob: [UInt8], base: Int64) throws -> [Line] {
        guard let format = blob.first else { throw Corrupt(description: "an empty log chunk") }
        var at = 1
        guard let size = readVarint(blob, &at), size <= 1 << 30 else { throw Corrupt(description: "a log chunk without its size") }
        let packed: [UInt8]
        switch format {
        case 0: packed = Array(blob[at...])
        case 1: packed = try inflate(blob[at...], size: Int(size))
        default: throw Corrupt(description: "a log chunk of unknown format \(format)")
        }
        guard packed.count == size else { throw Corrupt(description: "a log chunk of \(packed.count) bytes, not \(size)") }
        var lines: [Line] = []
        var i = 0
        var ts = base
        while i < packed.count {
            guard let delta = readVarint(packed, &i), let length = readVarint(packed, &i), Int(length) <= packed.count - i else {
                throw Corrupt(description: "a log chunk cut short")
            }
            ts = ts &+ unzigzag(delta)
            lines.append(Line(ts, String(decoding: packed[i..<i + Int(length)], as: UTF8.self)))
            i += Int(length)
        }
        return lines
    }

    // MARK: - varints

    static func zigzag(_ v: Int64) -> UInt64 { UInt64(bitPattern: (v << 1) ^ (v >> 63)) }
    static func unzigzag(_ v: UInt64) -> Int64 { Int64(bitPattern: v >> 1) ^ -Int64(bitPattern: v & 1) }

    static func appendVarint(_ out: inout [UInt8], _ value: UInt64) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    static func readVarint<C: RandomAccessCollection>(_ bytes: C, _ at: inout C.Index) -> UInt64? where C.Element == UInt8 {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while at < bytes.endIndex, shift < 64 {
            let b = bytes[at]
            bytes.formIndex(after: &at)
            v |= UInt64(b & 0x7f) << shift
            if b < 0x80 { return v }
            shift += 7
        }
        return nil
    }

    // MARK: - deflate with the preset dictionary

    static func deflate(_ input: [UInt8]) -> [UInt8]? {
        var s = z_stream()
        // A 4 KiB window (the dictionary and a chunk fit; raw inflate reads it with its 32 KiB one)
        // and the smallest hash: by zlib's own formula its state is then about 18 KB rather than
        // 256 KB, made and cleared for every chunk (one per invocation).
        guard deflateInit2_(&s, 1, Z_DEFLATED, -12, 2, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            return nil
        }
        defer { deflateEnd(&s) }
        guard dictionary.withUnsafeBufferPointer({ deflateSetDictionary(&s, $0.baseAddress, uInt($0.count)) }) == Z_OK else { return nil }
        return finish(&s, input[...], capacity: Int(deflateBound(&s, uLong(input.count))), CPetrelZlib.deflate)
    }

    static func inflate(_ input: ArraySlice<UInt8>, size: Int) throws -> [UInt8] {
        var s = z_stream()
        guard inflateInit2_(&s, -15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw Corrupt(description: "inflateInit2 failed")
        }
        defer { inflateEnd(&s) }
        guard dictionary.withUnsafeBufferPointer({ inflateSetDictionary(&s, $0.baseAddress, uInt($0.count)) }) == Z_OK else {
            throw Corrupt(description: "inflateSetDictionary failed")
        }
        // One byte more than expected: a longer stream then does not end within the buffer.
        guard let out = finish(&s, input, capacity: size + 1, CPetrelZlib.inflate) else {
            throw Corrupt(description: "a log chunk does not inflate")
        }
        return out
    }

    /// Runs `step` (deflate or inflate) over all of `input` in one call, into a buffer of
    /// `capacity` bytes; the output, or nil unless the stream ended there.
    private static func finish(
        _ s: inout z_stream, _ input: ArraySlice<UInt8>, capacity: Int,
        _ step: (UnsafeMutablePointer<z_stream>, Int32) -> Int32
    ) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: capacity)
        let status: Int32 = input.withUnsafeBufferPointer { inp in
            out.withUnsafeMutableBufferPointer { o in
                s.next_in = UnsafeMutablePointer(mutating: inp.baseAddress)
                s.avail_in = uInt(inp.count)
                s.next_out = o.baseAddress
                s.avail_out = uInt(o.count)
                return step(&s, Z_FINISH)
            }
        }
        guard status == Z_STREAM_END else { return nil }
        out.removeLast(out.count - Int(s.total_out))
        return out
    }

}

/// CRC-32 (IEEE 802.3), zlib's: the journal's records and the event stream's messages.
public enum Checksum {
    public static func crc32(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        UInt32(CPetrelZlib.crc32(0, bytes.baseAddress?.assumingMemoryBound(to: Bytef.self), uInt(bytes.count)))
    }

    public static func crc32(_ bytes: some ContiguousBytes) -> UInt32 { bytes.withUnsafeBytes { crc32($0) } }
}
