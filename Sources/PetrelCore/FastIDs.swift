import Synchronization

/// Request and trace ids for the hot path. They must be unique, not secret:
/// SplitMix64 seeded once from the system's generator, instead of a getrandom(2)
/// call per draw.
public enum FastIDs {
    private static let state = Mutex<UInt64>(UInt64.random(in: .min ... .max))

    public static func next() -> UInt64 {
        state.withLock { s in
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let digits = Array("0123456789abcdef".utf8)

    /// `v`'s low `count` hex digits, zero-padded.
    public static func hex(_ v: UInt64, _ count: Int) -> String {
        var out = [UInt8](repeating: 0x30, count: count)
        var x = v
        for i in stride(from: count - 1, through: 0, by: -1) {
            out[i] = digits[Int(x & 0xf)]
            x >>= 4
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Bytes as lower-case hex (digests, ids).
    public static func hex<S: Sequence>(bytes: S) -> String where S.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A hex digit's value (either case).
    public static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x61...0x66: c - 0x61 + 10
        case 0x41...0x46: c - 0x41 + 10
        default: nil
        }
    }

    /// Hex (either case) back to bytes; nil when it is not an even run of hex digits.
    public static func bytes(hex: String) -> [UInt8]? {
        let u = Array(hex.utf8)
        guard u.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(u.count / 2)
        for i in stride(from: 0, to: u.count, by: 2) {
            guard let h = hexValue(u[i]), let l = hexValue(u[i + 1]) else { return nil }
            out.append(h << 4 | l)
        }
        return out
    }

    /// A lower-case UUID (version 4 layout).
    public static func uuid() -> String {
        let a = next()
        let b = next()
        let hi = (a & 0xFFFF_FFFF_FFFF_0FFF) | 0x4000
        let lo = (b & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
        return hex(hi >> 32, 8) + "-" + hex(hi >> 16, 4) + "-" + hex(hi, 4) + "-" + hex(lo >> 48, 4) + "-" + hex(lo, 12)
    }

    /// `x` with two decimals (String(format:) is slow on this path).
    public static func twoDecimals(_ x: Double) -> String {
        guard x.isFinite, x >= 0, x < 1e15 else { return "\(x)" }
        let hundredths = Int((x * 100).rounded())
        let frac = hundredths % 100
        return "\(hundredths / 100)." + (frac < 10 ? "0\(frac)" : "\(frac)")
    }
}
