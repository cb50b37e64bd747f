"""Execution roles: IAM's roles and inline policies and STS's temporary credentials through
boto3 and the AWS CLI; role sessions authorized by their policies on every API (explicit deny
wins, revocation by deleting a policy or the role, cross-account AssumeRole by trust policy);
functions calling Petrel with boto3 and no configuration (the runtime's own boto3, the
instance's credentials and AWS_ENDPOINT_URL), allowed and denied; credentials that expire and
are replaced; mappings and destinations refused for a role without permission; role ARNs
that name no usable role refused."""

import json
import time
import unittest

import boto3
import botocore.config
import botocore.exceptions

from harness import ROLE, DaemonTestCase, assert_client_error, make_zip, parse_credentials, payload_json, wait_for

TRUST_LAMBDA = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def trust_account(account):
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::%s:root" % account}, "Action": "sts:AssumeRole"}]}


def allow(actions, resources="*", effect="Allow"):
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": effect, "Action": actions, "Resource": resources}]})


METRICS = """\
import urllib.request, urllib.error

def handler(event, context):
    try:
        return urllib.request.urlopen("http://127.0.0.1:9002/metrics", timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
"""

CALLER = """\
import json, os
import boto3

def handler(event, context):
    where = boto3.__file__
    client = boto3.client("lambda")
    try:
        out = client.invoke(FunctionName=event["target"], Payload=b"{}")
        result = {"ok": json.loads(out["Payload"].read())}
    except Exception as e:
        code = getattr(e, "response", {}).get("Error", {}).get("Code", type(e).__name__)
        result = {"error": code, "message": str(e)}
    result["boto3"] = where
    result["key"] = os.environ.get("AWS_ACCESS_KEY_ID")
    result["endpoint"] = os.environ.get("AWS_ENDPOINT_URL")
    return result
"""

ECHO_CREDS = """\
import os

def handler(event, context):
    return {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
"""


