"""Issue 19: published versions, aliases with weighted routing, layers, and an
update window that drops no request, through boto3 and the AWS CLI against a
real petreld."""

import base64
import json
import os
import signal
import threading
import time
import unittest

from harness import ROLE, Daemon, assert_client_error, log_events, log_tail, make_zip, metric, parse_credentials, payload_json

APP = '''
import os, json
MARK = "%s"
def handler(event, context):
    return {"mark": MARK, "env_version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
            "context_version": context.function_version, "arn": context.invoked_function_arn,
            "var": os.environ.get("VAR")}
'''

LAYER_APP = '''
import os, json, subprocess
def handler(event, context):
    import shared, only_a
    out = {"shared": shared.VALUE, "only_a": only_a.VALUE, "opt": sorted(os.listdir("/opt"))}
    try:
        open("/opt/python/new.txt", "w").write("x")
        out["opt_writable"] = True
    except OSError as e:
        out["opt_writable"] = False
    out["tool"] = subprocess.run(["tool"], capture_output=True, text=True).stdout.strip()
    return out
'''

NODE_APP = '''
exports.handler = async () => ({ shared: require("shared").value, fromA: require("only-a").value });
'''


class VersionsCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon().start()
        cls.lam = cls.daemon.client()
        cls.b_account = cls.daemon.petreld("accounts", "create", "--name", "layers-b").stdout.strip()
        cls.b = cls.daemon.client(keys=parse_credentials(cls.daemon.petreld("keys", "create", "--account", cls.b_account).stdout))

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop_and_check()

    def create(self, name, mark="v1", **kw):
        return self.lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                        Code={"ZipFile": make_zip({"app.py": APP % mark})}, **kw)

    def update_code(self, name, mark, **kw):
        return self.lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": APP % mark}), **kw)

    def call(self, name, qualifier=None, client=None):
        kw = {"Qualifier": qualifier} if qualifier else {}
        r = (client or self.lam).invoke(FunctionName=name, Payload=b"{}", **kw)
        self.assertNotIn("FunctionError", r, payload_json(r) if "FunctionError" in r else None)
        return payload_json(r), r["ExecutedVersion"]

    # -- versions ---------------------------------------------------------------------

    def test_published_versions_are_frozen(self):
        created = self.create("ver", Environment={"Variables": {"VAR": "one"}})
        v1 = self.lam.publish_version(FunctionName="ver", Description="first")
        self.assertEqual(v1["ResponseMetadata"]["HTTPStatusCode"], 201)
        self.assertEqual(v1["Version"], "1")
        self.assertTrue(v1["FunctionArn"].endswith(":function:ver:1"))
        self.assertEqual(v1["Description"], "first")
        self.assertEqual(v1["CodeSha256"], created["CodeSha256"])
        # Nothing changed: the same version again, no new number.
        self.assertEqual(self.lam.publish_version(FunctionName="ver")["Version"], "1")
        # $LATEST moves on; version 1 does not.
        self.update_code("ver", "v2")
        self.lam.update_function_configuration(FunctionName="ver", Environment={"Variables": {"VAR": "two"}})
        out, executed = self.call("ver", "1")
        self.assertEqual((out["mark"], out["var"], executed), ("v1", "one", "1"))
        self.assertEqual((out["env_version"], out["context_version"]), ("1", "1"))
        self.assertTrue(out["arn"].endswith(":function:ver:1"), out["arn"])
        out, executed = self.call("ver")
        self.assertEqual((out["mark"], out["var"], executed, out["context_version"]), ("v2", "two", "$LATEST", "$LATEST"))
        self.assertFalse(out["arn"].endswith(":1"))
        out, executed = self.call("ver:1")  # the qualifier inside the name
        self.assertEqual((out["mark"], executed), ("v1", "1"))
        full = "arn:aws:lambda:us-east-1:000000000000:function:ver:1"
        self.assertEqual(self.call(full)[1], "1")
        # GetFunction / GetFunctionConfiguration with a qualifier answer the frozen configuration.
        cfg = self.lam.get_function_configuration(FunctionName="ver", Qualifier="1")
        self.assertEqual((cfg["Version"], cfg["Environment"]["Variables"]["VAR"]), ("1", "one"))
        self.assertEqual(self.lam.get_function(FunctionName="ver:1")["Configuration"]["CodeSha256"], created["CodeSha256"])
        # A published version cannot be changed.
        assert_client_error(self, "InvalidParameterValueException",
                            lambda: self.lam.update_function_configuration(FunctionName="ver:1", Timeout=9), 400)
        assert_client_error(self, "InvalidParameterValueException",
                            lambda: self.update_code("ver:1", "v9"), 400)
        # Stale preconditions: 412, and no version number is used up.
        latest = self.lam.get_function_configuration(FunctionName="ver")
        assert_client_error(self, "PreconditionFailedException",
                            lambda: self.lam.publish_version(FunctionName="ver", RevisionId="stale"), 412)
        assert_client_error(self, "PreconditionFailedException",
                            lambda: self.lam.publish_version(FunctionName="ver", CodeSha256=created["CodeSha256"]), 412)
        assert_client_error(self, "PreconditionFailedException",
                            lambda: self.lam.update_function_configuration(FunctionName="ver", Timeout=5, RevisionId="stale"), 412)
        v2 = self.lam.publish_version(FunctionName="ver", RevisionId=latest["RevisionId"], CodeSha256=latest["CodeSha256"])
        self.assertEqual(v2["Version"], "2")
        # Every write changes the RevisionId.
        after = self.lam.update_function_configuration(FunctionName="ver", Timeout=7)
        self.assertNotEqual(after["RevisionId"], latest["RevisionId"])
        # Listing: $LATEST first, then the versions, paged.
        listed = self.lam.list_versions_by_function(FunctionName="ver")["Versions"]
        self.assertEqual([v["Version"] for v in listed], ["$LATEST", "1", "2"])
        self.assertTrue(listed[0]["FunctionArn"].endswith(":ver:$LATEST"))
        pages = list(self.lam.get_paginator("list_versions_by_function").paginate(
            FunctionName="ver", PaginationConfig={"PageSize": 1}))
        self.assertEqual([v["Version"] for p in pages for v in p["Versions"]], ["$LATEST", "1", "2"])
        every = self.lam.list_functions(FunctionVersion="ALL")["Functions"]
        self.assertEqual([f["Version"] for f in every if f["FunctionName"] == "ver"], ["$LATEST", "1", "2"])
        self.assertNotIn("1", [f["Version"] for f in self.lam.list_functions()["Functions"]])
        # Deleting a version; its number is not given again.
        self.lam.delete_function(FunctionName="ver", Qualifier="2")
        assert_client_error(self, "ResourceNotFoundException", lambda: self.call("ver", "2"), 404)
        self.update_code("ver", "v3")
        self.assertEqual(self.lam.publish_version(FunctionName="ver")["Version"], "3")
        assert_client_error(self, "ResourceNotFoundException", lambda: self.call("ver", "9"), 404)
        assert_client_error(self, "InvalidParameterValueException",
                            lambda: self.lam.invoke(FunctionName="ver:1", Qualifier="3"), 400)
        # CreateFunction and UpdateFunctionCode with Publish.
        p = self.create("ver-pub", Publish=True)
        self.assertEqual(p["Version"], "1")
        self.assertEqual(self.update_code("ver-pub", "v2", Publish=True)["Version"], "2")
        self.assertEqual(self.call("ver-pub", "1")[0]["mark"], "v1")

    # -- aliases ----------------------------------------------------------------------

    def test_aliases_route_and_split_traffic(self):
        self.create("ali")
        self.lam.publish_version(FunctionName="ali")
        self.update_code("ali", "v2")
        self.lam.publish_version(FunctionName="ali")
        a = self.lam.create_alias(FunctionName="ali", Name="live", FunctionVersion="1", Description="prod")
        self.assertEqual(a["ResponseMetadata"]["HTTPStatusCode"], 201)
        self.assertTrue(a["AliasArn"].endswith(":function:ali:live"))
        out, executed = self.call("ali", "live")
        self.assertEqual((out["mark"], executed, out["context_version"]), ("v1", "1", "1"))
        self.assertTrue(out["arn"].endswith(":function:ali:live"), out["arn"])
        self.assertEqual(self.call("ali:live")[1], "1")
        # Lambda's checks.
        assert_client_error(self, "ResourceConflictException",
                            lambda: self.lam.create_alias(FunctionName="ali", Name="live", FunctionVersion="2"), 409)
        assert_client_error(self, "ResourceNotFoundException",
                            lambda: self.lam.create_alias(FunctionName="ali", Name="ghost", FunctionVersion="7"), 404)
        assert_client_error(self, "ValidationException",
                            lambda: self.lam.create_alias(FunctionName="ali", Name="123", FunctionVersion="1"), 400)
        assert_client_error(self, "InvalidParameterValueException", lambda: self.lam.create_alias(
            FunctionName="ali", Name="bad", FunctionVersion="$LATEST",
            RoutingConfig={"AdditionalVersionWeights": {"1": 0.5}}), 400)
        assert_client_error(self, "InvalidParameterValueException", lambda: self.lam.create_alias(
            FunctionName="ali", Name="bad", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 0.1, "3": 0.1}}))
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.get_alias(FunctionName="ali", Name="bad"), 404)
        assert_client_error(self, "PreconditionFailedException", lambda: self.lam.update_alias(
            FunctionName="ali", Name="live", FunctionVersion="2", RevisionId="stale"), 412)
        self.assertEqual(self.lam.get_alias(FunctionName="ali", Name="live")["FunctionVersion"], "1")
        # A canary: 30% to version 2.
        u = self.lam.update_alias(FunctionName="ali", Name="live", RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}})
        self.assertEqual(u["RoutingConfig"]["AdditionalVersionWeights"], {"2": 0.3})
        self.assertNotEqual(u["RevisionId"], a["RevisionId"])
        n, counts = 400, {"1": 0, "2": 0}
        for _ in range(n):
            out, executed = self.call("ali", "live")
            self.assertEqual(out["mark"], {"1": "v1", "2": "v2"}[executed])
            counts[executed] += 1
        # Binomial(400, 0.3): mean 120, sd 9.2; 5 sd either side.
        self.assertTrue(74 <= counts["2"] <= 166, counts)
        # A version's instances serve whatever routes to it: the alias warmed both versions, so
        # neither a call by number nor one through the alias starts another instance.
        for q in ("1", "2", "live"):
            r = self.lam.invoke(FunctionName="ali", Qualifier=q, Payload=b"{}", LogType="Tail")
            self.assertNotIn("Init Duration", log_tail(r), q)
        listed = self.lam.list_aliases(FunctionName="ali")["Aliases"]
        self.assertEqual([x["Name"] for x in listed], ["live"])
        self.assertEqual([x["Name"] for x in self.lam.list_aliases(FunctionName="ali", FunctionVersion="2")["Aliases"]], ["live"])
        self.assertEqual(self.lam.list_aliases(FunctionName="ali", FunctionVersion="$LATEST")["Aliases"], [])
        # A version an alias routes to cannot go; the alias first.
        assert_client_error(self, "ResourceConflictException", lambda: self.lam.delete_function(FunctionName="ali", Qualifier="2"), 409)
        assert_client_error(self, "ResourceConflictException", lambda: self.lam.delete_function(FunctionName="ali", Qualifier="1"), 409)
        self.lam.update_alias(FunctionName="ali", Name="live", FunctionVersion="2", RoutingConfig={"AdditionalVersionWeights": {}})
        self.lam.delete_function(FunctionName="ali", Qualifier="1")
        self.assertEqual(self.call("ali", "live")[1], "2")
        self.lam.delete_alias(FunctionName="ali", Name="live")
        assert_client_error(self, "ResourceNotFoundException", lambda: self.call("ali", "live"), 404)
        # An alias may name $LATEST.
        self.lam.create_alias(FunctionName="ali", Name="edge", FunctionVersion="$LATEST")
        self.assertEqual(self.call("ali", "edge")[1], "$LATEST")
        # Deleting the function takes every version and alias with it.
        self.lam.delete_function(FunctionName="ali")
        self.create("ali", mark="fresh")
        self.assertEqual([v["Version"] for v in self.lam.list_versions_by_function(FunctionName="ali")["Versions"]], ["$LATEST"])
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.get_alias(FunctionName="ali", Name="edge"), 404)
        self.assertEqual(self.lam.publish_version(FunctionName="ali")["Version"], "1")

    def test_permissions_and_async_events_per_qualifier(self):
        self.create("qual")
        self.lam.publish_version(FunctionName="qual")
        self.lam.create_alias(FunctionName="qual", Name="shared", FunctionVersion="1")
        # A grant on the alias lets B invoke the alias, and nothing else.
        arn = "arn:aws:lambda:us-east-1:000000000000:function:qual"
        self.lam.add_permission(FunctionName="qual", Qualifier="shared", StatementId="b", Action="lambda:InvokeFunction",
                                Principal=self.b_account)
        policy = json.loads(self.lam.get_policy(FunctionName="qual", Qualifier="shared")["Policy"])
        self.assertEqual(policy["Statement"][0]["Resource"], arn + ":shared")
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.get_policy(FunctionName="qual"), 404)
        self.assertEqual(self.call(arn + ":shared", client=self.b)[1], "1")
        assert_client_error(self, "AccessDeniedException", lambda: self.b.invoke(FunctionName=arn, Payload=b"{}"), 403)
        assert_client_error(self, "AccessDeniedException", lambda: self.b.invoke(FunctionName=arn + ":1", Payload=b"{}"), 403)
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.add_permission(
            FunctionName="qual", Qualifier="nope", StatementId="x", Action="lambda:InvokeFunction", Principal="*"), 404)
        # B manages nothing of A's function, through any qualifier.
        for call in (lambda: self.b.list_versions_by_function(FunctionName=arn),
                     lambda: self.b.get_alias(FunctionName=arn, Name="shared"),
                     lambda: self.b.publish_version(FunctionName=arn),
                     lambda: self.b.delete_function(FunctionName=arn, Qualifier="1"),
                     lambda: self.b.get_policy(FunctionName=arn, Qualifier="shared"),
                     lambda: self.b.update_alias(FunctionName=arn, Name="shared", FunctionVersion="$LATEST")):
            assert_client_error(self, "AccessDeniedException", call, 403)
        self.assertEqual(self.lam.get_alias(FunctionName="qual", Name="shared")["FunctionVersion"], "1")
        # The invocations through the alias are counted under it.
        self.assertGreaterEqual(metric(self.daemon, "petrel_invocations_total", function="qual", version="1", alias="shared"), 1)
        self.lam.remove_permission(FunctionName="qual", Qualifier="shared", StatementId="b")
        assert_client_error(self, "AccessDeniedException", lambda: self.b.invoke(FunctionName=arn + ":shared", Payload=b"{}"), 403)
        # An event sent to the alias runs the alias's version, and its record says so.
        self.lam.put_function_event_invoke_config(FunctionName="qual", Qualifier="shared", MaximumRetryAttempts=0,
                                                  DestinationConfig={"OnSuccess": {"Destination": arn + "-sink"}})
        self.lam.create_function(FunctionName="qual-sink", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                 Code={"ZipFile": make_zip({"app.py": "def handler(e, c):\n    print('RECORD ' + __import__('json').dumps(e))\n"})})
        self.lam.put_function_event_invoke_config(FunctionName="qual-sink", MaximumRetryAttempts=0)
        listed = self.lam.list_function_event_invoke_configs(FunctionName="qual")["FunctionEventInvokeConfigs"]
        self.assertEqual([c["FunctionArn"] for c in listed], [arn + ":shared"])
        self.update_code("qual", "v2")  # $LATEST differs from version 1 now
        r = self.lam.invoke(FunctionName="qual", Qualifier="shared", InvocationType="Event", Payload=b'{"k": 1}')
        self.assertEqual(r["StatusCode"], 202)
        deadline = time.time() + 30
        records = []
        while time.time() < deadline and not records:
            try:
                records = [json.loads(m["message"].split("RECORD ", 1)[1]) for m in log_events(self.daemon, "/aws/lambda/qual-sink", "RECORD")]
            except self.lam.exceptions.ResourceNotFoundException:
                pass  # the sink has not run yet: its log group is made by its first line
            except Exception as e:  # noqa: BLE001 - the Logs client's own class
                if "ResourceNotFoundException" not in repr(e):
                    raise
            time.sleep(0.2)
        self.assertTrue(records, "the success record never reached the destination")
        rec = records[0]
        self.assertEqual(rec["requestContext"]["functionArn"], arn + ":shared")
        self.assertEqual(rec["responseContext"]["executedVersion"], "1")
        self.assertEqual(rec["responsePayload"]["mark"], "v1")

    # -- layers -----------------------------------------------------------------------

    def publish_layer(self, name, files, client=None, **kw):
        return (client or self.lam).publish_layer_version(LayerName=name, Content={"ZipFile": make_zip(files)}, **kw)

    def test_layers_merge_at_opt_in_order(self):
        a = self.publish_layer("lib-a", {"python/shared.py": "VALUE = 'a'\n", "python/only_a.py": "VALUE = 'only a'\n",
                                         "bin/tool": ("#!/bin/sh\necho tool-from-a\n", 0o755),
                                         "nodejs/node_modules/shared/index.js": "exports.value = 'a';\n",
                                         "nodejs/node_modules/only-a/index.js": "exports.value = 'only a';\n"},
                               CompatibleRuntimes=["python3.11", "nodejs20.x"], Description="first", LicenseInfo="MIT")
        self.assertEqual(a["ResponseMetadata"]["HTTPStatusCode"], 201)
        self.assertEqual(a["Version"], 1)
        self.assertTrue(a["LayerVersionArn"].endswith(":layer:lib-a:1"))
        b = self.publish_layer("lib-b", {"python/shared.py": "VALUE = 'b'\n", "nodejs/node_modules/shared/index.js": "exports.value = 'b';\n"})
        f = self.lam.create_function(FunctionName="lay", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                     Code={"ZipFile": make_zip({"app.py": LAYER_APP})},
                                     Layers=[a["LayerVersionArn"], b["LayerVersionArn"]])
        self.assertEqual([x["Arn"] for x in f["Layers"]], [a["LayerVersionArn"], b["LayerVersionArn"]])
        self.assertEqual(f["Layers"][0]["CodeSize"], a["Content"]["CodeSize"])
        out, _ = self.call("lay")
        self.assertEqual((out["shared"], out["only_a"]), ("b", "only a"), out)  # the later layer wins
        self.assertIn("python", out["opt"])
        self.assertFalse(out["opt_writable"], "/opt must be read-only")
        self.assertEqual(out["tool"], "tool-from-a")
        # Reversed order, reversed winner.
        self.lam.update_function_configuration(FunctionName="lay", Layers=[b["LayerVersionArn"], a["LayerVersionArn"]])
        self.assertEqual(self.call("lay")[0]["shared"], "a")
        node = self.lam.create_function(FunctionName="lay-node", Runtime="nodejs20.x", Role=ROLE, Handler="index.handler",
                                        Code={"ZipFile": make_zip({"index.js": NODE_APP})},
                                        Layers=[a["LayerVersionArn"], b["LayerVersionArn"]])
        self.assertEqual(node["Layers"][1]["Arn"], b["LayerVersionArn"])
        self.assertEqual(self.call("lay-node")[0], {"shared": "b", "fromA": "only a"})
        # Reading them back.
        got = self.lam.get_layer_version(LayerName="lib-a", VersionNumber=1)
        self.assertEqual((got["Description"], got["LicenseInfo"], got["CompatibleRuntimes"]), ("first", "MIT", ["python3.11", "nodejs20.x"]))
        self.assertEqual(got["Content"]["CodeSha256"], a["Content"]["CodeSha256"])
        self.assertEqual(self.lam.get_layer_version_by_arn(Arn=a["LayerVersionArn"])["Version"], 1)
        names = [l["LayerName"] for l in self.lam.list_layers()["Layers"]]
        self.assertIn("lib-a", names)
        self.assertEqual([l["LayerName"] for l in self.lam.list_layers(CompatibleRuntime="nodejs20.x")["Layers"]], ["lib-a"])
        # Refused layers use up no number: an unsafe ZIP, an unknown runtime, a layer name of another account.
        assert_client_error(self, "InvalidParameterValueException",
                            lambda: self.publish_layer("lib-a", {"../escape.py": "X = 1\n"}), 400)
        assert_client_error(self, "InvalidParameterValueException",
                            lambda: self.publish_layer("lib-a", {"python/x.py": "X = 1\n"}, CompatibleRuntimes=["cobol85"]), 400)
        assert_client_error(self, "AccessDeniedException", lambda: self.publish_layer(
            "arn:aws:lambda:us-east-1:%s:layer:lib-a" % self.b_account, {"python/x.py": "X = 1\n"}), 403)
        a2 = self.publish_layer("lib-a", {"python/shared.py": "VALUE = 'a2'\n"})
        self.assertEqual(a2["Version"], 2)
        self.assertEqual([v["Version"] for v in self.lam.list_layer_versions(LayerName="lib-a")["LayerVersions"]], [2, 1])
        # Refusals change nothing.
        before = self.lam.get_function_configuration(FunctionName="lay")
        assert_client_error(self, "InvalidParameterValueException", lambda: self.lam.update_function_configuration(
            FunctionName="lay", Layers=[a["LayerVersionArn"], a2["LayerVersionArn"]]), 400)
        assert_client_error(self, "InvalidParameterValueException", lambda: self.lam.update_function_configuration(
            FunctionName="lay", Layers=[b["LayerVersionArn"]] * 6), 400)
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.update_function_configuration(
            FunctionName="lay", Layers=["arn:aws:lambda:us-east-1:000000000000:layer:lib-a:9"]), 404)
        self.assertEqual(self.lam.get_function_configuration(FunctionName="lay")["RevisionId"], before["RevisionId"])
        # A deleted version stays for the functions that use it; nothing new may name it.
        self.lam.delete_layer_version(LayerName="lib-a", VersionNumber=1)
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.get_layer_version(LayerName="lib-a", VersionNumber=1), 404)
        self.lam.update_function_configuration(FunctionName="lay", Environment={"Variables": {"COLD": "1"}})  # a new instance
        self.assertEqual(self.call("lay")[0]["only_a"], "only a")
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.create_function(
            FunctionName="lay-late", Runtime="python3.11", Role=ROLE, Handler="app.handler",
            Code={"ZipFile": make_zip({"app.py": LAYER_APP})}, Layers=[a["LayerVersionArn"]]), 404)
        # Published versions keep their layers too.
        self.lam.publish_version(FunctionName="lay")
        self.lam.update_function_configuration(FunctionName="lay", Layers=[])
        self.assertEqual(self.call("lay", "1")[0]["only_a"], "only a")
        self.assertNotIn("Layers", self.lam.get_function_configuration(FunctionName="lay"))

    def test_layers_are_shared_across_accounts_only_when_granted(self):
        own = self.publish_layer("team", {"python/shared.py": "VALUE = 'team'\n", "python/only_a.py": "VALUE = 'x'\n",
                                          "bin/tool": ("#!/bin/sh\necho team\n", 0o755)})
        arn = own["LayerVersionArn"]
        make = lambda name: self.b.create_function(
            FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::%s:role/r" % self.b_account, Handler="app.handler",
            Code={"ZipFile": make_zip({"app.py": LAYER_APP})}, Layers=[arn])
        assert_client_error(self, "AccessDeniedException", lambda: make("b-fn"), 403)
        assert_client_error(self, "AccessDeniedException", lambda: self.b.get_layer_version_by_arn(Arn=arn), 403)
        assert_client_error(self, "ResourceNotFoundException", lambda: self.b.get_function(FunctionName="b-fn"), 404)
        g = self.lam.add_layer_version_permission(LayerName="team", VersionNumber=1, StatementId="b",
                                                  Action="lambda:GetLayerVersion", Principal=self.b_account)
        self.assertIn(self.b_account, json.loads(g["Statement"])["Principal"]["AWS"])
        assert_client_error(self, "ResourceConflictException", lambda: self.lam.add_layer_version_permission(
            LayerName="team", VersionNumber=1, StatementId="b", Action="lambda:GetLayerVersion", Principal="*"), 409)
        assert_client_error(self, "ValidationException", lambda: self.lam.add_layer_version_permission(
            LayerName="team", VersionNumber=1, StatementId="c", Action="lambda:InvokeFunction", Principal="*"), 400)
        pol = json.loads(self.lam.get_layer_version_policy(LayerName="team", VersionNumber=1)["Policy"])
        self.assertEqual([s["Sid"] for s in pol["Statement"]], ["b"])
        make("b-fn")
        self.assertEqual(self.call("b-fn", client=self.b)[0]["shared"], "team")
        self.assertEqual(self.b.get_layer_version_by_arn(Arn=arn)["Version"], 1)
        # B cannot manage A's layer.
        assert_client_error(self, "AccessDeniedException", lambda: self.b.delete_layer_version(
            LayerName=arn.rsplit(":", 1)[0], VersionNumber=1), 403)
        self.lam.remove_layer_version_permission(LayerName="team", VersionNumber=1, StatementId="b")
        assert_client_error(self, "AccessDeniedException", lambda: make("b-fn2"), 403)
        # One blob however many functions use the layer: the store holds each digest once.
        self.lam.create_function(FunctionName="team-1", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                 Code={"ZipFile": make_zip({"app.py": LAYER_APP})}, Layers=[arn])
        digest = base64.b64decode(own["Content"]["CodeSha256"]).hex()
        blobs = [n for n in os.listdir(os.path.join(self.daemon.data, "code")) if n.startswith(digest)]
        self.assertEqual(blobs, [digest + ".zip.enc"])

    def test_aws_cli_drives_versions_aliases_and_layers(self):
        self.create("cli")
        v = json.loads(self.daemon.aws("lambda", "publish-version", "--function-name", "cli").stdout)
        self.assertEqual(v["Version"], "1")
        a = json.loads(self.daemon.aws("lambda", "create-alias", "--function-name", "cli", "--name", "prod",
                                       "--function-version", "1").stdout)
        self.assertTrue(a["AliasArn"].endswith(":cli:prod"))
        zp = os.path.join(self.daemon.root, "layer.zip")
        with open(zp, "wb") as f:
            f.write(make_zip({"python/x.py": "X = 1\n"}))
        l = json.loads(self.daemon.aws("lambda", "publish-layer-version", "--layer-name", "cli-layer",
                                       "--zip-file", "fileb://" + zp).stdout)
        self.assertEqual(l["Version"], 1)
        listed = json.loads(self.daemon.aws("lambda", "list-aliases", "--function-name", "cli").stdout)
        self.assertEqual([x["Name"] for x in listed["Aliases"]], ["prod"])
        out = os.path.join(self.daemon.root, "out.json")
        r = json.loads(self.daemon.aws("lambda", "invoke", "--function-name", "cli", "--qualifier", "prod", out).stdout)
        self.assertEqual(r["ExecutedVersion"], "1")


