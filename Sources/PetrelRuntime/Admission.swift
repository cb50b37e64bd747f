import PetrelCore

/// Who may run now: the account-wide concurrency limit, per-function reserved
/// concurrency (carved out of the account's pool), and the host's memory
/// budget for instances. Pure bookkeeping; the dispatcher owns one.
struct Admission: Sendable {
    var accountLimit: Int
    var memoryBudgetMB: Int

    private(set) var reserved: [String: Int] = [:]
    private(set) var inFlight: [String: Int] = [:]
    private(set) var unreservedInFlight = 0
    private(set) var totalInFlight = 0
    private(set) var memoryInUseMB = 0

    /// What Lambda keeps unreserved at the least.
    var minimumUnreserved: Int { min(100, accountLimit / 10) }
    var reservedSum: Int { reserved.values.reduce(0, +) }
    var unreservedLimit: Int { max(0, accountLimit - reservedSum) }

    /// A ticket for one admitted invocation: how it was counted.
    struct Ticket: Sendable {
        var function: String
        var fromReserved: Bool
    }

    enum Refusal: Error, Sendable {
        case account, reserved, capacity

        var reason: String {
            switch self {
            case .account, .capacity: "ConcurrentInvocationLimitExceeded"
            case .reserved: "ReservedFunctionConcurrentInvocationLimitExceeded"
            }
        }

        var error: RuntimeError {
            let message =
                switch self {
                case .account: "Rate Exceeded. The account's concurrency limit is reached."
                case .reserved: "Rate Exceeded. The function's reserved concurrency is reached."
                case .capacity: "Rate Exceeded. The host's memory budget for instances is used up and no idle instance can be evicted."
                }
            return RuntimeError(.throttled, message, reason: reason)
        }
    }

    mutating func admit(_ function: String) -> Result<Ticket, Refusal> {
        if let r = reserved[function] {
            guard inFlight[function, default: 0] < r else { return .failure(.reserved) }
        } else {
            guard unreservedInFlight < unreservedLimit else { return .failure(.account) }
        }
        let fromReserved = reserved[function] != nil
        inFlight[function, default: 0] += 1
        totalInFlight += 1
        if !fromReserved { unreservedInFlight += 1 }
        return .success(Ticket(function: function, fromReserved: fromReserved))
    }

    mutating func release(_ t: Ticket) {
        inFlight[t.function, default: 1] -= 1
        if inFlight[t.function] == 0 { inFlight[t.function] = nil }
        totalInFlight -= 1
        if !t.fromReserved { unreservedInFlight -= 1 }
    }

    /// Sets (or with nil removes) a function's reserved concurrency; refuses what would
    /// leave the unreserved pool below its minimum.
    mutating func setReserved(_ function: String, _ value: Int?) throws(DomainError) {
        if let value {
            guard value >= 0 else {
                throw DomainError.constraint(
                    "\(value)", at: "reservedConcurrentExecutions", "Member must have value greater than or equal to 0")
            }
            let others = reservedSum - (reserved[function] ?? 0)
            guard accountLimit - others - value >= minimumUnreserved else {
                throw DomainError(
                    .invalidParameter,
                    "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [\(minimumUnreserved)]."
                )
            }
        }
        reserved[function] = value
    }

    func fits(memoryMB: Int) -> Bool { memoryInUseMB + memoryMB <= memoryBudgetMB }
    mutating func charge(memoryMB: Int) { memoryInUseMB += memoryMB }
    mutating func uncharge(memoryMB: Int) { memoryInUseMB -= memoryMB }
}
