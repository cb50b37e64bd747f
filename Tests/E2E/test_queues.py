"""Issue 21: SQS- and SNS-compatible queues and topics served by petreld, event
source mappings on the queues, and destinations that are real queues and topics.
boto3 and the AWS CLI are the clients."""

import base64
import hashlib
import json
import os
import signal
import threading
import time
import unittest
import urllib.error
import urllib.request

from botocore.exceptions import ClientError

from harness import ROLE, Daemon, DaemonTestCase, assert_client_error, make_zip, metric, parse_credentials, printed as bodies, wait_for

ECHO = '''
import json
def handler(event, context):
    print("EVENT " + json.dumps(event))
    return {"ok": True}
'''

# Reports the records whose body contains "fail" as failed; sleeps when the body asks.
PARTIAL = '''
import json, time
def handler(event, context):
    failed = []
    for r in event["Records"]:
        print("BODY " + r["body"])
        if "sleep" in r["body"]:
            time.sleep(0.2)
        if "fail" in r["body"]:
            failed.append({"itemIdentifier": r["messageId"]})
    return {"batchItemFailures": failed}
'''

RAISE = '''
def handler(event, context):
    raise RuntimeError("no")
'''


class Queues(DaemonTestCase):
    """One daemon for the SQS, SNS and mapping cases that do not restart it."""

    @classmethod
    def ready(cls):
        cls.sqs = cls.daemon.client("sqs")
        cls.raw_sqs = cls.daemon.client("sqs", validate=False)
        cls.sns = cls.daemon.client("sns")
        cls.lam = cls.daemon.client("lambda")
        cls.raw_lam = cls.daemon.client("lambda", validate=False)
        cls.account = "000000000000"

    def queue(self, name, **attributes):
        url = self.sqs.create_queue(QueueName=name, Attributes={k: str(v) for k, v in attributes.items()})["QueueUrl"]
        return url, self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def function(self, name, code, **kw):
        self.lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="index.handler",
                                 Code={"ZipFile": make_zip({"index.py": code})}, **kw)

    def counts(self, url):
        a = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])

    def drain(self, url, wait=1):
        out = []
        while True:
            got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait,
                                           AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
            if not got:
                return out
            out += got
            self.sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])

    # -- SQS: queues -----------------------------------------------------------

    def test_queue_lifecycle_attributes_and_tags(self):
        url = self.sqs.create_queue(QueueName="life", Attributes={"VisibilityTimeout": "45", "DelaySeconds": "2"},
                                    tags={"team": "a"})["QueueUrl"]
        self.assertEqual(url, "%s/%s/life" % (self.daemon.endpoint, self.account))
        # Idempotent with the same attributes; a different value is a conflict.
        self.assertEqual(self.sqs.create_queue(QueueName="life", Attributes={"VisibilityTimeout": "45", "DelaySeconds": "2"})["QueueUrl"], url)
        assert_client_error(self, "QueueNameExists", lambda: self.sqs.create_queue(QueueName="life", Attributes={"VisibilityTimeout": "5"}), 400)
        self.assertEqual(self.sqs.get_queue_url(QueueName="life")["QueueUrl"], url)
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        self.assertEqual((attrs["VisibilityTimeout"], attrs["DelaySeconds"], attrs["MaximumMessageSize"], attrs["MessageRetentionPeriod"]),
                         ("45", "2", "1048576", "345600"))
        self.assertEqual(attrs["QueueArn"], "arn:aws:sqs:us-east-1:%s:life" % self.account)
        self.assertNotIn("FifoQueue", attrs)
        self.assertEqual(self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["DelaySeconds"])["Attributes"], {"DelaySeconds": "2"})
        self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "7", "MaximumMessageSize": "2048"})
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout", "MaximumMessageSize"])["Attributes"]
        self.assertEqual(attrs, {"VisibilityTimeout": "7", "MaximumMessageSize": "2048"})
        # Bad attributes change nothing.
        assert_client_error(self, "InvalidAttributeName", lambda: self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Nope": "1"}))
        for name, value in (("VisibilityTimeout", "43201"), ("DelaySeconds", "901"), ("MaximumMessageSize", "1048577"),
                            ("MessageRetentionPeriod", "59"), ("ReceiveMessageWaitTimeSeconds", "21"), ("VisibilityTimeout", "x"),
                            ("RedrivePolicy", "{}"), ("Policy", "not json")):
            assert_client_error(self, "InvalidAttributeValue", lambda: self.sqs.set_queue_attributes(QueueUrl=url, Attributes={name: value}))
        self.assertEqual(self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]["VisibilityTimeout"], "7")
        # Tags.
        self.sqs.tag_queue(QueueUrl=url, Tags={"env": "test"})
        self.sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
        self.assertEqual(self.sqs.list_queue_tags(QueueUrl=url)["Tags"], {"env": "test"})
        # Listing, with a prefix and pages.
        for n in ("life-a", "life-b", "other"):
            self.sqs.create_queue(QueueName=n)
        listed = self.sqs.list_queues(QueueNamePrefix="life")["QueueUrls"]
        self.assertEqual([u.rsplit("/", 1)[1] for u in listed], ["life", "life-a", "life-b"])
        page = self.sqs.list_queues(QueueNamePrefix="life", MaxResults=2)
        self.assertEqual(len(page["QueueUrls"]), 2)
        rest = self.sqs.list_queues(QueueNamePrefix="life", MaxResults=2, NextToken=page["NextToken"])
        self.assertEqual([u.rsplit("/", 1)[1] for u in rest["QueueUrls"]], ["life-b"])
        # Purge and delete.
        self.sqs.send_message(QueueUrl=url, MessageBody="x")
        self.sqs.purge_queue(QueueUrl=url)
        self.assertEqual(self.counts(url), (0, 0))
        for n in ("life", "life-a", "life-b", "other"):
            self.sqs.delete_queue(QueueUrl=self.sqs.get_queue_url(QueueName=n)["QueueUrl"])
        assert_client_error(self, "QueueDoesNotExist", lambda: self.sqs.get_queue_url(QueueName="life"), 400)
        assert_client_error(self, "QueueDoesNotExist", lambda: self.sqs.send_message(QueueUrl=url, MessageBody="x"), 400)
        try:
            self.sqs.get_queue_url(QueueName="life")
        except self.sqs.exceptions.QueueDoesNotExist:
            pass  # boto3's modeled exception class catches it
        # Names.
        for bad in ("has space", "x" * 81, "", "dot.name"):
            with self.assertRaises(ClientError):
                self.raw_sqs.create_queue(QueueName=bad)
        assert_client_error(self, "InvalidParameterValue", lambda: self.sqs.create_queue(QueueName="plain.fifo"))

    def test_messages_attributes_limits_and_batches(self):
        url, _ = self.queue("msgs")
        attrs = {"s": {"DataType": "String", "StringValue": "v"}, "n": {"DataType": "Number", "StringValue": "42"},
                 "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}, "c": {"DataType": "String.custom", "StringValue": "x"}}
        sent = self.sqs.send_message(QueueUrl=url, MessageBody="héllo", MessageAttributes=attrs)
        self.assertEqual(sent["MD5OfMessageBody"], hashlib.md5("héllo".encode()).hexdigest())
        got = self.sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], AttributeNames=["All"])["Messages"][0]
        self.assertEqual((got["MessageId"], got["Body"], got["MD5OfBody"]), (sent["MessageId"], "héllo", sent["MD5OfMessageBody"]))
        self.assertEqual(got["MD5OfMessageAttributes"], sent["MD5OfMessageAttributes"])
        self.assertEqual(got["MessageAttributes"]["b"]["BinaryValue"], b"\x00\x01")
        self.assertEqual(got["MessageAttributes"]["n"], {"DataType": "Number", "StringValue": "42"})
        self.assertEqual(got["Attributes"]["ApproximateReceiveCount"], "1")
        for k in ("SentTimestamp", "ApproximateFirstReceiveTimestamp", "SenderId"):
            self.assertIn(k, got["Attributes"])
        self.sqs.delete_message(QueueUrl=url, ReceiptHandle=got["ReceiptHandle"])
        # The MD5 of attributes is SQS's (the algorithm the SDKs check), by a reference computed here.
        def md5_attrs(a):
            out = b""
            for name in sorted(a):
                v = a[name]
                enc = lambda b: len(b).to_bytes(4, "big") + b
                out += enc(name.encode()) + enc(v["DataType"].encode())
                out += (b"\x02" + enc(v["BinaryValue"])) if "BinaryValue" in v else (b"\x01" + enc(v["StringValue"].encode()))
            return hashlib.md5(out).hexdigest()
        self.assertEqual(sent["MD5OfMessageAttributes"], md5_attrs(attrs))

        # A batch, a message at the limit, over it, and bad input (nothing stored).
        out = self.sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": "a", "MessageBody": "one"}, {"Id": "b", "MessageBody": "two", "DelaySeconds": 901},
            {"Id": "c", "MessageBody": "x" * (1_048_576 - 3)}])
        self.assertEqual([s["Id"] for s in out["Successful"]], ["a", "c"])
        self.assertEqual([(f["Id"], f["Code"], f["SenderFault"]) for f in out["Failed"]], [("b", "InvalidParameterValue", True)])
        assert_client_error(self, "InvalidParameterValue", lambda: self.sqs.send_message(QueueUrl=url, MessageBody="x" * 1_048_577))
        assert_client_error(self, "BatchRequestTooLong", lambda: self.sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": "a", "MessageBody": "x" * 600_000}, {"Id": "b", "MessageBody": "y" * 600_000}]))
        assert_client_error(self, "EmptyBatchRequest", lambda: self.raw_sqs.send_message_batch(QueueUrl=url, Entries=[]))
        assert_client_error(self, "TooManyEntriesInBatchRequest", lambda: self.sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "m"} for i in range(11)]))
        assert_client_error(self, "BatchEntryIdsNotDistinct", lambda: self.sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": "same", "MessageBody": "m"}, {"Id": "same", "MessageBody": "n"}]))
        assert_client_error(self, "InvalidBatchEntryId", lambda: self.sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": "bad id", "MessageBody": "m"}]))
        assert_client_error(self, "InvalidMessageContents", lambda: self.sqs.send_message(QueueUrl=url, MessageBody="a\x01b"))
        assert_client_error(self, "InvalidParameterValue", lambda: self.sqs.send_message(
            QueueUrl=url, MessageBody="m", MessageAttributes={"AWS.x": {"DataType": "String", "StringValue": "v"}}))
        assert_client_error(self, "InvalidParameterValue", lambda: self.sqs.send_message(
            QueueUrl=url, MessageBody="m", MessageAttributes={"n": {"DataType": "Number", "StringValue": "abc"}}))
        assert_client_error(self, "InvalidParameterValue", lambda: self.sqs.send_message(
            QueueUrl=url, MessageBody="m", MessageAttributes={str(i): {"DataType": "String", "StringValue": "v"} for i in range(11)}))
        assert_client_error(self, "InvalidParameterValue", lambda: self.raw_sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11))
        assert_client_error(self, "InvalidParameterValue", lambda: self.raw_sqs.receive_message(QueueUrl=url, WaitTimeSeconds=21))
        self.assertEqual(sorted(len(m["Body"]) for m in self.drain(url)), [3, 1_048_573])
        # A queue's own MaximumMessageSize below the limit.
        self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "1024"})
        assert_client_error(self, "InvalidParameterValue", lambda: self.sqs.send_message(QueueUrl=url, MessageBody="x" * 1025))
        self.sqs.send_message(QueueUrl=url, MessageBody="x" * 1024)
        self.assertEqual(len(self.drain(url)), 1)
        # Handles: malformed, another queue's, stale.
        assert_client_error(self, "ReceiptHandleIsInvalid", lambda: self.sqs.delete_message(QueueUrl=url, ReceiptHandle="garbage"))
        self.sqs.delete_queue(QueueUrl=url)

    def test_visibility_delay_long_polling_and_redrive(self):
        dlq, dlq_arn = self.queue("vis-dlq")
        url, arn = self.queue("vis", VisibilityTimeout=1, RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}))
        self.assertEqual(self.sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"], [url])
        self.sqs.send_message(QueueUrl=url, MessageBody="m")
        first = self.sqs.receive_message(QueueUrl=url)["Messages"][0]
        self.assertEqual(self.sqs.receive_message(QueueUrl=url).get("Messages"), None, "an in-flight message is hidden")
        self.assertEqual(self.counts(url), (0, 1))
        second = wait_for(lambda: self.sqs.receive_message(QueueUrl=url, AttributeNames=["All"]).get("Messages"), what="visibility to end")[0]
        self.assertEqual(second["Attributes"]["ApproximateReceiveCount"], "2")
        # The first receive's handle is stale: deleting with it deletes nothing (and does not fail).
        self.sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
        # A message not in flight has no visibility to change.
        self.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"], VisibilityTimeout=0)
        assert_client_error(self, "MessageNotInflight", lambda: self.sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=second["ReceiptHandle"], VisibilityTimeout=5))
        # A third receive: past maxReceiveCount, the message moves to the dead-letter queue.
        self.assertIsNone(self.sqs.receive_message(QueueUrl=url).get("Messages"))
        dead = self.sqs.receive_message(QueueUrl=dlq, AttributeNames=["All"])["Messages"][0]
        self.assertEqual((dead["MessageId"], dead["Body"]), (first["MessageId"], "m"))
        self.assertEqual(dead["Attributes"]["DeadLetterQueueSourceArn"], arn)
        self.assertEqual(self.counts(url), (0, 0))

        # Delay: per message and per queue.
        self.sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
        a = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])["Attributes"]
        self.assertEqual(a["ApproximateNumberOfMessagesDelayed"], "1")
        self.assertIsNone(self.sqs.receive_message(QueueUrl=url).get("Messages"))
        # A long poll ends when the delayed message becomes visible, well before its 10 s.
        started = time.time()
        got = self.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10, VisibilityTimeout=30)["Messages"]
        self.assertEqual(got[0]["Body"], "later")
        self.assertLess(time.time() - started, 9)
        self.sqs.change_message_visibility_batch(QueueUrl=url, Entries=[{"Id": "x", "ReceiptHandle": got[0]["ReceiptHandle"], "VisibilityTimeout": 0}])
        self.assertEqual(len(self.drain(url)), 1)
        # A long poll wakes for a send from elsewhere, and an empty one waits its time out.
        box = {}
        t = threading.Thread(target=lambda: box.update(r=self.daemon.client("sqs").receive_message(QueueUrl=url, WaitTimeSeconds=10)))
        started = time.time()
        t.start()
        time.sleep(0.5)
        self.sqs.send_message(QueueUrl=url, MessageBody="wake")
        t.join(15)
        self.assertEqual(box["r"]["Messages"][0]["Body"], "wake")
        self.assertLess(time.time() - started, 9)
        self.sqs.delete_message(QueueUrl=url, ReceiptHandle=box["r"]["Messages"][0]["ReceiptHandle"])
        started = time.time()
        self.assertIsNone(self.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages"))
        self.assertGreaterEqual(time.time() - started, 0.9)
        # A redrive policy must name an existing queue of the same type that allows it.
        assert_client_error(self, "InvalidAttributeValue", lambda: self.sqs.set_queue_attributes(QueueUrl=url, Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn + "-none", "maxReceiveCount": 2})}))
        self.sqs.set_queue_attributes(QueueUrl=dlq, Attributes={"RedriveAllowPolicy": json.dumps({"redrivePermission": "denyAll"})})
        assert_client_error(self, "InvalidAttributeValue", lambda: self.sqs.create_queue(QueueName="vis2", Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})}))
        for u in (url, dlq):
            self.sqs.delete_queue(QueueUrl=u)

    def test_fifo_order_within_groups_and_deduplication(self):
        url, _ = self.queue("order.fifo", FifoQueue="true", VisibilityTimeout=30)
        a = self.sqs.send_message(QueueUrl=url, MessageBody="a", MessageGroupId="g", MessageDeduplicationId="d1")
        b = self.sqs.send_message(QueueUrl=url, MessageBody="a again", MessageGroupId="g", MessageDeduplicationId="d1")
        self.assertEqual(a["MessageId"], b["MessageId"], "a duplicate within 5 minutes is the same message")
        self.assertEqual(len(a["SequenceNumber"]), 20)
        assert_client_error(self, "MissingParameter", lambda: self.sqs.send_message(QueueUrl=url, MessageBody="x", MessageDeduplicationId="d"))
        assert_client_error(self, "InvalidParameterValue", lambda: self.sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g"))
        assert_client_error(self, "InvalidParameterValue", lambda: self.sqs.send_message(
            QueueUrl=url, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="d9", DelaySeconds=1))
        self.assertEqual([m["Body"] for m in self.drain(url)], ["a"])
        # Content-based deduplication.
        self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"ContentBasedDeduplication": "true"})
        x = self.sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
        y = self.sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
        self.assertEqual(x["MessageId"], y["MessageId"])
        self.assertEqual(len(self.drain(url)), 1)

        # Concurrent senders (one group each) and concurrent receivers: each group in order.
        groups, per = 4, 25
        def send(g):
            c = self.daemon.client("sqs")
            for i in range(0, per, 5):
                c.send_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(j), "MessageBody": "%d:%d" % (g, i + j), "MessageGroupId": "g%d" % g,
                     "MessageDeduplicationId": "%d-%d" % (g, i + j)} for j in range(5)])
        threads = [threading.Thread(target=send, args=(g,)) for g in range(groups)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen = {g: [] for g in range(groups)}
        lock = threading.Lock()
        in_flight = set()
        errors = []
        def receive():
            c = self.daemon.client("sqs")
            while True:
                got = c.receive_message(QueueUrl=url, MaxNumberOfMessages=3, WaitTimeSeconds=1,
                                        AttributeNames=["MessageGroupId"]).get("Messages", [])
                if not got:
                    return
                groups_here = {m["Attributes"]["MessageGroupId"] for m in got}
                with lock:
                    if groups_here & in_flight:
                        errors.append("a group was handed to two receivers at once: %s" % (groups_here & in_flight))
                    in_flight.update(groups_here)
                    for m in got:
                        g, i = map(int, m["Body"].split(":"))
                        seen[g].append(i)
                time.sleep(0.01)
                with lock:
                    in_flight.difference_update(groups_here)
                c.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
        receivers = [threading.Thread(target=receive) for _ in range(3)]
        for t in receivers:
            t.start()
        for t in receivers:
            t.join(60)
        self.assertEqual(errors, [])
        for g in range(groups):
            self.assertEqual(seen[g], list(range(per)), "group %d out of order" % g)
        self.sqs.delete_queue(QueueUrl=url)

    def test_other_accounts_need_the_queue_policy(self):
        b_account = self.daemon.petreld("accounts", "create", "--name", "queues-b").stdout.strip()
        b = self.daemon.client("sqs", keys=parse_credentials(self.daemon.petreld("keys", "create", "--account", b_account).stdout))
        url, arn = self.queue("shared")
        assert_client_error(self, "QueueDoesNotExist", lambda: b.send_message(QueueUrl=url, MessageBody="from b"))
        assert_client_error(self, "QueueDoesNotExist", lambda: b.get_queue_url(QueueName="shared", QueueOwnerAWSAccountId=self.account))
        self.assertNotIn(url, b.list_queues().get("QueueUrls", []))
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::%s:root" % b_account},
                                                           "Action": "sqs:SendMessage", "Resource": arn}]}
        self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
        b.send_message(QueueUrl=url, MessageBody="from b")
        assert_client_error(self, "QueueDoesNotExist", lambda: b.receive_message(QueueUrl=url))
        assert_client_error(self, "QueueDoesNotExist", lambda: b.delete_queue(QueueUrl=url))
        got = self.drain(url)
        self.assertEqual([m["Body"] for m in got], ["from b"])
        # A mapping reads another account's queue only with sqs:ReceiveMessage granted, and
        # invokes a function of its own account only.
        b_keys = parse_credentials(self.daemon.petreld("keys", "create", "--account", b_account).stdout)
        b_lam = self.daemon.client(keys=b_keys)
        b_lam.create_function(FunctionName="b-consumer", Runtime="python3.11", Role=ROLE, Handler="index.handler",
                              Code={"ZipFile": make_zip({"index.py": ECHO})})
        err = assert_client_error(self, "InvalidParameterValueException", lambda: b_lam.create_event_source_mapping(
            EventSourceArn=arn, FunctionName="b-consumer"), 400)
        self.assertIn("may not read it", err["Error"]["Message"])
        b_arn = b_lam.get_function(FunctionName="b-consumer")["Configuration"]["FunctionArn"]
        assert_client_error(self, "InvalidParameterValueException", lambda: self.lam.create_event_source_mapping(
            EventSourceArn=arn, FunctionName=b_arn), 400)
        policy["Statement"].append({"Effect": "Allow", "Principal": {"AWS": b_account}, "Action": "sqs:ReceiveMessage", "Resource": arn})
        self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
        granted = b_lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="b-consumer")
        self.assertEqual(granted["EventSourceArn"], arn)
        self.assertEqual(self.lam.list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"], [], "B's mapping is B's")
        b_lam.delete_event_source_mapping(UUID=granted["UUID"])
        wait_for(lambda: b_lam.list_event_source_mappings()["EventSourceMappings"] == [], what="B's mapping to go")
        b_lam.delete_function(FunctionName="b-consumer")
        # B's own queue of the same name is B's.
        b_url = b.create_queue(QueueName="shared")["QueueUrl"]
        self.assertIn("/%s/shared" % b_account, b_url)
        self.assertNotEqual(b_url, url)
        # An account that owns a queue is not deleted.
        r = self.daemon.petreld("accounts", "delete", b_account, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("still owns 1 queue(s)", r.stderr)
        b.delete_queue(QueueUrl=b_url)
        self.daemon.petreld("accounts", "delete", b_account)
        self.sqs.delete_queue(QueueUrl=url)

    def test_aws_cli_and_audit(self):
        out = json.loads(self.daemon.aws("sqs", "create-queue", "--queue-name", "cli").stdout)
        url = out["QueueUrl"]
        self.daemon.aws("sqs", "send-message", "--queue-url", url, "--message-body", "from the cli",
                        "--message-attributes", '{"k":{"DataType":"String","StringValue":"v"}}')
        got = json.loads(self.daemon.aws("sqs", "receive-message", "--queue-url", url, "--message-attribute-names", "All").stdout)
        self.assertEqual(got["Messages"][0]["Body"], "from the cli")
        self.assertEqual(got["Messages"][0]["MessageAttributes"]["k"]["StringValue"], "v")
        r = self.daemon.aws("sqs", "get-queue-url", "--queue-name", "missing", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("QueueDoesNotExist", r.stderr)
        topic = json.loads(self.daemon.aws("sns", "create-topic", "--name", "cli-topic").stdout)["TopicArn"]
        self.daemon.aws("sns", "publish", "--topic-arn", topic, "--message", "hi")
        self.daemon.aws("sns", "delete-topic", "--topic-arn", topic)
        self.daemon.aws("sqs", "delete-queue", "--queue-url", url)
        # The audit trail names each call and its queue, never a message's body.
        records = [json.loads(line) for line in self.daemon.petreld("audit", "--json").stdout.splitlines()]
        by_action = {r["action"]: r for r in records}
        for action in ("CreateQueue", "SendMessage", "ReceiveMessage", "GetQueueUrl", "CreateTopic", "Publish", "DeleteTopic", "DeleteQueue"):
            self.assertIn(action, by_action)
        self.assertEqual(by_action["SendMessage"]["resource"], url)
        self.assertNotIn("from the cli", json.dumps([r for r in records if r["action"] == "SendMessage"]))
        self.assertEqual(by_action["GetQueueUrl"]["status"], 400)

    # -- SNS -------------------------------------------------------------------

    def test_topics_fan_out_to_a_function_and_a_filtered_queue(self):
        topic = self.sns.create_topic(Name="orders", Tags=[{"Key": "team", "Value": "a"}])["TopicArn"]
        self.assertEqual(self.sns.create_topic(Name="orders")["TopicArn"], topic)
        self.assertIn(topic, [t["TopicArn"] for t in self.sns.list_topics()["Topics"]])
        red, red_arn = self.queue("red-orders")
        raw, raw_arn = self.queue("raw-orders")
        out, out_arn = self.queue("fn-results")
        # The function's results come back through its OnSuccess destination: a real queue.
        self.function("on-order", ECHO)
        self.lam.put_function_event_invoke_config(FunctionName="on-order", DestinationConfig={"OnSuccess": {"Destination": out_arn}})
        sub_red = self.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=red_arn, ReturnSubscriptionArn=True,
                                     Attributes={"FilterPolicy": json.dumps({"color": ["red"], "size": [{"numeric": [">", 5]}]})})["SubscriptionArn"]
        self.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=raw_arn, Attributes={"RawMessageDelivery": "true"})
        fn_arn = self.lam.get_function(FunctionName="on-order")["Configuration"]["FunctionArn"]
        sub_fn = self.sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint=fn_arn)["SubscriptionArn"]
        subs = self.sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        self.assertEqual(sorted(s["Protocol"] for s in subs), ["lambda", "sqs", "sqs"])
        a = self.sns.get_topic_attributes(TopicArn=topic)["Attributes"]
        self.assertEqual((a["SubscriptionsConfirmed"], a["Owner"]), ("3", self.account))
        self.assertEqual(self.sns.list_tags_for_resource(ResourceArn=topic)["Tags"], [{"Key": "team", "Value": "a"}])

        # Without the function's permission, the topic cannot invoke it; the queues still get theirs.
        def publish(message, color, size):
            return self.sns.publish(TopicArn=topic, Message=message, Subject="order", MessageAttributes={
                "color": {"DataType": "String", "StringValue": color}, "size": {"DataType": "Number", "StringValue": str(size)}})["MessageId"]
        publish("unpermitted", "red", 9)
        self.assertEqual(len(self.drain(raw)), 1)
        time.sleep(1)
        self.assertEqual(self.drain(out, wait=0), [], "no AddPermission: the function must not run")
        self.assertEqual(len(self.drain(red)), 1)
        self.lam.add_permission(FunctionName="on-order", StatementId="sns", Action="lambda:InvokeFunction",
                                Principal="sns.amazonaws.com", SourceArn=topic)
        m_red = publish("big red", "red", 9)
        publish("small red", "red", 2)
        publish("big blue", "blue", 9)
        # The filtered queue gets the one that matches, in SNS's envelope.
        got = self.drain(red)
        self.assertEqual(len(got), 1)
        env = json.loads(got[0]["Body"])
        self.assertEqual((env["Type"], env["Message"], env["MessageId"], env["TopicArn"], env["Subject"]),
                         ("Notification", "big red", m_red, topic, "order"))
        self.assertEqual(env["MessageAttributes"]["color"], {"Type": "String", "Value": "red"})
        # The raw subscription gets bodies and attributes as published.
        got = self.drain(raw)
        self.assertEqual(sorted(m["Body"] for m in got), ["big blue", "big red", "small red"])
        self.assertEqual(got[0]["MessageAttributes"]["color"]["DataType"], "String")
        # The function gets all three, as SNS records.
        results = []
        wait_for(lambda: results.extend(self.drain(out, wait=1)) or len(results) >= 3, what="three function results")
        events = [json.loads(m["Body"])["requestPayload"] for m in results]
        self.assertEqual(sorted(e["Records"][0]["Sns"]["Message"] for e in events), ["big blue", "big red", "small red"])
        rec = events[0]["Records"][0]
        self.assertEqual((rec["EventSource"], rec["EventVersion"], rec["EventSubscriptionArn"]), ("aws:sns", "1.0", sub_fn))
        self.assertEqual(rec["Sns"]["Type"], "Notification")
        self.assertIn("size", rec["Sns"]["MessageAttributes"])
        self.assertEqual(json.loads(results[0]["Body"])["requestContext"]["condition"], "Success")
        self.assertGreaterEqual(metric(self.daemon, "petrel_sns_deliveries_total", outcome="filtered"), 2)

        # A JSON message structure: each protocol its own message.
        self.sns.publish(TopicArn=topic, MessageStructure="json", Message=json.dumps({"default": "d", "sqs": "for queues"}),
                         MessageAttributes={"color": {"DataType": "String", "StringValue": "red"}, "size": {"DataType": "Number", "StringValue": "7"}})
        self.assertEqual(json.loads(self.drain(red)[0]["Body"])["Message"], "for queues")
        # Changing a filter policy; batches.
        self.sns.set_subscription_attributes(SubscriptionArn=sub_red, AttributeName="FilterPolicy", AttributeValue=json.dumps({"color": ["blue"]}))
        self.assertEqual(json.loads(self.sns.get_subscription_attributes(SubscriptionArn=sub_red)["Attributes"]["FilterPolicy"]), {"color": ["blue"]})
        out_batch = self.sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
            {"Id": "1", "Message": "b1", "MessageAttributes": {"color": {"DataType": "String", "StringValue": "blue"}}},
            {"Id": "2", "Message": "r1", "MessageAttributes": {"color": {"DataType": "String", "StringValue": "red"}}},
            {"Id": "3", "Message": ""}])
        self.assertEqual(sorted(s["Id"] for s in out_batch["Successful"]), ["1", "2"])
        self.assertEqual(out_batch["Failed"][0]["Id"], "3")
        self.assertEqual([json.loads(m["Body"])["Message"] for m in self.drain(red)], ["b1"])

        # Errors, in SNS's shape.
        assert_client_error(self, "NotFound", lambda: self.sns.get_topic_attributes(TopicArn=topic + "-none"), 404)
        assert_client_error(self, "NotFound", lambda: self.sns.publish(TopicArn=topic + "-none", Message="x"), 404)
        assert_client_error(self, "InvalidParameter", lambda: self.sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="a@b.c"), 400)
        assert_client_error(self, "InvalidParameter", lambda: self.sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=red_arn, Attributes={"FilterPolicy": "{not json"}), 400)
        assert_client_error(self, "InvalidParameter", lambda: self.sns.publish(TopicArn=topic, Message="x" * 262_145), 400)
        assert_client_error(self, "InvalidParameter", lambda: self.sns.create_topic(Name="bad name"), 400)
        # Unsubscribing and deleting.
        self.sns.unsubscribe(SubscriptionArn=sub_red)
        self.sns.publish(TopicArn=topic, Message="after", MessageAttributes={"color": {"DataType": "String", "StringValue": "blue"}})
        self.assertEqual(self.drain(red, wait=0), [])
        self.sns.delete_topic(TopicArn=topic)
        self.assertNotIn(topic, [t["TopicArn"] for t in self.sns.list_topics()["Topics"]])
        self.assertEqual(self.sns.list_subscriptions()["Subscriptions"], [])
        self.drain(raw, wait=0)
        self.drain(out, wait=2)
        for u in (red, raw, out):
            self.sqs.delete_queue(QueueUrl=u)
        self.lam.delete_function(FunctionName="on-order")

    def test_failure_destination_to_a_topic(self):
        topic = self.sns.create_topic(Name="failures")["TopicArn"]
        url, arn = self.queue("failure-records")
        self.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
        dead, dead_arn = self.queue("failed-events")
        # DeadLetterConfig: the failed event itself goes to a queue, beside the OnFailure record.
        self.function("always-fails", RAISE, DeadLetterConfig={"TargetArn": dead_arn})
        self.assertEqual(self.lam.get_function_configuration(FunctionName="always-fails")["DeadLetterConfig"], {"TargetArn": dead_arn})
        for bad in ("arn:aws:lambda:us-east-1:%s:function:x" % self.account, "arn:aws:sqs:us-east-1:111122223333:q"):
            assert_client_error(self, "InvalidParameterValueException", lambda: self.lam.update_function_configuration(
                FunctionName="always-fails", DeadLetterConfig={"TargetArn": bad}))
        self.lam.put_function_event_invoke_config(FunctionName="always-fails", MaximumRetryAttempts=0,
                                                  DestinationConfig={"OnFailure": {"Destination": topic}})
        out = self.lam.invoke(FunctionName="always-fails", InvocationType="Event", Payload=b'{"n": 1}')
        got = wait_for(lambda: self.drain(url), what="the failure record")
        record = json.loads(got[0]["Body"])
        self.assertEqual(record["requestContext"]["condition"], "RetriesExhausted")
        self.assertEqual(record["requestPayload"], {"n": 1})
        self.assertEqual(record["responseContext"]["functionError"], "Unhandled")
        event = wait_for(lambda: self.drain(dead), what="the event in the dead-letter queue")[0]
        self.assertEqual(json.loads(event["Body"]), {"n": 1})
        self.assertEqual(event["MessageAttributes"]["RequestID"]["StringValue"], out["ResponseMetadata"]["RequestId"])
        self.assertIn("RuntimeError", event["MessageAttributes"]["ErrorMessage"]["StringValue"])
        self.assertEqual(event["MessageAttributes"]["ErrorCode"]["StringValue"], "200")
        self.lam.update_function_configuration(FunctionName="always-fails", DeadLetterConfig={"TargetArn": ""})
        wait_for(lambda: "DeadLetterConfig" not in self.lam.get_function_configuration(FunctionName="always-fails"), what="removal")
        self.lam.delete_function(FunctionName="always-fails")
        self.sns.delete_topic(TopicArn=topic)
        for u in (url, dead):
            self.sqs.delete_queue(QueueUrl=u)

    def test_the_built_in_dead_letter_queue_is_a_real_queue(self):
        self.function("dl-fails", RAISE)
        self.lam.put_function_event_invoke_config(FunctionName="dl-fails", MaximumRetryAttempts=0,
                                                  DestinationConfig={"OnFailure": {"Destination": "arn:aws:sqs:::petrel-dlq"}})
        out = self.lam.invoke(FunctionName="dl-fails", InvocationType="Event", Payload=b'{"n": 7}')
        request_id = out["ResponseMetadata"]["RequestId"]
        url = wait_for(lambda: self.sqs.list_queues(QueueNamePrefix="petrel-dlq").get("QueueUrls"), what="petrel-dlq")[0]
        got = wait_for(lambda: self.sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], VisibilityTimeout=0).get("Messages"),
                       what="the dead letter")[0]
        record = json.loads(got["Body"])
        self.assertEqual((record["requestContext"]["requestId"], record["requestPayload"]), (request_id, {"n": 7}))
        self.assertEqual(got["MessageAttributes"]["FunctionName"]["StringValue"], "dl-fails")
        self.assertEqual(got["MessageAttributes"]["Condition"]["StringValue"], "RetriesExhausted")
        # The operator command reads the same queue, and a redrive takes the letter out of it.
        listed = [json.loads(line) for line in self.daemon.petreld("dlq", "list", "dl-fails", "--json").stdout.splitlines()]
        self.assertEqual([r["requestId"] for r in listed], [request_id])
        # (Without a destination now, the redriven event's second failure leaves no new letter.)
        self.lam.put_function_event_invoke_config(FunctionName="dl-fails", MaximumRetryAttempts=0)
        self.daemon.petreld("dlq", "redrive", "dl-fails")
        self.assertEqual(self.counts(url), (0, 0))
        self.lam.delete_function(FunctionName="dl-fails")

    # -- event source mappings ------------------------------------------------

    def test_mapping_delivers_filters_and_reports_partial_failures(self):
        dlq, dlq_arn = self.queue("esm-dlq")
        url, arn = self.queue("esm-src", VisibilityTimeout=3, RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1}))
        self.function("esm-echo", ECHO, Timeout=3)
        m = self.lam.create_event_source_mapping(
            EventSourceArn=arn, FunctionName="esm-echo", BatchSize=5,
            FilterCriteria={"Filters": [{"Pattern": json.dumps({"body": {"kind": ["order"], "total": [{"numeric": [">=", 10]}]}})},
                                        {"Pattern": json.dumps({"body": [{"prefix": "plain"}]})}]})
        self.assertEqual((m["State"], m["BatchSize"], m["EventSourceArn"]), ("Creating", 5, arn))
        self.assertEqual(m["FunctionArn"], "arn:aws:lambda:us-east-1:%s:function:esm-echo" % self.account)
        wait_for(lambda: self.lam.get_event_source_mapping(UUID=m["UUID"])["State"] == "Enabled", what="Enabled")
        self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"kind": "order", "total": 12}),
                              MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})
        self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"kind": "order", "total": 3}))
        self.sqs.send_message(QueueUrl=url, MessageBody="plain text")
        self.sqs.send_message(QueueUrl=url, MessageBody="other text")
        wait_for(lambda: self.counts(url) == (0, 0), what="the queue to empty")
        def records_so_far():
            got = [r for e in bodies(self.daemon, "esm-echo", "EVENT") for r in json.loads(e)["Records"]]
            return got if len(got) >= 2 else None
        records = wait_for(records_so_far, what="both records in the function's log")
        self.assertEqual(sorted(r["body"] for r in records), sorted([json.dumps({"kind": "order", "total": 12}), "plain text"]))
        r = [r for r in records if r["body"] != "plain text"][0]
        self.assertEqual((r["eventSource"], r["eventSourceARN"], r["awsRegion"]), ("aws:sqs", arn, "us-east-1"))
        self.assertEqual(r["md5OfBody"], hashlib.md5(r["body"].encode()).hexdigest())
        self.assertEqual(r["attributes"]["ApproximateReceiveCount"], "1")
        self.assertEqual(r["messageAttributes"]["k"]["stringValue"], "v")
        self.assertEqual(r["messageAttributes"]["k"]["dataType"], "String")
        for k in ("messageId", "receiptHandle", "md5OfMessageAttributes"):
            self.assertTrue(r[k])
        self.assertEqual(self.drain(dlq, wait=0), [], "filtered-out messages are deleted, not dead-lettered")
        self.assertEqual(self.lam.get_event_source_mapping(UUID=m["UUID"])["LastProcessingResult"], "OK")

        # Partial batch failures: only the failed items come back, and then go to the dead-letter queue.
        self.lam.update_function_code(FunctionName="esm-echo", ZipFile=make_zip({"index.py": PARTIAL}))
        up = self.lam.update_event_source_mapping(UUID=m["UUID"], FunctionResponseTypes=["ReportBatchItemFailures"],
                                                  FilterCriteria={"Filters": []}, BatchSize=10)
        self.assertEqual(up["State"], "Updating")
        self.assertNotIn("FilterCriteria", up)
        wait_for(lambda: self.lam.get_event_source_mapping(UUID=m["UUID"])["State"] == "Enabled", what="Enabled again")
        self.sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in
                                                           enumerate(["ok-1", "fail-1", "ok-2", "fail-2"])])
        dead = []
        wait_for(lambda: dead.extend(self.drain(dlq, wait=1)) or len(dead) >= 2, timeout=30, what="the failed items in the DLQ")
        self.assertEqual(sorted(d["Body"] for d in dead), ["fail-1", "fail-2"])
        wait_for(lambda: self.counts(url) == (0, 0), what="the queue to empty")
        oks = lambda: sorted(b for b in bodies(self.daemon, "esm-echo") if b.startswith("ok"))
        wait_for(lambda: len(oks()) >= 2, what="the succeeded items' log")
        self.assertEqual(oks(), ["ok-1", "ok-2"], "succeeded items run once")
        self.assertGreaterEqual(metric(self.daemon, "petrel_mapping_batches_total", mapping=m["UUID"], outcome="partial"), 1)

        # Disabled: messages wait; enabled again: consumed.
        self.lam.update_event_source_mapping(UUID=m["UUID"], Enabled=False)
        wait_for(lambda: self.lam.get_event_source_mapping(UUID=m["UUID"])["State"] == "Disabled", what="Disabled")
        self.sqs.send_message(QueueUrl=url, MessageBody="ok-waiting")
        time.sleep(1.5)
        self.assertEqual(self.counts(url), (1, 0))
        self.lam.update_event_source_mapping(UUID=m["UUID"], Enabled=True)
        wait_for(lambda: self.counts(url) == (0, 0), what="the waiting message")

        # Listing, conflicts and bad input.
        self.assertEqual([x["UUID"] for x in self.lam.list_event_source_mappings(FunctionName="esm-echo")["EventSourceMappings"]], [m["UUID"]])
        self.assertEqual([x["UUID"] for x in self.lam.list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"]], [m["UUID"]])
        assert_client_error(self, "ResourceConflictException", lambda: self.lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="esm-echo"), 409)
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.get_event_source_mapping(UUID="a0b1c2d3-0000-0000-0000-000000000000"), 404)
        bad = [
            dict(EventSourceArn=arn + "-none", FunctionName="esm-echo"),
            dict(EventSourceArn="arn:aws:kinesis:us-east-1:%s:stream/s" % self.account, FunctionName="esm-echo"),
            dict(EventSourceArn=dlq_arn, FunctionName="esm-echo", BatchSize=11),
            dict(EventSourceArn=dlq_arn, FunctionName="esm-echo", FilterCriteria={"Filters": [{"Pattern": "{not json"}]}),
            dict(EventSourceArn=dlq_arn, FunctionName="esm-echo", StartingPosition="LATEST"),
            dict(EventSourceArn=dlq_arn, FunctionName="esm-echo", FunctionResponseTypes=["Other"]),
            dict(EventSourceArn=dlq_arn, FunctionName="esm-echo", ScalingConfig={"MaximumConcurrency": 1}),
        ]
        for kw in bad:
            with self.assertRaises(ClientError, msg=str(kw)) as cm:
                self.raw_lam.create_event_source_mapping(**kw)
            self.assertIn(cm.exception.response["Error"]["Code"], ("InvalidParameterValueException", "ValidationException"), kw)
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.create_event_source_mapping(EventSourceArn=dlq_arn, FunctionName="none"), 404)
        self.lam.update_function_configuration(FunctionName="esm-echo", Timeout=10)
        wait_for(lambda: self.lam.get_function_configuration(FunctionName="esm-echo")["LastUpdateStatus"] == "Successful")
        err = assert_client_error(self, "InvalidParameterValueException", lambda: self.lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="esm-echo"))
        self.assertIn("visibility timeout", err["Error"]["Message"])
        self.assertEqual(len(self.lam.list_event_source_mappings()["EventSourceMappings"]), 1, "refused mappings store nothing")
        d = self.lam.delete_event_source_mapping(UUID=m["UUID"])
        self.assertEqual(d["State"], "Deleting")
        wait_for(lambda: self.lam.list_event_source_mappings()["EventSourceMappings"] == [], what="the mapping to go")
        self.lam.delete_function(FunctionName="esm-echo")
        for u in (url, dlq):
            self.sqs.delete_queue(QueueUrl=u)

    def test_reserved_concurrency_delays_consumption_and_never_dead_letters(self):
        dlq, dlq_arn = self.queue("bp-dlq")
        url, arn = self.queue("bp-src", VisibilityTimeout=3, RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1}))
        self.function("bp", PARTIAL, Timeout=3)
        self.lam.put_function_concurrency(FunctionName="bp", ReservedConcurrentExecutions=1)
        self.sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "sleep-%d" % i} for i in range(10)])
        self.sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "sleep-%d" % (10 + i)} for i in range(10)])
        m = self.lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="bp", BatchSize=1, ScalingConfig={"MaximumConcurrency": 5})
        wait_for(lambda: self.counts(url) == (0, 0), timeout=60, what="all 20 messages")
        self.assertEqual(self.drain(dlq, wait=0), [], "a throttled function must not send messages to the dead-letter queue")
        # Every message ran (its log may land a moment after its deletion).
        want = {"sleep-%d" % i for i in range(20)}
        wait_for(lambda: set(bodies(self.daemon, "bp")) == want,
                 what="every message in the function's log")
        self.lam.delete_event_source_mapping(UUID=m["UUID"])
        wait_for(lambda: self.lam.list_event_source_mappings(FunctionName="bp")["EventSourceMappings"] == [])
        self.lam.delete_function(FunctionName="bp")
        for u in (url, dlq):
            self.sqs.delete_queue(QueueUrl=u)

    def test_mapping_keeps_fifo_group_order_and_targets_an_alias(self):
        url, arn = self.queue("esm-order.fifo", FifoQueue="true", ContentBasedDeduplication="true", VisibilityTimeout=10)
        self.function("esm-fifo", PARTIAL, Timeout=3, Publish=True)
        self.lam.create_alias(FunctionName="esm-fifo", Name="live", FunctionVersion="1")
        m = self.lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="esm-fifo:live", BatchSize=3)
        self.assertTrue(m["FunctionArn"].endswith(":function:esm-fifo:live"))
        for g in range(3):
            self.sqs.send_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "MessageBody": "g%d-%02d" % (g, i), "MessageGroupId": "g%d" % g} for i in range(10)])
        wait_for(lambda: self.counts(url) == (0, 0), timeout=60, what="the FIFO queue to empty")
        def fifo_bodies():
            got = bodies(self.daemon, "esm-fifo")
            return got if len(got) >= 30 else None
        seen = wait_for(fifo_bodies, what="30 messages in the function's log")
        for g in range(3):
            mine = [b for b in seen if b.startswith("g%d-" % g)]
            self.assertEqual(mine, ["g%d-%02d" % (g, i) for i in range(10)], "group %d out of order" % g)
        self.lam.delete_event_source_mapping(UUID=m["UUID"])
        wait_for(lambda: self.lam.list_event_source_mappings(FunctionName="esm-fifo")["EventSourceMappings"] == [])
        self.lam.delete_function(FunctionName="esm-fifo")
        self.sqs.delete_queue(QueueUrl=url)

    def test_queue_gauges(self):
        url, _ = self.queue("gauged")
        self.sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "m"} for i in range(3)])
        self.sqs.receive_message(QueueUrl=url, VisibilityTimeout=60)
        label = "%s:gauged" % self.account
        wait_for(lambda: metric(self.daemon, "petrel_queue_messages", queue=label, state="visible") == 2, timeout=15, what="the gauge")
        self.assertEqual(metric(self.daemon, "petrel_queue_messages", queue=label, state="in_flight"), 1)
        self.assertIsNotNone(metric(self.daemon, "petrel_queue_oldest_message_age_seconds", queue=label))
        self.sqs.delete_queue(QueueUrl=url)


