import NIOCore
import PetrelStore

/// AWS's event stream framing (`application/vnd.amazon.eventstream`), which botocore
/// decodes for InvokeWithResponseStream: each message is its total length, its headers'
/// length and a CRC-32 of those two, the headers, the payload, and a CRC-32 of all before.
public enum EventStream {
    /// One message; every header value is a string (type 7).
    public static func message(headers: [(String, String)], payload: [UInt8]) -> [UInt8] {
        var h: [UInt8] = []
        for (name, value) in headers {
            let n = Array(name.utf8)
            let v = Array(value.utf8)
            h.append(UInt8(n.count))
            h += n
            h.append(7)
            h += [UInt8(v.count >> 8 & 0xff), UInt8(v.count & 0xff)]
            h += v
        }
        let total = 12 + h.count + payload.count + 4
        var out: [UInt8] = []
        out.reserveCapacity(total)
        out += bigEndian(UInt32(total))
        out += bigEndian(UInt32(h.count))
        out += bigEndian(Checksum.crc32(out))
        out += h
        out += payload
        out += bigEndian(Checksum.crc32(out))
        return out
    }

    /// An event of the stream: `:message-type` event, its type and its payload's content type.
    public static func event(_ type: String, contentType: String, payload: [UInt8]) -> [UInt8] {
        message(headers: [(":event-type", type), (":content-type", contentType), (":message-type", "event")], payload: payload)
    }

    /// InvokeWithResponseStream's `PayloadChunk` event carrying `bytes`.
    static func payloadChunk(_ bytes: ByteBuffer) -> ByteBuffer {
        ByteBuffer(bytes: event("PayloadChunk", contentType: "application/octet-stream", payload: Array(bytes.readableBytesView)))
    }

    static func bigEndian(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
}
