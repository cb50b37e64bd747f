"""Issue 20 (first part): function URLs. The configuration through boto3 and the AWS
CLI; the URLs themselves through plain HTTP clients (curl, http.client), with the
payload format 2.0 event and response, both auth types, CORS, and the error answers."""

import base64
import http.client
import json
import os
import subprocess
import time
import unittest
import urllib.parse

from harness import ROLE, Daemon, assert_client_error, make_zip, metric, parse_credentials, signed

APP = '''
import base64, json, os, time
def handler(event, context):
    path = event["rawPath"]
    if path.startswith("/event"):
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}
    if path == "/plain":
        return {"hello": "world", "version": context.function_version}
    if path == "/string":
        return "just text"
    if path == "/cookies":
        return {"statusCode": 201, "cookies": ["a=1; Path=/", "b=2"], "headers": {"x-one": "1", "access-control-allow-origin": "https://evil.example"},
                "multiValueHeaders": {"x-many": ["a", "b"]}, "body": "made"}
    if path == "/binary":
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
    if path == "/fail":
        raise RuntimeError("boom")
    if path == "/bad":
        return {"statusCode": "teapot"}
    if path == "/size":
        return {"statusCode": 200, "body": str(len(base64.b64decode(event["body"]) if event.get("isBase64Encoded") else event.get("body", "")))}
    return {"statusCode": 404, "body": "no route " + path}
'''


