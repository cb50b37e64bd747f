/// The runtimes Petrel offers. A runtime names how an instance starts; the
/// bootstraps themselves live in `rootfs/runtimes/` and are ours.
public enum FunctionRuntime: String, Sendable, Codable, CaseIterable {
    case python311 = "python3.11"
    case nodejs20 = "nodejs20.x"
    /// Debian's Ruby 3.1 (Lambda has no ruby3.1: the name says what runs).
    case ruby31 = "ruby3.1"
    /// Debian's OpenJDK 17, with Lambda's Java interfaces written by Petrel.
    case java17 = "java17"
    case providedAL2023 = "provided.al2023"
    case providedAL2 = "provided.al2"
    case provided = "provided"

    /// Custom runtimes: the ZIP's own executable `bootstrap` is the runtime.
    public var isCustom: Bool {
        switch self {
        case .providedAL2023, .providedAL2, .provided: true
        default: false
        }
    }

    public static let supportedList = allCases.map(\.rawValue).joined(separator: ", ")
}
