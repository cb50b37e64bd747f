/// The warm instances waiting for work, per function, most recently used last:
/// which one the next invocation takes, which goes first when memory is short
/// (least recently used), and which have been idle too long. Pure bookkeeping
/// (the dispatcher owns one and stops what it hands back), so it is tested on its own.
struct IdlePool<Member: AnyObject> {
    struct Entry {
        var member: Member
        var since: ContinuousClock.Instant
    }

    private(set) var entries: [String: [Entry]] = [:]

    var count: Int { entries.values.reduce(0) { $0 + $1.count } }

    func members(of function: String) -> [Member] { entries[function]?.map(\.member) ?? [] }

    mutating func add(_ member: Member, function: String, at now: ContinuousClock.Instant = .now) {
        entries[function, default: []].append(Entry(member: member, since: now))
    }

    /// The member for the next invocation: among the `nearby` most recently used, the most
    /// recent one `preferred` accepts (when there is a choice at all), else the most recently
    /// used. Members on the way that `usable` refuses are taken out and handed back as `stale`.
    mutating func take(
        _ function: String, nearby: Int = 8, preferred: (Member) -> Bool,
        usable: (Member) -> Bool
    ) -> (member: Member?, stale: [Member]) {
        guard var list = entries[function] else { return (nil, []) }
        defer { entries[function] = list.isEmpty ? nil : list }
        if list.count > 1, let i = list.indices.reversed().prefix(nearby).first(where: { preferred(list[$0].member) }),
            usable(list[i].member)
        {
            return (list.remove(at: i).member, [])
        }
        var stale: [Member] = []
        while let last = list.popLast() {
            if usable(last.member) { return (last.member, stale) }
            stale.append(last.member)
        }
        return (nil, stale)
    }

    /// Takes `member` out, wherever it is.
    mutating func remove(_ member: Member, function: String) {
        guard var list = entries[function] else { return }
        list.removeAll { $0.member === member }
        entries[function] = list.isEmpty ? nil : list
    }

    /// Takes out every member of `function` that `match` accepts (all of them by default),
    /// asking it once per member, least recently used first.
    mutating func removeAll(_ function: String, where match: (Member) -> Bool = { _ in true }) -> [Member] {
        guard let list = entries[function] else { return [] }
        var gone: [Member] = []
        var kept: [Entry] = []
        for e in list {
            if match(e.member) { gone.append(e.member) } else { kept.append(e) }
        }
        entries[function] = kept.isEmpty ? nil : kept
        return gone
    }

    /// Takes out every member of every function.
    mutating func removeEverything() -> [Member] {
        defer { entries = [:] }
        return entries.values.flatMap { $0.map(\.member) }
    }

    /// Takes out the least recently used member that `evictable` accepts, over all functions.
    mutating func evictOldest(where evictable: (Member) -> Bool) -> (function: String, member: Member)? {
        var oldest: (function: String, entry: Entry)?
        for (function, list) in entries {
            for e in list where evictable(e.member) && (oldest == nil || e.since < oldest!.entry.since) {
                oldest = (function, e)
            }
        }
        guard let oldest else { return nil }
        remove(oldest.entry.member, function: oldest.function)
        return (oldest.function, oldest.entry.member)
    }

    /// Takes out the members idle for `keepAlive` or longer that `reapable` accepts.
    mutating func expire(now: ContinuousClock.Instant, keepAlive: Duration, where reapable: (Member) -> Bool) -> [Member] {
        var gone: [Member] = []
        for (function, list) in entries {
            let expired = list.filter { now - $0.since >= keepAlive && reapable($0.member) }
            guard !expired.isEmpty else { continue }
            let kept = list.filter { e in !expired.contains { $0.member === e.member } }
            entries[function] = kept.isEmpty ? nil : kept
            gone += expired.map(\.member)
        }
        return gone
    }
}
