"""Scripts/bench invoke: Petrel's invoke path on this machine, in one run,
beside the references: for cold starts, the same Python handler as a bare
process and inside bwrap --unshare-all; for warm invocations, the same
handlers behind a bare HTTP server in one process (bare_server.py/.js), driven
by the same load tool. Prints a table; --json for machines."""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "E2E"))
from harness import ROLE, Daemon, make_zip, metric  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY_NOOP = "def handler(event, context):\n    return None\n"
NODE_NOOP = "exports.handler = async () => null;\n"
RUBY_NOOP = "def handler(event:, context:)\n  nil\nend\n"
JAVA_NOOP = """public class Noop {
    public Object handle(java.util.Map<String, Object> event) { return null; }
}
"""
JAVA_EMPTY_MAIN = "public class Empty { public static void main(String[] a) { } }\n"
HANDLER_LOOP = """import sys, time
t0 = time.time()
sys.path.insert(0, sys.argv[1])
import app
app.handler({}, None)
"""


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def compile_java(name, source):
    """{NAME.class: bytes} of one Java source, compiled by Debian's JDK 17."""
    work = tempfile.mkdtemp(prefix="petrel-bench-javac-", dir="/var/tmp")
    try:
        with open(os.path.join(work, name + ".java"), "w") as f:
            f.write(source)
        subprocess.run(["/usr/lib/jvm/java-17-openjdk-amd64/bin/javac", "--release", "17", "-d", work,
                        os.path.join(work, name + ".java")], check=True)
        with open(os.path.join(work, name + ".class"), "rb") as f:
            return {name + ".class": f.read()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def timed_run(argv, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append((time.perf_counter() - t) * 1000)
    return out


PRESTARTED = ("python3.11", "nodejs20.x")


def petrel_cpu_seconds(d):
    """CPU petreld and every sandbox it ran have used so far: the daemon's threads and the
    sandboxes' cgroup subtree (which keeps the CPU of cgroups already removed)."""
    total = cpu_seconds(d.proc.pid)
    v1 = "/sys/fs/cgroup/cpuacct"
    with open("/proc/self/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    rel = next((path for _, ctl, path in lines if "cpuacct" in ctl.split(",")), None)
    if rel is not None and os.path.isdir(v1):
        with open(os.path.join(v1 + rel, "petrel", "cpuacct.usage")) as f:
            return total + int(f.read()) / 1e9
    rel = next(path for hid, _, path in lines if hid == "0")
    start = rel[:-len("/petreld")] if rel.endswith("/petreld") else rel
    with open("/sys/fs/cgroup" + start + "/petrel/cpu.stat") as f:
        usage = dict(line.split() for line in f)["usage_usec"]
    return total + int(usage) / 1e6


def cold_starts(d, n, runtime="python3.11", files=None, handler="app.handler", memory=128, env=None):
    """n fresh no-op functions (Python by default), first invoke each then a second (warm)
    one: client-seen latencies, the daemon's split, how the runtime started, and the CPU
    petreld and the sandboxes spent per cold start (create, two invokes, delete, and the
    pools' refill, which the loop waits for as a real host would between cold starts)."""
    lam = d.client()
    z = make_zip(files or {"app.py": PY_NOOP})
    rows = []
    kw = {"Environment": {"Variables": env}} if env else {}
    cpu0 = petrel_cpu_seconds(d)
    for i in range(n):
        name = "bench-cold-%d-%d" % (os.getpid(), i)
        lam.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler, Code={"ZipFile": z},
                            MemorySize=memory, **kw)
        t = time.perf_counter()
        r = lam.invoke(FunctionName=name, Payload=b"{}")
        total = (time.perf_counter() - t) * 1000
        r["Payload"].read()
        t = time.perf_counter()
        lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read()
        warm = (time.perf_counter() - t) * 1000
        h = r["ResponseMetadata"]["HTTPHeaders"]
        rows.append({"total": total, "warm": warm, "cost": total - warm, "sandbox": float(h.get("x-petrel-sandbox-ms", "nan")),
                     "runtime": float(h.get("x-petrel-runtime-start-ms", "nan")),
                     "init": float(h.get("x-petrel-function-init-ms", "nan")),
                     "init_duration": float(h.get("x-petrel-init-duration", "nan")),
                     "prestarted": 1.0 if h.get("x-petrel-start") == "prestarted" else 0.0})
        lam.delete_function(FunctionName=name)
        refilled(d, runtime, env)
    cpu = (petrel_cpu_seconds(d) - cpu0) * 1000 / n
    for r in rows:
        r["cpu_ms"] = cpu
    return rows


def refilled(d, runtime, env):
    """Waits (up to 2 s) until the pools are full again: prepared sandboxes, and the
    runtime's pre-started ones when it uses them."""
    deadline = time.time() + 2
    time.sleep(0.05)
    while time.time() < deadline:  # every 50 ms: each look is a /metrics request petreld answers
        prepared = metric(d, "petrel_instances", state="prepared") or 0
        stems = metric(d, "petrel_prestarted_runtimes", runtime=runtime) or 0
        if prepared >= 2 and (runtime not in PRESTARTED or env or stems >= 2):
            return
        time.sleep(0.05)


def summary(rows):
    return {k: median([r[k] for r in rows]) for k in rows[0]}


def load(d, petrel, function, concurrency, seconds, url=None):
    return load_at(d.endpoint, d.tool_env(), petrel, function, concurrency, seconds, url)


def load_at(endpoint, env, petrel, function, concurrency, seconds, url=None):
    """`petrel load` against any endpoint (petreld, or a peer server), or a function URL."""
    r = subprocess.run([petrel, "load", "--function", function, "--concurrency", str(concurrency), "--duration", str(seconds),
                        "--json", "--endpoint", endpoint] + (["--url", url] if url else []), capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError("petrel load %s (c=%d) failed: %s %s" % (function, concurrency, r.stderr[-2000:], r.stdout[-2000:]))
    return json.loads(r.stdout)


class PeerServer:
    """The same handler behind a bare single-process HTTP server (no sandbox, no
    signature check, no logs), driven by `petrel load` like petreld. It runs beside
    the daemon so that its rounds and petreld's alternate under the same host load."""

    def __init__(self, petrel, kind, handler_source):
        import socket
        self.petrel = petrel
        self.work = tempfile.mkdtemp(prefix="petrel-bench-peer-", dir="/var/tmp")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        here = os.path.dirname(os.path.abspath(__file__))
        if kind == "py":
            with open(os.path.join(self.work, "app.py"), "w") as f:
                f.write(handler_source)
            argv = ["/usr/bin/python3", os.path.join(here, "bare_server.py"), self.work, str(port)]
        else:
            with open(os.path.join(self.work, "index.js"), "w") as f:
                f.write(handler_source)
            argv = ["/usr/bin/node", os.path.join(here, "bare_server.js"), self.work, str(port)]
        self.server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update(AWS_ACCESS_KEY_ID="AKIAPEERPEERPEERPEER", AWS_SECRET_ACCESS_KEY="peer", AWS_DEFAULT_REGION="us-east-1")
        self.endpoint = "http://127.0.0.1:%d" % port
        if self.server.stdout.readline().strip() != "READY":
            self.close()
            raise RuntimeError("the peer server %s did not start" % argv[1])
        self.load(8, 1)

    def load(self, concurrency, seconds):
        r = load_at(self.endpoint, self.env, self.petrel, "peer", concurrency, seconds)
        if r["requests"] == 0 or r.get("errors"):
            raise RuntimeError("the peer server answered with errors: %s" % r.get("errors"))
        return r

    def measured(self, seconds):
        """Concurrency 8, with the server's CPU per invocation."""
        return measured_cpu(lambda: self.load(8, seconds), {"server": lambda: {self.server.pid: cpu_seconds(self.server.pid)}})

    def close(self):
        self.server.terminate()
        self.server.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def host_ticks():
    """(steal, all) CPU ticks of the machine so far: what the hypervisor gave to others."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[7], sum(v[:8])


def in_rounds(n, runs):
    """Runs each of `runs` ({name: run}) n times, alternating, so that all of them see
    the same stretches of host load. Answers, per name, the round of median throughput
    with every round's throughput and the host's steal time over all rounds."""
    done = {name: [] for name in runs}
    steal0, all0 = host_ticks()
    for _ in range(n):
        for name, run in runs.items():
            done[name].append(run())
    steal1, all1 = host_ticks()
    out = {}
    for name, results in done.items():
        ordered = sorted(results, key=lambda r: r["throughputPerSecond"])
        pick = dict(ordered[len(ordered) // 2])
        pick["throughputRounds"] = [r["throughputPerSecond"] for r in results]
        pick["hostStealPercent"] = 100.0 * (steal1 - steal0) / max(1, all1 - all0)
        out[name] = pick
    return out


def pids_in_uid_range():
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/status" % pid) as f:
                    st = f.read()
                uid = int(st.split("Uid:")[1].split()[0])
                if 200000 <= uid <= 1199999:
                    out.append(int(pid))
            except (OSError, IndexError, ValueError):
                pass
    return out


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads) so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured_cpu(run, parties):
    """Runs `run` (a load run) and returns its result with the CPU each party spent per
    invocation, in microseconds, and the load tool's. A party is a function answering
    {pid: CPU seconds so far} for its processes; processes that come or go during the
    run are left out. On a shared machine this is steadier than throughput: it is what
    to judge changes by."""
    import resource
    before = {name: f() for name, f in parties.items()}
    t0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run()
    t1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = {name: f() for name, f in parties.items()}
    n = max(1, result["requests"])
    cpu = {name: sum(after[name][p] - before[name][p] for p in after[name] if p in before[name]) * 1e6 / n for name in parties}
    cpu["loadTool"] = ((t1.ru_utime + t1.ru_stime) - (t0.ru_utime + t0.ru_stime)) * 1e6 / n
    result["cpuMicrosPerInvocation"] = cpu
    return result


def stored_bytes(d, run):
    """Runs `run` (a load run) and returns its result with what petreld's database grew
    by per invocation (measured after a checkpoint, so the WAL is in the file) beside
    the text the rows it added hold (log lines, audit records)."""
    import sqlite3
    path = os.path.join(d.data, "petrel.sqlite")

    def settled():
        time.sleep(0.5)  # the writers' last batch (they gather for 20 ms, 100 ms under load)
        c = sqlite3.connect(path, timeout=10)
        try:
            for _ in range(50):
                if c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0:
                    break
                time.sleep(0.1)
            marks = c.execute("SELECT (SELECT coalesce(max(first_id), 0) FROM log_chunks), (SELECT coalesce(max(seq), 0) FROM audit)").fetchone()
        finally:
            c.close()
        wal = path + "-wal"
        return os.path.getsize(path) + (os.path.getsize(wal) if os.path.exists(wal) else 0), marks

    size0, (log0, audit0) = settled()
    result = run()
    size1, (log1, audit1) = settled()
    c = sqlite3.connect(path, timeout=10)
    try:
        text = c.execute("SELECT coalesce(sum(text_bytes), 0) FROM log_chunks WHERE first_id > ? AND first_id <= ?", (log0, log1)).fetchone()[0]
        text += c.execute("""SELECT coalesce(sum(length(source) + length(action) + length(parameters) + coalesce(length(account), 0)
                             + coalesce(length(key_id), 0) + coalesce(length(resource), 0) + coalesce(length(error), 0)), 0)
                             FROM audit WHERE seq > ? AND seq <= ?""", (audit0, audit1)).fetchone()[0]
    finally:
        c.close()
    n = max(1, result["requests"])
    result["storedBytesPerInvocation"] = {"database": (size1 - size0) / n, "text": text / n}
    return result


def sandboxed_runtimes():
    """{pid: CPU seconds} of every process running under a sandbox's uid."""
    out = {}
    for pid in pids_in_uid_range():
        try:
            out[pid] = cpu_seconds(pid)
        except OSError:
            pass
    return out


def cpu_periods():
    """{cpu cgroup: (CFS periods, periods throttled)} of the sandboxed runtimes' cgroups
    (cgroup v1's cpu controller or v2's unified tree, whichever the host uses)."""
    v1 = "/sys/fs/cgroup/cpu"
    out = {}
    for pid in pids_in_uid_range():
        try:
            with open("/proc/%d/cgroup" % pid) as f:
                lines = [line.rstrip("\n").split(":", 2) for line in f]
        except OSError:
            continue
        rel = next((path for _, ctl, path in lines if "cpu" in ctl.split(",")), None)
        base = v1 if rel is not None and os.path.isdir(v1) else "/sys/fs/cgroup"
        if rel is None:
            rel = next((path for hid, _, path in lines if hid == "0"), None)
        try:
            with open(base + rel + "/cpu.stat") as f:
                stat = dict(line.split() for line in f)
        except (OSError, TypeError, ValueError):
            continue
        out[base + rel] = (int(stat["nr_periods"]), int(stat["nr_throttled"]))
    return out


def uss_kib(pid):
    """Private (unshared) memory of a process."""
    total = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def idle_memory(d, k):
    """k idle warm instances: the platform's own memory per instance (the sandbox's init,
    and the daemon's growth), beside the runtime's own RSS."""
    lam = d.client()
    lam.create_function(FunctionName="bench-idle", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": "import time\ndef handler(e, c):\n    time.sleep(0.5)\n"})})
    daemon_before = rss_kib(d.proc.pid)
    before = set(pids_in_uid_range())
    import threading
    threads = [threading.Thread(target=lambda: lam.invoke(FunctionName="bench-idle", Payload=b"{}")) for _ in range(k)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    time.sleep(0.5)
    daemon_after = rss_kib(d.proc.pid)
    procs = [p for p in pids_in_uid_range() if p not in before]
    # In each sandbox: our init (PID 1 inside) and the runtime (python).
    inits, runtimes = [], []
    for p in procs:
        try:
            with open("/proc/%d/cmdline" % p, "rb") as f:
                cmd = f.read()
            (runtimes if b"python" in cmd else inits).append(p)
        except OSError:
            pass
    init_uss = [uss_kib(p) for p in inits]
    runtime_rss = [rss_kib(p) for p in runtimes]
    # The init runs as root (its own sandbox uid only for the command), so look for it as the runtime's parent too.
    if not init_uss:
        parents = set()
        for p in runtimes:
            with open("/proc/%d/status" % p) as f:
                parents.add(int(f.read().split("PPid:")[1].split()[0]))
        init_uss = [uss_kib(p) for p in parents]
    return {"instances": len(runtimes), "init_uss_kib": median(init_uss),
            "daemon_growth_kib_per_instance": (daemon_after - daemon_before) / max(1, len(runtimes)),
            "runtime_rss_kib": median(runtime_rss)}


def runtime_module_start(n):
    """The Python runtime's start, its module read from the bytecode petreld compiles at
    start (RuntimeFiles) and compiled from source at each start (what a read-only
    /var/runtime without that bytecode costs): `python3 -S` importing it, median of n, alternating."""
    work = tempfile.mkdtemp(prefix="petrel-bench-rt-", dir="/var/tmp")
    try:
        times = {"bytecode": [], "source": []}
        for kind in times:
            d = os.path.join(work, kind)
            shutil.copytree(os.path.join(REPO, "rootfs", "runtimes", "python"), d, ignore=shutil.ignore_patterns("__pycache__"))
            if kind == "bytecode":
                subprocess.run(["/usr/bin/python3", "-S", "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], doraise=True)",
                                os.path.join(d, "_petrel_runtime.py")], check=True)
        env = {"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"}
        for _ in range(n):
            for kind in times:
                env["PYTHONPATH"] = os.path.join(work, kind)
                t = time.perf_counter()
                subprocess.run(["/usr/bin/python3", "-S", "-u", "-X", "utf8", "-c", "import _petrel_runtime"], check=True, env=env)
                times[kind].append((time.perf_counter() - t) * 1000)
        return {k + "_ms": median(v) for k, v in times.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def transport_round_trip(kind, n=10000, size=400):
    """CPU (both processes) per round trip of `size` bytes each way between two processes:
    over an AF_UNIX stream socket, as Petrel's runtimes reach the Runtime API, or over
    loopback TCP, as AWS_LAMBDA_RUNTIME_API does. A warm invocation makes one such round
    trip with its runtime (the event out; the response and the next `next` back)."""
    import socket
    if kind == "unix":
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        listener = socket.create_server(("127.0.0.1", 0))
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
        listener.close()
        for s in (a, b):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * size

    def exchange(sock, first):
        if first:
            sock.sendall(msg)
        got = 0
        while got < size:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("the peer closed")
            got += len(chunk)
        if not first:
            sock.sendall(msg)

    pid = os.fork()
    if pid == 0:
        try:
            a.close()
            for _ in range(n):
                exchange(b, False)
        finally:
            os._exit(0)
    b.close()
    t0 = os.times()
    for _ in range(n):
        exchange(a, True)
    os.waitpid(pid, 0)
    t1 = os.times()
    a.close()
    cpu = (t1.user - t0.user) + (t1.system - t0.system) + (t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)
    return cpu * 1e6 / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each concurrency-8 run (median reported)")
    ap.add_argument("--idle", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    petreld = os.path.join(REPO, ".build", "release", "petreld")
    petrel = os.path.join(REPO, ".build", "release", "petrel")
    os.environ["PETRELD"] = petreld
    root = tempfile.mkdtemp(prefix="petrel-bench-", dir="/var/tmp")
    d = Daemon(root=root, extra_env={"PETREL_LOG_LEVEL": "warning"})
    import harness
    harness.PETRELD = petreld
    peers = {}
    results = {}
    try:
        peers["py"] = PeerServer(petrel, "py", PY_NOOP)
        peers["node"] = PeerServer(petrel, "node", NODE_NOOP)
        d.start()
        lam = d.client()
        # The first cold start of a kind asks for pre-started runtimes of that kind.
        cold_starts(d, 1)
        cold_starts(d, 1, "nodejs20.x", {"index.js": NODE_NOOP}, "index.handler")
        results["cold"] = summary(cold_starts(d, a.cold))
        # A variable the interpreter reads when it starts makes every start a fresh one.
        results["cold_fresh"] = summary(cold_starts(d, a.cold, env={"PYTHONHASHSEED": "random"}))
        results["cold_node"] = summary(cold_starts(d, a.cold, "nodejs20.x", {"index.js": NODE_NOOP}, "index.handler"))
        results["cold_node_fresh"] = summary(cold_starts(d, a.cold, "nodejs20.x", {"index.js": NODE_NOOP}, "index.handler",
                                                         env={"NODE_NO_WARNINGS": "0"}))
        results["stems"] = {rt: (metric(d, "petrel_prestarted_memory_bytes", runtime=rt) or 0)
                            / max(1, metric(d, "petrel_prestarted_runtimes", runtime=rt) or 0) for rt in PRESTARTED}
        results["cold_ruby"] = summary(cold_starts(d, a.cold, "ruby3.1", {"app.rb": RUBY_NOOP}))
        java_classes = compile_java("Noop", JAVA_NOOP)
        results["cold_java"] = summary(cold_starts(d, max(3, a.cold // 2), "java17", java_classes, "Noop::handle", 512))
        for name, rt, files, handler, mem in [("py", "python3.11", {"app.py": PY_NOOP}, "app.handler", 128),
                                              ("node", "nodejs20.x", {"index.js": NODE_NOOP}, "index.handler", 128),
                                              ("py1cpu", "python3.11", {"app.py": PY_NOOP}, "app.handler", 1769),
                                              ("node1cpu", "nodejs20.x", {"index.js": NODE_NOOP}, "index.handler", 1769)]:
            lam.create_function(FunctionName="bench-" + name, Runtime=rt, Role=ROLE, Handler=handler,
                                Code={"ZipFile": make_zip(files)}, MemorySize=mem)
            load(d, petrel, "bench-" + name, 8, 1)  # warm eight instances
            before = cpu_periods()
            results[name + "_c1"] = load(d, petrel, "bench-" + name, 1, a.seconds)
            after = cpu_periods()
            # Only the one instance serving c=1 runs: only its cgroup counts periods.
            results[name + "_c1"]["cfsPeriods"] = [sum(after[g][k] - before[g][k] for g in after if g in before) for k in (0, 1)]
            runs = {"petrel": lambda: measured_cpu(lambda: load(d, petrel, "bench-" + name, 8, a.seconds),  # noqa: E731
                                                   {"petreld": lambda: {d.proc.pid: cpu_seconds(d.proc.pid)},
                                                    "runtime": sandboxed_runtimes})}
            kind = name.replace("1cpu", "")
            if name.endswith("1cpu"):
                # The peer's rounds alternate with these: the same stretches of host load.
                runs["peer"] = lambda: peers[kind].measured(a.seconds)  # noqa: E731
                results["peer_" + kind] = {"c1": peers[kind].load(1, a.seconds)}
            measured = in_rounds(a.rounds, runs)
            results[name + "_c8"] = measured["petrel"]
            if "peer" in measured:
                results["peer_" + kind]["c8"] = measured["peer"]
        # Through an alias that splits its traffic over two versions, beside the same function
        # called unqualified, in alternating rounds: what resolving the alias and drawing a
        # version costs. 512 MB, so that three warm sets of eight fit the memory budget.
        lam.create_function(FunctionName="bench-alias", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": PY_NOOP})}, MemorySize=512)
        lam.publish_version(FunctionName="bench-alias")
        lam.update_function_configuration(FunctionName="bench-alias", Environment={"Variables": {"VERSION": "2"}})
        lam.publish_version(FunctionName="bench-alias")
        lam.create_alias(FunctionName="bench-alias", Name="canary", FunctionVersion="1",
                         RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
        for fn in ("bench-alias", "bench-alias:canary"):
            load(d, petrel, fn, 8, 1)  # warm
        def through(fn):
            return lambda: measured_cpu(lambda: load(d, petrel, fn, 8, a.seconds), {"petreld": lambda: {d.proc.pid: cpu_seconds(d.proc.pid)}})
        results["alias"] = in_rounds(a.rounds, {"unqualified": through("bench-alias"), "alias": through("bench-alias:canary")})
        # The same function through a function URL (auth NONE: no signature to check) beside
        # its signed invoke endpoint, alternating rounds; and one caller's latency both ways.
        url = lam.create_function_url_config(FunctionName="bench-py1cpu", AuthType="NONE")["FunctionUrl"]
        lam.add_permission(FunctionName="bench-py1cpu", StatementId="url", Action="lambda:InvokeFunctionUrl", Principal="*",
                           FunctionUrlAuthType="NONE")
        lam.add_permission(FunctionName="bench-py1cpu", StatementId="url-invoke", Action="lambda:InvokeFunction", Principal="*",
                           InvokedViaFunctionUrl=True)
        load(d, petrel, "bench-py1cpu", 8, 1, url=url)
        results["url"] = {"c1": load(d, petrel, "bench-py1cpu", 1, a.seconds, url=url),
                          "invoke_c1": load(d, petrel, "bench-py1cpu", 1, a.seconds)}
        results["url"].update(in_rounds(a.rounds, {
            "c8": lambda: measured_cpu(lambda: load(d, petrel, "bench-py1cpu", 8, a.seconds, url=url),
                                       {"petreld": lambda: {d.proc.pid: cpu_seconds(d.proc.pid)}}),
            "invoke_c8": lambda: measured_cpu(lambda: load(d, petrel, "bench-py1cpu", 8, a.seconds),
                                              {"petreld": lambda: {d.proc.pid: cpu_seconds(d.proc.pid)}})}))
        results["py1cpu_c8"]["storedBytesPerInvocation"] = stored_bytes(
            d, lambda: load(d, petrel, "bench-py1cpu", 8, a.seconds))["storedBytesPerInvocation"]
        results["idle"] = idle_memory(d, a.idle)
    except BaseException:
        if os.path.exists(d.log_path):
            shutil.copy(d.log_path, "/tmp/petrel-bench-crash.log")
            print("petreld's log: /tmp/petrel-bench-crash.log", file=sys.stderr)
        raise
    finally:
        d.stop()
        for peer in peers.values():
            peer.close()
        shutil.rmtree(root, ignore_errors=True)
    # The references: the same handler, started and called once, as a bare process and in bwrap.
    work = tempfile.mkdtemp(prefix="petrel-bench-ref-", dir="/var/tmp")
    try:
        with open(os.path.join(work, "app.py"), "w") as f:
            f.write(PY_NOOP)
        with open(os.path.join(work, "handler_loop.py"), "w") as f:
            f.write(HANDLER_LOOP)
        bare = timed_run(["/usr/bin/python3", os.path.join(work, "handler_loop.py"), work], a.cold)
        bwrap = timed_run(["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
                           "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev",
                           "--tmpfs", "/tmp", "--ro-bind", work, work, "/usr/bin/python3", os.path.join(work, "handler_loop.py"), work], a.cold)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["ref"] = {"bare_python_ms": median(bare), "bwrap_python_ms": median(bwrap)}
    # The interpreters' own starts with nothing from the shell's environment (a shell's
    # NODE_EXTRA_CA_CERTS alone makes node three times slower to start), wall and CPU.
    for key, argv in (("python", ["env", "-i", "/usr/bin/python3", "-S", "-c", "pass"]), ("node", ["env", "-i", "/usr/bin/node", "-e", "0"])):
        import resource
        t0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        results["ref"]["envi_%s_ms" % key] = median(timed_run(argv, a.cold))
        t1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        results["ref"]["envi_%s_cpu_ms" % key] = ((t1.ru_utime + t1.ru_stime) - (t0.ru_utime + t0.ru_stime)) * 1000 / a.cold
    # The interpreters' own starts: ruby doing nothing; the same JVM with the same flags running
    # an empty main, and Petrel's Java runtime loading what an invocation loads, with and without
    # its class-data sharing archive.
    results["ref"]["bare_ruby_ms"] = median(timed_run(["/usr/bin/ruby", "-e", "0"], a.cold))
    java_dir = "/usr/local/lib/petrel/java"  # Scripts/setup builds it
    empty = tempfile.mkdtemp(prefix="petrel-bench-java-", dir="/var/tmp")
    try:
        with open(os.path.join(empty, "Empty.class"), "wb") as f:
            f.write(compile_java("Empty", JAVA_EMPTY_MAIN)["Empty.class"])
        flags = ["/usr/lib/jvm/java-17-openjdk-amd64/bin/java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData"]
        n = max(3, a.cold // 2)
        results["ref"]["bare_java_ms"] = median(timed_run(flags + ["-cp", empty, "Empty"], n))
        cp = ":".join([os.path.join(java_dir, "petrel-java.jar")] + ["/usr/share/java/jackson-%s.jar" % x for x in ("databind", "core", "annotations")])
        results["ref"]["java_runtime_cds_ms"] = median(timed_run(
            flags + ["-Xshare:auto", "-XX:SharedArchiveFile=" + os.path.join(java_dir, "petrel.jsa"), "-cp", cp, "petrel.runtime.Bootstrap", "--train"], n))
        results["ref"]["java_runtime_nocds_ms"] = median(timed_run(flags + ["-cp", cp, "petrel.runtime.Bootstrap", "--train"], n))
    finally:
        shutil.rmtree(empty, ignore_errors=True)
    results["runtime_module"] = runtime_module_start(a.cold)
    # Alternating rounds, median of each: the two see the same stretches of host load.
    trips = {"unix": [], "tcp": []}
    for _ in range(3):
        for kind in trips:
            trips[kind].append(transport_round_trip(kind))
    results["transport"] = {k + "_us": median(v) for k, v in trips.items()}
    if a.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return
    c = results["cold"]
    r = results["ref"]
    rows = []
    for key, label, ref, target in (("cold", "Python", "python", 0.3), ("cold_node", "Node", "node", 0.15)):
        pre, fresh = results[key], results[key + "_fresh"]
        interp = "env -i /usr/bin/python3 -S -c pass" if ref == "python" else "env -i /usr/bin/node -e 0"
        rows += [
            ("cold start, %s no-op 128 MB, pre-started (median of %d; %.0f%% pre-started)" % (label, a.cold, 100 * pre["prestarted"]),
             "%.2f ms (%.2fx)" % (pre["cost"], pre["cost"] / r["envi_%s_ms" % ref]),
             "%s: %.1f ms; fresh start (a variable the interpreter reads): %.2f ms (%.2fx)" % (
                 interp, r["envi_%s_ms" % ref], fresh["cost"], fresh["cost"] / r["envi_%s_ms" % ref]), "<= %.2fx" % target),
            ("  what it is: the first invoke (client-seen) less the second", "%.2f - %.2f ms" % (pre["total"], pre["warm"]),
             "fresh: %.2f - %.2f ms" % (fresh["total"], fresh["warm"]), ""),
            ("  Init Duration (REPORT)", "%.2f ms" % pre["init_duration"], "fresh: %.2f ms" % fresh["init_duration"], ""),
            ("  split: sandbox (take, go) / runtime (to the handler) / init (handler, first next)",
             "%.2f / %.2f / %.2f ms" % (pre["sandbox"], pre["runtime"], pre["init"]),
             "fresh: %.2f / %.2f / %.2f ms" % (fresh["sandbox"], fresh["runtime"], fresh["init"]), ""),
            ("  CPU per cold start, the pools' refill included (create, 2 invokes, delete)", "%.1f ms (%.1fx)" % (
                pre["cpu_ms"], pre["cpu_ms"] / r["envi_%s_cpu_ms" % ref]),
             "%s: %.1f ms CPU; fresh start: %.1f ms" % (interp, r["envi_%s_cpu_ms" % ref], fresh["cpu_ms"]), ""),
            ("  memory per pre-started runtime (its cgroup, waiting)",
             "%.1f MiB" % (results["stems"]["python3.11" if ref == "python" else "nodejs20.x"] / 1048576), "", ""),
        ]
    rows += [
        ("cold start, Python no-op 128 MB (median of %d, client-seen)" % a.cold, "%.1f ms" % c["total"],
         "bare python3 %.1f ms; bwrap --unshare-all %.1f ms" % (r["bare_python_ms"], r["bwrap_python_ms"]), "<= 25 ms"),
        ("  sandbox (take a prepared one, start)", "%.2f ms" % c["sandbox"], "", ""),
        ("  runtime start (interpreter + bootstrap)", "%.1f ms" % c["runtime"], "", ""),
        ("    python3 -S importing the runtime's module (host)", "%.1f ms" % results["runtime_module"]["bytecode_ms"],
         "compiled from source at each start: %.1f ms (no bytecode in a read-only /var/runtime)" % results["runtime_module"]["source_ms"], ""),
        ("  init (import the handler)", "%.1f ms" % c["init"], "", ""),
        ("  Init Duration (REPORT)", "%.1f ms" % c["init_duration"], "", ""),
        ("cold start, Ruby no-op 128 MB (median of %d, client-seen)" % a.cold, "%.1f ms" % results["cold_ruby"]["total"],
         "bare ruby -e 0: %.1f ms" % r["bare_ruby_ms"], ""),
        ("cold start, Java no-op 512 MB (median of %d, client-seen)" % max(3, a.cold // 2), "%.1f ms" % results["cold_java"]["total"],
         "bare java, an empty main, same flags: %.1f ms" % r["bare_java_ms"], ""),
        ("  Init Duration (REPORT): the JVM and the runtime up to its first next", "%.1f ms" % results["cold_java"]["init_duration"],
         "the rest of the cold start is the first invocation (JSON mapping and code run for the first time)", ""),
        ("  the runtime loading what an invocation loads (host)", "%.1f ms" % r["java_runtime_cds_ms"],
         "without its class-data sharing archive: %.1f ms" % r["java_runtime_nocds_ms"], ""),
    ]
    for name, label in (("py", "Python 128 MB"), ("node", "Node 128 MB"), ("py1cpu", "Python 1769 MB"), ("node1cpu", "Node 1769 MB")):
        c1, c8 = results[name + "_c1"], results[name + "_c8"]
        peer = results["peer_" + name.replace("1cpu", "")]
        server = "bare python3 server" if name.startswith("py") else "bare node http server"
        small = not name.endswith("1cpu")
        rows.append(("warm invoke %s, concurrency 1: p50 / p99" % label,
                     "%.3f / %.3f ms" % (c1["latencyMs"]["p50"], c1["latencyMs"]["p99"]),
                     "%s %.3f / %.3f ms" % (server, peer["c1"]["latencyMs"]["p50"], peer["c1"]["latencyMs"]["p99"]),
                     "see the 1769 MB row" if small else "<= 0.5 / <= 2 ms"))
        if small:
            # One instance serves c=1, at the CPU share its memory buys: its p99 is the wait for
            # the next CFS period once it has used up its quota, not the platform's latency.
            periods, throttled = c1["cfsPeriods"]
            rows.append(("  CPU the one instance may use at 128 MB", "%.1f%% of a CPU" % (128 / 1769 * 100),
                         "at c=1 it used up its quota in %d of %d 20 ms periods (%.0f%%); then it waits for the next" % (
                             throttled, periods, 100 * throttled / max(1, periods)), ""))
        rows.append(("throughput %s, concurrency 8 (median of %d rounds)" % (label, len(c8["throughputRounds"])),
                     "%.0f /s" % c8["throughputPerSecond"],
                     "%s %.0f /s; p50 %.2f ms, p99 %.2f ms (peer %.2f, %.2f)" % (
                         server, peer["c8"]["throughputPerSecond"], c8["latencyMs"]["p50"], c8["latencyMs"]["p99"],
                         peer["c8"]["latencyMs"]["p50"], peer["c8"]["latencyMs"]["p99"]), ">= 5000 /s"))
        rows.append(("  rounds", "%s /s" % " ".join("%.0f" % t for t in c8["throughputRounds"]),
                     "%s%s; host steal %.1f%% of the CPU" % (
                         "peer rounds, alternating with these: " if name.endswith("1cpu") else "",
                         " ".join("%.0f /s" % t for t in peer["c8"]["throughputRounds"]) if name.endswith("1cpu") else "the peer is run with the 1769 MB row",
                         c8["hostStealPercent"]), ""))
        cpu = c8["cpuMicrosPerInvocation"]
        rows.append(("  CPU per invocation at concurrency 8", "petreld %.0f us" % cpu["petreld"],
                     "runtime %.0f us; load tool %.0f us (%d CPUs: %.0f us in all allows %.0f/s); peer server %.0f us" % (
                         cpu["runtime"], cpu["loadTool"], os.cpu_count(), sum(cpu.values()),
                         os.cpu_count() * 1e6 / max(1, sum(cpu.values())), peer["c8"]["cpuMicrosPerInvocation"]["server"]), ""))
    u = results["url"]
    peer = results["peer_py"]
    rows.append(("function URL (auth NONE), Python 1769 MB, concurrency 1: p50 / p99",
                 "%.3f / %.3f ms" % (u["c1"]["latencyMs"]["p50"], u["c1"]["latencyMs"]["p99"]),
                 "signed invoke %.3f / %.3f ms; bare python3 server %.3f / %.3f ms" % (
                     u["invoke_c1"]["latencyMs"]["p50"], u["invoke_c1"]["latencyMs"]["p99"],
                     peer["c1"]["latencyMs"]["p50"], peer["c1"]["latencyMs"]["p99"]), "<= signed invoke"))
    rows.append(("function URL (auth NONE), Python 1769 MB, concurrency 8", "%.0f /s; petreld %.0f us/inv" % (
                     u["c8"]["throughputPerSecond"], u["c8"]["cpuMicrosPerInvocation"]["petreld"]),
                 "signed invoke, alternating rounds: %.0f /s, petreld %.0f us/inv; bare python3 server %.0f /s" % (
                     u["invoke_c8"]["throughputPerSecond"], u["invoke_c8"]["cpuMicrosPerInvocation"]["petreld"],
                     peer["c8"]["throughputPerSecond"]), ">= 5000 /s"))
    al = results["alias"]
    rows.append(("through an alias splitting 50/50 over two versions, Python 512 MB, c=8",
                 "%.0f /s; petreld %.0f us/inv" % (al["alias"]["throughputPerSecond"], al["alias"]["cpuMicrosPerInvocation"]["petreld"]),
                 "the same function unqualified, alternating rounds: %.0f /s; petreld %.0f us/inv" % (
                     al["unqualified"]["throughputPerSecond"], al["unqualified"]["cpuMicrosPerInvocation"]["petreld"]), ""))
    t = results["transport"]
    rows.append(("Runtime API transport: CPU per round trip, 400 B each way", "AF_UNIX %.1f us" % t["unix_us"],
                 "TCP over loopback %.1f us (what AWS_LAMBDA_RUNTIME_API uses; median of 3 alternating rounds)" % t["tcp_us"], ""))
    stored = results["py1cpu_c8"]["storedBytesPerInvocation"]
    rows.append(("log store per warm invocation (Python 1769 MB, c=8)", "%.0f bytes" % stored["database"],
                 "the text it holds: %.0f bytes (log lines, audit record)" % stored["text"], ""))
    i = results["idle"]
    rows.append(("platform memory per idle instance (%d instances)" % i["instances"],
                 "%.0f KiB" % (i["init_uss_kib"] + max(0, i["daemon_growth_kib_per_instance"])),
                 "init USS %.0f KiB + daemon %.0f KiB; runtime's own RSS %.0f KiB" % (
                     i["init_uss_kib"], i["daemon_growth_kib_per_instance"], i["runtime_rss_kib"]), "<= 1024 KiB"))
    w = [max(len(x[k]) for x in rows) for k in range(4)]
    head = ("measure", "petrel", "beside it (same run)", "target")
    w = [max(w[k], len(head[k])) for k in range(4)]
    print("  ".join(head[k].ljust(w[k]) for k in range(4)))
    print("  ".join("-" * w[k] for k in range(4)))
    for x in rows:
        print("  ".join(x[k].ljust(w[k]) for k in range(4)))


if __name__ == "__main__":
    main()