def request(url, method="GET", body=b"", headers=None):
    """A plain HTTP request: (status, headers as a list of pairs, body)."""
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        c.request(method, u.path + ("?" + u.query if u.query else ""), body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        c.close()


def streamed(lam, **kw):
    """InvokeWithResponseStream, read as it arrives: (chunks, when the first came, the
    InvokeComplete event, how long it all took), times in seconds from the call."""
    started = time.monotonic()
    r = lam.invoke_with_response_stream(**kw)
    chunks, first_at, complete = [], None, None
    for event in r["EventStream"]:
        if "PayloadChunk" in event:
            chunks.append(event["PayloadChunk"]["Payload"])
            first_at = first_at or time.monotonic() - started
        if "InvokeComplete" in event:
            complete = event["InvokeComplete"]
    return chunks, first_at, complete, time.monotonic() - started


def header(headers, name):
    values = [v for k, v in headers if k.lower() == name.lower()]
    return values[0] if len(values) == 1 else (values or None)


class URLCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon().start()
        cls.lam = cls.daemon.client()
        cls.b_account = cls.daemon.petreld("accounts", "create", "--name", "urls-b").stdout.strip()
        cls.b_keys = parse_credentials(cls.daemon.petreld("keys", "create", "--account", cls.b_account).stdout)
        cls.b = cls.daemon.client(keys=cls.b_keys)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop_and_check()

    def create(self, name, mark="v1"):
        self.lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                 Code={"ZipFile": make_zip({"app.py": APP.replace("MARK", mark)})})

    def public(self, name, qualifier=None, **kw):
        """A NONE URL with the two statements Lambda asks for."""
        q = {"Qualifier": qualifier} if qualifier else {}
        url = self.lam.create_function_url_config(FunctionName=name, AuthType="NONE", **q, **kw)["FunctionUrl"]
        self.lam.add_permission(FunctionName=name, StatementId="url", Action="lambda:InvokeFunctionUrl", Principal="*",
                                FunctionUrlAuthType="NONE", **q)
        self.lam.add_permission(FunctionName=name, StatementId="url-invoke", Action="lambda:InvokeFunction", Principal="*",
                                InvokedViaFunctionUrl=True, **q)
        return url

    def test_configuration_calls(self):
        self.create("cfg")
        r = self.lam.create_function_url_config(FunctionName="cfg", AuthType="AWS_IAM")
        self.assertEqual(r["ResponseMetadata"]["HTTPStatusCode"], 201)
        url = r["FunctionUrl"]
        self.assertTrue(url.startswith(self.daemon.url_endpoint + "/") and url.endswith("/"), url)
        url_id = url.rstrip("/").rsplit("/", 1)[1]
        self.assertRegex(url_id, r"^[a-z2-7]{32}$")
        self.assertEqual((r["AuthType"], r["InvokeMode"]), ("AWS_IAM", "BUFFERED"))
        self.assertTrue(r["FunctionArn"].endswith(":function:cfg"))
        assert_client_error(self, "ResourceConflictException",
                            lambda: self.lam.create_function_url_config(FunctionName="cfg", AuthType="NONE"), 409)
        got = self.lam.get_function_url_config(FunctionName="cfg")
        self.assertEqual(got["FunctionUrl"], url)
        u = self.lam.update_function_url_config(FunctionName="cfg", AuthType="NONE", Cors={"AllowOrigins": ["*"], "MaxAge": 60})
        self.assertEqual((u["AuthType"], u["Cors"]["MaxAge"], u["FunctionUrl"]), ("NONE", 60, url))
        self.assertEqual([c["FunctionUrl"] for c in self.lam.list_function_url_configs(FunctionName="cfg")["FunctionUrlConfigs"]], [url])
        # Refused, and nothing changed.
        assert_client_error(self, "InvalidParameterValueException", lambda: self.lam.create_function_url_config(
            FunctionName="cfg", AuthType="NONE", Qualifier="1"), 400)
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.create_function_url_config(
            FunctionName="cfg", AuthType="NONE", Qualifier="nope"), 404)
        assert_client_error(self, "ValidationException", lambda: self.lam.update_function_url_config(
            FunctionName="cfg", Cors={"MaxAge": 999999}), 400)
        assert_client_error(self, "ValidationException", lambda: self.lam.update_function_url_config(
            FunctionName="cfg", InvokeMode="SOMETIMES"), 400)
        self.assertEqual(self.lam.get_function_url_config(FunctionName="cfg")["Cors"]["MaxAge"], 60)
        # The AWS CLI.
        cli = json.loads(self.daemon.aws("lambda", "get-function-url-config", "--function-name", "cfg").stdout)
        self.assertEqual(cli["FunctionUrl"], url)
        self.lam.delete_function_url_config(FunctionName="cfg")
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.get_function_url_config(FunctionName="cfg"), 404)
        self.assertEqual(request(url + "plain")[0], 403)
        # A new URL gets a new id, never the old one.
        again = self.lam.create_function_url_config(FunctionName="cfg", AuthType="NONE")["FunctionUrl"]
        self.assertNotEqual(again, url)

    def test_event_and_response(self):
        self.create("web")
        url = self.public("web")
        # curl, as a user would.
        out = subprocess.run(["curl", "-s", "-i", url + "plain"], capture_output=True, text=True, timeout=60)
        self.assertIn("200", out.stdout.splitlines()[0])
        self.assertIn('{"hello": "world", "version": "$LATEST"}', out.stdout)
        status, headers, body = request(url + "event/deep%20er?a=1&a=2&b=x%20y", headers={
            "Cookie": "c1=v1; c2=v2", "X-Custom": "yes", "User-Agent": "petrel-test"})
        self.assertEqual(status, 200, body)
        e = json.loads(body)
        self.assertEqual((e["version"], e["routeKey"], e["rawPath"]), ("2.0", "$default", "/event/deep%20er"))
        self.assertEqual(e["rawQueryString"], "a=1&a=2&b=x%20y")
        self.assertEqual(e["queryStringParameters"], {"a": "1,2", "b": "x y"})
        self.assertEqual(e["cookies"], ["c1=v1", "c2=v2"])
        self.assertEqual(e["headers"]["x-custom"], "yes")
        self.assertNotIn("cookie", e["headers"])
        self.assertEqual(e["headers"]["host"], urllib.parse.urlsplit(url).netloc)
        self.assertEqual((e["headers"]["x-forwarded-proto"], e["headers"]["x-forwarded-for"]), ("http", "127.0.0.1"))
        ctx = e["requestContext"]
        self.assertEqual((ctx["http"]["method"], ctx["http"]["path"], ctx["http"]["sourceIp"], ctx["http"]["userAgent"]),
                         ("GET", "/event/deep%20er", "127.0.0.1", "petrel-test"))
        self.assertEqual((ctx["accountId"], ctx["stage"], ctx["apiId"]), ("anonymous", "$default", url.rstrip("/").rsplit("/", 1)[1]))
        self.assertEqual(ctx["requestId"], header(headers, "x-amzn-RequestId"))
        self.assertFalse(e["isBase64Encoded"])
        self.assertNotIn("body", e)
        # Text bodies as text, others base64.
        _, _, body = request(url + "event", "POST", b'{"k": 1}', {"Content-Type": "application/json"})
        e = json.loads(body)
        self.assertEqual((e["body"], e["isBase64Encoded"]), ('{"k": 1}', False))
        blob = bytes(range(256)) * 4
        _, _, body = request(url + "event", "POST", blob, {"Content-Type": "application/octet-stream"})
        e = json.loads(body)
        self.assertTrue(e["isBase64Encoded"])
        self.assertEqual(base64.b64decode(e["body"]), blob)
        # Responses: inferred, with cookies and repeated headers, binary.
        status, headers, body = request(url + "string")
        self.assertEqual((status, body, header(headers, "content-type")), (200, b'"just text"', "application/json"))
        status, headers, body = request(url + "cookies")
        self.assertEqual((status, body), (201, b"made"))
        self.assertEqual(header(headers, "set-cookie"), ["a=1; Path=/", "b=2"])
        self.assertEqual(header(headers, "x-many"), ["a", "b"])
        self.assertEqual(header(headers, "x-one"), "1")
        status, headers, body = request(url + "binary")
        self.assertEqual((status, body, header(headers, "content-type")), (200, bytes(range(256)), "application/octet-stream"))
        # Failures in Lambda's terms.
        self.assertEqual(request(url + "fail")[0], 502)
        self.assertEqual(request(url + "bad")[0], 502)
        before = metric(self.daemon, "petrel_invocations_total", function="web", url="true")
        status, _, _ = request(url + "size", "POST", b"x" * (6 * 1024 * 1024 + 1), {"Content-Type": "application/octet-stream"})
        self.assertEqual(status, 413)
        self.assertEqual(metric(self.daemon, "petrel_invocations_total", function="web", url="true"), before, "413 without invoking")
        self.assertEqual(request(url + "size", "POST", b"x" * 1000, {"Content-Type": "text/plain"})[2], b"1000")
        self.lam.put_function_concurrency(FunctionName="web", ReservedConcurrentExecutions=0)
        status, _, body = request(url + "plain")
        self.assertEqual(status, 429, body)
        self.lam.delete_function_concurrency(FunctionName="web")
        # Unknown URLs and deleted functions answer 403, as Lambda's do.
        self.assertEqual(request(self.daemon.url_endpoint + "/" + "a" * 32 + "/plain")[0], 403)
        self.assertEqual(request(self.daemon.url_endpoint + "/nothing")[0], 403)
        self.lam.delete_function(FunctionName="web")
        self.assertEqual(request(url + "plain")[0], 403)

    def test_none_needs_both_statements(self):
        self.create("gated")
        url = self.lam.create_function_url_config(FunctionName="gated", AuthType="NONE")["FunctionUrl"]
        self.assertEqual(request(url + "plain")[0], 403)
        self.lam.add_permission(FunctionName="gated", StatementId="url", Action="lambda:InvokeFunctionUrl", Principal="*",
                                FunctionUrlAuthType="NONE")
        self.assertEqual(request(url + "plain")[0], 403, "lambda:InvokeFunction through the URL is needed too")
        self.lam.add_permission(FunctionName="gated", StatementId="url-invoke", Action="lambda:InvokeFunction", Principal="*",
                                InvokedViaFunctionUrl=True)
        self.assertEqual(request(url + "plain")[0], 200)
        policy = json.loads(self.lam.get_policy(FunctionName="gated")["Policy"])
        conds = {s["Sid"]: s.get("Condition") for s in policy["Statement"]}
        self.assertEqual(conds["url"], {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}})
        self.assertEqual(conds["url-invoke"], {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}})
        # The statement through a URL lets nobody call Invoke itself.
        arn = "arn:aws:lambda:us-east-1:000000000000:function:gated"
        assert_client_error(self, "AccessDeniedException", lambda: self.b.invoke(FunctionName=arn, Payload=b"{}"), 403)
        self.lam.remove_permission(FunctionName="gated", StatementId="url")
        self.assertEqual(request(url + "plain")[0], 403)

    def test_aws_iam_urls(self):
        self.create("iam")
        url = self.lam.create_function_url_config(FunctionName="iam", AuthType="AWS_IAM")["FunctionUrl"]
        admin = self.daemon.admin_keys()
        self.assertEqual(request(url + "plain")[0], 403)  # unsigned
        self.assertEqual(signed("GET", url + "plain", (admin[0], "wrong" + admin[1]))[0], 403)
        status, _, body = signed("GET", url + "event?x=1", admin)
        self.assertEqual(status, 200, body)
        e = json.loads(body)
        self.assertEqual(e["requestContext"]["authorizer"]["iam"]["accountId"], "000000000000")
        self.assertEqual(e["requestContext"]["accountId"], "000000000000")
        self.assertEqual(signed("GET", url + "plain", self.b_keys)[0], 403)
        # Another account manages none of A's URLs.
        arn = "arn:aws:lambda:us-east-1:000000000000:function:iam"
        for call in (lambda: self.b.get_function_url_config(FunctionName=arn),
                     lambda: self.b.update_function_url_config(FunctionName=arn, AuthType="NONE"),
                     lambda: self.b.delete_function_url_config(FunctionName=arn),
                     lambda: self.b.create_function_url_config(FunctionName=arn + ":x", AuthType="NONE")):
            assert_client_error(self, "AccessDeniedException", call, 403)
        self.assertEqual(self.lam.get_function_url_config(FunctionName="iam")["AuthType"], "AWS_IAM")
        self.lam.add_permission(FunctionName="iam", StatementId="b", Action="lambda:InvokeFunctionUrl", Principal=self.b_account,
                                FunctionUrlAuthType="AWS_IAM")
        status, _, body = signed("GET", url + "event", self.b_keys)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["requestContext"]["authorizer"]["iam"]["accountId"], self.b_account)
        # A signed POST with a body.
        status, _, body = signed("POST", url + "size", admin, body=b"12345", headers={"Content-Type": "text/plain"})
        self.assertEqual((status, body), (200, b"5"))
        # Every URL request is in the audit trail, with who signed it (when anyone did) and its status.
        time.sleep(0.3)  # the audit writer gathers records for 20 ms
        records = [json.loads(line) for line in self.daemon.petreld("audit", "--json").stdout.splitlines()]
        mine = [r for r in records if r["action"] == "InvokeFunctionUrl" and r.get("resource") == "iam"]
        self.assertIn(403, [r["status"] for r in mine])
        self.assertTrue(any(r["status"] == 200 and r.get("accessKey") == self.b_keys[0] for r in mine), mine[-3:])

    def test_cors(self):
        self.create("cors")
        url = self.public("cors", Cors={"AllowOrigins": ["https://app.example"], "AllowMethods": ["POST", "GET"],
                                        "AllowHeaders": ["x-custom"], "ExposeHeaders": ["x-one"], "MaxAge": 300,
                                        "AllowCredentials": True})
        before = metric(self.daemon, "petrel_invocations_total", function="cors", url="true")
        status, headers, _ = request(url + "cookies", "OPTIONS", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-custom"})
        self.assertEqual(status, 200)
        self.assertEqual(header(headers, "access-control-allow-origin"), "https://app.example")
        self.assertEqual(header(headers, "access-control-allow-methods"), "POST,GET")
        self.assertEqual(header(headers, "access-control-allow-headers"), "x-custom")
        self.assertEqual(header(headers, "access-control-max-age"), "300")
        self.assertEqual(header(headers, "access-control-allow-credentials"), "true")
        self.assertEqual(metric(self.daemon, "petrel_invocations_total", function="cors", url="true"), before,
                         "a preflight does not invoke the function")
        status, headers, _ = request(url + "cookies", "OPTIONS", headers={
            "Origin": "https://other.example", "Access-Control-Request-Method": "POST"})
        self.assertIsNone(header(headers, "access-control-allow-origin"))
        # The URL's CORS headers replace the function's own.
        status, headers, _ = request(url + "cookies", headers={"Origin": "https://app.example"})
        self.assertEqual(status, 201)
        self.assertEqual(header(headers, "access-control-allow-origin"), "https://app.example")
        self.assertEqual(header(headers, "access-control-expose-headers"), "x-one")
        _, headers, _ = request(url + "cookies", headers={"Origin": "https://other.example"})
        self.assertIsNone(header(headers, "access-control-allow-origin"))

    def test_url_on_an_alias_follows_it(self):
        self.create("aliased", mark="one")
        self.lam.publish_version(FunctionName="aliased")
        self.lam.update_function_configuration(FunctionName="aliased", Timeout=9)
        self.lam.publish_version(FunctionName="aliased")
        self.lam.create_alias(FunctionName="aliased", Name="live", FunctionVersion="1")
        url = self.public("aliased", qualifier="live")
        r = self.lam.get_function_url_config(FunctionName="aliased", Qualifier="live")
        self.assertTrue(r["FunctionArn"].endswith(":function:aliased:live"))
        status, headers, body = request(url + "plain")
        self.assertEqual((status, json.loads(body)["version"], header(headers, "x-amz-executed-version")), (200, "1", "1"))
        self.lam.update_alias(FunctionName="aliased", Name="live", FunctionVersion="2")
        self.assertEqual(json.loads(request(url + "plain")[2])["version"], "2")
        self.assertGreaterEqual(metric(self.daemon, "petrel_invocations_total", function="aliased", alias="live", url="true"), 2)
        # Deleting the alias deletes its URL.
        self.lam.delete_alias(FunctionName="aliased", Name="live")
        self.assertEqual(request(url + "plain")[0], 403)



class ResponseStreamTest(unittest.TestCase):
    """InvokeWithResponseStream through boto3 (which decodes the event stream and checks its CRCs)."""

    def test_invoke_with_response_stream(self):
        with Daemon().started() as d:
            lam = d.client()
            lam.create_function(FunctionName="streamed", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": "def handler(e, c):\n    if e.get('fail'):\n        raise ValueError('no')\n"
                                                                     "    print('streaming')\n    return {'echo': e, 'v': c.function_version}\n"})})
            lam.publish_version(FunctionName="streamed")
            lam.create_alias(FunctionName="streamed", Name="live", FunctionVersion="1")
            r = lam.invoke_with_response_stream(FunctionName="streamed", Qualifier="live", Payload=b'{"k": 1}', LogType="Tail")
            self.assertEqual((r["StatusCode"], r["ExecutedVersion"]), (200, "1"))
            chunks, complete = [], None
            for event in r["EventStream"]:
                if "PayloadChunk" in event:
                    chunks.append(event["PayloadChunk"]["Payload"])
                if "InvokeComplete" in event:
                    complete = event["InvokeComplete"]
            self.assertEqual(json.loads(b"".join(chunks)), {"echo": {"k": 1}, "v": "1"})
            self.assertNotIn("ErrorCode", complete)
            self.assertIn("streaming", base64.b64decode(complete["LogResult"]).decode())
            # A function error ends the stream with its code and details, and no payload.
            r = lam.invoke_with_response_stream(FunctionName="streamed", Payload=b'{"fail": true}')
            events = list(r["EventStream"])
            self.assertFalse([e for e in events if "PayloadChunk" in e])
            complete = [e["InvokeComplete"] for e in events if "InvokeComplete" in e][0]
            self.assertEqual(complete["ErrorCode"], "ValueError")
            self.assertEqual(json.loads(complete["ErrorDetails"])["errorMessage"], "no")
            self.assertNotIn("LogResult", complete)
            # DryRun checks and runs nothing; Event is not a streaming invocation type.
            self.assertEqual(lam.invoke_with_response_stream(FunctionName="streamed", InvocationType="DryRun")["StatusCode"], 204)
            assert_client_error(self, "ValidationException", lambda: lam.invoke_with_response_stream(
                FunctionName="streamed", InvocationType="Event"), 400)
            assert_client_error(self, "ResourceNotFoundException", lambda: lam.invoke_with_response_stream(FunctionName="nope"), 404)
            # (The AWS CLI here is version 1, which has no invoke-with-response-stream: boto3 is the client.)


    def test_a_streaming_runtime_reaches_the_client_as_it_writes(self):
        """A custom runtime posts its response in streaming mode (chunked, error trailers):
        InvokeWithResponseStream forwards each part as it comes; Invoke gets it whole."""
        with Daemon().started() as d:
            lam = d.client()
            lam.create_function(FunctionName="streamer", Runtime="provided.al2023", Role=ROLE, Handler="unused", Timeout=10,
                                Code={"ZipFile": make_zip({"bootstrap": (STREAMING_BOOTSTRAP, 0o755)})})
            chunks, first_at, complete, total = streamed(lam, FunctionName="streamer", Payload=b'{"pause": 1.5}')
            self.assertEqual(b"".join(chunks), b"first;second")
            self.assertGreaterEqual(total, 1.5)
            self.assertLess(first_at, total - 1.0, "the first part must reach the client before the handler returns")
            self.assertEqual(complete, {})
            # Invoke gathers a streamed response and answers it whole.
            out = lam.invoke(FunctionName="streamer", Payload=b'{"pause": 0}')
            self.assertEqual(out["Payload"].read(), b"first;second")
            # An error trailer ends the stream with the runtime's error.
            r = lam.invoke_with_response_stream(FunctionName="streamer", Payload=b'{"pause": 0, "fail": true}')
            events = list(r["EventStream"])
            complete = [e["InvokeComplete"] for e in events if "InvokeComplete" in e][0]
            self.assertEqual(complete["ErrorCode"], "Boom")
            self.assertEqual(json.loads(complete["ErrorDetails"]), {"errorMessage": "midway"})
            out = lam.invoke(FunctionName="streamer", Payload=b'{"pause": 0, "fail": true}')
            self.assertEqual(out.get("FunctionError"), "Unhandled")


    def test_node_streamify_response(self):
        """Node's awslambda.streamifyResponse, as on Lambda: the handler writes to a stream."""
        with Daemon().started() as d:
            lam = d.client()
            lam.create_function(FunctionName="node-stream", Runtime="nodejs20.x", Role=ROLE, Handler="index.handler", Timeout=10,
                                Code={"ZipFile": make_zip({"index.js": NODE_STREAMING})})
            chunks, first_at, complete, total = streamed(lam, FunctionName="node-stream", Payload=b'{"pause": 1500}')
            self.assertEqual(b"".join(chunks), b"first;second")
            self.assertLess(first_at, total - 1.0, "the first write must reach the client before the handler returns")
            self.assertEqual(complete, {})
            self.assertEqual(lam.invoke(FunctionName="node-stream", Payload=b'{"pause": 0}')["Payload"].read(), b"first;second")
            # A handler that throws after writing: its error ends the stream; the instance serves on.
            r = lam.invoke_with_response_stream(FunctionName="node-stream", Payload=b'{"pause": 0, "fail": true}')
            events = list(r["EventStream"])
            complete = [e["InvokeComplete"] for e in events if "InvokeComplete" in e][0]
            self.assertEqual((complete["ErrorCode"], json.loads(complete["ErrorDetails"])["errorMessage"]), ("Error", "midway"))
            self.assertEqual(lam.invoke(FunctionName="node-stream", Payload=b'{"pause": 0}')["Payload"].read(), b"first;second")


    def test_python_generator_handlers_stream(self):
        """Petrel's Python runtime streams a handler that returns a generator (Lambda's has no way)."""
        with Daemon().started() as d:
            lam = d.client()
            lam.create_function(FunctionName="py-stream", Runtime="python3.11", Role=ROLE, Handler="app.handler", Timeout=10,
                                Code={"ZipFile": make_zip({"app.py": PY_STREAMING})})
            chunks, first_at, complete, total = streamed(lam, FunctionName="py-stream", Payload=b'{"pause": 1.5}', LogType="Tail")
            self.assertEqual(b"".join(chunks), b"first;second")
            self.assertLess(first_at, total - 1.0, "the first item must reach the client before the handler is done")
            self.assertIn("between the parts", base64.b64decode(complete["LogResult"]).decode())
            self.assertEqual(lam.invoke(FunctionName="py-stream", Payload=b'{"pause": 0}')["Payload"].read(), b"first;second")
            r = lam.invoke_with_response_stream(FunctionName="py-stream", Payload=b'{"pause": 0, "fail": true}')
            complete = [e["InvokeComplete"] for e in r["EventStream"] if "InvokeComplete" in e][0]
            self.assertEqual((complete["ErrorCode"], json.loads(complete["ErrorDetails"])["errorMessage"]), ("ValueError", "midway"))
            # A plain (non-generator) result still answers as JSON.
            self.assertEqual(json.loads(lam.invoke(FunctionName="py-stream", Payload=b'{"plain": true}')["Payload"].read()), {"plain": 1})


    def test_streamed_response_limits(self):
        """20 MB through a stream; 6 MB when Invoke gathers one; past either, the invocation fails."""
        with Daemon().started() as d:
            lam = d.client()
            lam.create_function(FunctionName="big-stream", Runtime="python3.11", Role=ROLE, Handler="app.handler", Timeout=30,
                                MemorySize=512, Code={"ZipFile": make_zip({"app.py": PY_BIG_STREAM})})
            chunks, _, complete, _ = streamed(lam, FunctionName="big-stream", Payload=b'{"mb": 8}')
            self.assertEqual(sum(len(c) for c in chunks), 8 << 20)
            self.assertEqual(complete, {})
            chunks, _, complete, _ = streamed(lam, FunctionName="big-stream", Payload=b'{"mb": 21}')
            self.assertLessEqual(sum(len(c) for c in chunks), 20 << 20)
            self.assertIn("ErrorCode", complete)
            r = lam.invoke(FunctionName="big-stream", Payload=b'{"mb": 8}')
            self.assertEqual(r.get("FunctionError"), "Unhandled")
            self.assertIn("payload", json.loads(r["Payload"].read())["errorMessage"].lower())
            # The instance that went over was replaced; the function still answers.
            chunks, _, complete, _ = streamed(lam, FunctionName="big-stream", Payload=b'{"mb": 1}')
            self.assertEqual((sum(len(c) for c in chunks), complete), (1 << 20, {}))


