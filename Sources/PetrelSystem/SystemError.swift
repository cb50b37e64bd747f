import Glibc

/// A system call that failed: the call's name, the path or id it was given, and
/// errno (read on the line after the call). Every layer above wraps it as the
/// cause of its own error, or lets it through.
public struct SystemError: Error, CustomStringConvertible, Sendable, Equatable {
    public var call: String
    public var path: String?
    public var errno: Int32

    public init(_ call: String, _ path: String? = nil, errno: Int32) {
        self.call = call
        self.path = path
        self.errno = errno
    }

    public var description: String {
        (path.map { "\(call) \($0)" } ?? call) + ": " + String(cString: strerror(errno))
    }
}
