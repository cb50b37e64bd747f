"""Issue 4: warm reuse, keep-alive, eviction under a memory budget, throttling
at the account limit and at reserved concurrency, parallel bursts, and
updates that drain old instances."""

import json
import re
import shutil
import threading
import time
import unittest
import urllib.request

from botocore.exceptions import ClientError

from harness import ROLE, Daemon, log_tail, make_zip, metric, payload_json, prestarted_runtimes, sandbox_leftovers

APP = '''
import os, time, json
COUNT = {"n": 0}
if os.environ.get("INIT_SLEEP"):
    time.sleep(float(os.environ["INIT_SLEEP"]))
def handler(event, context):
    COUNT["n"] += 1
    marker = "/tmp/instance-marker"
    first = not os.path.exists(marker)
    if first:
        with open(marker, "w") as f:
            f.write(context.aws_request_id)
    if event.get("sleep"):
        time.sleep(event["sleep"])
    with open(marker) as f:
        born = f.read()
    return {"count": COUNT["n"], "born": born, "version": VERSION, "pid": os.getpid()}
VERSION = 1
'''


class PoolCase(unittest.TestCase):
    env = {}

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(extra_env=cls.env).start()
        cls.lam = cls.daemon.client()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop_and_check()

    def create(self, name, memory=128, app=APP, env=None, timeout=30):
        kw = {"Environment": {"Variables": env}} if env else {}
        self.lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                 Code={"ZipFile": make_zip({"app.py": app})}, MemorySize=memory, Timeout=timeout, **kw)

    def invoke(self, name, payload=None):
        r = self.lam.invoke(FunctionName=name, Payload=json.dumps(payload or {}).encode(), LogType="Tail")
        return payload_json(r), log_tail(r), r

    def throttle(self, name, payload=None):
        with self.assertRaises(ClientError) as cm:
            self.lam.invoke(FunctionName=name, Payload=json.dumps(payload or {}).encode())
        e = cm.exception.response
        self.assertEqual(e["ResponseMetadata"]["HTTPStatusCode"], 429)
        self.assertEqual(e["Error"]["Code"], "TooManyRequestsException")
        return e

    def parallel(self, calls):
        """Runs the callables at once; returns their results or exceptions, in order."""
        out = [None] * len(calls)
        def run(i, f):
            try:
                out[i] = f()
            except Exception as e:  # noqa: BLE001 - the caller inspects it
                out[i] = e
        threads = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate(calls)]
        [t.start() for t in threads]
        [t.join(120) for t in threads]
        return out