class HTTPSubscribers(unittest.TestCase):
    """SNS to HTTP endpoints the operator allows: a real HTTP server of the test's on loopback."""

    def test_confirmation_delivery_retries_and_the_allow_list(self):
        import http.server
        from harness import free_port
        port = free_port()
        received, lock = [], threading.Lock()
        failures = {"left": 2}

        class Endpoint(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    received.append((self.path, dict(self.headers), body))
                    fail = self.path == "/flaky" and self.headers.get("x-amz-sns-message-type") == "Notification" and failures["left"] > 0
                    if fail:
                        failures["left"] -= 1
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Endpoint)
        t = threading.Thread(target=server.serve_forever)
        t.start()
        d = Daemon(extra_env={"PETREL_SNS_HTTP_ALLOW": "http://127.0.0.1:%d/" % port})
        try:
            with d.started():
                sns = d.client("sns")
                topic = sns.create_topic(Name="hooks")["TopicArn"]
                assert_client_error(self, "InvalidParameter", lambda: sns.subscribe(
                    TopicArn=topic, Protocol="http", Endpoint="http://127.0.0.1:%d/" % (port + 1)), 400)
                assert_client_error(self, "InvalidParameter", lambda: sns.subscribe(
                    TopicArn=topic, Protocol="https", Endpoint="http://127.0.0.1:%d/hook" % port), 400)
                out = sns.subscribe(TopicArn=topic, Protocol="http", Endpoint="http://127.0.0.1:%d/hook" % port)
                self.assertEqual(out["SubscriptionArn"], "pending confirmation")
                def posts(path, kind):
                    with lock:
                        return [json.loads(b) for p, h, b in received if p == path and h.get("x-amz-sns-message-type") == kind]
                confirmation = wait_for(lambda: posts("/hook", "SubscriptionConfirmation"), what="the confirmation")[0]
                self.assertEqual(confirmation["TopicArn"], topic)
                listed = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
                self.assertEqual(listed[0]["SubscriptionArn"], "PendingConfirmation")
                # Nothing is delivered before the subscription is confirmed.
                sns.publish(TopicArn=topic, Message="too early")
                # The SubscribeURL is fetched unsigned, as a subscriber does; a wrong token is refused.
                bad = urllib.request.Request(confirmation["SubscribeURL"].replace(confirmation["Token"], "0" * 64))
                with self.assertRaises(urllib.error.HTTPError):
                    urllib.request.urlopen(bad)
                xml = urllib.request.urlopen(confirmation["SubscribeURL"]).read().decode()
                self.assertIn("<SubscriptionArn>%s:" % topic, xml)
                arn = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"][0]["SubscriptionArn"]
                self.assertTrue(arn.startswith(topic + ":"))
                self.assertNotIn("ConfirmationToken", sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"])
                mid = sns.publish(TopicArn=topic, Message="hello hooks", Subject="s",
                                  MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})["MessageId"]
                note = wait_for(lambda: posts("/hook", "Notification"), what="the notification")
                self.assertEqual([n["Message"] for n in note], ["hello hooks"])
                self.assertEqual((note[0]["MessageId"], note[0]["Subject"], note[0]["MessageAttributes"]["k"]["Value"]), (mid, "s", "v"))
                with lock:
                    headers = [h for p, h, b in received if p == "/hook" and h.get("x-amz-sns-message-type") == "Notification"][0]
                self.assertEqual((headers["x-amz-sns-topic-arn"], headers["x-amz-sns-subscription-arn"]), (topic, arn))
                # An endpoint that fails twice gets the message on a later attempt (raw delivery).
                flaky = sns.subscribe(TopicArn=topic, Protocol="http", Endpoint="http://127.0.0.1:%d/flaky" % port,
                                      Attributes={"RawMessageDelivery": "true"}, ReturnSubscriptionArn=True)["SubscriptionArn"]
                c = wait_for(lambda: posts("/flaky", "SubscriptionConfirmation"), what="the second confirmation", timeout=30)[0]
                sns.confirm_subscription(TopicArn=topic, Token=c["Token"])
                sns.publish(TopicArn=topic, Message="raw body")
                def raw_bodies():
                    with lock:
                        return [b for p, h, b in received if p == "/flaky" and h.get("x-amz-sns-message-type") == "Notification"]
                # Each attempt is recorded as it arrives: two answered 500, the third 200, and no more after it.
                wait_for(lambda: raw_bodies().count(b"raw body") >= 3, timeout=30, what="the retried delivery")
                time.sleep(2.5)
                self.assertEqual(raw_bodies().count(b"raw body"), 3, "two failures, then the delivery")
                self.assertGreaterEqual(metric(d, "petrel_sns_deliveries_total", protocol="http", outcome="retried"), 2)
                sns.unsubscribe(SubscriptionArn=flaky)
                # The allow list is checked again at delivery: an endpoint the operator removed
                # gets nothing, even on a confirmed subscription.
                d.stop()
                d.extra_env["PETREL_SNS_HTTP_ALLOW"] = ""
                d.start()
                with lock:
                    before = len(received)
                d.client("sns").publish(TopicArn=topic, Message="no longer allowed")
                wait_for(lambda: metric(d, "petrel_sns_deliveries_total", protocol="http", outcome="refused"), what="the refusal")
                with lock:
                    self.assertEqual(len(received), before, "an endpoint no longer allowed got a POST")
        finally:
            server.shutdown()
            server.server_close()
            t.join()


