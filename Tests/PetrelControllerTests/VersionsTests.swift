import Foundation
import PetrelCore
import Testing

@Suite("Versions, aliases and layer names")
struct VersionsTests {
    @Test("an alias routes each draw by its weights, the primary taking what is left")
    func routing() {
        let plain = FunctionAlias(name: "live", functionVersion: "3")
        #expect(plain.pick(draw: 0) == "3" && plain.pick(draw: 0.999) == "3")
        let canary = FunctionAlias(name: "live", functionVersion: "3", weights: ["4": 0.25])
        #expect(canary.pick(draw: 0.0) == "4" && canary.pick(draw: 0.2499) == "4")
        #expect(canary.pick(draw: 0.25) == "3" && canary.pick(draw: 0.9) == "3")
        #expect(canary.shares == ["3": 0.75, "4": 0.25])
        #expect(canary.versions == ["3", "4"])
        // Over a uniform grid of draws the split is exact.
        let picks = (0..<1000).map { canary.pick(draw: Double($0) / 1000) }
        #expect(picks.filter { $0 == "4" }.count == 250)
    }

    @Test("alias names and weights are checked as Lambda checks them")
    func aliasValidation() throws {
        for good in ["live", "v2-canary", "A_b", String(repeating: "a", count: 128)] { try FunctionAlias.validate(name: good) }
        for bad in ["", "123", "has space", "x:y", String(repeating: "a", count: 129), "$LATEST"] {
            #expect(throws: DomainError.self, "\(bad) must be refused") { try FunctionAlias.validate(name: bad) }
        }
        try FunctionAlias.validate(weights: ["2": 0.5], primary: "1")
        try FunctionAlias.validate(weights: [:], primary: FunctionRecord.latest)
        for (weights, primary) in [
            (["2": 0.5], FunctionRecord.latest), (["1": 0.5], "1"), (["2": 1.5], "1"), (["2": -0.1], "1"),
            (["2": 0.1, "3": 0.1], "1"), (["$LATEST": 0.1], "1"), (["0": 0.1], "1"),
        ] {
            #expect(throws: DomainError.self, "\(weights) on \(primary) must be refused") {
                try FunctionAlias.validate(weights: weights, primary: primary)
            }
        }
    }

    @Test("publishing compares code and configuration, not descriptions, revisions or what belongs to the function")
    func sameContent() {
        var latest = FunctionRecord(
            account: "000000000000", name: "f", runtime: .python311, handler: "app.handler", role: "arn:aws:iam::000000000000:role/r",
            codeSha256: "abc=", codeSize: 1)
        latest.lastPublished = 1
        latest.tags = ["team": "x"]
        latest.reservedConcurrency = 3
        let v1 = latest.published(as: 1, description: "first")
        #expect(v1.version == "1" && v1.instanceKey == "000000000000:f:1" && latest.instanceKey == "000000000000:f:$LATEST")
        #expect(v1.tags == nil && v1.reservedConcurrency == nil && v1.lastPublished == nil && v1.revisionId != latest.revisionId)
        #expect(latest.sameContent(as: v1))
        var changed = latest
        changed.description = "other words"
        changed.revisionId = "new"
        #expect(changed.sameContent(as: v1))
        changed.environment = ["KEY": "value"]
        #expect(!changed.sameContent(as: v1))
        changed = latest
        changed.layers = [
            LayerReference(arn: "arn:aws:lambda:us-east-1:000000000000:layer:l:1", codeSha256: "x=", codeSize: 1, unzippedSize: 1)
        ]
        #expect(!changed.sameContent(as: v1))
    }

    @Test("layer names and layer version ARNs")
    func layerNames() throws {
        let arn = try LayerName(parsing: "arn:aws:lambda:us-east-1:123456789012:layer:my-lib:7", versioned: true)
        #expect(arn.name == "my-lib" && arn.version == 7 && arn.account == "123456789012" && arn.region == "us-east-1")
        let plain = try LayerName(parsing: "my_lib", versioned: false)
        #expect(plain.name == "my_lib" && plain.account == nil && plain.version == nil)
        let layerARN = try LayerName(parsing: "arn:aws:lambda:us-east-1:123456789012:layer:my-lib", versioned: false)
        #expect(layerARN.account == "123456789012" && layerARN.version == nil)
        for (bad, versioned) in [
            ("my-lib", true), ("arn:aws:lambda:us-east-1:123456789012:layer:my-lib", true),
            ("arn:aws:lambda:us-east-1:123456789012:layer:my-lib:0", true), ("arn:aws:lambda:us-east-1:12:layer:x:1", true),
            ("arn:aws:lambda:us-east-1:123456789012:function:x:1", true), ("a b", false), ("", false),
            ("arn:aws:lambda:us-east-1:123456789012:layer:x:1", false),
        ] {
            #expect(throws: DomainError.self, "\(bad) must be refused") { try LayerName(parsing: bad, versioned: versioned) }
        }
    }

    @Test("hex digests go back to their bytes")
    func hexBytes() {
        let bytes: [UInt8] = [0, 1, 0xab, 0xff, 0x10]
        #expect(FastIDs.bytes(hex: FastIDs.hex(bytes: bytes)) == bytes)
        #expect(FastIDs.bytes(hex: "ABff") == [0xab, 0xff])
        #expect(FastIDs.bytes(hex: "abc") == nil && FastIDs.bytes(hex: "zz") == nil)
    }
}