class WarmReuseTest(PoolCase):
    env = {"PETREL_KEEP_ALIVE_SECONDS": "2"}

    def test_reuse_is_real_and_keep_alive_expires(self):
        self.create("reuse")
        first, tail1, _ = self.invoke("reuse")
        second, tail2, _ = self.invoke("reuse")
        self.assertIn("Init Duration", tail1)
        self.assertNotIn("Init Duration", tail2)
        # The same instance: its globals and its /tmp survived.
        self.assertEqual((first["count"], second["count"]), (1, 2))
        self.assertEqual(second["born"], first["born"])
        deadline = time.time() + 2  # the instance gauges are published every 100 ms
        while time.time() < deadline and (metric(self.daemon, "petrel_instances", state="idle") or 0) < 1:
            time.sleep(0.05)
        self.assertGreaterEqual(metric(self.daemon, "petrel_instances", state="idle"), 1)
        # Idle past the keep-alive: torn down with nothing left behind, while the daemon runs on.
        deadline = time.time() + 15
        while time.time() < deadline and metric(self.daemon, "petrel_instances", state="live") != 0:
            time.sleep(0.2)
        self.assertEqual(metric(self.daemon, "petrel_instances", state="live"), 0)
        # What runs in the sandbox uid range now is the pre-started runtimes, waiting.
        left = set(sandbox_leftovers()["procs"]) - set(prestarted_runtimes(self.daemon.proc.pid))
        self.assertEqual(left, set(), "the expired instance's processes are gone")
        third, tail3, _ = self.invoke("reuse")
        self.assertEqual(third["count"], 1)
        self.assertNotEqual(third["born"], first["born"], "a new instance has a fresh /tmp")
        self.assertIn("Init Duration", tail3)
        self.assertEqual(metric(self.daemon, "petrel_cold_starts_total", function="reuse", reason="no_idle_instance"), 2)
        self.assertEqual(metric(self.daemon, "petrel_invocations_total", function="reuse"), 3)

    def test_burst_starts_instances_in_parallel(self):
        self.create("burst", env={"INIT_SLEEP": "1"})
        started = time.time()
        results = self.parallel([lambda: self.invoke("burst") for _ in range(4)])
        took = time.time() - started
        for r in results:
            self.assertNotIsInstance(r, Exception, r)
        self.assertEqual(len({r[0]["born"] for r in results}), 4, "four instances")
        self.assertTrue(all("Init Duration" in r[1] for r in results))
        # Each init sleeps 1 s: one after another would take over 4 s.
        self.assertLess(took, 3.0, "the four cold starts ran one after another (%.1f s)" % took)

    def other_live(self):
        return []

    def test_update_drains_old_instances(self):
        self.create("drain", timeout=20)
        self.invoke("drain")
        slow = {}
        t = threading.Thread(target=lambda: slow.update(r=self.invoke("drain", {"sleep": 1.5})[0]))
        t.start()
        time.sleep(0.5)
        self.lam.update_function_code(FunctionName="drain", ZipFile=make_zip({"app.py": APP.replace("VERSION = 1", "VERSION = 2")}))
        new, tail, _ = self.invoke("drain")
        t.join(30)
        self.assertEqual(slow["r"]["version"], 1, "the in-flight invocation finished on the old code")
        self.assertEqual(new["version"], 2)
        self.assertIn("Init Duration", tail)
        # The old instance is drained once its invocation ends: only the new one stays.
        deadline = time.time() + 10
        while time.time() < deadline and metric(self.daemon, "petrel_instances", state="live") > 1 + len(self.other_live()):
            time.sleep(0.1)
        again, _, _ = self.invoke("drain")
        self.assertEqual((again["version"], again["born"]), (2, new["born"]))
        self.assertEqual(metric(self.daemon, "petrel_cold_starts_total", function="drain", reason="after_update"), 1)


class EvictionTest(PoolCase):
    env = {"PETREL_MEMORY_BUDGET_MB": "300"}

    def test_lru_eviction_and_throttle_when_nothing_can_go(self):
        for n in ("a", "b", "c"):
            self.create("ev-" + n)
        self.invoke("ev-a")
        self.invoke("ev-b")
        _, tail, _ = self.invoke("ev-c")          # 3 x 128 MB > 300: evicts ev-a, the least recently used
        self.assertIn("Init Duration", tail)
        _, tail, _ = self.invoke("ev-b")          # still warm
        self.assertNotIn("Init Duration", tail)
        _, tail, _ = self.invoke("ev-a")          # cold again, because it was evicted (evicts ev-c)
        self.assertIn("Init Duration", tail)
        self.assertEqual(metric(self.daemon, "petrel_cold_starts_total", function="ev-a", reason="evicted"), 1)
        self.assertGreaterEqual(metric(self.daemon, "petrel_evictions_total"), 2)
        self.assertLessEqual(metric(self.daemon, "petrel_instance_memory_megabytes", of="in_use"), 300)
        # Larger than the whole budget: nothing can make room.
        self.create("ev-big", memory=512)
        e = self.throttle("ev-big")
        self.assertEqual(e["Reason"], "ConcurrentInvocationLimitExceeded")
        # Every instance busy: the third concurrent one cannot fit.
        results = self.parallel([lambda: self.invoke("ev-a", {"sleep": 1.5}), lambda: self.invoke("ev-b", {"sleep": 1.5}),
                                 lambda: (time.sleep(0.5), self.invoke("ev-c"))[1]])
        self.assertNotIsInstance(results[0], Exception)
        self.assertNotIsInstance(results[1], Exception)
        self.assertIsInstance(results[2], ClientError)
        self.assertEqual(results[2].response["Error"]["Code"], "TooManyRequestsException")
        self.assertGreaterEqual(metric(self.daemon, "petrel_throttles_total", reason="ConcurrentInvocationLimitExceeded"), 2)