class RolesTest(DaemonTestCase):
    # Strict, as a new installation is; short credentials, so that their expiry can be watched.
    daemon_env = {"PETREL_UNKNOWN_ROLES": "refuse", "PETREL_CREDENTIAL_SECONDS": "15"}

    @classmethod
    def ready(cls):
        cls.iam = cls.daemon.client("iam")
        cls.sts = cls.daemon.client("sts")
        cls.lam = cls.daemon.client()
        cls.account = cls.sts.get_caller_identity()["Account"]

    def session_client(self, creds, service="lambda"):
        return boto3.client(
            service, endpoint_url=self.daemon.endpoint, region_name="us-east-1",
            aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            config=botocore.config.Config(retries={"max_attempts": 0}))

    def make_role(self, name, trust=None, policies=None):
        role = self.iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust or TRUST_LAMBDA))["Role"]
        for pname, doc in (policies or {}).items():
            self.iam.put_role_policy(RoleName=name, PolicyName=pname, PolicyDocument=doc)
        return role

    def drop_role(self, name):
        for p in self.iam.list_role_policies(RoleName=name)["PolicyNames"]:
            self.iam.delete_role_policy(RoleName=name, PolicyName=p)
        self.iam.delete_role(RoleName=name)

    def test_roles_and_policies(self):
        role = self.make_role("crud", policies={"read": allow("lambda:Get*")})
        self.assertEqual(role["Arn"], "arn:aws:iam::%s:role/crud" % self.account)
        self.assertTrue(role["RoleId"].startswith("AROA"))
        got = self.iam.get_role(RoleName="crud")["Role"]
        self.assertEqual(got["AssumeRolePolicyDocument"], TRUST_LAMBDA)  # URL-encoded, decoded by botocore
        self.assertEqual(self.iam.list_role_policies(RoleName="crud")["PolicyNames"], ["read"])
        self.assertEqual(json.loads(allow("lambda:Get*")),
                         self.iam.get_role_policy(RoleName="crud", PolicyName="read")["PolicyDocument"])
        self.assertIn("crud", [r["RoleName"] for r in self.iam.list_roles()["Roles"]])
        # The CLI too.
        listed = json.loads(self.daemon.aws("iam", "list-roles").stdout)
        self.assertIn("crud", [r["RoleName"] for r in listed["Roles"]])
        assert_client_error(self, "EntityAlreadyExists", lambda: self.make_role("CRUD"))
        for bad in (dict(RoleName="bad name!"), dict(RoleName="ok", Path="no-slashes"), dict(RoleName="ok", MaxSessionDuration=60),
                    dict(RoleName="x" * 65)):
            assert_client_error(self, "ValidationError", lambda: self.daemon.client("iam", validate=False).create_role(
                AssumeRolePolicyDocument=json.dumps(TRUST_LAMBDA), **bad))
        assert_client_error(self, "ValidationError", lambda: self.sts.assume_role(RoleArn=role["Arn"], RoleSessionName="a b"))
        self.assertEqual([r["RoleName"] for r in self.iam.list_roles()["Roles"] if r["RoleName"] in ("ok", "bad name!")], [])
        assert_client_error(self, "DeleteConflict", lambda: self.iam.delete_role(RoleName="crud"))
        assert_client_error(self, "NoSuchEntity", lambda: self.iam.get_role(RoleName="nope"))
        assert_client_error(self, "NoSuchEntity", lambda: self.iam.get_role_policy(RoleName="crud", PolicyName="nope"))
        # Documents Petrel cannot evaluate are refused, and change nothing.
        conditional = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "true"}}}]})
        assert_client_error(self, "MalformedPolicyDocument",
                            lambda: self.iam.put_role_policy(RoleName="crud", PolicyName="c", PolicyDocument=conditional))
        assert_client_error(self, "MalformedPolicyDocument",
                            lambda: self.iam.put_role_policy(RoleName="crud", PolicyName="p",
                                                             PolicyDocument=json.dumps(TRUST_LAMBDA)))
        assert_client_error(self, "MalformedPolicyDocument",
                            lambda: self.iam.update_assume_role_policy(RoleName="crud", PolicyDocument="{not json"))
        self.assertEqual(self.iam.list_role_policies(RoleName="crud")["PolicyNames"], ["read"])
        self.iam.update_assume_role_policy(RoleName="crud", PolicyDocument=json.dumps(trust_account(self.account)))
        self.assertEqual(self.iam.get_role(RoleName="crud")["Role"]["AssumeRolePolicyDocument"], trust_account(self.account))
        self.drop_role("crud")
        assert_client_error(self, "NoSuchEntity", lambda: self.iam.get_role(RoleName="crud"))

    def test_assumed_role_sessions(self):
        self.make_role("reader", trust=trust_account(self.account), policies={
            "read": allow(["lambda:List*", "lambda:GetFunction*", "sqs:*"]),
            "no-queue-b": allow("sqs:*", "arn:aws:sqs:us-east-1:%s:queue-b" % self.account, effect="Deny"),
        })
        self.lam.create_function(FunctionName="visible", Runtime="python3.11", Role=self.make_exec_role("visible-role"),
                                 Handler="app.handler", Code={"ZipFile": make_zip({"app.py": ECHO_CREDS})})
        creds = self.sts.assume_role(RoleArn="arn:aws:iam::%s:role/reader" % self.account,
                                     RoleSessionName="alice")["Credentials"]
        self.assertTrue(creds["AccessKeyId"].startswith("ASIA"))
        me = self.session_client(creds, "sts").get_caller_identity()
        self.assertEqual(me["Arn"], "arn:aws:sts::%s:assumed-role/reader/alice" % self.account)
        self.assertEqual(me["Account"], self.account)
        lam = self.session_client(creds)
        self.assertIn("visible", [f["FunctionName"] for f in lam.list_functions()["Functions"]])
        lam.get_function_configuration(FunctionName="visible")
        err = assert_client_error(self, "AccessDeniedException", lambda: lam.delete_function(FunctionName="visible"), 403)
        self.assertIn("assumed-role/reader/alice is not authorized to perform: lambda:DeleteFunction", str(err))
        sqs = self.session_client(creds, "sqs")
        sqs.create_queue(QueueName="queue-a")
        assert_client_error(self, "AccessDenied", lambda: sqs.create_queue(QueueName="queue-b"))  # explicit deny wins
        assert_client_error(self, "AuthorizationError", lambda: self.session_client(creds, "sns").list_topics())
        assert_client_error(self, "AccessDenied",
                            lambda: self.session_client(creds, "sts").get_session_token())  # not with session credentials
        # The audit trail names the session.
        records = wait_for(lambda: [json.loads(l) for l in self.daemon.petreld("audit", "--json").stdout.splitlines()
                                    if '"DeleteFunction"' in l and "alice" in l], what="the audited refusal")
        self.assertEqual(records[-1]["principal"], "arn:aws:sts::%s:assumed-role/reader/alice" % self.account)
        self.assertEqual(records[-1]["accessKey"], creds["AccessKeyId"])
        self.assertNotIn(creds["SecretAccessKey"], self.daemon.petreld("audit", "--json").stdout)
        # Revocation: the policy deleted, the session may no longer list; the role deleted, the token is dead.
        self.iam.delete_role_policy(RoleName="reader", PolicyName="read")
        assert_client_error(self, "AccessDeniedException", lambda: lam.list_functions())
        self.iam.delete_role_policy(RoleName="reader", PolicyName="no-queue-b")
        self.iam.delete_role(RoleName="reader")
        assert_client_error(self, "UnrecognizedClientException", lambda: lam.list_functions())
        self.lam.delete_function(FunctionName="visible")
        self.drop_role("visible-role")
        admin_sqs = self.daemon.client("sqs")
        admin_sqs.delete_queue(QueueUrl=admin_sqs.get_queue_url(QueueName="queue-a")["QueueUrl"])

    def make_exec_role(self, name, policy=None):
        self.make_role(name, policies={"p": policy} if policy else None)
        return "arn:aws:iam::%s:role/%s" % (self.account, name)

    def test_session_token_and_cross_account(self):
        # GetSessionToken: the account's own rights, for a while.
        creds = self.sts.get_session_token(DurationSeconds=900)["Credentials"]
        session = self.session_client(creds, "sts").get_caller_identity()
        self.assertEqual(session["Arn"], "arn:aws:iam::%s:root" % self.account)
        self.session_client(creds).list_functions()
        # A temporary key signs only with its own token: none, or another session's, is refused.
        other_token = self.sts.get_session_token(DurationSeconds=900)["Credentials"]["SessionToken"]
        for token in (None, other_token, creds["SessionToken"][:-8] + "AAAAAAAA"):
            forged = dict(creds, SessionToken=token)
            client = boto3.client("lambda", endpoint_url=self.daemon.endpoint, region_name="us-east-1",
                                  aws_access_key_id=forged["AccessKeyId"], aws_secret_access_key=forged["SecretAccessKey"],
                                  aws_session_token=token, config=botocore.config.Config(retries={"max_attempts": 0}))
            assert_client_error(self, "UnrecognizedClientException", lambda: client.list_functions(), 403)
        # Another account may assume a role only when the role's trust policy names it.
        other = {"Account": self.daemon.petreld("accounts", "create", "--name", "partner").stdout.strip()}
        try:
            keys = parse_credentials(self.daemon.petreld("keys", "create", "--account", other["Account"]).stdout)
            their_sts = self.daemon.client("sts", keys=keys)
            self.make_role("shared", policies={"list": allow("lambda:ListFunctions")})
            arn = "arn:aws:iam::%s:role/shared" % self.account
            assert_client_error(self, "AccessDenied", lambda: their_sts.assume_role(RoleArn=arn, RoleSessionName="bob"))
            self.iam.update_assume_role_policy(RoleName="shared", PolicyDocument=json.dumps(trust_account(other["Account"])))
            creds = their_sts.assume_role(RoleArn=arn, RoleSessionName="bob")["Credentials"]
            me = self.session_client(creds, "sts").get_caller_identity()
            self.assertEqual(me["Account"], self.account)
            self.assertEqual(me["Arn"], "arn:aws:sts::%s:assumed-role/shared/bob" % self.account)
            self.session_client(creds).list_functions()
            # The owner itself is not trusted now (the trust policy names the partner only).
            assert_client_error(self, "AccessDenied", lambda: self.sts.assume_role(RoleArn=arn, RoleSessionName="me"))
            assert_client_error(self, "ValidationError",
                                lambda: their_sts.assume_role(RoleArn=arn, RoleSessionName="bob", DurationSeconds=7200))
            self.drop_role("shared")
        finally:
            self.daemon.petreld("accounts", "delete", other["Account"])

    def test_function_role_arns(self):
        code = {"ZipFile": make_zip({"app.py": ECHO_CREDS})}
        for role in (ROLE.replace("petrel-test", "missing"), self.make_exec_role("untrusted-by-lambda")):
            if role.endswith("untrusted-by-lambda"):
                self.iam.update_assume_role_policy(RoleName="untrusted-by-lambda",
                                                   PolicyDocument=json.dumps(trust_account(self.account)))
            err = assert_client_error(self, "InvalidParameterValueException", lambda: self.lam.create_function(
                FunctionName="roleless", Runtime="python3.11", Role=role, Handler="app.handler", Code=code))
            self.assertIn("cannot be assumed by Lambda", str(err))
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.get_function(FunctionName="roleless"))
        self.drop_role("untrusted-by-lambda")
        # An account the operator lets keep its placeholder ARNs: accepted, run with no credentials.
        self.daemon.petreld("accounts", "unknown-roles", "--account", self.account, "accept")
        try:
            self.lam.create_function(FunctionName="roleless", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                     Code=code)
            self.assertEqual(payload_json(self.lam.invoke(FunctionName="roleless")),
                             {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None})
            self.lam.delete_function(FunctionName="roleless")
        finally:
            self.daemon.petreld("accounts", "unknown-roles", "--account", self.account, "default")
        assert_client_error(self, "InvalidParameterValueException", lambda: self.lam.create_function(
            FunctionName="roleless", Runtime="python3.11", Role=ROLE, Handler="app.handler", Code=code))

    def test_functions_call_petrel_with_their_role(self):
        target = self.make_exec_role("target-role")
        for name in ("other", "secret"):
            self.lam.create_function(FunctionName=name, Runtime="python3.11", Role=target, Handler="app.handler",
                                     Code={"ZipFile": make_zip({"app.py": "def handler(e, c):\n    return 'hi from %s'\n" % name})})
        role = self.make_exec_role("caller-role", allow("lambda:InvokeFunction",
                                                        "arn:aws:lambda:us-east-1:%s:function:other" % self.account))
        self.lam.create_function(FunctionName="caller", Runtime="python3.11", Role=role, Handler="app.handler", Timeout=20,
                                 Code={"ZipFile": make_zip({"app.py": CALLER})})
        out = payload_json(self.lam.invoke(FunctionName="caller", Payload=json.dumps({"target": "other"})))
        self.assertEqual(out.get("ok"), "hi from other", out)
        self.assertEqual(out["boto3"], "/var/lang/python-sdk/boto3/__init__.py")  # the runtime's own, not the host's
        self.assertEqual(out["endpoint"], "http://127.0.0.1:9002")
        self.assertTrue(out["key"].startswith("ASIA"))
        out = payload_json(self.lam.invoke(FunctionName="caller", Payload=json.dumps({"target": "secret"})))
        self.assertEqual(out.get("error"), "AccessDeniedException", out)
        self.assertIn("assumed-role/caller-role/caller", out["message"])
        # The configuration shows the role, never credentials.
        config = self.lam.get_function_configuration(FunctionName="caller")
        self.assertEqual(config["Role"], role)
        self.assertNotIn(out["key"], json.dumps(config, default=str))
        # The relay reaches the API as any client does: what is served to the host's loopback only
        # (the metrics) is refused to a function.
        self.lam.create_function(FunctionName="peek", Runtime="python3.11", Role=role, Handler="app.handler",
                                 Code={"ZipFile": make_zip({"app.py": METRICS})})
        self.assertEqual(payload_json(self.lam.invoke(FunctionName="peek")), 403)
        self.lam.delete_function(FunctionName="peek")
        # A function's own boto3 wins over the runtime's.
        shadow = make_zip({"app.py": "import boto3\ndef handler(e, c):\n    return boto3.__file__\n",
                           "boto3/__init__.py": "__version__ = 'mine'\n"})
        self.lam.create_function(FunctionName="own-boto3", Runtime="python3.11", Role=role, Handler="app.handler",
                                 Code={"ZipFile": shadow})
        self.assertEqual(payload_json(self.lam.invoke(FunctionName="own-boto3")), "/var/task/boto3/__init__.py")
        for name in ("other", "secret", "caller", "own-boto3"):
            self.lam.delete_function(FunctionName=name)
        self.drop_role("target-role")
        self.drop_role("caller-role")

    def test_credentials_expire_and_are_replaced(self):
        role = self.make_exec_role("short-role", allow("lambda:ListFunctions"))
        self.lam.create_function(FunctionName="short", Runtime="python3.11", Role=role, Handler="app.handler", Timeout=3,
                                 Code={"ZipFile": make_zip({"app.py": ECHO_CREDS})})
        first = payload_json(self.lam.invoke(FunctionName="short"))
        self.assertEqual(payload_json(self.lam.invoke(FunctionName="short"))["AWS_ACCESS_KEY_ID"], first["AWS_ACCESS_KEY_ID"])
        creds = {"AccessKeyId": first["AWS_ACCESS_KEY_ID"], "SecretAccessKey": first["AWS_SECRET_ACCESS_KEY"],
                 "SessionToken": first["AWS_SESSION_TOKEN"]}
        self.session_client(creds).list_functions()
        # The credentials an instance gets reach neither the daemon's log nor the audit trail.
        with open(self.daemon.log_path, encoding="utf-8", errors="replace") as f:
            log = f.read()
        trail = self.daemon.petreld("audit", "--json").stdout
        for secret in (creds["SecretAccessKey"], creds["SessionToken"]):
            self.assertNotIn(secret, log)
            self.assertNotIn(secret, trail)
        # 15 s credentials, a 3 s timeout: after 7 s the warm instance takes no more work.
        time.sleep(8)
        second = payload_json(self.lam.invoke(FunctionName="short"))
        self.assertNotEqual(second["AWS_ACCESS_KEY_ID"], first["AWS_ACCESS_KEY_ID"])
        time.sleep(8)
        assert_client_error(self, "ExpiredTokenException", lambda: self.session_client(creds).list_functions())
        self.lam.delete_function(FunctionName="short")
        self.drop_role("short-role")

    def test_provisioned_instances_get_fresh_credentials_off_the_request_path(self):
        role = self.make_exec_role("prov-role")
        self.lam.create_function(FunctionName="prov", Runtime="python3.11", Role=role, Handler="app.handler", Timeout=3,
                                 Code={"ZipFile": make_zip({"app.py": ECHO_CREDS})})
        version = self.lam.publish_version(FunctionName="prov")["Version"]
        self.lam.put_provisioned_concurrency_config(FunctionName="prov", Qualifier=version, ProvisionedConcurrentExecutions=1)
        ready = lambda: self.lam.get_provisioned_concurrency_config(  # noqa: E731
            FunctionName="prov", Qualifier=version)["Status"] == "READY"
        wait_for(ready, what="the provisioned instance")

        def warm_key():
            r = self.lam.invoke(FunctionName="prov", Qualifier=version)
            self.assertNotIn("x-petrel-init-duration", r["ResponseMetadata"]["HTTPHeaders"], "a cold start")
            return payload_json(r)["AWS_ACCESS_KEY_ID"]
        first = warm_key()
        # 15 s credentials, a 3 s timeout: after 7 s the instance is replaced by the maintenance loop.
        time.sleep(8)
        wait_for(ready, what="the replacement")
        self.assertNotEqual(warm_key(), first)
        self.lam.delete_provisioned_concurrency_config(FunctionName="prov", Qualifier=version)
        self.lam.delete_function(FunctionName="prov")
        self.drop_role("prov-role")

    def test_mappings_and_destinations_need_the_role(self):
        sqs = self.daemon.client("sqs")
        queue = sqs.create_queue(QueueName="work", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
        arn = "arn:aws:sqs:us-east-1:%s:work" % self.account
        role = self.make_exec_role("consumer-role", allow("lambda:GetFunction"))
        self.lam.create_function(FunctionName="consumer", Runtime="python3.11", Role=role, Handler="app.handler",
                                 Code={"ZipFile": make_zip({"app.py": ECHO_CREDS})})
        err = assert_client_error(self, "InvalidParameterValueException", lambda: self.lam.create_event_source_mapping(
            FunctionName="consumer", EventSourceArn=arn))
        self.assertIn("ReceiveMessage", str(err))
        assert_client_error(self, "InvalidParameterValueException", lambda: self.lam.put_function_event_invoke_config(
            FunctionName="consumer", DestinationConfig={"OnFailure": {"Destination": arn}}))
        self.assertEqual(self.lam.list_event_source_mappings(FunctionName="consumer")["EventSourceMappings"], [])
        self.iam.put_role_policy(RoleName="consumer-role", PolicyName="queue",
                                 PolicyDocument=allow(["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                                                       "sqs:SendMessage"], arn))
        m = self.lam.create_event_source_mapping(FunctionName="consumer", EventSourceArn=arn)
        self.lam.put_function_event_invoke_config(FunctionName="consumer", DestinationConfig={"OnFailure": {"Destination": arn}})
        # Pointed at a function whose role may not read the queue: refused, and the mapping stays as it was.
        self.lam.create_function(FunctionName="bystander", Runtime="python3.11", Role=self.make_exec_role("bystander-role"),
                                 Handler="app.handler", Code={"ZipFile": make_zip({"app.py": ECHO_CREDS})})
        err = assert_client_error(self, "InvalidParameterValueException", lambda: self.lam.update_event_source_mapping(
            UUID=m["UUID"], FunctionName="bystander"))
        self.assertIn("ReceiveMessage", str(err))
        self.assertTrue(self.lam.get_event_source_mapping(UUID=m["UUID"])["FunctionArn"].endswith(":function:consumer"))
        self.lam.delete_event_source_mapping(UUID=m["UUID"])
        self.lam.delete_function(FunctionName="consumer")
        self.lam.delete_function(FunctionName="bystander")
        self.drop_role("bystander-role")
        sqs.delete_queue(QueueUrl=queue)
        self.drop_role("consumer-role")


if __name__ == "__main__":
    unittest.main()
