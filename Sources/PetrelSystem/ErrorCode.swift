/// The code of a layer's error (`SystemError` aside): a name, extensible (a struct,
/// not an enum, so a layer adds codes without breaking its callers), and a type of
/// its own per error (`Owner`), so one layer's codes are not taken for another's.
/// Each error declares `typealias Code = ErrorCode<Self>` and its codes in an
/// extension `where Owner == Self`.
public struct ErrorCode<Owner>: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }
}
