import PetrelSandbox
import Testing

/// The arithmetic of a sandbox's cgroup limits, without a cgroup.
@Suite("Cgroup limits")
struct CgroupLimitsTests {
    @Test("memory buys CPU at 1,769 MB per CPU, capped at the host's; weight and shares in proportion; a floor of 1 ms per period")
    func arithmetic() {
        let policy = SandboxPolicy.default.resources
        let full = CgroupLimits(memoryMB: 1769, policy: policy, hostCPUs: 2)
        #expect(full.memoryBytes == 1769 << 20)
        #expect(full.cpuQuotaMicros == 20_000 && full.cpuBurstMicros == 20_000)
        #expect(full.cpuWeight == 100 && full.cpuShares == 1024)
        let small = CgroupLimits(memoryMB: 128, policy: policy, hostCPUs: 2)
        #expect(small.cpuQuotaMicros == Int(128.0 / 1769.0 * 20_000))
        #expect(small.cpuWeight == 128 * 100 / 1769 && small.cpuShares == 128 * 1024 / 1769)
        // 10 GB would buy 5.8 CPUs; a 2-CPU host gives 2.
        #expect(CgroupLimits(memoryMB: 10_240, policy: policy, hostCPUs: 2).cpuQuotaMicros == 40_000)
        #expect(CgroupLimits(memoryMB: 10_240, policy: policy, hostCPUs: 2).cpuWeight == 578)
        // Never below 1 ms per period, never below a weight of 1 or 2 shares.
        var tiny = SandboxPolicy.default.resources
        tiny.mbPerCPU = 1_000_000
        let t = CgroupLimits(memoryMB: 128, policy: tiny, hostCPUs: 2)
        #expect(t.cpuQuotaMicros == 1000 && t.cpuWeight == 1 && t.cpuShares == 2)
        #expect(full.pidsMax == policy.pidsMax)
    }
}