class ProvisionedTest(PoolCase):
    env = {"PETREL_MEMORY_BUDGET_MB": "400", "PETREL_KEEP_ALIVE_SECONDS": "600"}

    def wait_ready(self, name, qualifier, want):
        deadline = time.time() + 20
        while time.time() < deadline:
            c = self.lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
            if c["Status"] == "READY" and c["AllocatedProvisionedConcurrentExecutions"] == want:
                return c
            self.assertNotEqual(c["Status"], "FAILED", c)
            time.sleep(0.1)
        self.fail("provisioned concurrency never became READY: %s" % c)

    def test_provisioned_instances_are_made_ahead_and_survive_eviction(self):
        self.create("prov")
        self.lam.publish_version(FunctionName="prov")
        # $LATEST cannot be provisioned, as on Lambda; a version or an alias can.
        with self.assertRaises(ClientError) as cm:
            self.lam.put_provisioned_concurrency_config(FunctionName="prov", Qualifier="$LATEST", ProvisionedConcurrentExecutions=1)
        self.assertEqual(cm.exception.response["Error"]["Code"], "InvalidParameterValueException")
        with self.assertRaises(ClientError) as cm:
            self.lam.put_provisioned_concurrency_config(FunctionName="prov", Qualifier="7", ProvisionedConcurrentExecutions=1)
        self.assertEqual(cm.exception.response["Error"]["Code"], "ResourceNotFoundException")
        r = self.lam.put_provisioned_concurrency_config(FunctionName="prov", Qualifier="1", ProvisionedConcurrentExecutions=2)
        self.assertEqual(r["ResponseMetadata"]["HTTPStatusCode"], 202)
        self.assertEqual(r["RequestedProvisionedConcurrentExecutions"], 2)
        c = self.wait_ready("prov", "1", 2)
        self.assertEqual(c["AvailableProvisionedConcurrentExecutions"], 2)
        # Both invocations find an initialized instance: no cold start.
        out = self.parallel([lambda: self.invoke("prov:1", {"sleep": 0.5}) for _ in range(2)])
        for o in out:
            self.assertNotIsInstance(o, Exception, o)
            self.assertNotIn("Init Duration", o[1])
        self.assertEqual(len({o[0]["born"] for o in out}), 2)
        # Memory pressure: 400 MB budget, 256 MB provisioned. ev-x fits; ev-y needs room and may
        # only take it from ev-x, never from the provisioned instances.
        self.create("prov-x")
        self.create("prov-y")
        self.invoke("prov-x")
        self.invoke("prov-y")
        out = self.parallel([lambda: self.invoke("prov-x", {"sleep": 1.0}), lambda: (time.sleep(0.3), self.invoke("prov-y"))[1]])
        self.assertNotIsInstance(out[0], Exception, out[0])
        self.assertIsInstance(out[1], ClientError, "no room: the provisioned instances may not be evicted")
        self.assertEqual(out[1].response["Error"]["Code"], "TooManyRequestsException")
        c = self.wait_ready("prov", "1", 2)
        _, tail, _ = self.invoke("prov:1")
        self.assertNotIn("Init Duration", tail)
        self.lam.delete_provisioned_concurrency_config(FunctionName="prov", Qualifier="1")
        with self.assertRaises(ClientError) as cm:
            self.lam.get_provisioned_concurrency_config(FunctionName="prov", Qualifier="1")
        self.assertEqual(cm.exception.response["Error"]["Code"], "ProvisionedConcurrencyConfigNotFoundException")
        # An alias with weights spreads its provisioned instances over both versions.
        self.lam.update_function_configuration(FunctionName="prov", Timeout=31)
        self.lam.publish_version(FunctionName="prov")
        self.lam.create_alias(FunctionName="prov", Name="live", FunctionVersion="1",
                              RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
        self.lam.put_provisioned_concurrency_config(FunctionName="prov", Qualifier="live", ProvisionedConcurrentExecutions=2)
        self.wait_ready("prov", "live", 2)
        for version in ("1", "2"):
            _, tail, r = self.invoke("prov:" + version)
            self.assertEqual(r["ExecutedVersion"], version)
            self.assertNotIn("Init Duration", tail, "version %s has a provisioned instance" % version)
        # The cold-start metric names the version.
        self.assertGreaterEqual(metric(self.daemon, "petrel_cold_starts_total", function="prov", version="2", reason="provisioned"), 1)


class ConcurrencyLimitTest(PoolCase):
    env = {"PETREL_CONCURRENCY_LIMIT": "3"}

    def test_reserved_and_account_limits(self):
        self.create("lim-r")
        self.create("lim-u")
        s = self.lam.get_account_settings()["AccountLimit"]
        self.assertEqual((s["ConcurrentExecutions"], s["UnreservedConcurrentExecutions"]), (3, 3))
        self.lam.put_function_concurrency(FunctionName="lim-r", ReservedConcurrentExecutions=1)
        self.assertEqual(self.lam.get_function_concurrency(FunctionName="lim-r")["ReservedConcurrentExecutions"], 1)
        self.assertEqual(self.lam.get_function(FunctionName="lim-r")["Concurrency"]["ReservedConcurrentExecutions"], 1)
        self.assertEqual(self.lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"], 2)
        with self.assertRaises(ClientError) as cm:
            self.lam.put_function_concurrency(FunctionName="lim-u", ReservedConcurrentExecutions=3)
        self.assertEqual(cm.exception.response["Error"]["Code"], "InvalidParameterValueException")
        # Reserved 1: a second concurrent invocation of lim-r is throttled, at once.
        slow = lambda: self.invoke("lim-r", {"sleep": 1.5})
        def second():
            time.sleep(0.6)
            t = time.time()
            try:
                self.invoke("lim-r")
            except ClientError as e:
                return e, time.time() - t
            return None, 0
        out = self.parallel([slow, second])
        self.assertNotIsInstance(out[0], Exception, out[0])
        err, took = out[1]
        self.assertIsNotNone(err, "the second invocation must be throttled")
        self.assertEqual(err.response["ResponseMetadata"]["HTTPStatusCode"], 429)
        self.assertEqual(err.response["Reason"], "ReservedFunctionConcurrentInvocationLimitExceeded")
        self.assertLess(took, 0.5, "a throttle answers at once, without queuing")
        # The unreserved pool is 2: a third concurrent lim-u is throttled for the account.
        out = self.parallel([lambda: self.invoke("lim-u", {"sleep": 1.5}), lambda: self.invoke("lim-u", {"sleep": 1.5}),
                             lambda: (time.sleep(0.8), self.invoke("lim-u"))[1]])
        self.assertNotIsInstance(out[0], Exception, out[0])
        self.assertNotIsInstance(out[1], Exception, out[1])
        self.assertIsInstance(out[2], ClientError)
        self.assertEqual(out[2].response["Reason"], "ConcurrentInvocationLimitExceeded")
        # Reserved 0 throttles the function entirely; deleting the reservation frees it.
        self.lam.put_function_concurrency(FunctionName="lim-r", ReservedConcurrentExecutions=0)
        self.assertEqual(self.throttle("lim-r")["Reason"], "ReservedFunctionConcurrentInvocationLimitExceeded")
        self.lam.delete_function_concurrency(FunctionName="lim-r")
        self.assertNotIn("Concurrency", self.lam.get_function(FunctionName="lim-r"))
        self.assertEqual(self.invoke("lim-r")[0]["version"], 1)
        self.assertEqual(metric(self.daemon, "petrel_throttles_total", function="lim-r"), 2)


if __name__ == "__main__":
    unittest.main()