PY_BIG_STREAM = """
def handler(event, context):
    block = b"x" * (1 << 20)
    return (block for _ in range(event["mb"]))
"""


PY_STREAMING = """
import time
def handler(event, context):
    if event.get("plain"):
        return {"plain": 1}
    return parts(event)
def parts(event):
    yield "first;"
    print("between the parts")
    time.sleep(event["pause"])
    if event.get("fail"):
        raise ValueError("midway")
    yield b"second"
"""


class URLStreamTest(unittest.TestCase):
    def test_response_stream_urls(self):
        """A RESPONSE_STREAM URL sends the answer as the function writes it, with the status and
        headers of Lambda's HttpResponseStream prelude."""
        with Daemon().started() as d:
            lam = d.client()
            lam.create_function(FunctionName="url-stream", Runtime="nodejs20.x", Role=ROLE, Handler="index.handler", Timeout=10,
                                Code={"ZipFile": make_zip({"index.js": NODE_URL_STREAMING})})
            url = lam.create_function_url_config(FunctionName="url-stream", AuthType="NONE", InvokeMode="RESPONSE_STREAM")["FunctionUrl"]
            self.assertEqual(lam.get_function_url_config(FunctionName="url-stream")["InvokeMode"], "RESPONSE_STREAM")
            lam.add_permission(FunctionName="url-stream", StatementId="a", Action="lambda:InvokeFunctionUrl", Principal="*",
                               FunctionUrlAuthType="NONE")
            lam.add_permission(FunctionName="url-stream", StatementId="b", Action="lambda:InvokeFunction", Principal="*",
                               InvokedViaFunctionUrl=True)
            u = urllib.parse.urlsplit(url)
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            started = time.monotonic()
            c.request("GET", u.path + "sse?pause=1500")
            r = c.getresponse()
            self.assertEqual((r.status, r.getheader("content-type"), r.getheader("x-stream")), (201, "text/event-stream", "yes"))
            first = r.read1(65536)
            first_at = time.monotonic() - started
            rest = r.read()
            total = time.monotonic() - started
            c.close()
            self.assertEqual(first + rest, b"data: first\n\ndata: second\n\n")
            self.assertLess(first_at, total - 1.0, "the first event must reach the client before the handler is done")
            # Without a prelude: 200 and the stream's content type; a failure before any write: 502.
            status, headers, body = request(url + "plain")
            self.assertEqual((status, body, header(headers, "content-type")), (200, b"plain text", "text/plain"))
            self.assertEqual(request(url + "fail")[0], 502)
            # A function that does not stream is answered as a buffered URL answers it.
            lam.update_function_code(FunctionName="url-stream", ZipFile=make_zip({"index.js": "exports.handler = async () => ({statusCode: 203, body: 'whole'});"}))
            status, _, body = request(url + "x")
            self.assertEqual((status, body), (203, b"whole"))


