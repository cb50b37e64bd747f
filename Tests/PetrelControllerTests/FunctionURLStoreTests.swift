import Foundation
import PetrelCore
import Testing

@testable import PetrelAPI
@testable import PetrelStore

@Suite("Function URLs and layers in the store")
struct FunctionURLStoreTests {
    @Test("one URL per function and qualifier; an id once given is never given again, even after its URL is deleted")
    func urlIDs() throws {
        let dir = try makeScratchDirectory("urls")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = FunctionURLStore(try PetrelDatabase(path: dir + "/petrel.sqlite"))
        let url = FunctionURLConfig(
            account: "111111111111", function: "f", qualifier: nil, authType: .none, cors: nil, invokeMode: .buffered)
        #expect(try store.insert(url))
        let second = FunctionURLConfig(
            account: "111111111111", function: "f", qualifier: nil, authType: .awsIAM, cors: nil, invokeMode: .buffered)
        #expect(try !store.insert(second), "a second URL for the same function and qualifier")
        let alias = FunctionURLConfig(
            account: "111111111111", function: "f", qualifier: "live", authType: .none, cors: nil, invokeMode: .buffered)
        #expect(try store.insert(alias))
        #expect(try store.url(id: url.id)?.function == "f" && store.url(id: alias.id)?.qualifier == "live")
        #expect(try store.delete(account: "111111111111", function: "f", qualifier: nil).map(\.id) == [url.id])
        #expect(try store.url(id: url.id) == nil)
        // Another function asking for the deleted URL's id is refused.
        let reused = FunctionURLConfig(
            account: "111111111111", function: "g", qualifier: nil, authType: .none, cors: nil, invokeMode: .buffered, id: url.id)
        #expect(throws: (any Error).self) { try store.insert(reused) }
        #expect(try store.urls(account: "111111111111", function: "g").isEmpty)
    }

    @Test("a function's code and its layers together stay within 250 MB unzipped")
    func unzippedWithLayers() throws {
        let mb = 1_048_576
        let layer = { (size: Int) in
            LayerReference(arn: "arn:aws:lambda:us-east-1:111111111111:layer:l:1", codeSha256: "x=", codeSize: 1, unzippedSize: size)
        }
        try FunctionCatalog.checkUnzipped(100 * mb, [layer(60 * mb), layer(60 * mb)])
        try FunctionCatalog.checkUnzipped(CodeArchive.maxUnzippedBytes, [])
        #expect(throws: LambdaError.self) { try FunctionCatalog.checkUnzipped(200 * mb, [layer(60 * mb)]) }
        #expect(throws: LambdaError.self) { try FunctionCatalog.checkUnzipped(0, [layer(CodeArchive.maxUnzippedBytes), layer(1)]) }
    }
}
