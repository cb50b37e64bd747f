import Foundation
import PetrelCore
import PetrelStore

extension EventService {
    /// Fires every schedule's slots as they come, until shutdown. A slot that passes
    /// while the daemon is up fires once (the store refuses a second firing); of the
    /// slots that passed while it was down, only the latest fires, once, at start.
    func fireSchedules() async {
        let upSince = settings.clock.nowMillis() / 1000
        while !stopping {
            let now = settings.clock.nowMillis()
            var wake = now / 1000 + 60
            do {
                for s in try schedules.list(account: nil) {
                    if let next = try await fireDue(s, now: now / 1000, upSince: upSince) { wake = min(wake, next) }
                }
            } catch {
                logger.error("cannot fire schedules", metadata: ["error": "\(error)"])
            }
            let ms = wake * 1000 - settings.clock.nowMillis()
            await scheduleWakeup.wait(timeout: ms <= 0 ? .milliseconds(1) : min(.milliseconds(ms), pollInterval))
        }
    }

    /// Fires the due slots of one schedule; returns its next slot.
    func fireDue(_ s: ScheduleRecord, now: Int64, upSince: Int64) async throws -> Int64? {
        guard let expression = s.parsed else { return nil }
        let anchor = s.created / 1000
        var from = s.lastSlot ?? anchor
        if from < upSince - 1 {
            if let missed = expression.latest(before: upSince, after: from, anchor: anchor) { try await fire(s, slot: missed) }
            from = max(from, upSince - 1)
        }
        var slot = expression.next(after: from, anchor: anchor)
        var fired = 0
        while let at = slot, at <= now, fired < 1000 {
            try await fire(s, slot: at)
            fired += 1
            slot = expression.next(after: at, anchor: anchor)
        }
        return slot
    }

    private func fire(_ s: ScheduleRecord, slot: Int64) async throws {
        let id = FastIDs.uuid()
        let payload =
            s.input.map { Data($0.utf8) }
            ?? EventDocuments.scheduledEvent(id: id, account: s.account, region: settings.region, schedule: s.name, slot: slot)
        var event = QueuedEvent(
            id: id, account: s.account, function: s.function, payload: payload, created: settings.clock.nowMillis(),
            source: "schedule")
        event.qualifier = s.qualifier
        if try await schedules.fire(s, slot: slot, event: event) {
            logger.debug(
                "fired a schedule", metadata: ["schedule.name": "\(s.name)", "schedule.slot": "\(slot)", "invocation.id": "\(id)"])
            wakeup.ring()
        }
    }
}