NODE_URL_STREAMING = """
exports.handler = awslambda.streamifyResponse(async (event, responseStream) => {
  if (event.rawPath === '/fail') throw new Error('before any write');
  if (event.rawPath === '/plain') {
    responseStream.setContentType('text/plain');
    responseStream.write('plain text');
    responseStream.end();
    return;
  }
  const pause = Number(event.queryStringParameters.pause);
  const s = awslambda.HttpResponseStream.from(responseStream, { statusCode: 201, headers: { 'content-type': 'text/event-stream', 'x-stream': 'yes' } });
  s.write('data: first\\n\\n');
  await new Promise((r) => setTimeout(r, pause));
  s.write('data: second\\n\\n');
  s.end();
});
"""


NODE_STREAMING = """
exports.handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  responseStream.setContentType('text/plain');
  responseStream.write('first;');
  await new Promise((r) => setTimeout(r, event.pause));
  if (event.fail) throw new Error('midway');
  responseStream.write('second');
  responseStream.end();
});
"""


STREAMING_BOOTSTRAP = """#!/usr/bin/python3 -S
import base64, http.client, json, os, time
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
while True:
    c = http.client.HTTPConnection(host, int(port))
    c.request("GET", "/2018-06-01/runtime/invocation/next")
    r = c.getresponse()
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    event = json.loads(r.read())
    c.putrequest("POST", "/2018-06-01/runtime/invocation/%s/response" % rid)
    c.putheader("Lambda-Runtime-Function-Response-Mode", "streaming")
    c.putheader("Transfer-Encoding", "chunked")
    c.putheader("Trailer", "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body")
    c.endheaders()
    def chunk(b):
        c.send(b"%x\\r\\n%s\\r\\n" % (len(b), b))
    chunk(b"first;")
    time.sleep(event.get("pause", 1))
    chunk(b"second")
    if event.get("fail"):
        c.send(b"0\\r\\nLambda-Runtime-Function-Error-Type: Boom\\r\\nLambda-Runtime-Function-Error-Body: "
               + base64.b64encode(b'{"errorMessage": "midway"}') + b"\\r\\n\\r\\n")
    else:
        c.send(b"0\\r\\n\\r\\n")
    c.getresponse().read()
    c.close()
"""


