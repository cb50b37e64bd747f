import Foundation

/// A new directory of its own under the temporary directory (`petrel-LABEL-…`); the
/// caller removes it.
func makeScratchDirectory(_ label: String) throws -> String {
    let dir = NSTemporaryDirectory() + "petrel-\(label)-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}