class UpdateWindowTest(unittest.TestCase):
    """Under a steady load, code and configuration updates fail no request."""

    def test_updates_under_load_drop_nothing(self):
        with Daemon().started() as daemon:
            lam = daemon.client()
            lam.create_function(FunctionName="busy", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": APP % "m0"})})
            stop = threading.Event()
            seen, errors, count = set(), [], [0]
            lock = threading.Lock()

            def load():
                c = daemon.client()
                while not stop.is_set():
                    try:
                        r = c.invoke(FunctionName="busy", Payload=b"{}")
                        body = payload_json(r)
                        with lock:
                            count[0] += 1
                            if "FunctionError" in r:
                                errors.append(body)
                            else:
                                seen.add(body["mark"])
                    except Exception as e:  # noqa: BLE001 - every failure is counted
                        with lock:
                            errors.append(repr(e))

            threads = [threading.Thread(target=load) for _ in range(4)]
            [t.start() for t in threads]
            try:
                time.sleep(1.0)
                for i in range(1, 4):
                    lam.update_function_code(FunctionName="busy", ZipFile=make_zip({"app.py": APP % ("m%d" % i)}))
                    time.sleep(0.7)
                    lam.update_function_configuration(FunctionName="busy", Environment={"Variables": {"VAR": str(i)}})
                    time.sleep(0.7)
            finally:
                stop.set()
                [t.join(60) for t in threads]
            self.assertEqual(errors, [], "requests failed during the updates")
            # No instance was thrown away as broken: an invocation that read the record just
            # before an update runs the newer one instead of retiring its instances as stale.
            self.assertIn(metric(daemon, "petrel_cold_starts_total", function="busy", reason="after_crash"), (None, 0.0))
            self.assertGreater(count[0], 100, "the load was too light to mean anything")
            self.assertIn("m3", seen)
            self.assertEqual(payload_json(lam.invoke(FunctionName="busy", Payload=b"{}"))["mark"], "m3")


class RestartTest(unittest.TestCase):
    """Versions, aliases and layers survive SIGTERM and kill -9."""

    def test_everything_survives_restarts(self):
        daemon = Daemon()
        with daemon.started():
            lam = daemon.client()
            layer = lam.publish_layer_version(LayerName="keep", Content={"ZipFile": make_zip({"python/shared.py": "VALUE = 'kept'\n"})})
            lam.create_function(FunctionName="keep", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": "import shared\ndef handler(e, c):\n    return shared.VALUE + ' ' + c.function_version\n"})},
                                Layers=[layer["LayerVersionArn"]])
            lam.publish_version(FunctionName="keep")
            lam.update_function_code(FunctionName="keep", ZipFile=make_zip({"app.py": "def handler(e, c):\n    return 'latest'\n"}))
            lam.create_alias(FunctionName="keep", Name="stable", FunctionVersion="1")
            # Code a change left unused stays a while (an invocation that read the old record may
            # still start it), and is swept at the next start.
            gone = lam.create_function(FunctionName="gone", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                       Code={"ZipFile": make_zip({"app.py": APP % "gone"})})
            lam.delete_function(FunctionName="gone")
            blob = os.path.join(daemon.data, "code", base64.b64decode(gone["CodeSha256"]).hex() + ".zip.enc")
            self.assertTrue(os.path.exists(blob))
            for number, sig in (("2", signal.SIGTERM), ("3", signal.SIGKILL)):
                daemon.stop(sig)
                daemon.start()
                lam = daemon.client()
                r = lam.invoke(FunctionName="keep", Qualifier="stable", Payload=b"{}")
                self.assertEqual((payload_json(r), r["ExecutedVersion"]), ("kept 1", "1"))
                self.assertEqual(payload_json(lam.invoke(FunctionName="keep", Payload=b"{}")), "latest")
                self.assertEqual([v["Version"] for v in lam.list_versions_by_function(FunctionName="keep")["Versions"]], ["$LATEST", "1"])
                self.assertEqual(lam.get_layer_version(LayerName="keep", VersionNumber=1)["Version"], 1)
                self.assertFalse(os.path.exists(blob), "unused code is swept at start")
                # Numbers are never given twice, even across restarts.
                self.assertEqual(lam.publish_version(FunctionName="keep")["Version"], number)
                lam.delete_function(FunctionName="keep", Qualifier=number)


if __name__ == "__main__":
    unittest.main()
