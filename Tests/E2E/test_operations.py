"""Issue 27 (operating Petrel; the parts done so far): petreld says its version and build
(`--version`, the API's Server header, `petrel_build_info`); the AWS tools reach it without
`--endpoint-url` (the "petrel" config profile petreld writes, and AWS_ENDPOINT_URL); the
daemon's own log as JSON lines, with request ids."""

import json
import os
import subprocess
import unittest
import urllib.error
import urllib.request

import boto3
import botocore.exceptions
from harness import PETRELD, ROLE, DaemonTestCase, make_zip, metric


class Operations(DaemonTestCase):
    daemon_env = {"PETREL_LOG_FORMAT": "json"}

    def test_version_build_header_and_metric(self):
        out = subprocess.run([PETRELD, "--version"], capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        self.assertRegex(out, r"^petreld (\d+\.\d+\.\d+) \((debug|release) build\)$")
        version = out.split()[1]
        build = out.split("(")[1].split()[0]
        with urllib.request.urlopen(self.daemon.endpoint + "/metrics") as r:
            self.assertEqual(r.headers["Server"], "petreld/" + version)
        # The invoke fast path answers with the same header.
        self.daemon.client().list_functions()
        req = urllib.request.Request(self.daemon.endpoint + "/2015-03-31/functions/nope/invocations", data=b"{}", method="POST")
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        self.assertEqual(e.exception.code, 403)
        self.assertEqual(e.exception.headers["Server"], "petreld/" + version)
        self.assertEqual(metric(self.daemon, "petrel_build_info", version=version, build=build), 1)

    def profile_env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_CONFIG_FILE=os.path.join(self.daemon.data, "aws-config"),
                   AWS_SHARED_CREDENTIALS_FILE=self.daemon.credentials_file, AWS_PAGER="")
        return env

    def test_the_aws_tools_without_endpoint_url(self):
        self.daemon.client().create_function(FunctionName="ops-profile", Runtime="python3.11", Role=ROLE, Handler="a.handler",
                                             Code={"ZipFile": make_zip({"a.py": "def handler(e, c):\n    return 1\n"})})
        with open(os.path.join(self.daemon.data, "aws-config")) as f:
            config = f.read()
        self.assertIn("[profile petrel]", config)
        self.assertIn("endpoint_url = %s" % self.daemon.endpoint, config)
        self.assertIn("region = us-east-1", config)
        # The AWS CLI with --profile petrel, and no endpoint or region given.
        r = subprocess.run(["aws", "lambda", "list-functions", "--profile", "petrel", "--output", "json"], env=self.profile_env(),
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ops-profile", [f["FunctionName"] for f in json.loads(r.stdout)["Functions"]])
        # `aws sts get-caller-identity`, the AWS tools' check of whose keys these are.
        r = subprocess.run(["aws", "sts", "get-caller-identity", "--profile", "petrel", "--output", "json"], env=self.profile_env(),
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout), {"UserId": "000000000000", "Account": "000000000000",
                                                "Arn": "arn:aws:iam::000000000000:root"})
        # Other STS actions are refused in STS's shape; a bad signature is refused before anything.
        sts = self.daemon.client("sts")
        with self.assertRaises(botocore.exceptions.ClientError) as cm:
            sts.get_federation_token(Name="someone")
        self.assertEqual(cm.exception.response["Error"]["Code"], "InvalidAction")
        self.assertIn("GetCallerIdentity, AssumeRole and GetSessionToken", cm.exception.response["Error"]["Message"])
        with self.assertRaises(botocore.exceptions.ClientError) as cm:
            self.daemon.client("sts", keys=(self.daemon.admin_keys()[0], "x" * 40)).get_caller_identity()
        self.assertEqual(cm.exception.response["ResponseMetadata"]["HTTPStatusCode"], 403)
        # boto3's Session(profile_name="petrel").
        old = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(self.profile_env())
            lam = boto3.Session(profile_name="petrel").client("lambda")
            self.assertEqual(lam.meta.endpoint_url, self.daemon.endpoint)
            self.assertIn("ops-profile", [f["FunctionName"] for f in lam.list_functions()["Functions"]])
        finally:
            os.environ.clear()
            os.environ.update(old)
        # AWS_ENDPOINT_URL with the default profile's credentials.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ENDPOINT_URL=self.daemon.endpoint, AWS_SHARED_CREDENTIALS_FILE=self.daemon.credentials_file,
                   AWS_CONFIG_FILE="/dev/null", AWS_DEFAULT_REGION="us-east-1", AWS_PAGER="")
        r = subprocess.run(["aws", "lambda", "get-function", "--function-name", "ops-profile", "--output", "json"], env=env,
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["Configuration"]["FunctionName"], "ops-profile")

    def test_json_log_lines_with_request_ids(self):
        lam = self.daemon.client()
        lam.list_functions()
        try:
            lam.get_function(FunctionName="not-here")
        except lam.exceptions.ResourceNotFoundException:
            pass
        lines = [line for line in self.daemon.read_log().splitlines() if line.strip()]
        self.assertGreater(len(lines), 5)
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                self.fail("not a JSON line: %r" % line)
        for r in records:
            self.assertTrue({"time", "level", "label", "message"} <= set(r), r)
        refused = [r for r in records if r.get("api.action") == "GetFunction" and r.get("error.type") == "ResourceNotFoundException"]
        self.assertEqual(len(refused), 1)
        self.assertRegex(refused[0]["request.id"], r"^[0-9a-f-]{36}$")
        self.assertTrue(any(r["message"] == "petreld is serving the Lambda API" and r.get("petreld.version") for r in records))


if __name__ == "__main__":
    unittest.main()
