"""Issue 23: pre-started runtimes ("stem cells"). A cold start that finds a Python or
Node interpreter already running in a prepared sandbox hands it the function; the
function must not be able to tell it from a fresh start. Fallbacks (variables an
interpreter reads when it starts, other runtimes, the pool turned off, a burst larger
than the pool), the pool's memory in the metrics, a pre-started runtime that dies while
it waits, and nothing left behind."""

import json
import os
import re
import signal
import threading
import time
import unittest

from harness import ROLE, Daemon, DaemonTestCase, make_zip, metric, payload_json, prestarted_runtimes, wait_for

# Everything a Python function can see of how its process started.
PY_APP = r'''
import errno, os, socket, sys, time, resource
def handler(event, context):
    # The throwaway peer a pre-started runtime may warm up against is gone before any function runs.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0petrel-prestart")
        peer = "connected"
    except OSError as e:
        peer = errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()
    mask = os.umask(0o022)
    os.umask(mask)
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Umask", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
                     "Seccomp", "Seccomp_filters", "SigBlk", "SigIgn", "SigCgt", "Cpus_allowed_list", "Threads"):
                status[k] = v.strip()
    with open("/proc/self/cmdline", "rb") as f:
        cmdline = f.read().decode()
    with open("/proc/self/limits") as f:
        limits = f.read()
    with open("/proc/self/cgroup") as f:
        cgroup = f.read()
    return {
        "environ": [[k, v] for k, v in os.environ.items()],
        "cwd": os.getcwd(), "fds": sorted(os.listdir("/proc/self/fd"), key=int),
        "modules": sorted(sys.modules), "argv": sys.argv, "orig_argv": sys.orig_argv, "path": sys.path,
        "flags": str(sys.flags), "umask": mask, "status": status, "cmdline": cmdline, "limits": limits,
        "rlimits": {n: resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_")},
        "cgroup": cgroup, "pid": os.getpid(), "ppid": os.getppid(), "tzname": list(time.tzname),
        "encodings": [sys.stdout.encoding, sys.stderr.encoding, sys.getfilesystemencoding()],
        "executable": sys.executable, "dont_write_bytecode": sys.dont_write_bytecode,
        "priority": os.getpriority(os.PRIO_PROCESS, 0), "affinity": sorted(os.sched_getaffinity(0)), "peer": peer,
    }
'''

NODE_APP = r'''
const fs = require('fs');
const Module = require('module');
const net = require('net');
exports.handler = async () => {
  const peer = await new Promise((resolve) => {
    const s = net.connect({ path: '\0petrel-prestart' });
    s.on('error', (e) => resolve(e.code));
    s.on('connect', () => { s.destroy(); resolve('connected'); });
  });
  const status = {};
  for (const line of fs.readFileSync('/proc/self/status', 'utf8').split('\n')) {
    const [k, v] = line.split(':');
    if (/^(Umask|Groups|Cap\w+|NoNewPrivs|Seccomp|Seccomp_filters|SigBlk|SigIgn|SigCgt|Cpus_allowed_list)$/.test(k)) status[k] = v.trim();
  }
  return {
    environ: Object.entries(process.env),
    cwd: process.cwd(), fds: fs.readdirSync('/proc/self/fd').sort((a, b) => a - b),
    cache: Object.keys(require.cache), loaded: process.moduleLoadList,
    argv: process.argv, execArgv: process.execArgv, title: process.title,
    umask: process.umask(), status, cmdline: fs.readFileSync('/proc/self/cmdline', 'utf8'),
    limits: fs.readFileSync('/proc/self/limits', 'utf8'), cgroup: fs.readFileSync('/proc/self/cgroup', 'utf8'),
    pid: process.pid, ppid: process.ppid, paths: module.paths, globalPaths: Module.globalPaths,
    heapLimit: require('v8').getHeapStatistics().heap_size_limit,
    intl: Intl.DateTimeFormat().resolvedOptions(), tz: new Date(0).getTimezoneOffset(),
    versions: process.versions, config: process.config.variables.node_shared, peer,
  };
};
'''

TARGET = 2  # prestarted_per_runtime's default

