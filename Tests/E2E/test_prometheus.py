"""Issue 27 (watching Petrel): the Prometheus rules in Config/prometheus pass promtool's
check and its unit tests, and Debian's Prometheus, scraping a real petreld that has run
functions (failing, throttled, cold), queues, a mapping and asynchronous events,
evaluates every rule without error; every query of the Grafana dashboard in
Config/grafana returns data from that Prometheus."""

import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

from harness import REPO, ROLE, Daemon, free_port, make_zip, wait_for

RULES = os.path.join(REPO, "Config", "prometheus", "petrel-rules.yml")
RULE_TESTS = os.path.join(REPO, "Config", "prometheus", "petrel-rules.test.yml")
DASHBOARD = os.path.join(REPO, "Config", "grafana", "petrel-dashboard.json")


class Prometheus(unittest.TestCase):
    def test_promtool_checks_and_tests_the_rules(self):
        r = subprocess.run(["promtool", "check", "rules", RULES], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCESS: 19 rules found", r.stdout)
        r = subprocess.run(["promtool", "test", "rules", os.path.basename(RULE_TESTS)], capture_output=True, text=True, timeout=60,
                           cwd=os.path.dirname(RULE_TESTS))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(DASHBOARD) as f:
            json.load(f)

    def test_a_real_prometheus_evaluates_every_rule_and_dashboard_query(self):
        daemon = Daemon().start()
        root = tempfile.mkdtemp(prefix="petrel-prom-", dir="/var/tmp")
        prom = None
        log = None
        try:
            self.traffic(daemon)
            # The rules as shipped, evaluated every second instead of every 15 (the test's only change).
            with open(RULES) as f:
                rules = f.read().replace("interval: 15s", "interval: 1s")
            with open(os.path.join(root, "rules.yml"), "w") as f:
                f.write(rules)
            port = free_port()
            with open(os.path.join(root, "prometheus.yml"), "w") as f:
                f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\n"
                        "scrape_configs:\n  - job_name: petrel\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % daemon.port)
            log = open(os.path.join(root, "prometheus.log"), "wb")
            prom = subprocess.Popen(["prometheus", "--config.file=" + os.path.join(root, "prometheus.yml"),
                                     "--storage.tsdb.path=" + os.path.join(root, "data"), "--web.listen-address=127.0.0.1:%d" % port,
                                     "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT, cwd=root)
            api = "http://127.0.0.1:%d/api/v1/" % port

            def get(path, **params):
                try:
                    with urllib.request.urlopen(api + path + ("?" + urllib.parse.urlencode(params) if params else ""), timeout=10) as r:
                        return json.loads(r.read())
                except OSError:
                    return None
            def scraped():
                active = (get("targets") or {}).get("data", {}).get("activeTargets") or [{}]
                return active[0].get("health") == "up"
            wait_for(scraped, timeout=60, what="Prometheus to scrape petreld")
            # Every rule evaluated, without error.
            def rules_ok():
                groups = (get("rules") or {}).get("data", {}).get("groups", [])
                every = [r for g in groups for r in g["rules"]]
                return every if len(every) == 19 and all(r["health"] == "ok" for r in every) else None
            every = wait_for(rules_ok, timeout=60, what="every rule evaluated without error")
            for r in every:
                self.assertEqual(get("query", query=r["query"])["status"], "success", r["name"])
            # The dashboard's queries, with its variables set to "All" and a one-minute rate window.
            time.sleep(3)
            with open(DASHBOARD) as f:
                dashboard = json.load(f)
            targets = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
            self.assertGreaterEqual(len(targets), 16)
            for title, expr in targets:
                q = expr.replace("$__rate_interval", "1m").replace("$account", ".*").replace("$function", ".*")
                got = wait_for(lambda: (lambda a: a if a and a["status"] == "success" and a["data"]["result"] else None)(
                    get("query", query=q)), timeout=30, what="data for the panel " + title)
                self.assertTrue(got["data"]["result"], title)
        finally:
            if prom is not None:
                prom.terminate()
                prom.wait(timeout=30)
            if log is not None:
                log.close()
            shutil.rmtree(root, ignore_errors=True)
            daemon.stop_and_check()

    def traffic(self, daemon):
        """Invocations that succeed and fail (cold, then warm), a throttle, an asynchronous event,
        a queue with a mapping that has consumed."""
        lam, sqs = daemon.client(), daemon.client("sqs")
        for name, body in (("ok", "return 1"), ("fails", "raise RuntimeError('no')"), ("none-left", "return 1")):
            lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="a.handler",
                                Code={"ZipFile": make_zip({"a.py": "def handler(e, c):\n    %s\n" % body})})
        for _ in range(3):
            lam.invoke(FunctionName="ok")
            lam.invoke(FunctionName="fails")
        lam.put_function_concurrency(FunctionName="none-left", ReservedConcurrentExecutions=0)
        with self.assertRaises(lam.exceptions.TooManyRequestsException):
            lam.invoke(FunctionName="none-left")
        lam.invoke(FunctionName="ok", InvocationType="Event", Payload=b"{}")
        url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="ok", BatchSize=1)
        sqs.send_message(QueueUrl=url, MessageBody="hello")
        wait_for(lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
                 ["ApproximateNumberOfMessages"] == "0", what="the message consumed")


if __name__ == "__main__":
    unittest.main()
