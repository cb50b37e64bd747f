"""Issue 6: asynchronous invocation (Event, InvokeAsync), retries and their
count, event age, destinations (a function, the built-in dead-letter queue),
redrive, a kill -9 during a burst of 1,000 events, and schedules fired on a
test clock across a restart."""

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
import unittest

import boto3
import botocore.config
from botocore.exceptions import ClientError

from harness import PETRELD, ROLE, Daemon, assert_client_error, log_events, make_zip, metric, parse_credentials, signed

OK = '''
def handler(event, context):
    return {"requestId": context.aws_request_id, "event": event}
'''

FAIL = '''
import os
def handler(event, context):
    if os.environ.get("MODE") == "ok":
        return {"fixed": True}
    raise RuntimeError("boom " + context.aws_request_id)
'''

# Takes a little while, so that a backlog builds up during a burst.
SLOW = '''
import time
def handler(event, context):
    time.sleep(0.02)
    return {"requestId": context.aws_request_id, "event": event}
'''

# SLOW, printing its request id first: every event that ran must have that line in its log group.
SLOW_PRINTING = '''
import time
def handler(event, context):
    print("ran", context.aws_request_id)
    time.sleep(0.02)
    return {"requestId": context.aws_request_id, "event": event}
'''

DLQ = "arn:aws:sqs:::petrel-dlq"


def wait_for(what, predicate, timeout=60, interval=0.1):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


class AsyncCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.clock_offset = 0
        cls.daemon = Daemon(extra_env={"PETREL_EVENT_WORKERS": "16"})
        cls.clock_file = os.path.join(cls.daemon.root, "clock")
        cls.daemon.extra_env["PETREL_TEST_CLOCK_FILE"] = cls.clock_file
        cls.set_clock(0)
        cls.daemon.start()
        cls.lam = cls.daemon.client()
        cls.raw = cls.daemon.client(validate=False)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop_and_check()

    @classmethod
    def set_clock(cls, offset_ms):
        cls.clock_offset = offset_ms
        tmp = cls.clock_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(offset_ms))
        os.replace(tmp, cls.clock_file)

    def advance(self, seconds):
        self.set_clock(self.clock_offset + int(seconds * 1000))

    def create(self, name, app=OK, env=None):
        kw = {"Environment": {"Variables": env}} if env else {}
        self.lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                 Code={"ZipFile": make_zip({"app.py": app})}, MemorySize=128, Timeout=10, **kw)

    def fire(self, name, payload):
        r = self.lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(payload).encode())
        self.assertEqual(r["StatusCode"], 202)
        self.assertEqual(r["Payload"].read(), b"")
        return r["ResponseMetadata"]["RequestId"]

    def db(self):
        return sqlite3.connect(os.path.join(self.daemon.data, "petrel.sqlite"), timeout=10)

    def queued(self, request_id=None):
        with self.db() as c:
            if request_id:
                row = c.execute("SELECT attempts FROM events WHERE id = ?", (request_id,)).fetchone()
                return None if row is None else row[0]
            return c.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def letters(self, function):
        r = self.daemon.petreld("dlq", "list", function, "--json")
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def letter(self, function, request_id, timeout=60):
        def find():
            got = [l for l in self.letters(function) if l["requestId"] == request_id]
            return got[0] if got else None
        return wait_for("a record of %s in the dead-letter queue of %s" % (request_id, function), find, timeout)

    # MARK: - event invocations

    def test_event_runs_and_its_record_reaches_the_queue(self):
        self.create("ev-ok")
        self.lam.put_function_event_invoke_config(FunctionName="ev-ok", DestinationConfig={"OnSuccess": {"Destination": DLQ}})
        rid = self.fire("ev-ok", {"n": 1})
        rec = self.letter("ev-ok", rid)
        self.assertEqual(rec["condition"], "Success")
        record = rec["record"]
        self.assertEqual(record["version"], "1.0")
        self.assertEqual(record["requestContext"]["requestId"], rid)
        self.assertEqual(record["requestContext"]["condition"], "Success")
        self.assertEqual(record["requestContext"]["approximateInvokeCount"], 1)
        self.assertTrue(record["requestContext"]["functionArn"].endswith(":function:ev-ok:$LATEST"))
        self.assertEqual(record["requestPayload"], {"n": 1})
        self.assertEqual(record["responseContext"]["statusCode"], 200)
        self.assertNotIn("functionError", record["responseContext"])
        # The function saw the same request id and the payload.
        self.assertEqual(record["responsePayload"], {"requestId": rid, "event": {"n": 1}})

        # The AWS CLI's form, and the legacy InvokeAsync.
        r = self.daemon.aws("lambda", "invoke", "--function-name", "ev-ok", "--invocation-type", "Event",
                            "--payload", '{"via": "cli"}', "/dev/null")
        self.assertEqual(json.loads(r.stdout)["StatusCode"], 202)
        r = self.lam.invoke_async(FunctionName="ev-ok", InvokeArgs=b'{"via": "legacy"}')
        self.assertEqual(r["Status"], 202)
        legacy = r["ResponseMetadata"]["RequestId"]
        self.assertEqual(self.letter("ev-ok", legacy)["record"]["requestPayload"], {"via": "legacy"})
        # The audit trail has the calls, not their payloads.
        time.sleep(0.2)
        trail = self.daemon.petreld("audit", "--json", "--action", "InvokeAsync").stdout + \
            self.daemon.petreld("audit", "--json", "--action", "Invoke").stdout
        self.assertIn('"action":"InvokeAsync","parameters":{"FunctionName":"ev-ok","PayloadBytes":17}', trail)
        self.assertNotIn("legacy", trail.replace("InvokeAsync", ""))
        wait_for("the CLI's event", lambda: any(l["record"]["requestPayload"] == {"via": "cli"} for l in self.letters("ev-ok")))
        self.assertEqual(metric(self.daemon, "petrel_async_events_total", function="ev-ok", outcome="succeeded"), 3)
        wait_for("the queue depth gauge", lambda: metric(self.daemon, "petrel_async_queue_depth") is not None, timeout=5)

    def test_bad_events_are_refused_and_queue_nothing(self):
        self.create("ev-bad")
        before = self.queued()
        big = b'"' + b"x" * 262_144 + b'"'
        assert_client_error(self, "RequestTooLargeException", lambda: self.lam.invoke(FunctionName="ev-bad", InvocationType="Event", Payload=big), 413)
        assert_client_error(self, "InvalidRequestContentException", lambda: self.lam.invoke(FunctionName="ev-bad", InvocationType="Event", Payload=b"{not json"), 400)
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.invoke(FunctionName="ev-missing", InvocationType="Event", Payload=b"{}"), 404)
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.invoke_async(FunctionName="ev-missing", InvokeArgs=b"{}"), 404)
        assert_client_error(self, "InvalidRequestContentException", lambda: self.lam.invoke_async(FunctionName="ev-bad", InvokeArgs=b"{not json"), 400)
        self.assertEqual(self.queued(), before)
        # Just under the limit is accepted.
        ok = b'"' + b"x" * (262_144 - 2) + b'"'
        self.assertEqual(self.lam.invoke(FunctionName="ev-bad", InvocationType="Event", Payload=ok)["StatusCode"], 202)

    def test_event_invoke_config_api(self):
        self.create("ev-cfg")
        self.create("ev-cfg-target")
        arn = self.lam.get_function(FunctionName="ev-cfg-target")["Configuration"]["FunctionArn"]
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.get_function_event_invoke_config(FunctionName="ev-cfg"), 404)
        out = self.lam.put_function_event_invoke_config(FunctionName="ev-cfg", MaximumRetryAttempts=1,
                                                        DestinationConfig={"OnFailure": {"Destination": arn}})
        self.assertEqual(out["MaximumRetryAttempts"], 1)
        self.assertEqual(out["MaximumEventAgeInSeconds"], 21600)
        self.assertEqual(out["DestinationConfig"]["OnFailure"]["Destination"], arn)
        self.assertTrue(out["FunctionArn"].endswith(":function:ev-cfg:$LATEST"))
        self.assertLess(abs(out["LastModified"].timestamp() - time.time()), 60)
        # Update merges; Put replaces.
        out = self.lam.update_function_event_invoke_config(FunctionName="ev-cfg", MaximumEventAgeInSeconds=300,
                                                           DestinationConfig={"OnSuccess": {"Destination": DLQ}})
        self.assertEqual((out["MaximumRetryAttempts"], out["MaximumEventAgeInSeconds"]), (1, 300))
        self.assertEqual(out["DestinationConfig"]["OnFailure"]["Destination"], arn)
        self.assertEqual(out["DestinationConfig"]["OnSuccess"]["Destination"], DLQ)
        got = self.lam.get_function_event_invoke_config(FunctionName="ev-cfg")
        self.assertEqual(got["MaximumEventAgeInSeconds"], 300)
        listed = self.lam.list_function_event_invoke_configs(FunctionName="ev-cfg")["FunctionEventInvokeConfigs"]
        self.assertEqual([c["MaximumEventAgeInSeconds"] for c in listed], [300])
        out = self.lam.put_function_event_invoke_config(FunctionName="ev-cfg", MaximumEventAgeInSeconds=60)
        self.assertEqual((out["MaximumRetryAttempts"], out["MaximumEventAgeInSeconds"]), (2, 60))
        self.assertNotIn("Destination", out["DestinationConfig"].get("OnFailure", {}))

        # Bad input: a clear error, and the stored configuration unchanged.
        bad = [
            ({"MaximumRetryAttempts": 3}, "maximumRetryAttempts"),
            ({"MaximumRetryAttempts": -1}, "maximumRetryAttempts"),
            ({"MaximumEventAgeInSeconds": 59}, "maximumEventAgeInSeconds"),
            ({"MaximumEventAgeInSeconds": 21601}, "maximumEventAgeInSeconds"),
            ({"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:lambda:us-east-1:111122223333:function:x"}}}, "another region or account"),
            ({"DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:s3:::bucket"}}}, "functions, queues, topics"),
            ({"DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:sqs:::other-queue"}}}, "a queue is arn:aws:sqs:REGION:ACCOUNT:NAME"),
            ({"DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:sns:us-east-1:111122223333:topic"}}}, "another region or account"),
            ({"DestinationConfig": {"OnSuccess": {"Destination": "not-an-arn"}}}, "not an ARN"),
        ]
        for kw, words in bad:
            for op in (self.raw.put_function_event_invoke_config, self.raw.update_function_event_invoke_config):
                with self.assertRaises(ClientError, msg=str(kw)) as cm:
                    op(FunctionName="ev-cfg", **kw)
                err = cm.exception.response
                self.assertEqual(err["ResponseMetadata"]["HTTPStatusCode"], 400, kw)
                self.assertIn(err["Error"]["Code"], ("InvalidParameterValueException", "ValidationException"))
                self.assertIn(words, err["Error"]["Message"])
        got = self.lam.get_function_event_invoke_config(FunctionName="ev-cfg")
        self.assertEqual((got["MaximumRetryAttempts"], got["MaximumEventAgeInSeconds"]), (2, 60))
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.put_function_event_invoke_config(FunctionName="ev-none", MaximumRetryAttempts=0), 404)
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.put_function_event_invoke_config(FunctionName="ev-cfg", Qualifier="3", MaximumRetryAttempts=0), 404)
        assert_client_error(self, "ValidationException", lambda: self.raw.list_function_event_invoke_configs(FunctionName="ev-cfg", MaxItems=51), 400)
        self.lam.delete_function_event_invoke_config(FunctionName="ev-cfg")
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.delete_function_event_invoke_config(FunctionName="ev-cfg"), 404)
        self.assertEqual(self.lam.list_function_event_invoke_configs(FunctionName="ev-cfg")["FunctionEventInvokeConfigs"], [])
        # Deleting a function takes its configuration along.
        self.lam.put_function_event_invoke_config(FunctionName="ev-cfg", MaximumRetryAttempts=0)
        self.lam.delete_function(FunctionName="ev-cfg")
        self.create("ev-cfg")
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.get_function_event_invoke_config(FunctionName="ev-cfg"), 404)

    # MARK: - retries, age, destinations

    def test_retries_with_backoff_then_the_failure_destination(self):
        self.create("ev-fail", app=FAIL)
        self.lam.put_function_event_invoke_config(FunctionName="ev-fail", MaximumRetryAttempts=2,
                                                  DestinationConfig={"OnFailure": {"Destination": DLQ}})
        rid = self.fire("ev-fail", {"try": "me"})
        wait_for("the first attempt", lambda: self.queued(rid) == 1)
        # The first retry waits a minute (Lambda's backoff): nothing happens before.
        time.sleep(1.0)
        self.assertEqual(self.queued(rid), 1)
        self.advance(61)
        wait_for("the second attempt", lambda: self.queued(rid) == 2)
        self.advance(61)
        time.sleep(1.0)
        self.assertEqual(self.queued(rid), 2, "the second retry waits two minutes")
        self.advance(60)
        rec = self.letter("ev-fail", rid)
        self.assertIsNone(self.queued(rid))
        self.assertEqual(rec["condition"], "RetriesExhausted")
        record = rec["record"]
        self.assertEqual(record["requestContext"]["approximateInvokeCount"], 3)
        self.assertEqual(record["responseContext"]["functionError"], "Unhandled")
        self.assertEqual(record["responsePayload"]["errorType"], "RuntimeError")
        self.assertIn("boom " + rid, record["responsePayload"]["errorMessage"])
        self.assertEqual(record["requestPayload"], {"try": "me"})

        # MaximumRetryAttempts 0: one attempt, then the destination at once.
        self.lam.put_function_event_invoke_config(FunctionName="ev-fail", MaximumRetryAttempts=0,
                                                  DestinationConfig={"OnFailure": {"Destination": DLQ}})
        rid = self.fire("ev-fail", {})
        self.assertEqual(self.letter("ev-fail", rid)["record"]["requestContext"]["approximateInvokeCount"], 1)

    def test_events_older_than_the_maximum_age_are_given_up(self):
        self.create("ev-old", app=FAIL)
        self.lam.put_function_event_invoke_config(FunctionName="ev-old", MaximumRetryAttempts=2, MaximumEventAgeInSeconds=60,
                                                  DestinationConfig={"OnFailure": {"Destination": DLQ}})
        rid = self.fire("ev-old", {})
        wait_for("the first attempt", lambda: self.queued(rid) == 1)
        self.advance(120)
        rec = self.letter("ev-old", rid)
        self.assertEqual(rec["condition"], "EventAgeExceeded")
        self.assertEqual(rec["record"]["requestContext"]["approximateInvokeCount"], 1)

    def test_function_destinations_get_the_invocation_record(self):
        self.create("ev-src")
        self.create("ev-src-fail", app=FAIL)
        self.create("ev-sink")
        sink = self.lam.get_function(FunctionName="ev-sink")["Configuration"]["FunctionArn"]
        self.lam.put_function_event_invoke_config(FunctionName="ev-src", DestinationConfig={"OnSuccess": {"Destination": sink}})
        self.lam.put_function_event_invoke_config(FunctionName="ev-src-fail", MaximumRetryAttempts=0,
                                                  DestinationConfig={"OnFailure": {"Destination": sink}})
        self.lam.put_function_event_invoke_config(FunctionName="ev-sink", DestinationConfig={"OnSuccess": {"Destination": DLQ}})
        ok = self.fire("ev-src", {"x": 1})
        bad = self.fire("ev-src-fail", {"y": 2})

        def sink_saw(rid):
            got = [l for l in self.letters("ev-sink")
                   if l["record"]["responsePayload"]["event"]["requestContext"]["requestId"] == rid]
            return got[0] if got else None
        seen = wait_for("the sink's record of the success", lambda: sink_saw(ok))
        event = seen["record"]["responsePayload"]["event"]
        self.assertEqual(event["requestContext"]["condition"], "Success")
        self.assertEqual(event["requestPayload"], {"x": 1})
        self.assertEqual(event["responsePayload"]["requestId"], ok)
        seen = wait_for("the sink's record of the failure", lambda: sink_saw(bad))
        event = seen["record"]["responsePayload"]["event"]
        self.assertEqual(event["requestContext"]["condition"], "RetriesExhausted")
        self.assertEqual(event["requestPayload"], {"y": 2})
        self.assertEqual(event["responseContext"]["functionError"], "Unhandled")
        # The sink ran under a request id of its own.
        self.assertNotEqual(seen["requestId"], bad)

    def test_dead_letter_queue_show_and_redrive(self):
        self.create("ev-flaky", app=FAIL)
        self.lam.put_function_event_invoke_config(FunctionName="ev-flaky", MaximumRetryAttempts=0,
                                                  DestinationConfig={"OnFailure": {"Destination": DLQ},
                                                                     "OnSuccess": {"Destination": DLQ}})
        rid = self.fire("ev-flaky", {"order": 7})
        rec = self.letter("ev-flaky", rid)
        table = self.daemon.petreld("dlq", "list", "ev-flaky").stdout
        self.assertIn(rid, table)
        self.assertIn("RetriesExhausted", table)
        shown = json.loads(self.daemon.petreld("dlq", "show", "ev-flaky", str(rec["id"])).stdout)
        self.assertEqual(shown["requestPayload"], {"order": 7})
        missing = self.daemon.petreld("dlq", "show", "ev-flaky", "999999", check=False)
        self.assertNotEqual(missing.returncode, 0)
        self.assertIn("no record 999999", missing.stderr)
        bad = self.daemon.petreld("dlq", "redrive", "ev-flaky", "999999", check=False)
        self.assertNotEqual(bad.returncode, 0)
        self.assertEqual(len(self.letters("ev-flaky")), 1, "a refused redrive changes nothing")

        # Fix the function, redrive: the same event runs again under a new request id and succeeds.
        self.lam.update_function_configuration(FunctionName="ev-flaky", Environment={"Variables": {"MODE": "ok"}})
        out = self.daemon.petreld("dlq", "redrive", "ev-flaky")
        new_ids = out.stdout.split()
        self.assertEqual(len(new_ids), 1)
        self.assertNotEqual(new_ids[0], rid)
        done = self.letter("ev-flaky", new_ids[0])
        self.assertEqual(done["condition"], "Success")
        self.assertEqual(done["record"]["requestPayload"], {"order": 7})
        self.assertEqual(done["record"]["responsePayload"], {"fixed": True})
        self.assertEqual([l["requestId"] for l in self.letters("ev-flaky")], [new_ids[0]])

    def test_events_share_the_limits_and_wait_instead_of_being_throttled(self):
        self.create("ev-narrow", app=SLOW)
        self.lam.put_function_concurrency(FunctionName="ev-narrow", ReservedConcurrentExecutions=1)
        self.lam.put_function_event_invoke_config(FunctionName="ev-narrow", MaximumRetryAttempts=0,
                                                  DestinationConfig={"OnSuccess": {"Destination": DLQ},
                                                                     "OnFailure": {"Destination": DLQ}})
        ids = [self.fire("ev-narrow", {"k": k}) for k in range(6)]
        for rid in ids:
            rec = self.letter("ev-narrow", rid)
            self.assertEqual(rec["condition"], "Success", "waiting for capacity is neither a failure nor an attempt")
            self.assertEqual(rec["record"]["requestContext"]["approximateInvokeCount"], 1)

        # A function that may not run at all (reserved 0): more events than workers wait
        # without holding the workers, other functions' events still run, and the waiting
        # ones are given up once too old, never having run.
        self.create("ev-blocked")
        self.create("ev-free")
        self.lam.put_function_concurrency(FunctionName="ev-blocked", ReservedConcurrentExecutions=0)
        self.lam.put_function_event_invoke_config(FunctionName="ev-blocked", MaximumEventAgeInSeconds=3600,
                                                  DestinationConfig={"OnFailure": {"Destination": DLQ}})
        self.lam.put_function_event_invoke_config(FunctionName="ev-free", DestinationConfig={"OnSuccess": {"Destination": DLQ}})
        blocked = [self.fire("ev-blocked", {"b": k}) for k in range(20)]
        free = self.fire("ev-free", {})
        self.letter("ev-free", free, timeout=30)
        self.assertEqual(self.letters("ev-blocked"), [])
        self.assertEqual([self.queued(rid) for rid in blocked], [0] * 20)
        self.advance(3601)
        for rid in blocked:
            rec = self.letter("ev-blocked", rid)
            self.assertEqual(rec["condition"], "EventAgeExceeded")
            self.assertEqual(rec["record"]["requestContext"]["approximateInvokeCount"], 0)
            self.assertNotIn("responseContext", rec["record"])

    def test_deleting_a_function_drops_its_queued_events(self):
        self.create("ev-gone", app=FAIL)
        self.lam.put_function_event_invoke_config(FunctionName="ev-gone", MaximumRetryAttempts=2)
        rid = self.fire("ev-gone", {})
        wait_for("the first attempt", lambda: self.queued(rid) == 1)
        self.lam.delete_function(FunctionName="ev-gone")
        self.assertIsNone(self.queued(rid))