class Durability(unittest.TestCase):
    """kill -9 during sends and during consumption."""

    def test_every_acknowledged_send_survives_kill9(self):
        d = Daemon()
        with d.started():
            sqs = d.client("sqs")
            url = sqs.create_queue(QueueName="durable")["QueueUrl"]
            acked = []
            stop = threading.Event()
            def sender():
                c = d.client("sqs")
                i = 0
                while not stop.is_set():
                    try:
                        out = c.send_message_batch(QueueUrl=url, Entries=[{"Id": str(j), "MessageBody": "m-%d" % (i + j)} for j in range(10)])
                        acked.extend(s["MessageId"] for s in out["Successful"])
                    except Exception:
                        return
                    i += 10
            threads = [threading.Thread(target=sender) for _ in range(3)]
            for t in threads:
                t.start()
            wait_for(lambda: len(acked) >= 300, what="300 acknowledged messages")
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            stop.set()
            for t in threads:
                t.join(30)
            d.proc = None
            d.log.close()
            d.start()
            ids = set()
            c = d.client("sqs")
            while True:
                got = c.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
                if not got:
                    break
                ids.update(m["MessageId"] for m in got)
                c.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
            self.assertEqual(set(acked) - ids, set(), "acknowledged messages were lost")

    def test_consumption_survives_kill9_and_deletes_only_after_success(self):
        d = Daemon()
        with d.started():
            sqs, lam = d.client("sqs"), d.client("lambda")
            url = sqs.create_queue(QueueName="consumed", Attributes={"VisibilityTimeout": "3"})["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            lam.create_function(FunctionName="slow", Runtime="python3.11", Role=ROLE, Handler="index.handler", Timeout=3,
                                Code={"ZipFile": make_zip({"index.py": PARTIAL})})
            for k in range(6):
                sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "sleep-%d" % (k * 10 + i)} for i in range(10)])
            lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="slow", BatchSize=2, ScalingConfig={"MaximumConcurrency": 2})
            wait_for(lambda: bodies(d, "slow"), what="the first batch")
            time.sleep(0.5)
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            d.proc = None
            d.log.close()
            d.start()
            c = d.client("sqs")
            def empty():
                a = c.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
                return a["ApproximateNumberOfMessages"] == "0" and a["ApproximateNumberOfMessagesNotVisible"] == "0"
            wait_for(empty, timeout=90, what="every message to be consumed after the restart")
            want = {"sleep-%d" % i for i in range(60)}
            wait_for(lambda: set(bodies(d, "slow")) == want,
                     what="every message to reach the function at least once")


if __name__ == "__main__":
    unittest.main()