PYWEB = os.environ.get("PETREL_TEST_PYWEB", "/var/cache/petrel-tests/python-web/lib")

FASTAPI_APP = """
from fastapi import FastAPI, Request, Response
from mangum import Mangum

app = FastAPI()

@app.get("/items/{item_id}")
def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}

@app.post("/echo")
async def echo(request: Request):
    return Response(content=await request.body(), media_type="application/octet-stream")

@app.get("/login")
def login(response: Response):
    response.set_cookie("session", "abc123")
    response.set_cookie("theme", "dark")
    return {"ok": True}

@app.get("/whoami")
def whoami(request: Request):
    return {"cookies": dict(request.cookies), "path": request.url.path}

handler = Mangum(app, lifespan="off")
"""


class WebFrameworkTest(unittest.TestCase):
    """A real web framework behind its Lambda adapter: FastAPI with Mangum, unchanged."""

    def test_fastapi_with_mangum(self):
        self.assertTrue(os.path.isdir(os.path.join(PYWEB, "fastapi")) and os.path.isdir(os.path.join(PYWEB, "mangum")),
                        "FastAPI and Mangum are not in %s: Scripts/setup fetches them from PyPI" % PYWEB)
        files = {"app.py": FASTAPI_APP}
        for top, dirs, names in os.walk(PYWEB):
            dirs[:] = [d for d in dirs if d != "__pycache__" and d != "bin"]
            for n in names:
                full = os.path.join(top, n)
                with open(full, "rb") as f:
                    files[os.path.relpath(full, PYWEB)] = (f.read(), 0o755 if n.endswith(".so") else 0o644)
        with Daemon().started() as d:
            lam = d.client()
            lam.create_function(FunctionName="fastapi", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip(files)}, MemorySize=1769, Timeout=30)
            url = lam.create_function_url_config(FunctionName="fastapi", AuthType="NONE")["FunctionUrl"]
            lam.add_permission(FunctionName="fastapi", StatementId="a", Action="lambda:InvokeFunctionUrl", Principal="*",
                               FunctionUrlAuthType="NONE")
            lam.add_permission(FunctionName="fastapi", StatementId="b", Action="lambda:InvokeFunction", Principal="*",
                               InvokedViaFunctionUrl=True)
            status, headers, body = request(url + "items/42?q=hello")
            self.assertEqual((status, json.loads(body)), (200, {"item_id": 42, "q": "hello"}), body)
            status, _, body = request(url + "items/not-a-number")
            self.assertEqual(status, 422, body)
            self.assertEqual(request(url + "nowhere")[0], 404)
            blob = bytes(range(256)) * 16
            status, headers, body = request(url + "echo", "POST", blob, {"Content-Type": "application/octet-stream"})
            self.assertEqual((status, body), (200, blob))
            status, headers, _ = request(url + "login")
            self.assertEqual(status, 200)
            self.assertEqual(sorted(c.split(";")[0] for c in header(headers, "set-cookie")), ["session=abc123", "theme=dark"])
            status, _, body = request(url + "whoami", headers={"Cookie": "session=abc123; theme=dark"})
            self.assertEqual(json.loads(body), {"cookies": {"session": "abc123", "theme": "dark"}, "path": "/whoami"})