class CrashCase(unittest.TestCase):
    """kill -9 in the middle of 1,000 events: every accepted one runs after the restart."""

    def test_kill_during_a_burst_of_1000_events(self):
        daemon = Daemon(extra_env={"PETREL_EVENT_WORKERS": "16"}).start()
        try:
            self.burst(daemon)
        finally:
            if daemon.proc is not None:
                daemon.stop_and_check()

    def burst(self, daemon):
        lam = daemon.client()
        lam.create_function(FunctionName="burst", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": SLOW_PRINTING})}, MemorySize=128, Timeout=10)
        lam.put_function_event_invoke_config(FunctionName="burst", DestinationConfig={"OnSuccess": {"Destination": DLQ}})
        keys = daemon.admin_keys()
        accepted = {}
        lock = threading.Lock()
        killed = threading.Event()

        def send(indices, endpoint_port):
            client = boto3.client("lambda", endpoint_url="http://127.0.0.1:%d" % endpoint_port, region_name="us-east-1",
                                  aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
                                  config=botocore.config.Config(retries={"max_attempts": 0}, connect_timeout=2, read_timeout=30))
            failed = []
            for i in indices:
                try:
                    r = client.invoke(FunctionName="burst", InvocationType="Event", Payload=json.dumps({"i": i}).encode())
                    if r["StatusCode"] == 202:
                        with lock:
                            accepted[i] = r["ResponseMetadata"]["RequestId"]
                            n = len(accepted)
                        if n == 300 and not killed.is_set():
                            killed.set()
                            daemon.proc.send_signal(signal.SIGKILL)
                        continue
                except Exception:
                    pass
                failed.append(i)
            return failed

        def run_all(indices):
            chunks = [indices[k::8] for k in range(8)]
            results = [None] * 8
            threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, send(chunks[k], daemon.port))) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return sorted(i for r in results for i in r)

        left = run_all(list(range(1000)))
        self.assertTrue(killed.is_set(), "the daemon was killed mid-burst")
        daemon.proc.wait()
        daemon.proc = None
        daemon.log.close()
        db = os.path.join(daemon.data, "petrel.sqlite")
        with sqlite3.connect(db, timeout=10) as c:
            pending = c.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        self.assertGreater(pending, 0, "the kill left accepted events waiting (else it proves nothing)")
        self.assertGreater(len(left), 0, "requests after the kill failed")
        # Restart on the same data; what was refused is sent again.
        resent = set(left)
        daemon.start()
        left = run_all(left)
        self.assertEqual(left, [])
        self.assertEqual(len(accepted), 1000)

        def queue_empty():
            with sqlite3.connect(db, timeout=10) as c:
                return c.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
        wait_for("the queue to drain", queue_empty, timeout=300, interval=0.5)
        out = daemon.petreld("dlq", "list", "burst", "--json").stdout
        records = [json.loads(line) for line in out.splitlines() if line.strip()]
        by_id = {}
        for r in records:
            by_id.setdefault(r["requestId"], []).append(r)
        for i, rid in accepted.items():
            self.assertIn(rid, by_id, "accepted event %d (%s) never ran" % (i, rid))
            self.assertEqual(len(by_id[rid]), 1, "one record per event, even when the function ran twice")
            self.assertEqual(by_id[rid][0]["record"]["requestPayload"], {"i": i})
            self.assertEqual(by_id[rid][0]["record"]["responsePayload"]["requestId"], rid)
        # A request cut off by the kill after its event was stored ran too (its 202 was lost,
        # so it was sent again): the only extra records are of events sent twice.
        extra = [r for r in records if r["requestId"] not in accepted.values()]
        self.assertLessEqual(len(extra), 16)
        for r in extra:
            self.assertIn(r["record"]["requestPayload"]["i"], resent)
        # An event's outcome is never stored before what its invocation printed: every event
        # accounted for has its line in the log group, those that ran across the kill included.
        def all_logged():
            ran = {e["message"].split()[1] for e in log_events(daemon, "/aws/lambda/burst", "ran ")}
            return [rid for rid in accepted.values() if rid not in ran] == []
        wait_for("every event's printed line in its log group", all_logged, timeout=30, interval=0.5)


    def test_events_running_at_shutdown_stay_queued(self):
        """SIGTERM with a drain shorter than the event: the daemon stops cleanly, the
        event is neither lost nor charged an attempt, and it runs after the restart."""
        daemon = Daemon(extra_env={"PETREL_DRAIN_TIMEOUT_SECONDS": "1"}).start()
        try:
            lam = daemon.client()
            app = "import time\ndef handler(event, context):\n    time.sleep(event['sleep'])\n    return {'slept': event['sleep']}\n"
            lam.create_function(FunctionName="long", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": app})}, MemorySize=128, Timeout=30)
            lam.put_function_event_invoke_config(FunctionName="long", MaximumRetryAttempts=0,
                                                 DestinationConfig={"OnSuccess": {"Destination": DLQ},
                                                                    "OnFailure": {"Destination": DLQ}})
            rid = lam.invoke(FunctionName="long", InvocationType="Event", Payload=b'{"sleep": 4}')["ResponseMetadata"]["RequestId"]
            db = os.path.join(daemon.data, "petrel.sqlite")
            time.sleep(1.5)  # it is running now
            self.assertEqual(daemon.stop(), 0)
            with sqlite3.connect(db, timeout=10) as c:
                self.assertEqual(c.execute("SELECT attempts FROM events WHERE id = ?", (rid,)).fetchall(), [(0,)])
            daemon.start()

            def done():
                out = daemon.petreld("dlq", "list", "long", "--json").stdout
                return [json.loads(l) for l in out.splitlines() if l.strip()]
            records = wait_for("the event after the restart", done, timeout=60)
            self.assertEqual([(r["requestId"], r["condition"]) for r in records], [(rid, "Success")])
            self.assertEqual(records[0]["record"]["requestContext"]["approximateInvokeCount"], 1)
        finally:
            if daemon.proc is not None:
                daemon.stop_and_check()


class ScheduleCase(unittest.TestCase):
    """Schedules on a test clock: each slot fires once, across a restart too."""

    def test_schedules_fire_each_slot_once(self):
        daemon = Daemon()
        clock = os.path.join(daemon.root, "clock")
        daemon.extra_env["PETREL_TEST_CLOCK_FILE"] = clock
        offset = [0]

        def set_clock(ms):
            offset[0] = ms
            with open(clock + ".tmp", "w") as f:
                f.write(str(ms))
            os.replace(clock + ".tmp", clock)
        # Start just after a minute boundary, so slots are far from the real clock's edges.
        now = time.time()
        set_clock(int((60 - now % 60 + 1) * 1000))
        daemon.start()
        try:
            self.schedules(daemon, set_clock, offset)
        finally:
            daemon.stop_and_check()

    def schedules(self, daemon, set_clock, offset):
        lam = daemon.client()
        lam.create_function(FunctionName="tick", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": OK})}, MemorySize=128, Timeout=10)
        lam.put_function_event_invoke_config(FunctionName="tick", DestinationConfig={"OnSuccess": {"Destination": DLQ}})
        env = daemon.tool_env()
        petrel = os.path.join(os.path.dirname(PETRELD), "petrel")

        def cli(*args, check=True):
            r = subprocess.run([petrel] + list(args) + ["--endpoint", daemon.endpoint], capture_output=True, text=True, env=env, timeout=60)
            if check:
                self.assertEqual(r.returncode, 0, r.stderr)
            return r

        # Bad expressions are refused with the reason.
        for expr, words in [("rate(1 minutes)", "singular"), ("rate(5 minute)", "plural"), ("rate(0 minutes)", "positive"),
                            ("cron(0 12 * * * *)", "exactly one of day-of-month"), ("cron(61 * * * ? *)", "minutes: 61"),
                            ("cron(0 12 * * ?)", "six fields"), ("every 5 minutes", "rate(…) or cron(…)"),
                            ("cron(0 12 ? * FUNDAY *)", "day-of-week")]:
            r = cli("schedule", "create", "bad", "--function", "tick", "--expression", expr, check=False)
            self.assertNotEqual(r.returncode, 0, expr)
            self.assertIn("InvalidParameterValueException", r.stderr, expr)
            self.assertIn(words, r.stderr, expr)
        r = cli("schedule", "create", "bad", "--function", "nope", "--expression", "rate(1 minute)", check=False)
        self.assertIn("ResourceNotFoundException", r.stderr)
        for args, words in [(["bad name!"], "Name is required"), (["x" * 65], "Name is required"),
                            (["ok", "--input", "{not json"], "Input must be valid JSON"),
                            (["ok", "--input", json.dumps({"k": "v" * 8200})], "at most 8192 bytes"),
                            (["ok", "--description", "d" * 513], "at most 512 characters")]:
            r = cli("schedule", "create", *args, "--function", "tick", "--expression", "rate(1 minute)", check=False)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertIn("InvalidParameterValueException", r.stderr, args)
            self.assertIn(words, r.stderr, args)
        self.assertIn("no schedules yet", cli("schedule", "list").stdout)

        cli("schedule", "create", "every-minute", "--function", "tick", "--expression", "rate(1 minute)")
        cli("schedule", "create", "at-five", "--function", "tick", "--expression", "cron(0/5 * * * ? *)", "--input", '{"fixed": 1}')
        r = cli("schedule", "create", "every-minute", "--function", "tick", "--expression", "rate(2 minutes)", check=False)
        self.assertIn("ResourceConflictException", r.stderr)
        listing = cli("schedule", "list").stdout
        self.assertIn("every-minute", listing)
        self.assertIn("cron(0/5 * * * ? *)", listing)
        keys = daemon.admin_keys()
        status, _, body = signed("GET", daemon.endpoint + "/petrel/schedules/at-five", keys)
        self.assertEqual(status, 200)
        one = json.loads(body)
        self.assertEqual((one["Name"], one["Input"], one["State"]), ("at-five", '{"fixed": 1}', "ENABLED"))
        self.assertTrue(one["FunctionArn"].endswith(":function:tick"))
        self.assertEqual(signed("GET", daemon.endpoint + "/petrel/schedules/nope", keys)[0], 404)
        self.assertEqual(signed("GET", daemon.endpoint + "/petrel/schedules", (keys[0], "x" * 40))[0], 403)

        # Another account sees none of them, cannot delete them, and cannot target this account's function.
        other = daemon.petreld("accounts", "create", "--name", "other").stdout.strip()
        other_keys = parse_credentials(daemon.petreld("keys", "create", "--account", other).stdout)
        other_env = daemon.tool_env(keys=other_keys)

        def other_cli(*args):
            return subprocess.run([petrel] + list(args) + ["--endpoint", daemon.endpoint], capture_output=True, text=True,
                                  env=other_env, timeout=60)
        self.assertIn("no schedules yet", other_cli("schedule", "list").stdout)
        self.assertIn("ResourceNotFoundException", other_cli("schedule", "delete", "at-five").stderr)
        r = other_cli("schedule", "create", "steal", "--function", "arn:aws:lambda:us-east-1:000000000000:function:tick",
                      "--expression", "rate(1 minute)")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("AccessDeniedException", r.stderr)
        self.assertIn("at-five", cli("schedule", "list").stdout)

        def fired(name=None):
            out = daemon.petreld("dlq", "list", "tick", "--json").stdout
            events = [json.loads(l)["record"]["requestPayload"] for l in out.splitlines() if l.strip()]
            return events

        def rate_slots():
            return sorted(e["time"] for e in fired() if e.get("detail-type") == "Scheduled Event")

        self.assertEqual(rate_slots(), [])
        # Step the clock a minute at a time: one rate slot each.
        for k in range(1, 4):
            set_clock(offset[0] + 60_000)
            wait_for("rate slot %d" % k, lambda: len(rate_slots()) >= k, timeout=30)
            time.sleep(0.5)
            self.assertEqual(len(rate_slots()), k, "one slot, fired once")
        slots = rate_slots()
        self.assertEqual(len(set(slots)), 3)
        e = [e for e in fired() if e.get("detail-type") == "Scheduled Event"][0]
        self.assertEqual(e["source"], "aws.events")
        self.assertEqual(e["resources"], ["arn:aws:events:us-east-1:000000000000:rule/every-minute"])
        self.assertEqual(e["detail"], {})

        # A restart fires no slot twice; a slot that passes while up after it fires.
        self.assertEqual(daemon.stop(), 0)
        daemon.start()
        time.sleep(1.5)
        self.assertEqual(len(rate_slots()), 3, "no slot fired twice after a restart")
        set_clock(offset[0] + 60_000)
        wait_for("the slot after the restart", lambda: len(rate_slots()) == 4, timeout=30)

        # Jumping several slots while up fires each of them once.
        set_clock(offset[0] + 3 * 60_000)
        wait_for("three more slots", lambda: len(rate_slots()) == 7, timeout=30)
        time.sleep(0.5)
        self.assertEqual(len(rate_slots()), 7)
        self.assertEqual(len(set(rate_slots())), 7)
        # The cron schedule's fixed input came at its five-minute marks.
        fixed = [e for e in fired() if e == {"fixed": 1}]
        self.assertGreaterEqual(len(fixed), 1)

        cli("schedule", "delete", "every-minute")
        cli("schedule", "delete", "at-five")
        r = cli("schedule", "delete", "at-five", check=False)
        self.assertIn("ResourceNotFoundException", r.stderr)
        set_clock(offset[0] + 60_000)
        time.sleep(1.5)
        self.assertEqual(len(rate_slots()), 7, "a deleted schedule fires no more")


if __name__ == "__main__":
    unittest.main()
