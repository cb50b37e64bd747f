/// Lambda's limits on a function's configuration (the API validates against these).
public enum FunctionLimits {
    public static let memoryMB = 128...10_240
    public static let defaultMemoryMB = 128
    public static let timeoutSeconds = 1...900
    public static let defaultTimeoutSeconds = 3
    public static let ephemeralStorageMB = 512...10_240
    public static let defaultEphemeralStorageMB = 512
    /// Memory that buys one full vCPU.
    public static let mbPerCPU = 1_769
}
