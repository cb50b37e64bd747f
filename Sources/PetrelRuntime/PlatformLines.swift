import PetrelCore

/// The lines the platform writes into a function's log around its own output,
/// in Lambda's words: INIT_START, START, END and REPORT.
enum PlatformLines {
    static func initStart(_ runtime: FunctionRuntime) -> String {
        "INIT_START Runtime Version: \(runtime.rawValue)\tRuntime Version ARN: petrel:\(runtime.rawValue)"
    }

    static func start(_ requestID: String, version: String = "$LATEST") -> String {
        "START RequestId: \(requestID) Version: \(version)"
    }

    static func end(_ requestID: String) -> String { "END RequestId: \(requestID)" }

    /// `REPORT`: duration (and what is billed: whole milliseconds up), memory size and
    /// peak, the init duration of a cold start, and the status of a failed one.
    static func report(
        _ requestID: String, durationMs: Double, memoryMB: Int, maxMemoryUsedMB: Int, initDurationMs: Double?,
        status: String?
    ) -> String {
        var line =
            "REPORT RequestId: \(requestID)\tDuration: \(FastIDs.twoDecimals(durationMs)) ms\tBilled Duration: \(Int(durationMs.rounded(.up))) ms"
            + "\tMemory Size: \(memoryMB) MB\tMax Memory Used: \(maxMemoryUsedMB) MB"
        if let initDurationMs { line += "\tInit Duration: \(FastIDs.twoDecimals(initDurationMs)) ms" }
        if let status { line += "\tStatus: \(status)" }
        return line
    }
}
