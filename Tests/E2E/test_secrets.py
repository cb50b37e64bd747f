"""Issue 22 (credentials): a Secrets Manager-compatible store in petreld, driven by
boto3 and the AWS CLI: versions and stages, deletion with a recovery window,
accounts, errors, and values sealed at rest."""

import base64
import json
import os
import unittest

from harness import DaemonTestCase, assert_client_error, parse_credentials


class Secrets(DaemonTestCase):
    @classmethod
    def ready(cls):
        cls.sm = cls.daemon.client("secretsmanager")
        cls.raw = cls.daemon.client("secretsmanager", validate=False)

    def test_versions_stages_and_deletion(self):
        out = self.sm.create_secret(Name="broker/rabbit", SecretString=json.dumps({"username": "u", "password": "p4ss-SEALED"}),
                                    Description="broker login", Tags=[{"Key": "team", "Value": "a"}])
        arn, v1 = out["ARN"], out["VersionId"]
        self.assertRegex(arn, r"^arn:aws:secretsmanager:us-east-1:000000000000:secret:broker/rabbit-[A-Za-z0-9]{6}$")
        got = self.sm.get_secret_value(SecretId="broker/rabbit")
        self.assertEqual((got["ARN"], got["VersionId"], got["VersionStages"]), (arn, v1, ["AWSCURRENT"]))
        self.assertEqual(json.loads(got["SecretString"])["password"], "p4ss-SEALED")
        # By ARN, and by the ARN without its random suffix.
        self.assertEqual(self.sm.get_secret_value(SecretId=arn)["VersionId"], v1)
        self.assertEqual(self.sm.get_secret_value(SecretId=arn[:-7])["VersionId"], v1)
        # A new version becomes current; the old one is previous; the same token twice is one version.
        token = "a" * 32
        v2 = self.sm.put_secret_value(SecretId=arn, SecretString="second", ClientRequestToken=token)["VersionId"]
        self.assertEqual(v2, token)
        self.sm.put_secret_value(SecretId=arn, SecretString="second", ClientRequestToken=token)
        assert_client_error(self, "ResourceExistsException", lambda: self.sm.put_secret_value(
            SecretId=arn, SecretString="other", ClientRequestToken=token))
        self.assertEqual(self.sm.get_secret_value(SecretId=arn)["SecretString"], "second")
        prev = self.sm.get_secret_value(SecretId=arn, VersionStage="AWSPREVIOUS")
        self.assertEqual(prev["VersionId"], v1)
        self.assertEqual(self.sm.get_secret_value(SecretId=arn, VersionId=v1)["VersionId"], v1)
        d = self.sm.describe_secret(SecretId=arn)
        self.assertEqual(d["VersionIdsToStages"], {v1: ["AWSPREVIOUS"], v2: ["AWSCURRENT"]})
        self.assertEqual((d["Description"], d["Tags"]), ("broker login", [{"Key": "team", "Value": "a"}]))
        # Binary values.
        b = self.sm.create_secret(Name="blob", SecretBinary=b"\x00\x01\x02")
        self.assertEqual(self.sm.get_secret_value(SecretId="blob")["SecretBinary"], b"\x00\x01\x02")
        names = [s["Name"] for s in self.sm.list_secrets()["SecretList"]]
        self.assertEqual(names, ["blob", "broker/rabbit"])
        page = self.sm.list_secrets(MaxResults=1)
        self.assertEqual(len(page["SecretList"]), 1)
        self.assertEqual([s["Name"] for s in self.sm.list_secrets(MaxResults=1, NextToken=page["NextToken"])["SecretList"]], ["broker/rabbit"])
        # Errors, in Secrets Manager's shape.
        assert_client_error(self, "ResourceExistsException", lambda: self.sm.create_secret(Name="blob", SecretString="x"))
        assert_client_error(self, "ResourceNotFoundException", lambda: self.sm.get_secret_value(SecretId="nope"))
        assert_client_error(self, "InvalidParameterException", lambda: self.raw.create_secret(Name="x", SecretString="a", SecretBinary=b"b"))
        assert_client_error(self, "InvalidParameterException", lambda: self.sm.create_secret(Name="big", SecretString="x" * 65_537))
        assert_client_error(self, "InvalidParameterException", lambda: self.sm.delete_secret(SecretId="blob", RecoveryWindowInDays=3))
        # Deletion with a recovery window: described, not readable, name held; forced: gone.
        out = self.sm.delete_secret(SecretId="blob", RecoveryWindowInDays=7)
        self.assertIn("DeletionDate", out)
        assert_client_error(self, "InvalidRequestException", lambda: self.sm.get_secret_value(SecretId="blob"))
        self.assertIn("DeletedDate", self.sm.describe_secret(SecretId="blob"))
        self.assertEqual([s["Name"] for s in self.sm.list_secrets()["SecretList"]], ["broker/rabbit"])
        self.assertEqual(len(self.sm.list_secrets(IncludePlannedDeletion=True)["SecretList"]), 2)
        assert_client_error(self, "ResourceExistsException", lambda: self.sm.create_secret(Name="blob", SecretString="x"))
        self.sm.delete_secret(SecretId=b["ARN"], ForceDeleteWithoutRecovery=True)
        assert_client_error(self, "ResourceNotFoundException", lambda: self.sm.describe_secret(SecretId="blob"))
        self.sm.create_secret(Name="blob", SecretString="again")
        self.sm.delete_secret(SecretId="blob", ForceDeleteWithoutRecovery=True)

        # Another account sees none of it.
        account = self.daemon.petreld("accounts", "create", "--name", "secrets-b").stdout.strip()
        other = self.daemon.client("secretsmanager", keys=parse_credentials(self.daemon.petreld("keys", "create", "--account", account).stdout))
        assert_client_error(self, "ResourceNotFoundException", lambda: other.get_secret_value(SecretId=arn))
        self.assertEqual(other.list_secrets()["SecretList"], [])

        # The AWS CLI; values are never in the audit trail nor in clear on disk.
        cli = json.loads(self.daemon.aws("secretsmanager", "get-secret-value", "--secret-id", "broker/rabbit").stdout)
        self.assertEqual(cli["SecretString"], "second")
        trail = self.daemon.petreld("audit", "--json").stdout
        self.assertIn("CreateSecret", trail)
        self.assertNotIn("p4ss-SEALED", trail)
        for root, _, files in os.walk(self.daemon.data):
            for f in files:
                with open(os.path.join(root, f), "rb") as fh:
                    self.assertNotIn(b"p4ss-SEALED", fh.read(), f)
        self.sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


if __name__ == "__main__":
    unittest.main()
