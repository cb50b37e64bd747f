"""Issue 22 (RabbitMQ): event source mappings on a real RabbitMQ broker (Debian's
rabbitmq-server, started by the test on loopback), in Lambda's Amazon MQ shape:
the aws:rmq event field by field, acknowledgement after success, failures back to
the queue so that its delivery limit and dead-letter exchange apply, filters,
bad configuration, and a broker that goes away and comes back."""

import base64
import json
import signal
import time
import unittest

import pika
from botocore.exceptions import ClientError

from harness import ROLE, Daemon, RabbitBroker, make_zip, metric, printed, wait_for

ECHO = '''
import json
def handler(event, context):
    print("EVENT " + json.dumps(event))
    for msgs in event["rmqMessagesByQueue"].values():
        for m in msgs:
            print("BODY " + __import__("base64").b64decode(m["data"]).decode())
'''

FAIL = '''
import base64
def handler(event, context):
    for msgs in event["rmqMessagesByQueue"].values():
        for m in msgs:
            print("BODY " + base64.b64decode(m["data"]).decode())
    raise RuntimeError("cannot take it")
'''

BROKER = "arn:aws:mq:us-east-1:000000000000:broker:main:b-1234a5b6-78cd-901e-2fgh-3i45j6k178l9"


class RabbitMQSource(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.broker = RabbitBroker(tls=True).start()
        try:
            cls.broker.ctl("add_user", "petrel", "s3cret-rmq")
            cls.broker.ctl("set_permissions", "-p", "/", "petrel", ".*", ".*", ".*")
            # main: plain AMQP; secure: AMQP over TLS (the certificate names localhost); wrong-name:
            # the same TLS port reached by an address the certificate does not name.
            brokers = "main=127.0.0.1:%d,secure=amqps://localhost:%d,wrong-name=amqps://127.0.0.1:%d" % (
                cls.broker.port, cls.broker.tls_port, cls.broker.tls_port)
            cls.daemon = Daemon(extra_env={"PETREL_RABBITMQ_BROKERS": brokers,
                                           "PETREL_RABBITMQ_CA_FILE": cls.broker.ca_file}).start()
        except BaseException:
            cls.broker.stop()
            raise
        cls.lam = cls.daemon.client("lambda")
        cls.raw = cls.daemon.client("lambda", validate=False)
        cls.sm = cls.daemon.client("secretsmanager")
        cls.secret = cls.sm.create_secret(Name="rabbit", SecretString=json.dumps({"username": "petrel", "password": "s3cret-rmq"}))["ARN"]
        cls.wrong = cls.sm.create_secret(Name="rabbit-wrong", SecretString=json.dumps({"username": "petrel", "password": "nope"}))["ARN"]

    @classmethod
    def tearDownClass(cls):
        try:
            cls.daemon.stop_and_check()
        finally:
            cls.broker.stop()

    def run(self, result=None):
        with self.daemon.log_on_failure():
            return super().run(result)

    def channel(self):
        c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.broker.port))
        return c, c.channel()

    def function(self, name, code):
        self.lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="index.handler",
                                 Code={"ZipFile": make_zip({"index.py": code})})

    def bodies(self, function, marker="BODY"):
        return printed(self.daemon, function, marker)

    def mapping(self, function, queue, secret=None, **kw):
        m = self.lam.create_event_source_mapping(
            EventSourceArn=BROKER, FunctionName=function, Queues=[queue],
            SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": secret or self.secret}], **kw)
        wait_for(lambda: self.lam.get_event_source_mapping(UUID=m["UUID"])["State"] == "Enabled", what="Enabled")
        return m

    def delete(self, m):
        self.lam.delete_event_source_mapping(UUID=m["UUID"])
        wait_for(lambda: all(x["UUID"] != m["UUID"] for x in self.lam.list_event_source_mappings()["EventSourceMappings"]))

    def test_event_shape_and_acknowledgement(self):
        c, ch = self.channel()
        ch.queue_declare("orders", durable=True)
        self.function("rmq-echo", ECHO)
        m = self.mapping("rmq-echo", "orders", BatchSize=10)
        self.assertEqual((m["Queues"], m["BatchSize"], m["EventSourceArn"]), (["orders"], 10, BROKER))
        self.assertEqual(m["SourceAccessConfigurations"], [{"Type": "BASIC_AUTH", "URI": self.secret}])
        props = pika.BasicProperties(content_type="application/json", delivery_mode=2, priority=3, correlation_id="corr-1",
                                     message_id="msg-1", headers={"h": "v", "n": 10}, timestamp=1_700_000_000, app_id="test")
        ch.basic_publish("", "orders", json.dumps({"order": 1}).encode(), properties=props)
        ch.basic_publish("", "orders", b"second")
        c.close()
        events = wait_for(lambda: [json.loads(b) for b in self.bodies("rmq-echo", "EVENT")] or None, what="the event")
        wait_for(lambda: sorted(self.bodies("rmq-echo")) == sorted(['{"order": 1}', "second"]), what="both messages")
        records = [r for e in [json.loads(b) for b in self.bodies("rmq-echo", "EVENT")] for r in e["rmqMessagesByQueue"]["orders::/"]]
        e = events[0]
        self.assertEqual((e["eventSource"], e["eventSourceArn"]), ("aws:rmq", BROKER))
        self.assertEqual(list(e["rmqMessagesByQueue"]), ["orders::/"])
        first = [r for r in records if base64.b64decode(r["data"]) == b'{"order": 1}'][0]
        p = first["basicProperties"]
        self.assertEqual((p["contentType"], p["deliveryMode"], p["priority"], p["correlationId"], p["messageId"], p["appId"]),
                         ("application/json", 2, 3, "corr-1", "msg-1", "test"))
        self.assertEqual(p["headers"], {"h": {"bytes": [118]}, "n": 10})
        self.assertEqual(p["bodySize"], len(b'{"order": 1}'))
        self.assertIn("2023", p["timestamp"])
        self.assertIs(first["redelivered"], False)
        # Acknowledged once the invocation succeeded: nothing ready, nothing unacknowledged.
        wait_for(lambda: self.broker.queue_counts("orders") == (0, 0), what="the acknowledgements")
        self.assertEqual(self.lam.get_event_source_mapping(UUID=m["UUID"])["LastProcessingResult"], "OK")
        self.delete(m)
        self.lam.delete_function(FunctionName="rmq-echo")

    def test_failures_go_back_to_the_queue_until_its_delivery_limit_then_dead_letter(self):
        c, ch = self.channel()
        ch.queue_declare("dead", durable=True)
        ch.queue_declare("work", durable=True, arguments={
            "x-queue-type": "quorum", "x-delivery-limit": 2, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
        self.function("rmq-fails", FAIL)
        m = self.mapping("rmq-fails", "work", BatchSize=1)
        ch.basic_publish("", "work", b"poison")
        c.close()
        # Tried, requeued, tried again … then the queue's own dead-letter exchange takes it.
        wait_for(lambda: self.broker.queue_counts("dead") == (1, 0), timeout=60, what="the dead-lettered message")
        tries = self.bodies("rmq-fails").count("poison")
        self.assertGreaterEqual(tries, 3, "delivered, then redelivered up to the delivery limit")
        self.assertEqual(self.broker.queue_counts("work"), (0, 0))
        self.assertIn("PROBLEM", self.lam.get_event_source_mapping(UUID=m["UUID"])["LastProcessingResult"])
        self.assertGreaterEqual(metric(self.daemon, "petrel_mapping_batches_total", mapping=m["UUID"], outcome="failed"), 3)
        self.delete(m)
        self.lam.delete_function(FunctionName="rmq-fails")

    def test_amqp_over_tls(self):
        c, ch = self.channel()
        ch.queue_declare("secure-orders", durable=True)
        ch.basic_publish("", "secure-orders", b"over tls")
        c.close()
        self.function("rmq-tls", ECHO)
        m = self.lam.create_event_source_mapping(
            EventSourceArn=BROKER.replace(":main:", ":secure:"), FunctionName="rmq-tls", Queues=["secure-orders"],
            SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": self.secret}])
        wait_for(lambda: self.bodies("rmq-tls") == ["over tls"], what="the message, over TLS")
        wait_for(lambda: self.broker.queue_counts("secure-orders") == (0, 0), what="the acknowledgement")
        # The broker is the TLS listener's: its connections say so.
        conns = self.broker.ctl("list_connections", "-q", "ssl", "port")
        self.assertIn("true\t%d" % self.broker.tls_port, conns)
        self.delete(m)
        # A certificate that does not name the address connected to is refused, and reported.
        w = self.lam.create_event_source_mapping(
            EventSourceArn=BROKER.replace(":main:", ":wrong-name:"), FunctionName="rmq-tls", Queues=["secure-orders"],
            SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": self.secret}])
        got = wait_for(lambda: (lambda r: r if "PROBLEM" in r else None)(
            self.lam.get_event_source_mapping(UUID=w["UUID"])["LastProcessingResult"]), what="the refused certificate")
        self.assertIn("Connection error", got)
        self.delete(w)
        self.lam.delete_function(FunctionName="rmq-tls")

    def test_filters_and_bad_configuration(self):
        c, ch = self.channel()
        ch.queue_declare("filtered", durable=True)
        self.function("rmq-filter", ECHO)
        m = self.mapping("rmq-filter", "filtered", FilterCriteria={"Filters": [{"Pattern": json.dumps({"data": {"kind": ["keep"]}})}]})
        ch.basic_publish("", "filtered", json.dumps({"kind": "keep", "n": 1}).encode())
        ch.basic_publish("", "filtered", json.dumps({"kind": "drop", "n": 2}).encode())
        c.close()
        wait_for(lambda: self.broker.queue_counts("filtered") == (0, 0), what="both messages taken")
        wait_for(lambda: self.bodies("rmq-filter"), what="the kept message")
        time.sleep(0.5)
        self.assertEqual([json.loads(b)["kind"] for b in self.bodies("rmq-filter")], ["keep"])
        self.delete(m)
        # Refused: an unknown broker, no queue or two, no credentials, a missing secret, other parameters.
        bad = [
            dict(EventSourceArn=BROKER.replace(":main:", ":other:"), Queues=["q"], SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": self.secret}]),
            dict(EventSourceArn=BROKER, Queues=["a", "b"], SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": self.secret}]),
            dict(EventSourceArn=BROKER, SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": self.secret}]),
            dict(EventSourceArn=BROKER, Queues=["q"]),
            dict(EventSourceArn=BROKER, Queues=["q"], SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": self.secret + "x"}]),
            dict(EventSourceArn=BROKER, Queues=["q"], SourceAccessConfigurations=[{"Type": "SASL_SCRAM_512_AUTH", "URI": self.secret}]),
            dict(EventSourceArn=BROKER, Queues=["q"], SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": self.secret}],
                 StartingPosition="LATEST"),
        ]
        for kw in bad:
            with self.assertRaises(ClientError, msg=str(kw)) as cm:
                self.raw.create_event_source_mapping(FunctionName="rmq-filter", **kw)
            self.assertEqual(cm.exception.response["Error"]["Code"], "InvalidParameterValueException", kw)
        # Wrong credentials: made, and its state says why it consumes nothing.
        w = self.lam.create_event_source_mapping(EventSourceArn=BROKER, FunctionName="rmq-filter", Queues=["filtered"],
                                                 SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": self.wrong}])
        got = wait_for(lambda: "PROBLEM" in self.lam.get_event_source_mapping(UUID=w["UUID"])["LastProcessingResult"] and
                       self.lam.get_event_source_mapping(UUID=w["UUID"])["LastProcessingResult"], what="the login failure")
        self.assertIn("log in", got)
        self.delete(w)
        self.lam.delete_function(FunctionName="rmq-filter")

    def test_a_broker_that_goes_away_and_comes_back(self):
        c, ch = self.channel()
        ch.queue_declare("resilient", durable=True)
        c.close()
        self.function("rmq-back", ECHO)
        m = self.mapping("rmq-back", "resilient")
        self.broker.ctl("stop_app")
        wait_for(lambda: "PROBLEM" in self.lam.get_event_source_mapping(UUID=m["UUID"])["LastProcessingResult"],
                 what="the mapping to report the broker gone")
        self.broker.ctl("start_app")
        self.broker.ctl("await_startup")
        c, ch = self.channel()
        ch.basic_publish("", "resilient", b"after the outage", properties=pika.BasicProperties(delivery_mode=2))
        c.close()
        wait_for(lambda: "after the outage" in self.bodies("rmq-back"), timeout=60, what="consumption to resume")
        wait_for(lambda: self.broker.queue_counts("resilient") == (0, 0), what="the acknowledgement")
        self.assertEqual(self.lam.get_event_source_mapping(UUID=m["UUID"])["LastProcessingResult"], "OK")
        self.delete(m)
        self.lam.delete_function(FunctionName="rmq-back")


    def test_kill_9_mid_stream_loses_nothing(self):
        c, ch = self.channel()
        ch.queue_declare("stream", durable=True)
        for i in range(40):
            ch.basic_publish("", "stream", b"m-%02d" % i, properties=pika.BasicProperties(delivery_mode=2))
        c.close()
        slow = ECHO.replace('def handler(event, context):', 'def handler(event, context):\n    __import__("time").sleep(0.05)')
        self.function("rmq-kill", slow)
        self.mapping("rmq-kill", "stream", BatchSize=5)
        wait_for(lambda: self.bodies("rmq-kill"), what="the first batch")
        self.daemon.proc.send_signal(signal.SIGKILL)
        self.daemon.proc.wait()
        self.daemon.proc = None
        self.daemon.log.close()
        # What the dead daemon held unacknowledged goes back to the queue (the broker's doing).
        self.daemon.start()
        want = {"m-%02d" % i for i in range(40)}
        wait_for(lambda: set(self.bodies("rmq-kill")) == want, timeout=60, what="every message after the restart")
        wait_for(lambda: self.broker.queue_counts("stream") == (0, 0), what="every acknowledgement")
        for m in self.lam.list_event_source_mappings(FunctionName="rmq-kill")["EventSourceMappings"]:
            self.delete(m)
        self.lam.delete_function(FunctionName="rmq-kill")


if __name__ == "__main__":
    unittest.main()