# Differ between any two instances, fresh or not.
PER_INSTANCE = {"AWS_LAMBDA_LOG_STREAM_NAME", "_X_AMZN_TRACE_ID", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN"}


def masked(seen):
    out = dict(seen)
    out["environ"] = [[k, "<instance>" if k in PER_INSTANCE else v] for k, v in seen["environ"]]
    return out


def start_of(resp):
    return resp["ResponseMetadata"]["HTTPHeaders"].get("x-petrel-start")


def max_memory(resp):
    import base64
    tail = base64.b64decode(resp["LogResult"]).decode()
    return float(re.search(r"Max Memory Used: (\d+) MB", tail).group(1))


class PrestartTest(DaemonTestCase):
    @classmethod
    def ready(cls):
        cls.lam = cls.daemon.client()

    def create(self, name, runtime, files, handler, storage, memory=128, env=None):
        kw = {"Environment": {"Variables": env}} if env else {}
        self.lam.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
                                 Code={"ZipFile": make_zip(files)}, MemorySize=memory,
                                 EphemeralStorage={"Size": storage}, **kw)

    def invoke(self, name, payload=None):
        r = self.lam.invoke(FunctionName=name, Payload=json.dumps(payload or {}).encode(), LogType="Tail")
        r["Body"] = payload_json(r)
        self.assertNotIn("FunctionError", r, r["Body"])
        return r

    def renew(self, name, n):
        """A new revision (its instances go) that the function cannot see."""
        self.lam.update_function_configuration(FunctionName=name, Description="revision %d" % n)

    def stems(self, runtime):
        return metric(self.daemon, "petrel_prestarted_runtimes", runtime=runtime) or 0

    def python_stems(self):
        def exe(pid):
            try:
                return os.readlink("/proc/%d/exe" % pid)
            except OSError:
                return ""
        return [p for p in prestarted_runtimes(self.daemon.proc.pid) if "python" in exe(p)]

    def wait_stems(self, runtime, at_least):
        """The metric counts every kind of a runtime's stems (memory, /tmp size): a new kind
        adds its own to what the others hold."""
        wait_for(lambda: self.stems(runtime) >= at_least, timeout=30, what="%d pre-started %s" % (at_least, runtime))

    def compare_paths(self, name, runtime, files, handler, storage, memory=128):
        """Fresh start first (no stem of this kind yet), then a pre-started one: equal."""
        self.create(name, runtime, files, handler, storage, memory)
        others = self.stems(runtime)
        fresh = self.invoke(name)
        self.assertEqual(start_of(fresh), "fresh (none ready)")
        self.renew(name, 1)
        self.wait_stems(runtime, others + TARGET)
        pre = self.invoke(name)
        self.assertEqual(start_of(pre), "prestarted")
        a, b = masked(fresh["Body"]), masked(pre["Body"])
        for key in a:
            self.assertEqual(a[key], b[key], "%s differs between a fresh and a pre-started %s instance" % (key, runtime))
        self.assertEqual(set(a), set(b))
        # The pre-start's memory is charged to the function's cgroup, as a fresh start's is.
        fresh_mb, pre_mb = max_memory(fresh), max_memory(pre)
        self.assertGreater(fresh_mb, 2)
        self.assertGreater(pre_mb, 0.6 * fresh_mb, (fresh_mb, pre_mb))
        return a, b, fresh, pre

    def test_python_cannot_tell(self):
        a, _, _, pre = self.compare_paths("py-same", "python3.11", {"app.py": PY_APP}, "app.handler", 700)
        self.assertEqual(a["cwd"], "/var/task")
        self.assertEqual(a["peer"], "ECONNREFUSED")
        self.assertEqual(a["fds"], ["0", "1", "2", "3", "4"])  # 3: the Runtime API connection, 4: the listing
        self.assertNotIn("PETREL_STEM_FD", dict(a["environ"]))
        init = float(pre["ResponseMetadata"]["HTTPHeaders"]["x-petrel-init-duration"])
        self.assertGreater(init, 0)

    def test_node_cannot_tell(self):
        a, _, _, _ = self.compare_paths("node-same", "nodejs20.x", {"index.js": NODE_APP}, "index.handler", 800, memory=512)
        self.assertEqual(a["cwd"], "/var/task")
        self.assertEqual(a["peer"], "ECONNREFUSED")
        self.assertNotIn("PETREL_STEM_FD", dict(a["environ"]))
        # Node's stems are per memory size (V8 sizes its heap from the memory it sees when it starts).
        self.create("node-small", "nodejs20.x", {"index.js": NODE_APP}, "index.handler", 800, memory=256)
        small = self.invoke("node-small")
        self.assertEqual(start_of(small), "fresh (none ready)")

    def test_fallbacks(self):
        cases = [
            ("fb-py", "python3.11", {"app.py": PY_APP}, "app.handler", {"PYTHONHASHSEED": "0"},
             "fresh (environment PYTHONHASHSEED)"),
            ("fb-node", "nodejs20.x", {"index.js": NODE_APP}, "index.handler", {"NODE_OPTIONS": "--max-old-space-size=100"},
             "fresh (environment NODE_OPTIONS)"),
            ("fb-locale", "python3.11", {"app.py": PY_APP}, "app.handler", {"LC_ALL": "C"}, "fresh (environment LC_ALL)"),
            ("fb-ruby", "ruby3.1", {"app.rb": "def handler(event:, context:)\n  {ok: true}\nend\n"}, "app.handler", None,
             "fresh (runtime)"),
        ]
        for name, runtime, files, handler, env, want in cases:
            self.create(name, runtime, files, handler, 1000, env=env)
            for n in range(2):
                r = self.invoke(name)
                self.assertEqual(start_of(r), want, name)
                self.renew(name, n + 1)
        seen = self.invoke("fb-py")["Body"]
        self.assertEqual(dict(seen["environ"])["PYTHONHASHSEED"], "0")
        self.assertIn("hash_randomization=0", seen["flags"])  # the interpreter read it at its start
        node = self.invoke("fb-node")["Body"]
        self.assertLess(node["heapLimit"], 200 * 1024 * 1024)

    def test_burst_larger_than_pool_and_memory_gauge(self):
        names = ["burst-%d" % i for i in range(6)]
        for name in names:
            self.create(name, "python3.11", {"app.py": PY_APP}, "app.handler", 1100)
        others = self.stems("python3.11")
        first = self.invoke(names[0])
        self.assertEqual(start_of(first), "fresh (none ready)")
        self.wait_stems("python3.11", others + TARGET)
        wait_for(lambda: (metric(self.daemon, "petrel_prestarted_memory_bytes", runtime="python3.11") or 0) > 4 << 20,
                 what="the pre-started runtimes' memory in the metrics")
        per_stem = metric(self.daemon, "petrel_prestarted_memory_bytes", runtime="python3.11") / self.stems("python3.11")
        self.assertGreater(per_stem, 2 << 20)
        self.assertLess(per_stem, 64 << 20)
        before = metric(self.daemon, "petrel_cold_starts_total", start="prestarted") or 0
        starts, errors = [], []

        def go(name):
            try:
                starts.append(start_of(self.invoke(name)))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=go, args=(n,)) for n in names[1:]]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
        self.assertEqual(errors, [])
        self.assertEqual(len(starts), 5)
        pre = starts.count("prestarted")
        self.assertGreaterEqual(pre, 2, starts)
        self.assertEqual(pre + starts.count("fresh (none ready)"), 5, starts)
        self.assertGreaterEqual(starts.count("fresh (none ready)"), 1, starts)
        after = metric(self.daemon, "petrel_cold_starts_total", start="prestarted")
        self.assertEqual(after - before, pre)
        # The pool refills off the request path.
        self.wait_stems("python3.11", others + TARGET)

    def test_a_stem_that_dies_while_it_waits(self):
        self.create("dies", "python3.11", {"app.py": PY_APP}, "app.handler", 1200)
        others = self.stems("python3.11")
        self.invoke("dies")
        self.wait_stems("python3.11", others + TARGET)
        victims = self.python_stems()
        self.assertTrue(victims, "no pre-started interpreter found on the host")
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        # Taken or swept, a dead one is never handed out: the next starts work.
        for n in range(3):
            self.renew("dies", n + 1)
            r = self.invoke("dies")
            self.assertIn(start_of(r), ("prestarted", "fresh (none ready)"))
        # New ones replace them, and the metric counts the live ones.
        wait_for(lambda: len(set(self.python_stems()) - set(victims)) >= len(victims), timeout=30,
                 what="new pre-started runtimes")
        wait_for(lambda: self.stems("python3.11") == len(self.python_stems()), timeout=10,
                 what="the metric to count the live pre-started runtimes")


class PrestartOffTest(unittest.TestCase):
    def test_turned_off(self):
        d = Daemon(extra_env={"PETREL_PRESTARTED_PER_RUNTIME": "0"}).start()
        try:
            lam = d.client()
            lam.create_function(FunctionName="off", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": PY_APP})})
            for n in range(2):
                r = lam.invoke(FunctionName="off", Payload=b"{}")
                self.assertEqual(start_of(r), "fresh (disabled)")
                lam.update_function_configuration(FunctionName="off", Description=str(n))
            time.sleep(0.5)
            self.assertFalse(prestarted_runtimes(d.proc.pid))
        finally:
            d.stop_and_check()


if __name__ == "__main__":
    unittest.main()
