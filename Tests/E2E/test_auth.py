"""Issue 5: accounts and keys, SigV4 verification in every form the SDKs
produce, per-account isolation and resource-based policies, tags, secrets
sealed at rest, master-key rotation, TLS and the audit trail."""

import datetime
import hashlib
import io
import json
import os
import sqlite3
import stat
import ssl
import subprocess
import time
import unittest
import urllib.error
import urllib.request
import zipfile

import boto3
import botocore.config
from botocore import UNSIGNED
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from harness import ROLE, Daemon, assert_client_error, make_zip, parse_credentials, payload_json, raw_request, signed

APP = '''
import os
def handler(event, context):
    return {"secret": os.environ.get("SECRET_VALUE"), "arn": context.invoked_function_arn}
'''

# Values that must never appear in clear under the data directory.
ENV_SECRET = "env-secret-7f3a9c1e5b2d4068"
CODE_SECRET = "code-secret-0b8e6d2f4a1c3957"


def stored_zip(files):
    """A ZIP whose members are stored, not compressed: their text would be
    visible in the blob if the blob were not encrypted."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, text in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (0o100644) << 16
            z.writestr(info, text)
    return buf.getvalue()


def error_type(resp):
    status, headers, body = resp
    return status, headers.get("X-Amzn-ErrorType") or headers.get("x-amzn-errortype"), json.loads(body or b"{}").get("Message", "")


class AuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon().start()
        cls.admin = cls.daemon.client()
        cls.admin_account = "000000000000"
        cls.zip = stored_zip({"app.py": APP, "secret.txt": CODE_SECRET})
        cls.admin.create_function(FunctionName="owned", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                  Code={"ZipFile": cls.zip}, Environment={"Variables": {"SECRET_VALUE": ENV_SECRET}},
                                  Tags={"team": "payments"})
        # A second account with a key of its own, made by the operator commands.
        cls.b_account = cls.daemon.petreld("accounts", "create", "--name", "team-b").stdout.strip()
        cls.b_keys = cls.parse_keys(cls.daemon.petreld("keys", "create", "--account", cls.b_account).stdout)
        cls.b = cls.daemon.client(keys=cls.b_keys)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop_and_check()

    parse_keys = staticmethod(parse_credentials)

    def assertRefused(self, code, fn, status=None):
        return assert_client_error(self, code, fn, status)

    def owned_arn(self):
        return "arn:aws:lambda:us-east-1:%s:function:owned" % self.admin_account

    def audit(self, *args):
        time.sleep(0.2)  # the audit writer gathers records for 20 ms
        out = self.daemon.petreld("audit", "--json", *args).stdout
        return [json.loads(l) for l in out.splitlines()]

    # -- credentials ------------------------------------------------------------

    def test_admin_credentials_work_with_the_aws_cli(self):
        path = self.daemon.credentials_file
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        r = self.daemon.aws("lambda", "list-functions")
        self.assertIn("owned", [f["FunctionName"] for f in json.loads(r.stdout)["Functions"]])

    def test_bad_credentials_are_refused_with_the_sdk_errors(self):
        key_id, secret = self.daemon.admin_keys()
        wrong = self.daemon.client(keys=(key_id, secret[:-1] + ("A" if secret[-1] != "A" else "B")))
        err = self.assertRefused("InvalidSignatureException", wrong.list_functions, 403)
        self.assertIn("signature we calculated does not match", err["Error"]["Message"])
        unknown = self.daemon.client(keys=("AKIAUNKNOWNKEY000000", "x" * 40))
        self.assertRefused("UnrecognizedClientException", unknown.list_functions, 403)
        # The AWS CLI reports the same refusals.
        r = self.daemon.aws("lambda", "list-functions", check=False, keys=("AKIAUNKNOWNKEY000000", "x" * 40))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("UnrecognizedClientException", r.stderr)
        unsigned = boto3.client("lambda", endpoint_url=self.daemon.endpoint, region_name="us-east-1",
                                config=botocore.config.Config(signature_version=UNSIGNED, retries={"max_attempts": 0}))
        self.assertRefused("MissingAuthenticationTokenException", unsigned.list_functions, 403)
        # Nothing was changed by the refused calls, and they are in the audit trail with their errors.
        errors = {r.get("error") for r in self.audit("--action", "ListFunctions")}
        self.assertTrue({"InvalidSignatureException", "UnrecognizedClientException", "MissingAuthenticationTokenException"} <= errors, errors)

    def test_revoked_key_is_refused_at_once(self):
        keys = self.parse_keys(self.daemon.petreld("keys", "create", "--account", self.b_account).stdout)
        c = self.daemon.client(keys=keys)
        c.list_functions()
        listed = self.daemon.petreld("keys", "list", "--account", self.b_account, "--json").stdout
        self.assertIn(keys[0], listed)
        self.assertNotIn(keys[1], listed)
        self.daemon.petreld("keys", "revoke", keys[0])
        self.assertRefused("UnrecognizedClientException", c.list_functions, 403)

    def test_a_revocation_the_daemon_cannot_be_told_of_fails_loudly_and_still_counts(self):
        # The revocation is committed, then the daemon is told through the key generation
        # file. When that cannot be replaced (here: a directory in its place), the command
        # must say so and fail, and the daemon must stop trusting the key it cached anyway.
        account = self.daemon.petreld("accounts", "create", "--name", "unannounced").stdout.strip()
        keys = self.parse_keys(self.daemon.petreld("keys", "create", "--account", account).stdout)
        c = self.daemon.client(keys=keys)
        c.list_functions()  # cached now
        generation = os.path.join(self.daemon.data, "keys.generation")
        saved = generation + ".saved"
        os.rename(generation, saved)
        os.mkdir(generation)
        try:
            r = self.daemon.petreld("keys", "revoke", keys[0], check=False)
            self.assertNotEqual(r.returncode, 0, r.stdout)
            self.assertIn("the key %s is revoked in the store, but cannot tell a running petreld" % keys[0], r.stderr)
            # Refused within the daemon's revalidation time (1 s), whatever the generation file says.
            deadline = time.time() + 5
            while True:
                try:
                    c.list_functions()
                except ClientError as e:
                    self.assertEqual(e.response["Error"]["Code"], "UnrecognizedClientException")
                    break
                self.assertLess(time.time(), deadline, "a revoked key is still accepted")
                time.sleep(0.1)
            self.assertLess(time.time(), deadline - 3.5, "accepted for longer than the revalidation time")
            # While the generation cannot be read, nothing is cached: a good key still works.
            self.b.list_functions()
        finally:
            os.rmdir(generation)
            os.rename(saved, generation)

    def test_clock_skew_over_five_minutes_is_refused(self):
        url = self.daemon.endpoint + "/2015-03-31/functions"
        keys = self.daemon.admin_keys()
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        self.assertEqual(signed("GET", url, keys, when=now - datetime.timedelta(minutes=3))[0], 200)
        status, code, msg = error_type(signed("GET", url, keys, when=now - datetime.timedelta(minutes=6)))
        self.assertEqual((status, code), (403, "InvalidSignatureException"))
        self.assertIn("Signature expired", msg)
        status, code, msg = error_type(signed("GET", url, keys, when=now + datetime.timedelta(minutes=6)))
        self.assertEqual((status, code), (403, "InvalidSignatureException"))
        self.assertIn("not yet current", msg)

    def test_payload_hash_variants(self):
        keys = self.daemon.admin_keys()
        url = self.daemon.endpoint + "/2015-03-31/functions/owned/invocations"
        body = b'{"x": 1}'
        # Declared UNSIGNED-PAYLOAD, and a declared hash of the real body: both accepted.
        r = signed("POST", url, keys, body, {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
        self.assertEqual(r[0], 200, r)
        self.assertEqual(json.loads(r[2])["secret"], ENV_SECRET)
        r = signed("POST", url, keys, body, {"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()})
        self.assertEqual(r[0], 200, r)
        # A declared hash that does not match the body sent is refused.
        r = signed("POST", url, keys, body, {"X-Amz-Content-SHA256": hashlib.sha256(b"other").hexdigest()})
        self.assertEqual(error_type(r)[:2], (403, "InvalidSignatureException"))
        # The body is signed: changing it after signing breaks the signature.
        req = AWSRequest(method="POST", url=url, data=body)
        SigV4Auth(Credentials(*keys), "lambda", "us-east-1").add_auth(req)
        r = raw_request("POST", url, b'{"x": 2}', dict(req.headers.items()))
        self.assertEqual(error_type(r)[:2], (403, "InvalidSignatureException"))

    def test_presigned_urls_and_their_expiry(self):
        keys = self.daemon.admin_keys()
        url = self.daemon.endpoint + "/2015-03-31/functions/owned?Qualifier=%24LATEST"
        req = AWSRequest(method="GET", url=url)
        SigV4QueryAuth(Credentials(*keys), "lambda", "us-east-1", expires=60).add_auth(req)
        status, _, body = raw_request("GET", req.url)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["Configuration"]["FunctionName"], "owned")
        tampered = req.url.replace("owned", "owned2", 1)
        self.assertEqual(error_type(raw_request("GET", tampered))[:2], (403, "InvalidSignatureException"))
        short = AWSRequest(method="GET", url=url)
        SigV4QueryAuth(Credentials(*keys), "lambda", "us-east-1", expires=1).add_auth(short)
        time.sleep(2.1)
        status, code, msg = error_type(raw_request("GET", short.url))
        self.assertEqual((status, code), (403, "InvalidSignatureException"))
        self.assertIn("expired", msg)

    def test_logs_api_is_signed_and_scoped(self):
        self.admin.create_function(FunctionName="only-a", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                   Code={"ZipFile": self.zip})
        self.admin.invoke(FunctionName="only-a", Payload=b"{}")
        logs = self.daemon.client("logs")
        deadline = time.time() + 10
        names = []
        while time.time() < deadline and "/aws/lambda/only-a" not in names:
            names = [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]]
            time.sleep(0.1)
        self.assertIn("/aws/lambda/only-a", names)
        self.assertTrue(logs.filter_log_events(logGroupName="/aws/lambda/only-a")["events"])
        b_logs = self.daemon.client("logs", keys=self.b_keys)
        self.assertNotIn("/aws/lambda/only-a", [g["logGroupName"] for g in b_logs.describe_log_groups()["logGroups"]])
        self.assertRefused("ResourceNotFoundException", lambda: b_logs.filter_log_events(logGroupName="/aws/lambda/only-a"))
        self.admin.delete_function(FunctionName="only-a")
        wrong = self.daemon.client("logs", keys=(self.b_keys[0], "y" * 40))
        self.assertRefused("InvalidSignatureException", wrong.describe_log_groups)

    # -- accounts and policies --------------------------------------------------

    def test_accounts_see_only_their_functions_until_granted(self):
        arn = self.owned_arn()
        self.assertEqual(self.b.list_functions()["Functions"], [])
        self.assertRefused("AccessDeniedException", lambda: self.b.get_function(FunctionName=arn), 403)
        self.assertRefused("AccessDeniedException", lambda: self.b.invoke(FunctionName=arn, Payload=b"{}"), 403)
        self.assertRefused("AccessDeniedException", lambda: self.b.delete_function(FunctionName=arn), 403)
        self.assertRefused("AccessDeniedException", lambda: self.b.update_function_configuration(FunctionName=arn, Timeout=9), 403)
        self.assertRefused("AccessDeniedException", lambda: self.b.add_permission(
            FunctionName=arn, StatementId="self-grant", Action="lambda:InvokeFunction", Principal=self.b_account), 403)
        # The same name in B's account is B's own function; A's is untouched.
        self.b.create_function(FunctionName="owned", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                               Code={"ZipFile": self.zip})
        self.assertEqual(self.b.get_function(FunctionName="owned")["Configuration"]["FunctionArn"],
                         "arn:aws:lambda:us-east-1:%s:function:owned" % self.b_account)
        self.assertIsNone(payload_json(self.b.invoke(FunctionName="owned"))["secret"])
        # An account that owns a function is not deleted, nor is the admin account.
        r = self.daemon.petreld("accounts", "delete", self.b_account, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("still owns 1 function", r.stderr)
        r = self.daemon.petreld("accounts", "delete", self.admin_account, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("admin account", r.stderr)
        self.assertIn(self.b_account, self.daemon.petreld("accounts", "list").stdout)
        self.assertEqual(self.admin.get_function_configuration(FunctionName="owned")["Timeout"], 3)
        self.b.delete_function(FunctionName="owned")
        self.assertEqual(self.admin.get_function(FunctionName="owned")["Configuration"]["FunctionName"], "owned")

        # Malformed statements are refused and store nothing.
        for code, bad in (
                ("ValidationException", {"StatementId": "has space", "Action": "lambda:InvokeFunction", "Principal": self.b_account}),
                ("ValidationException", {"StatementId": "ok", "Action": "s3:GetObject", "Principal": self.b_account}),
                ("InvalidParameterValueException", {"StatementId": "ok", "Action": "lambda:InvokeFunction", "Principal": "two words"}),
                ("ValidationException", {"StatementId": "ok", "Action": "lambda:InvokeFunction", "Principal": self.b_account,
                                         "SourceAccount": "12"})):
            self.assertRefused(code, lambda: self.admin.add_permission(FunctionName="owned", **bad), 400)
        self.assertRefused("ResourceNotFoundException", lambda: self.admin.get_policy(FunctionName="owned"), 404)
        # A grants B the right to invoke; B can, with A's ARN, and only that.
        out = self.admin.add_permission(FunctionName="owned", StatementId="b-invoke", Action="lambda:InvokeFunction",
                                        Principal=self.b_account)
        stmt = json.loads(out["Statement"])
        self.assertEqual(stmt["Principal"], {"AWS": "arn:aws:iam::%s:root" % self.b_account})
        self.assertEqual((stmt["Effect"], stmt["Action"], stmt["Resource"]), ("Allow", "lambda:InvokeFunction", arn))
        policy = json.loads(self.admin.get_policy(FunctionName="owned")["Policy"])
        self.assertEqual([s["Sid"] for s in policy["Statement"]], ["b-invoke"])
        self.assertRefused("ResourceConflictException", lambda: self.admin.add_permission(
            FunctionName="owned", StatementId="b-invoke", Action="lambda:InvokeFunction", Principal=self.b_account), 409)
        r = self.b.invoke(FunctionName=arn, Payload=b"{}")
        self.assertEqual(payload_json(r), {"secret": ENV_SECRET, "arn": arn})
        self.assertRefused("AccessDeniedException", lambda: self.b.get_function(FunctionName=arn), 403)
        self.assertRefused("AccessDeniedException", lambda: self.b.get_policy(FunctionName=arn), 403)
        # Removing the grant takes effect at once.
        self.admin.remove_permission(FunctionName="owned", StatementId="b-invoke")
        self.assertRefused("AccessDeniedException", lambda: self.b.invoke(FunctionName=arn, Payload=b"{}"), 403)
        self.assertRefused("ResourceNotFoundException", lambda: self.admin.get_policy(FunctionName="owned"), 404)
        self.assertRefused("ResourceNotFoundException", lambda: self.admin.remove_permission(FunctionName="owned", StatementId="b-invoke"), 404)
        # lambda:GetFunction lets B read the function (not its tags).
        self.admin.add_permission(FunctionName="owned", StatementId="b-read", Action="lambda:GetFunction", Principal=self.b_account)
        got = self.b.get_function(FunctionName=arn)
        self.assertEqual(got["Configuration"]["FunctionArn"], arn)
        self.assertNotIn("Tags", got)
        self.admin.remove_permission(FunctionName="owned", StatementId="b-read")
        self.assertRefused("AccessDeniedException", lambda: self.b.get_function(FunctionName=arn), 403)

        # Each refusal and each grant is in the audit trail, with who asked.
        b_records = self.audit("--account", self.b_account)
        denied = [r for r in b_records if r.get("error") == "AccessDeniedException"]
        self.assertTrue({"GetFunction", "Invoke", "DeleteFunction", "UpdateFunctionConfiguration"} <= {r["action"] for r in denied})
        self.assertTrue(all(r["source"] == "127.0.0.1" and r["accessKey"] == self.b_keys[0] for r in b_records))
        grants = self.audit("--action", "AddPermission", "--account", self.admin_account)
        self.assertIn("b-invoke", json.dumps(grants))

    def test_tags(self):
        arn = self.owned_arn()
        self.assertEqual(self.admin.list_tags(Resource=arn)["Tags"], {"team": "payments"})
        self.admin.tag_resource(Resource=arn, Tags={"env": "prod", "team": "core"})
        self.assertEqual(self.admin.list_tags(Resource=arn)["Tags"], {"team": "core", "env": "prod"})
        self.assertEqual(self.admin.get_function(FunctionName="owned")["Tags"], {"team": "core", "env": "prod"})
        self.admin.untag_resource(Resource=arn, TagKeys=["env"])
        self.assertEqual(self.admin.list_tags(Resource=arn)["Tags"], {"team": "core"})
        self.assertRefused("InvalidParameterValueException", lambda: self.admin.tag_resource(Resource=arn, Tags={"aws:x": "y"}))
        self.assertRefused("AccessDeniedException", lambda: self.b.list_tags(Resource=arn), 403)
        self.assertRefused("AccessDeniedException", lambda: self.b.tag_resource(Resource=arn, Tags={"x": "y"}), 403)
        self.admin.tag_resource(Resource=arn, Tags={"team": "payments"})

    def test_code_location_is_a_signed_link(self):
        loc = self.admin.get_function(FunctionName="owned")["Code"]["Location"]
        status, _, body = raw_request("GET", loc)
        self.assertEqual(status, 200)
        self.assertEqual(body, self.zip)
        self.assertEqual(raw_request("GET", loc[:-4] + "0000")[0], 403)
        self.assertEqual(raw_request("GET", loc.split("?")[0])[0], 403)

    # -- secrets at rest and the master key -------------------------------------

    def data_files(self):
        for root, _, files in os.walk(self.daemon.data):
            for f in files:
                if f != "admin-credentials":
                    yield os.path.join(root, f)

    def assertNowhereInData(self, needles):
        for path in self.data_files():
            with open(path, "rb") as f:
                data = f.read()
            for n in needles:
                self.assertNotIn(n.encode(), data, "%s holds %r in clear text" % (path, n))

    def test_no_secret_in_clear_under_the_data_directory_and_rotation_keeps_everything(self):
        kms = self.daemon.petreld("kms", "create", "--account", self.admin_account, "--description", "test").stdout.strip()
        self.assertTrue(kms.startswith("arn:aws:kms:us-east-1:%s:key/" % self.admin_account), kms)
        kms_secret = "kms-sealed-secret-5d1c7a90"
        self.admin.create_function(FunctionName="kms-fn", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                   Code={"ZipFile": self.zip}, KMSKeyArn=kms, Environment={"Variables": {"SECRET_VALUE": kms_secret}})
        self.assertEqual(self.admin.get_function_configuration(FunctionName="kms-fn")["KMSKeyArn"], kms)
        # A key of another account, or one that does not exist, is refused.
        self.assertRefused("KMSNotFoundException", lambda: self.b.create_function(
            FunctionName="kms-b", Runtime="python3.11", Role=ROLE, Handler="app.handler", Code={"ZipFile": self.zip}, KMSKeyArn=kms))
        b_key = self.parse_keys(self.daemon.petreld("keys", "create", "--account", self.b_account).stdout)
        time.sleep(0.3)
        self.assertNowhereInData([ENV_SECRET, CODE_SECRET, kms_secret, b_key[1], self.b_keys[1]])
        # The audit trail names the variables but not their values.
        created = self.audit("--action", "CreateFunction")
        self.assertIn("SECRET_VALUE", json.dumps(created))

        master = os.path.join(self.daemon.data, "master.key")
        with open(master, "rb") as f:
            before = f.read()
        out = self.daemon.petreld("keys", "rotate-master").stdout
        self.assertIn("rotated", out)
        with open(master, "rb") as f:
            after = f.read()
        self.assertNotEqual(before, after)
        self.assertFalse(os.path.exists(os.path.join(self.daemon.data, "master.key.next")))
        # Everything still opens after a restart under the new master key.
        self.daemon.stop()
        self.daemon.start()
        admin = self.daemon.client()
        self.assertEqual(payload_json(admin.invoke(FunctionName="owned"))["secret"], ENV_SECRET)
        self.assertEqual(payload_json(admin.invoke(FunctionName="kms-fn"))["secret"], kms_secret)
        self.assertEqual(raw_request("GET", admin.get_function(FunctionName="owned")["Code"]["Location"])[2], self.zip)
        self.daemon.client(keys=b_key).list_functions()
        admin.delete_function(FunctionName="kms-fn")
        # The audit trail survived the restart, and it cannot be rewritten.
        self.assertTrue(self.audit("--action", "CreateFunction"))
        db = sqlite3.connect(os.path.join(self.daemon.data, "petrel.sqlite"), timeout=10)
        try:
            for sql in ("UPDATE audit SET action = 'nothing'", "DELETE FROM audit"):
                with self.assertRaises(sqlite3.DatabaseError) as cm:
                    db.execute(sql)
                    db.commit()
                self.assertIn("append-only", str(cm.exception))
        finally:
            db.close()


class AuditRetentionTest(unittest.TestCase):
    """Audit records older than audit_retention_days are deleted (at start, then every
    10 minutes); the trail records the expiry, and its younger records stay undeletable."""

    def test_old_audit_records_expire(self):
        d = Daemon(extra_env={"PETREL_AUDIT_RETENTION_DAYS": "30"}).start()
        try:
            with d.log_on_failure():
                d.client().list_functions()
                self.assertEqual(d.stop(), 0)
                # Records from before the retention (INSERT is all the trail allows by hand).
                db = sqlite3.connect(os.path.join(d.data, "petrel.sqlite"))
                old = int(time.time() * 1000) - 40 * 86400000
                for i in range(3):
                    db.execute("INSERT INTO audit (time, source, action, parameters, status) VALUES (?, 'test', 'OldCall', '{}', 200)",
                               (old + i,))
                db.commit()
                db.close()
                d.start()
                d.client().list_functions()

                def audit(*args):
                    return [json.loads(line) for line in d.petreld("audit", "--json", *args).stdout.splitlines()]
                deadline = time.time() + 15
                while audit("--action", "OldCall") and time.time() < deadline:
                    time.sleep(0.1)
                self.assertEqual(audit("--action", "OldCall"), [])
                expiry = audit("--action", "ExpireAuditRecords")
                self.assertEqual(len(expiry), 1, expiry)
                self.assertEqual((expiry[0]["source"], expiry[0]["parameters"]["deleted"], expiry[0]["parameters"]["days"]),
                                 ("petreld", 3, 30))
                time.sleep(0.2)  # the audit writer gathers records for 20 ms
                self.assertEqual(len(audit("--action", "ListFunctions")), 2)
                # Younger records still cannot be deleted.
                db = sqlite3.connect(os.path.join(d.data, "petrel.sqlite"), timeout=10)
                try:
                    with self.assertRaises(sqlite3.DatabaseError) as cm:
                        db.execute("DELETE FROM audit WHERE action = 'ListFunctions'")
                    self.assertIn("append-only", str(cm.exception))
                finally:
                    db.close()
        finally:
            d.stop_and_check()


class TLSTest(unittest.TestCase):
    def test_https_with_a_configured_certificate(self):
        d = Daemon()
        os.makedirs(d.root, exist_ok=True)
        cert, key = os.path.join(d.root, "cert.pem"), os.path.join(d.root, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        d.extra_env = {"PETREL_TLS_CERTIFICATE": cert, "PETREL_TLS_KEY": key}
        d.start()
        try:
            keys = d.admin_keys()
            c = boto3.client("lambda", endpoint_url="https://127.0.0.1:%d" % d.port, region_name="us-east-1", verify=cert,
                             aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
                             config=botocore.config.Config(retries={"max_attempts": 0}))
            self.assertEqual(c.list_functions()["Functions"], [])
            with self.assertRaises(Exception):
                urllib.request.urlopen("http://127.0.0.1:%d/2015-03-31/functions" % d.port, timeout=5).read()
            # Function URLs are served over HTTPS too, with the same certificate.
            c.create_function(FunctionName="tls-url", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                              Code={"ZipFile": make_zip({"app.py": "def handler(e, c):\n    return {'path': e['rawPath']}\n"})})
            url = c.create_function_url_config(FunctionName="tls-url", AuthType="NONE")["FunctionUrl"]
            self.assertTrue(url.startswith("https://127.0.0.1:%d/" % d.url_port), url)
            c.add_permission(FunctionName="tls-url", StatementId="a", Action="lambda:InvokeFunctionUrl", Principal="*",
                             FunctionUrlAuthType="NONE")
            c.add_permission(FunctionName="tls-url", StatementId="b", Action="lambda:InvokeFunction", Principal="*",
                             InvokedViaFunctionUrl=True)
            ctx = ssl.create_default_context(cafile=cert)
            with urllib.request.urlopen(url + "over/tls", context=ctx, timeout=30) as r:
                self.assertEqual(json.loads(r.read()), {"path": "/over/tls"})
        finally:
            d.stop_and_check()


if __name__ == "__main__":
    unittest.main()
