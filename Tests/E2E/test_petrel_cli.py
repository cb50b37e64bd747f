"""The `petrel` CLI against a real petreld: deploy a folder, invoke, ls, logs,
and errors that read as sentences."""

import json
import os
import shutil
import subprocess
import time
import unittest

from harness import REPO, ROLE, Daemon, make_zip, sandbox_leftovers

PETREL = os.environ.get("PETREL", os.path.join(REPO, ".build", "debug", "petrel"))


class PetrelCLITest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon().start()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop_and_check()

    def petrel(self, *args, check=True):
        r = subprocess.run([PETREL] + list(args) + ["--endpoint", self.daemon.endpoint],
                           capture_output=True, text=True, timeout=120, env=self.daemon.tool_env())
        if check and r.returncode != 0:
            raise AssertionError("petrel %s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr))
        return r

    def test_deploy_invoke_ls_logs(self):
        src = os.path.join(self.daemon.root, "fn")
        os.makedirs(os.path.join(src, "pkg"))
        with open(os.path.join(src, "main.py"), "w") as f:
            f.write("from pkg.util import double\n"
                    "def handler(event, context):\n"
                    "    print('cli function ran')\n"
                    "    if event.get('fail'): raise RuntimeError('asked to fail')\n"
                    "    return {'double': double(event.get('n', 0)), 'version': VERSION}\n"
                    "VERSION = 1\n")
        with open(os.path.join(src, "pkg", "__init__.py"), "w") as f:
            f.write("")
        with open(os.path.join(src, "pkg", "util.py"), "w") as f:
            f.write("def double(x):\n    return 2 * x\n")
        r = self.petrel("deploy", src, "--name", "cli-py", "--runtime", "python3.11", "--handler", "main.handler", "--memory", "256")
        self.assertIn("zipping 4/4 files", r.stderr)
        self.assertIn("creating cli-py", r.stderr)
        self.assertIn("cli-py  python3.11  256 MB", r.stdout)
        r = self.petrel("invoke", "cli-py", "--payload", '{"n": 21}')
        self.assertEqual(json.loads(r.stdout), {"double": 42, "version": 1})
        self.assertRegex(r.stderr, r"REPORT RequestId: \S+  Duration: [0-9.]+ ms")
        # Deploying again updates the code.
        with open(os.path.join(src, "main.py")) as f:
            text = f.read().replace("VERSION = 1", "VERSION = 2")
        with open(os.path.join(src, "main.py"), "w") as f:
            f.write(text)
        r = self.petrel("deploy", src, "--name", "cli-py")
        self.assertIn("updating cli-py", r.stderr)
        self.assertEqual(json.loads(self.petrel("invoke", "cli-py", "--payload", '{"n": 1}').stdout)["version"], 2)
        # A function error: exit 1, the error as a sentence.
        r = self.petrel("invoke", "cli-py", "--payload", '{"fail": true}', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("function error: RuntimeError: asked to fail", r.stderr)
        # The table.
        r = self.petrel("ls")
        header, *rows = r.stdout.splitlines()
        self.assertTrue(header.startswith("NAME"))
        self.assertTrue(any(row.startswith("cli-py ") and "python3.11" in row and "256 MB" in row for row in rows), r.stdout)
        # Logs.
        deadline = time.time() + 10
        while True:
            out = self.petrel("logs", "cli-py", "--since", "5m").stdout
            if out.count("cli function ran") >= 3 or time.time() > deadline:
                break
            time.sleep(0.3)
        self.assertGreaterEqual(out.count("cli function ran"), 3, out)
        self.assertIn("REPORT RequestId:", out)

    def test_load(self):
        src = os.path.join(self.daemon.root, "noop")
        os.makedirs(src, exist_ok=True)
        with open(os.path.join(src, "app.py"), "w") as f:
            f.write("import time\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return event\n")
        self.petrel("deploy", src, "--name", "load-fn", "--runtime", "python3.11", "--handler", "app.handler", "--memory", "512")
        r = self.petrel("load", "--function", "load-fn", "--concurrency", "4", "--requests", "60", "--json")
        j = json.loads(r.stdout)
        self.assertEqual(j["requests"], 60)
        self.assertEqual(j["succeeded"], 60)
        self.assertEqual(j["throttles"], 0)
        self.assertGreaterEqual(j["coldStarts"], 1)
        self.assertLessEqual(j["coldStarts"], 4)
        lat = j["latencyMs"]
        self.assertTrue(0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"], lat)
        self.assertGreater(j["throughputPerSecond"], 0)
        self.assertEqual(j["versions"], {"$LATEST": 60})
        # Through an alias with a canary: the split by executed version.
        lam = self.daemon.client()
        lam.publish_version(FunctionName="load-fn")
        lam.update_function_configuration(FunctionName="load-fn", Timeout=5)
        lam.publish_version(FunctionName="load-fn")
        lam.create_alias(FunctionName="load-fn", Name="canary", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
        j = json.loads(self.petrel("load", "--function", "load-fn:canary", "--concurrency", "2", "--requests", "200", "--json").stdout)
        self.assertEqual(sum(j["versions"].values()), 200, j)
        self.assertTrue(65 <= j["versions"].get("2", 0) <= 135, j["versions"])  # Binomial(200, 0.5): 5 sd either side
        # Through a function URL (auth NONE): unsigned requests to the URL listener.
        url = lam.create_function_url_config(FunctionName="load-fn", AuthType="NONE")["FunctionUrl"]
        lam.add_permission(FunctionName="load-fn", StatementId="u", Action="lambda:InvokeFunctionUrl", Principal="*",
                           FunctionUrlAuthType="NONE")
        lam.add_permission(FunctionName="load-fn", StatementId="i", Action="lambda:InvokeFunction", Principal="*",
                           InvokedViaFunctionUrl=True)
        j = json.loads(self.petrel("load", "--function", "load-fn", "--url", url, "--concurrency", "2", "--requests", "50", "--json").stdout)
        self.assertEqual((j["succeeded"], j["versions"]), (50, {"$LATEST": 50}), j)
        r = self.petrel("load", "--function", "load-fn", "--url", "ftp://x", "--requests", "1", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--url", r.stderr)
        # The table, and throttles counted as such: one reserved instance, four callers.
        lam.put_function_concurrency(FunctionName="load-fn", ReservedConcurrentExecutions=1)
        r = self.petrel("load", "--function", "load-fn", "--concurrency", "4", "--duration", "1.5", "--payload", '{"sleep": 0.05}')
        table = dict(line.split("  ", 1) for line in r.stdout.splitlines() if "  " in line)
        table = {k.strip(): v.strip() for k, v in table.items()}
        self.assertGreater(int(table["throttled (429)"]), 0, r.stdout)
        self.assertGreater(int(table["succeeded"]), 0, r.stdout)
        for k in ("requests", "throughput", "latency p50", "latency p90", "latency p99", "latency p99.9", "latency max", "cold starts seen"):
            self.assertIn(k, table, r.stdout)
        r = self.petrel("load", "--function", "load-fn", "--duration", "1", "--requests", "5", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not both", r.stderr)

    def test_a_long_load_leaves_the_runtimes_heap_as_it_was(self):
        """Each invocation has its own trace id in _X_AMZN_TRACE_ID. Set with setenv(), every
        value stays in the C heap until the process ends (glibc keeps them all): about
        140-200 bytes per invocation, 1.1 MB per 8,000 in both runtimes when this test was
        written, enough to push a small function over its memory under a long load test."""
        py = ("import os\n"
              "def heap():\n"
              "    lines = open('/proc/self/smaps').read().split('\\n')\n"
              "    i = next(i for i, l in enumerate(lines) if l.endswith('[heap]'))\n"
              "    return next(int(l.split()[1]) for l in lines[i + 1:] if l.startswith('Rss:'))\n"
              "def handler(event, context):\n"
              "    return {'trace': os.environ.get('_X_AMZN_TRACE_ID'), 'heap': heap() if event.get('measure') else None}\n")
        js = ("const fs = require('fs');\n"
              "const { execFileSync } = require('child_process');\n"
              "function heap() {\n"
              "  const lines = fs.readFileSync('/proc/self/smaps', 'utf8').split('\\n');\n"
              "  const i = lines.findIndex((l) => l.endsWith('[heap]'));\n"
              "  return Number(lines.slice(i + 1).find((l) => l.startsWith('Rss:')).split(/\\s+/)[1]);\n"
              "}\n"
              "exports.handler = async (event) => ({ trace: process.env._X_AMZN_TRACE_ID,\n"
              "  listed: Object.keys(process.env).includes('_X_AMZN_TRACE_ID'),\n"
              "  child: event.measure ? execFileSync('/bin/sh', ['-c', 'echo $_X_AMZN_TRACE_ID']).toString().trim() : null,\n"
              "  heap: event.measure ? heap() : null });\n")
        lam = self.daemon.client()
        lam.create_function(FunctionName="trace-py", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": py})}, MemorySize=1769)
        lam.create_function(FunctionName="trace-js", Runtime="nodejs20.x", Role=ROLE, Handler="index.handler",
                            Code={"ZipFile": make_zip({"index.js": js})}, MemorySize=1769)

        def measure(name):
            return json.loads(lam.invoke(FunctionName=name, Payload=b'{"measure": true}')["Payload"].read())

        for name in ("trace-py", "trace-js"):
            first = measure(name)
            self.petrel("load", "--function", name, "--requests", "1000", "--json")  # one instance (concurrency 1), warmed
            before = measure(name)
            r = json.loads(self.petrel("load", "--function", name, "--requests", "8000", "--json").stdout)
            self.assertEqual(r["succeeded"], 8000, r)
            self.assertEqual(r["coldStarts"], 0, r)
            after = measure(name)
            traces = {first["trace"], before["trace"], after["trace"]}
            self.assertEqual(len(traces), 3, traces)
            self.assertTrue(all(t.startswith("Root=1-") for t in traces), traces)
            if name == "trace-js":
                # The handler, its environment's keys and the processes it starts see the same id.
                self.assertTrue(after["listed"])
                self.assertEqual(after["child"], after["trace"])
            self.assertLess(after["heap"] - before["heap"], 256, "%s: the C heap grew by %d KiB in 8,000 invocations"
                            % (name, after["heap"] - before["heap"]))

    def test_queue_commands(self):
        out = self.petrel("queue", "create", "jobs", "--attribute", "VisibilityTimeout=40").stdout
        self.assertIn("/000000000000/jobs", out)
        self.petrel("queue", "create", "jobs.fifo")
        self.assertIn("Sent ", self.petrel("queue", "send", "jobs", "first job").stdout)
        self.petrel("queue", "send", "jobs", "second job", "--delay", "30")
        self.petrel("queue", "send", "jobs.fifo", "in a group", "--group", "g")
        table = self.petrel("queue", "ls").stdout.splitlines()
        self.assertEqual(table[0].split(), ["NAME", "MESSAGES", "IN", "FLIGHT", "DELAYED", "URL"])
        row = [line.split() for line in table if line.startswith("jobs ")][0]
        self.assertEqual(row[1:4], ["1", "0", "1"])
        got = self.petrel("queue", "receive", "jobs", "--wait", "1").stdout
        self.assertIn("first job", got)
        self.assertEqual(self.petrel("queue", "receive", "jobs").stdout.strip(), "no messages")
        got = json.loads(self.petrel("queue", "receive", "jobs.fifo", "--json", "--keep").stdout)
        self.assertEqual(got["Messages"][0]["Body"], "in a group")
        self.assertEqual(got["Messages"][0]["Attributes"]["MessageGroupId"], "g")
        r = self.petrel("queue", "send", "missing", "x", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("The specified queue does not exist", r.stderr)
        self.assertIn("(QueueDoesNotExist)", r.stderr)
        r = self.petrel("queue", "create", "bad name", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("alphanumeric", r.stderr)
        # Event source mappings at a glance.
        self.assertIn("no event source mappings yet", self.petrel("sources", "ls").stdout)
        lam, sqs = self.daemon.client(), self.daemon.client("sqs")
        lam.create_function(FunctionName="cli-consumer", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": "def handler(e, c):\n    return None\n"})})
        arn = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName="jobs")["QueueUrl"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        m = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="cli-consumer", BatchSize=7)
        table = self.petrel("sources", "ls").stdout.splitlines()
        self.assertEqual(table[0].split()[:4], ["UUID", "SOURCE", "FUNCTION", "STATE"])
        row = [line.split() for line in table if line.startswith(m["UUID"])][0]
        self.assertEqual(row[1:3], ["jobs", "cli-consumer"])
        self.assertIn("7", row)
        shown = json.loads(self.petrel("sources", "show", m["UUID"]).stdout)
        self.assertEqual((shown["UUID"], shown["BatchSize"]), (m["UUID"], 7))
        r = self.petrel("sources", "show", "a0b1c2d3-0000-0000-0000-000000000000", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("ResourceNotFoundException", r.stderr)
        lam.delete_event_source_mapping(UUID=m["UUID"])
        lam.delete_function(FunctionName="cli-consumer")

    def test_errors_read_as_sentences(self):
        r = self.petrel("invoke", "does-not-exist", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("Function not found", r.stderr)
        self.assertIn("ResourceNotFoundException", r.stderr)
        self.assertNotIn("Traceback", r.stderr)
        r = self.petrel("deploy", "/nonexistent-folder", "--name", "x", "--runtime", "python3.11", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("is not a folder", r.stderr)
        r = subprocess.run([PETREL, "ls", "--endpoint", "http://127.0.0.1:1"], capture_output=True, text=True, timeout=60,
                           env=self.daemon.tool_env())
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot reach petreld", r.stderr)
        # A key the daemon does not know: the refusal reads as a sentence, too.
        r = subprocess.run([PETREL, "ls", "--endpoint", self.daemon.endpoint], capture_output=True, text=True, timeout=60,
                           env=self.daemon.tool_env(keys=("AKIAUNKNOWNUNKNOWN00", "x" * 40)))
        self.assertEqual(r.returncode, 1)
        self.assertIn("UnrecognizedClientException", r.stderr)
        self.assertIn("security token included in the request is invalid", r.stderr)
        self.assertNotIn("Traceback", r.stderr)


    def test_init_makes_functions_that_pass_their_tests_and_deploy(self):
        lam = self.daemon.client()
        for runtime, test in (("python3.11", ["python3", "-m", "unittest"]), ("nodejs20.x", ["node", "--test"]),
                              ("ruby3.1", ["ruby", "test_lambda_function.rb"]), ("go", ["go", "test", "./..."])):
            folder = os.path.join(self.daemon.root, "init-" + runtime.replace(".", "-"))
            out = subprocess.run([PETREL, "init", folder, "--runtime", runtime], capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("petrel deploy", out.stdout)
            # Go builds into a cache of the test's own (and never reaches for a module proxy: no dependencies).
            env = dict(os.environ, GOCACHE=os.path.join(self.daemon.root, "gocache"), GOFLAGS="-mod=mod", GOPROXY="off")
            r = subprocess.run(test, cwd=folder, capture_output=True, text=True, timeout=300, env=env)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            with open(os.path.join(folder, "README.md")) as f:
                lines = f.read().splitlines()
            # The README's build step, when the runtime has one (Go: a static `bootstrap`).
            for line in [line for line in lines if "# the deployable folder" in line]:
                r = subprocess.run(["sh", "-c", line.split("#")[0]], cwd=folder, capture_output=True, text=True, timeout=300, env=env)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            deploy = [line for line in lines if line.startswith("petrel deploy")][0]
            r = subprocess.run([PETREL] + deploy.split()[1:] + ["--endpoint", self.daemon.endpoint], cwd=folder,
                               capture_output=True, text=True, timeout=120, env=self.daemon.tool_env())
            self.assertEqual(r.returncode, 0, r.stderr)
            name = os.path.basename(folder)
            answer = json.loads(lam.invoke(FunctionName=name, Payload=json.dumps({"name": "petrel"}))["Payload"].read())
            self.assertEqual(answer, {"message": "hello petrel"}, runtime)
            lam.delete_function(FunctionName=name)
        # A runtime Petrel does not have yet, and a folder that exists, are refused.
        r = subprocess.run([PETREL, "init", os.path.join(self.daemon.root, "j"), "--runtime", "java21"], capture_output=True, text=True,
                           timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("java21", r.stderr)
        r = subprocess.run([PETREL, "init", self.daemon.root], capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("exists already", r.stderr)

if __name__ == "__main__":
    unittest.main()