class HostRoutingTest(unittest.TestCase):
    """With wildcard DNS configured, a URL is <id>.<domain>; the function sees the whole path."""

    def test_host_based_urls(self):
        d = Daemon()
        domain = "urls.petrel.test:%d" % d.url_port
        d.extra_env["PETREL_URL_DOMAIN"] = domain
        with d.started():
            lam = d.client()
            lam.create_function(FunctionName="hosted", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": APP})})
            url = lam.create_function_url_config(FunctionName="hosted", AuthType="NONE")["FunctionUrl"]
            lam.add_permission(FunctionName="hosted", StatementId="a", Action="lambda:InvokeFunctionUrl", Principal="*",
                               FunctionUrlAuthType="NONE")
            lam.add_permission(FunctionName="hosted", StatementId="b", Action="lambda:InvokeFunction", Principal="*",
                               InvokedViaFunctionUrl=True)
            host = urllib.parse.urlsplit(url).netloc
            self.assertRegex(host, r"^[a-z2-7]{32}\." + domain.replace(".", "\\."))
            # These names resolve nowhere here: connect to the listener and name the host.
            status, _, body = request(d.url_endpoint + "/event/a/b?z=1", headers={"Host": host})
            self.assertEqual(status, 200, body)
            e = json.loads(body)
            self.assertEqual((e["rawPath"], e["requestContext"]["domainName"]), ("/event/a/b", host))
            self.assertEqual(request(d.url_endpoint + "/event", headers={"Host": "b" * 32 + "." + domain})[0], 403)


if __name__ == "__main__":
    unittest.main()
