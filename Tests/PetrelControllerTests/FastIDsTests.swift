import PetrelCore
import Testing

@Suite("Hot-path ids and numbers")
struct FastIDsTests {
    @Test("request ids are distinct version-4 UUIDs; decimals print like %.2f")
    func idsAndDecimals() {
        let ids = (0..<10_000).map { _ in FastIDs.uuid() }
        #expect(Set(ids).count == ids.count)
        for id in ids.prefix(100) {
            let parts = id.split(separator: "-").map(\.count)
            #expect(parts == [8, 4, 4, 4, 12], "\(id)")
            #expect(id.split(separator: "-")[2].first == "4")
            #expect("89ab".contains(id.split(separator: "-")[3].first!))
        }
        for (x, s) in [
            (0.0, "0.00"), (0.004, "0.00"), (0.005, "0.01"), (1.5, "1.50"), (12.345, "12.35"), (250.07, "250.07"), (1000, "1000.00"),
        ] {
            #expect(FastIDs.twoDecimals(x) == s, "\(x)")
        }
        #expect(FastIDs.hex(0xabc, 6) == "000abc")
    }
}
