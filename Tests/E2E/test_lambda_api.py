"""End-to-end: a real petreld, driven by boto3 and the AWS CLI as a user
would drive AWS Lambda. Run as root (the daemon builds real sandboxes)."""

import base64
import json
import os
import shutil
import inspect
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from botocore.exceptions import ClientError

from harness import PETRELD, ROLE, Daemon, free_port, log_events, assert_client_error, b64, log_tail, make_zip, payload_json, sandbox_leftovers

PY_APP = '''
import os, json
print("init of app")
COUNTER = {"n": 0}
def handler(event, context):
    COUNTER["n"] += 1
    print("hello from", context.function_name, context.aws_request_id)
    if event.get("fail"):
        raise ValueError("boom: " + event["fail"])
    if event.get("sleep"):
        import time; time.sleep(event["sleep"])
    if event.get("allocate"):
        blob = bytearray(event["allocate"] * 1024 * 1024)
        for i in range(0, len(blob), 4096): blob[i] = 1
    if event.get("exit"):
        os._exit(event["exit"])
    if event.get("big"):
        return "x" * event["big"]
    return {"echo": event, "version": "v1", "greeting": os.environ.get("GREETING"),
            "count": COUNTER["n"], "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 3000,
            "memory": context.memory_limit_in_mb, "arn": context.invoked_function_arn,
            "task_root": os.environ["LAMBDA_TASK_ROOT"], "api": os.environ["AWS_LAMBDA_RUNTIME_API"],
            "uid": os.getuid(), "cwd": os.getcwd()}
'''

NODE_APP = '''
let count = 0;
exports.handler = async (event, context) => {
  count += 1;
  console.log("node says hi", context.awsRequestId);
  if (event.fail) throw new Error("node boom: " + event.fail);
  return { echo: event, runtime: process.version, count, fn: context.functionName,
           remainingOk: context.getRemainingTimeInMillis() > 0 };
};
exports.callbackStyle = (event, context, callback) => { callback(null, { cb: true }); };
'''

# A runtime like most third-party ones: one keep-alive connection, and it waits for
# the 202 to its response before it asks for the next invocation (no pipelining).
CUSTOM_BOOTSTRAP = '''#!/usr/bin/python3
import http.client, json, os
conn = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])
base = "/2018-06-01/runtime/invocation/"
while True:
    conn.request("GET", base + "next")
    r = conn.getresponse()
    rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
    event = json.loads(r.read())
    if "probe" in event:  # asks the Runtime API what the test names, answers what it said
        said = []
        for method, path in event["probe"]:
            conn.request(method, path, body=b"" if method == "POST" else None)
            r = conn.getresponse()
            said.append([r.status, json.loads(r.read())])
        event = {"said": said}
    body = json.dumps({"custom": True, "handler": os.environ["_HANDLER"], "event": event}).encode()
    conn.request("POST", base + rid + "/response", body=body)
    r = conn.getresponse()
    assert r.status == 202, r.status
    r.read()
'''

# A runtime on a raw socket that pipelines: asked to, it sends its response, `next` and
# one more request in one write, and reports the order the three answers came in.
PIPELINING_BOOTSTRAP = '''#!/usr/bin/python3
import json, os, socket
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
s = socket.create_connection((host, int(port)))
buf = b""
def request(method, path, body=b""):
    return ("%s %s HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: %d\\r\\n\\r\\n" % (method, path, len(body))).encode() + body
def answer():
    global buf
    while b"\\r\\n\\r\\n" not in buf:
        buf += s.recv(65536)
    head, _, buf = buf.partition(b"\\r\\n\\r\\n")
    lines = head.decode().split("\\r\\n")
    headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(buf) < n:
        buf += s.recv(65536)
    body, buf = buf[:n], buf[n:]
    return int(lines[0].split()[1]), headers, body
base = "/2018-06-01/runtime/invocation/"
s.sendall(request("GET", base + "next"))
status, headers, body = answer()
order = None
while True:
    rid = headers["lambda-runtime-aws-request-id"]
    event = json.loads(body)
    out = json.dumps({"event": event, "order": order}).encode()
    if event.get("pipeline"):
        s.sendall(request("POST", base + rid + "/response", out) + request("GET", base + "next")
                  + request("GET", "/2018-06-01/runtime/after-next"))
        first = answer()
        status, headers, body = answer()
        third = answer()
        order = [first[0], status, third[0], json.loads(third[2])["errorType"]]
        continue
    s.sendall(request("POST", base + rid + "/response", out) + request("GET", base + "next"))
    assert answer()[0] == 202
    status, headers, body = answer()
    order = None
'''

# The kinds of the sockets this process holds ("unix", "tcp"), from /proc: the runtime
# and its handler are one process, so these include its connection to the Runtime API.
SOCKET_KINDS_PY = '''
import os
def socket_kinds():
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    kinds = []
    for kind, path, column in (("unix", "/proc/net/unix", 6), ("tcp", "/proc/net/tcp", 9)):
        with open(path) as f:
            for line in f.read().splitlines()[1:]:
                parts = line.split()
                if len(parts) > column and parts[column] in inodes:
                    kinds.append(kind)
    return sorted(kinds)
'''

SOCKET_KINDS_NODE = '''
const fs = require("fs");
function socketKinds() {
  const inodes = new Set();
  for (const fd of fs.readdirSync("/proc/self/fd")) {
    try {
      const link = fs.readlinkSync("/proc/self/fd/" + fd);
      if (link.startsWith("socket:[")) inodes.add(link.slice(8, -1));
    } catch (e) {}
  }
  const kinds = [];
  for (const [kind, path, column] of [["unix", "/proc/net/unix", 6], ["tcp", "/proc/net/tcp", 9]]) {
    for (const line of fs.readFileSync(path, "utf8").split("\\n").slice(1)) {
      const parts = line.trim().split(/\\s+/);
      if (parts.length > column && inodes.has(parts[column])) kinds.push(kind);
    }
  }
  return kinds.sort();
}
'''

# A fake Runtime API on a loopback port of the test's own: hands out the events it is
# given, one per `next`, and keeps what the runtime answers (pipelined or not).
class FakeRuntimeAPI:
    def __init__(self, events):
        self.events = list(events)
        self.answers = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.listener.settimeout(30)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        conn.settimeout(30)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
                n = int(headers.get("content-length", "0"))
                while len(buf) < n:
                    buf += conn.recv(65536)
                body, buf = buf[:n], buf[n:]
                if method == "GET" and path.endswith("/invocation/next"):
                    if not self.events:
                        self.done.set()
                        return
                    payload = json.dumps(self.events.pop(0)).encode()
                    rid = "req-%d" % len(self.answers)
                    conn.sendall(("HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: %s\r\n"
                                  "Lambda-Runtime-Deadline-Ms: %d\r\nContent-Length: %d\r\n\r\n"
                                  % (rid, int(time.time() * 1000) + 60000, len(payload))).encode() + payload)
                else:
                    self.answers.append((method, path, json.loads(body) if body else None))
                    ok = b'{"status":"OK"}'
                    conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n" % len(ok) + ok)
        finally:
            conn.close()

    def close(self):
        self.listener.close()
        self.thread.join(10)


def send_for(sock, data, seconds):
    """Sends `data` until the peer stops taking it for `seconds`; returns the bytes sent."""
    sock.settimeout(seconds)
    view, sent = memoryview(data), 0
    try:
        while view:
            n = sock.send(view)
            sent += n
            view = view[n:]
    except socket.timeout:
        pass
    sock.settimeout(30)
    return sent


# A runtime that asks for its next invocation and, while that waits, sends 64 MB of
# requests behind it on the same connection for 2 s; it reports how much the
# connection took, then the first answer that waited behind the event.
FLOODING_BOOTSTRAP = PIPELINING_BOOTSTRAP.split("base = ")[0] + inspect.getsource(send_for) + '''base = "/2018-06-01/runtime/invocation/"
s.sendall(request("GET", base + "next"))
status, headers, body = answer()
s.sendall(request("POST", base + headers["lambda-runtime-aws-request-id"] + "/response", b'"first"') + request("GET", base + "next"))
flood = request("POST", "/2018-06-01/runtime/flood", b"f" * (1 << 20)) * 64
total, sent = len(flood), send_for(s, flood, 2)
assert answer()[0] == 202  # held while `next` waits, as for our own runtimes
status, headers, body = answer()
held = answer()
out = json.dumps({"sent": sent, "total": total, "held": [held[0], json.loads(held[2])["errorType"]]}).encode()
c = socket.create_connection((host, int(port)))
c.sendall(request("POST", base + headers["lambda-runtime-aws-request-id"] + "/response", out))
c.recv(65536)
import time
time.sleep(3600)
'''


class LambdaAPITest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.before = sandbox_leftovers()
        cls.daemon = Daemon().start()
        cls.lam = cls.daemon.client()
        # The server's own validation is under test: the SDK must not refuse first.
        cls.raw = cls.daemon.client(validate=False)
        cls.py_zip = make_zip({"app.py": PY_APP})

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop_and_check()

    def create(self, name, zip_bytes=None, runtime="python3.11", handler="app.handler", **kw):
        return self.lam.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
                                        Code={"ZipFile": zip_bytes or self.py_zip}, **kw)

    def invoke(self, name, payload=None, tail=True, **kw):
        args = dict(FunctionName=name, Payload=json.dumps(payload if payload is not None else {}).encode(), **kw)
        if tail:
            args["LogType"] = "Tail"
        return self.lam.invoke(**args)

    def assertError(self, code, fn, status=None):
        return assert_client_error(self, code, fn, status)

    def config(self, name):
        c = self.lam.get_function_configuration(FunctionName=name)
        c.pop("ResponseMetadata")
        return c

    def stored_names(self):
        return sorted(f["FunctionName"] for f in self.lam.list_functions(MaxItems=1000)["Functions"])

    def code_blobs(self):
        d = os.path.join(self.daemon.data, "code")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    # --- the three kinds of runtime -------------------------------------------------

    def test_python_function(self):
        cfg = self.create("py-basic", Environment={"Variables": {"GREETING": "hi"}}, MemorySize=256)
        self.assertEqual(cfg["FunctionArn"], "arn:aws:lambda:us-east-1:000000000000:function:py-basic")
        self.assertEqual(cfg["Version"], "$LATEST")
        self.assertEqual(cfg["State"], "Active")
        import hashlib
        self.assertEqual(cfg["CodeSha256"], base64.b64encode(hashlib.sha256(self.py_zip).digest()).decode())
        self.assertEqual(cfg["CodeSize"], len(self.py_zip))
        r = self.invoke("py-basic", {"a": 1})
        self.assertEqual(r["StatusCode"], 200)
        self.assertNotIn("FunctionError", r)
        self.assertEqual(r["ExecutedVersion"], "$LATEST")
        body = payload_json(r)
        self.assertEqual(body["echo"], {"a": 1})
        self.assertEqual(body["greeting"], "hi")
        self.assertEqual(body["memory"], 256)
        self.assertTrue(body["remaining_ok"])
        self.assertEqual(body["arn"], cfg["FunctionArn"])
        self.assertEqual(body["task_root"], "/var/task")
        self.assertEqual(body["cwd"], "/var/task")
        self.assertEqual(body["api"], "127.0.0.1:9001")
        self.assertNotEqual(body["uid"], 0)
        tail = log_tail(r)
        self.assertIn("START RequestId: %s Version: $LATEST" % r["ResponseMetadata"]["RequestId"], tail)
        self.assertIn("hello from py-basic", tail)
        self.assertIn("END RequestId:", tail)
        self.assertRegex(tail, r"REPORT RequestId: \S+\tDuration: [0-9.]+ ms\tBilled Duration: \d+ ms\tMemory Size: 256 MB\tMax Memory Used: \d+ MB\tInit Duration: [0-9.]+ ms")
        # The second invocation is warm: the same instance (its globals survive), no Init Duration.
        r2 = self.invoke("py-basic", {"a": 2})
        self.assertEqual(payload_json(r2)["count"], 2)
        self.assertNotIn("Init Duration", log_tail(r2))

    def test_node_function(self):
        self.create("node-basic", make_zip({"index.js": NODE_APP}), runtime="nodejs20.x", handler="index.handler")
        r = self.invoke("node-basic", {"n": 5})
        body = payload_json(r)
        self.assertEqual(body["echo"], {"n": 5})
        self.assertTrue(body["runtime"].startswith("v20"))
        self.assertEqual(body["fn"], "node-basic")
        self.assertTrue(body["remainingOk"])
        self.assertIn("INFO\tnode says hi", log_tail(r))
        r = self.invoke("node-basic", {"fail": "x"})
        self.assertEqual(r["FunctionError"], "Unhandled")
        err = payload_json(r)
        self.assertEqual(err["errorType"], "Error")
        self.assertEqual(err["errorMessage"], "node boom: x")
        self.assertIsInstance(err["trace"], list)
        self.create("node-cb", make_zip({"index.js": NODE_APP}), runtime="nodejs20.x", handler="index.callbackStyle")
        self.assertEqual(payload_json(self.invoke("node-cb")), {"cb": True})
        # A large event and answer cross the runtime's own HTTP client in many reads and writes.
        big = "n" * (1536 * 1024)
        for _ in range(2):
            self.assertEqual(payload_json(self.invoke("node-basic", {"big": big}, tail=False))["echo"], {"big": big})

    def test_petrels_runtimes_reach_the_runtime_api_on_the_sandboxs_own_socket(self):
        # Python and Node talk to the Runtime API over an abstract AF_UNIX socket of the
        # sandbox's network namespace (no TCP/IP stack in each exchange). Every runtime is
        # told of it; a custom one that uses AWS_LAMBDA_RUNTIME_API, as on Lambda, still can.
        py = SOCKET_KINDS_PY + "def handler(e, c):\n    return {'socket': os.environ.get('PETREL_RUNTIME_API_SOCKET'), 'kinds': socket_kinds()}\n"
        node = SOCKET_KINDS_NODE + "exports.handler = async () => ({socket: process.env.PETREL_RUNTIME_API_SOCKET, kinds: socketKinds()});\n"
        custom = CUSTOM_BOOTSTRAP.replace("import http.client, json, os\n", "import http.client, json, os\n" + SOCKET_KINDS_PY).replace(
            '"event": event}', '"event": event, "socket": os.environ.get("PETREL_RUNTIME_API_SOCKET"), "kinds": socket_kinds()}')
        self.create("transport-py", make_zip({"app.py": py}))
        self.create("transport-node", make_zip({"index.js": node}), runtime="nodejs20.x", handler="index.handler")
        self.create("transport-custom", make_zip({"bootstrap": (custom, 0o755)}), runtime="provided.al2023", handler="x")
        for name in ("transport-py", "transport-node"):
            for _ in range(2):  # and the same connection stays in use when warm
                body = payload_json(self.invoke(name, tail=False))
                self.assertEqual(body["socket"], "@petrel-runtime-api", name)
                self.assertIn("unix", body["kinds"], name)
                self.assertNotIn("tcp", body["kinds"], name)
        body = payload_json(self.invoke("transport-custom", tail=False))
        self.assertEqual(body["socket"], "@petrel-runtime-api")
        self.assertEqual(body["kinds"], ["tcp"])

    def test_the_python_runtime_is_read_from_bytecode_petreld_compiled(self):
        # /var/runtime is read-only and PYTHONDONTWRITEBYTECODE is set, so the runtime's
        # module is compiled at every cold start unless petreld compiled it when it started.
        # What Python checks before it uses a cache: the magic number, the source's
        # modification time and size in the header (flags 0: not hash-based).
        src = (
            "import importlib.util, os, struct, sys\n"
            "def handler(e, c):\n"
            "    m = sys.modules['_petrel_runtime']\n"
            "    with open(m.__cached__, 'rb') as f:\n"
            "        head = f.read(16)\n"
            "    flags, mtime, size = struct.unpack('<III', head[4:16])\n"
            "    st = os.stat(m.__file__)\n"
            "    return {'file': m.__file__, 'magic': head[:4] == importlib.util.MAGIC_NUMBER, 'flags': flags,\n"
            "            'fresh': (mtime, size) == (int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF),\n"
            "            'writable': os.access(os.path.dirname(m.__cached__), os.W_OK)}\n")
        self.create("runtime-bytecode", make_zip({"app.py": src}))
        body = payload_json(self.invoke("runtime-bytecode", tail=False))
        self.assertEqual(body, {"file": "/var/runtime/python/_petrel_runtime.py", "magic": True, "flags": 0, "fresh": True,
                                "writable": False})
        # The copy the instances see lives in the run directory; the checkout stays as it was.
        copies = [n for n in os.listdir(self.daemon.run) if n.startswith("rootfs")]
        self.assertEqual(len(copies), 1, copies)
        staged = os.path.join(self.daemon.run, copies[0], "runtimes", "python", "__pycache__")
        self.assertEqual([n for n in os.listdir(staged) if n.startswith("_petrel_runtime.")], ["_petrel_runtime.cpython-311.pyc"])

    def test_custom_runtime(self):
        z = make_zip({"bootstrap": (CUSTOM_BOOTSTRAP, 0o755)})
        self.create("custom-basic", z, runtime="provided.al2023", handler="whatever.handler")
        for i in range(3):  # the same instance: each 202 reaches it before it asks again
            self.assertEqual(payload_json(self.invoke("custom-basic", {"k": i})),
                             {"custom": True, "handler": "whatever.handler", "event": {"k": i}})
        # Paths the Runtime API does not serve get a 404 in its JSON shape (whatever they hold),
        # a response for another request id a 400; the invocation itself is unharmed.
        api = "/2018-06-01/runtime/"
        said = payload_json(self.invoke("custom-basic", {"probe": [
            ["GET", api + 'nope"\\x'], ["POST", api + "invocation//response"], ["POST", api + "invocation/abc/bogus"],
            ["GET", api + "invocation/next/"], ["POST", api + "invocation/not-this-one/response"]]}))["event"]["said"]
        self.assertEqual([s[0] for s in said], [404, 404, 404, 404, 400], said)
        self.assertEqual(said[0][1], {"errorMessage": 'unknown path ' + api + 'nope"\\x', "errorType": "InvalidRequest"})
        self.assertEqual(said[4][1]["errorType"], "InvalidRequestID")
        self.assertEqual(payload_json(self.invoke("custom-basic", {"k": "after"}))["event"], {"k": "after"})
        # No bootstrap in the ZIP: the instance cannot start, and says so.
        self.create("custom-none", make_zip({"README": "nothing to run"}), runtime="provided.al2023", handler="x")
        r = self.invoke("custom-none")
        self.assertEqual(r["FunctionError"], "Unhandled")
        self.assertEqual(payload_json(r)["errorType"], "Runtime.InvalidEntrypoint")

    def test_runtime_api_answers_in_order_behind_next(self):
        """A request a runtime sends behind its `next` is answered after the event `next`
        waits for, as HTTP/1.1 requires, whatever order the answers were ready in."""
        self.create("custom-pipelining", make_zip({"bootstrap": (PIPELINING_BOOTSTRAP, 0o755)}), runtime="provided.al2023",
                    handler="x")
        self.assertEqual(payload_json(self.invoke("custom-pipelining", {"pipeline": True})), {"event": {"pipeline": True}, "order": None})
        # The runtime read the 202, then this event, then the 404 that had waited behind it.
        self.assertEqual(payload_json(self.invoke("custom-pipelining", {"k": 2})),
                         {"event": {"k": 2}, "order": [202, 200, 404, "InvalidRequest"]})
        self.assertEqual(payload_json(self.invoke("custom-pipelining", {"k": 3})), {"event": {"k": 3}, "order": None})

    def signed(self, method, path, body=b"", close=False):
        """A request signed as the admin, as bytes for a raw socket."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        r = AWSRequest(method=method, url=self.daemon.endpoint + path, data=body)
        SigV4Auth(Credentials(*self.daemon.admin_keys()), "lambda", "us-east-1").add_auth(r)
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: " + self.daemon.endpoint.split("//", 1)[1], "Content-Length: %d" % len(body)]
        lines += ["%s: %s" % (k, v) for k, v in r.headers.items() if k.lower() not in ("host", "content-length")]
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    @staticmethod
    def read_answers(sock, n):
        """n answers off a raw socket: [(status, JSON body)], and whether it closed first."""
        buf, answers = b"", []
        while len(answers) < n:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    return answers, True
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int([l.split(b":", 1)[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
            while len(buf) < length:
                buf += sock.recv(65536)
            answers.append((status, json.loads(buf[:length] or b"null")))
            buf = buf[length:]
        return answers, False

    def raw_connection(self):
        host, port = self.daemon.endpoint.split("//", 1)[1].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
        sock.settimeout(30)
        return sock

    def test_one_connection_keeps_order(self):
        """Invoke is answered in the connection's pipeline, the rest by the router: requests
        pipelined on one keep-alive connection are still answered in order."""
        self.create("order-fn")
        signed, read_answers = self.signed, self.read_answers
        invoke = "/2015-03-31/functions/order-fn/invocations"
        with self.raw_connection() as sock:
            sock.sendall(signed("GET", "/2015-03-31/functions/order-fn/configuration")
                         + signed("POST", invoke, b'{"n": 1, "sleep": 0.5}'))
            time.sleep(0.2)  # the rest arrives while the invocation runs
            sock.sendall(signed("GET", "/2016-08-19/account-settings")
                         + signed("POST", invoke, b'{"n": 2}')
                         + signed("POST", invoke, b'{"n": 3}', close=True))
            answers, closed = read_answers(sock, 5)
            self.assertEqual([a[0] for a in answers], [200] * 5, answers)
            self.assertEqual(answers[0][1]["FunctionName"], "order-fn")
            self.assertEqual(answers[1][1]["echo"], {"n": 1, "sleep": 0.5})
            self.assertIn("AccountLimit", answers[2][1])
            self.assertEqual(answers[3][1]["echo"], {"n": 2})
            self.assertEqual(answers[4][1]["echo"], {"n": 3})
            # "Connection: close" on the last one: the server closes after answering it.
            self.assertEqual(sock.recv(1), b"")

    def test_one_connection_stops_reading_behind_an_invocation(self):
        """A client that pipelines requests behind a running invocation is not read from
        until it has been answered: what it sends ahead stays in the kernel's buffers, not
        in the daemon's memory."""
        self.create("flood-fn")
        invoke = "/2015-03-31/functions/flood-fn/invocations"
        pad = b"f" * (1 << 20)  # unsigned: once read, each is refused at once
        flood = (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (invoke.encode(), len(pad)) + pad) * 64
        with self.raw_connection() as sock:
            sock.sendall(self.signed("POST", invoke, b'{"sleep": 2.5}'))
            time.sleep(0.3)
            sent = send_for(sock, flood, 1.5)
            self.assertLess(sent, len(flood) / 2, "the daemon read %d of %d bytes sent behind a running invocation" % (sent, len(flood)))
            (first,), _ = self.read_answers(sock, 1)
            self.assertEqual(first[1]["echo"], {"sleep": 2.5})

    def test_runtime_api_stops_reading_behind_next(self):
        """A runtime that sends requests behind its waiting `next` is not read from until
        the event has gone out; then the requests that waited are answered in order."""
        # A full CPU: at 512 MB (0.29 CPU) building the 64 MB flood alone took long enough on a
        # loaded host that the next invocation came while the runtime was still sending.
        self.create("custom-flooding", make_zip({"bootstrap": (FLOODING_BOOTSTRAP, 0o755)}), runtime="provided.al2023", handler="x",
                    MemorySize=1769)
        self.assertEqual(payload_json(self.invoke("custom-flooding")), "first")
        time.sleep(4)  # the runtime builds its flood, then sends it behind its `next` for 2 s
        said = payload_json(self.invoke("custom-flooding"))
        self.assertLess(said["sent"], said["total"] / 2, "the daemon read %d of %d bytes sent behind next" % (said["sent"], said["total"]))
        self.assertEqual(said["held"], [404, "InvalidRequest"])
        self.lam.delete_function(FunctionName="custom-flooding")

    # --- failures ---------------------------------------------------------------------

    def test_function_error(self):
        self.create("py-error")
        r = self.invoke("py-error", {"fail": "bad input"})
        self.assertEqual(r["StatusCode"], 200)
        self.assertEqual(r["FunctionError"], "Unhandled")
        err = payload_json(r)
        self.assertEqual(err["errorType"], "ValueError")
        self.assertEqual(err["errorMessage"], "boom: bad input")
        self.assertTrue(any("app.py" in f for f in err["stackTrace"]), err)
        self.assertIn("[ERROR] ValueError: boom: bad input", log_tail(r))
        # A handled error does not cost the instance.
        self.assertEqual(payload_json(self.invoke("py-error"))["count"], 2)

    def test_timeout(self):
        self.create("py-timeout", Timeout=1)
        r = self.invoke("py-timeout", {"sleep": 5})
        self.assertEqual(r["FunctionError"], "Unhandled")
        err = payload_json(r)
        self.assertEqual(err["errorType"], "Sandbox.Timedout")
        self.assertIn("Task timed out after 1.00 seconds", err["errorMessage"])
        self.assertIn("Status: timeout", log_tail(r))
        # The instance was replaced: the next call is a cold start and works.
        r = self.invoke("py-timeout")
        self.assertEqual(payload_json(r)["count"], 1)
        self.assertIn("Init Duration", log_tail(r))

    def test_out_of_memory(self):
        self.create("py-oom", MemorySize=128, Timeout=30)
        r = self.invoke("py-oom", {"allocate": 400})
        self.assertEqual(r["FunctionError"], "Unhandled")
        err = payload_json(r)
        self.assertEqual(err["errorType"], "Runtime.OutOfMemory", err)
        # Its REPORT still tells how much memory it had reached (from the final report).
        import re
        used = int(re.search(r"Max Memory Used: (\d+) MB", log_tail(r)).group(1))
        self.assertGreaterEqual(used, 100, log_tail(r))
        self.assertEqual(payload_json(self.invoke("py-oom"))["count"], 1)

    def test_exit_is_reported_and_instance_replaced(self):
        self.create("py-exit")
        r = self.invoke("py-exit", {"exit": 3})
        err = payload_json(r)
        self.assertEqual(err["errorType"], "Runtime.ExitError")
        self.assertIn("exit status 3", err["errorMessage"])
        self.assertEqual(payload_json(self.invoke("py-exit"))["count"], 1)

    def test_init_errors(self):
        self.create("py-noimport", handler="nosuch.handler")
        r = self.invoke("py-noimport")
        self.assertEqual(r["FunctionError"], "Unhandled")
        err = payload_json(r)
        self.assertEqual(err["errorType"], "Runtime.ImportModuleError")
        self.assertIn("Unable to import module 'nosuch'", err["errorMessage"])
        self.create("py-nohandler", handler="app.missing")
        err = payload_json(self.invoke("py-nohandler"))
        self.assertEqual(err["errorType"], "Runtime.HandlerNotFound")
        self.create("node-noimport", make_zip({"index.js": NODE_APP}), runtime="nodejs20.x", handler="other.handler")
        self.assertEqual(payload_json(self.invoke("node-noimport"))["errorType"], "Runtime.ImportModuleError")
        self.create("node-nohandler", make_zip({"index.js": NODE_APP}), runtime="nodejs20.x", handler="index.nope")
        self.assertEqual(payload_json(self.invoke("node-nohandler"))["errorType"], "Runtime.HandlerNotFound")

    def test_response_too_large(self):
        self.create("py-big", MemorySize=512, Timeout=30)
        r = self.invoke("py-big", {"big": 7 * 1024 * 1024}, tail=False)
        self.assertEqual(r["FunctionError"], "Unhandled")
        self.assertEqual(payload_json(r)["errorType"], "Function.ResponseSizeTooLarge")

    # --- invoke options -----------------------------------------------------------------

    def test_invoke_options(self):
        self.create("py-opts")
        r = self.lam.invoke(FunctionName="py-opts", InvocationType="DryRun")
        self.assertEqual(r["StatusCode"], 204)
        self.assertEqual(self.lam.invoke(FunctionName="py-opts", InvocationType="Event")["StatusCode"], 202)
        self.assertError("RequestTooLargeException", lambda: self.lam.invoke(FunctionName="py-opts", Payload=b'"' + b"x" * (6 * 1024 * 1024 + 10) + b'"'), 413)
        self.assertError("InvalidRequestContentException", lambda: self.lam.invoke(FunctionName="py-opts", Payload=b"{not json"))
        self.assertError("ResourceNotFoundException", lambda: self.lam.invoke(FunctionName="no-such-function"), 404)
        # By ARN, and with the $LATEST qualifier.
        arn = "arn:aws:lambda:us-east-1:000000000000:function:py-opts"
        self.assertEqual(payload_json(self.invoke(arn, {"x": 1}))["echo"], {"x": 1})
        self.assertEqual(payload_json(self.invoke("py-opts", {"x": 2}, Qualifier="$LATEST"))["echo"], {"x": 2})
        self.assertError("ResourceNotFoundException", lambda: self.invoke("py-opts", Qualifier="7"))
        # No LogType: no log in the answer.
        self.assertNotIn("LogResult", self.invoke("py-opts", tail=False))

    def test_concurrent_invocations_each_get_an_instance(self):
        self.create("py-concurrent", Timeout=10)
        results = []
        def call():
            results.append(payload_json(self.invoke("py-concurrent", {"sleep": 0.5})))
        threads = [threading.Thread(target=call) for _ in range(3)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        self.assertEqual([r["count"] for r in results], [1, 1, 1])

    # --- changes --------------------------------------------------------------------------

    def test_update_code_and_configuration(self):
        self.create("py-update", Environment={"Variables": {"GREETING": "one"}})
        first = payload_json(self.invoke("py-update"))
        self.assertEqual((first["version"], first["greeting"]), ("v1", "one"))
        old = self.lam.get_function_configuration(FunctionName="py-update")
        cfg = self.lam.update_function_configuration(FunctionName="py-update", Environment={"Variables": {"GREETING": "two"}},
                                                     Timeout=7, MemorySize=192)
        self.assertEqual((cfg["Timeout"], cfg["MemorySize"]), (7, 192))
        self.assertNotEqual(cfg["RevisionId"], old["RevisionId"])
        after = payload_json(self.invoke("py-update"))
        self.assertEqual((after["greeting"], after["memory"], after["count"]), ("two", 192, 1))
        v2 = make_zip({"app.py": PY_APP.replace('"version": "v1"', '"version": "v2"')})
        cfg = self.lam.update_function_code(FunctionName="py-update", ZipFile=v2)
        self.assertEqual(cfg["CodeSize"], len(v2))
        self.assertEqual(payload_json(self.invoke("py-update"))["version"], "v2")
        self.assertError("PreconditionFailedException",
                         lambda: self.lam.update_function_configuration(FunctionName="py-update", Timeout=9, RevisionId=old["RevisionId"]), 412)
        got = self.lam.get_function(FunctionName="py-update")
        self.assertEqual(got["Configuration"]["CodeSha256"], cfg["CodeSha256"])
        self.assertEqual(got["Code"]["RepositoryType"], "S3")

    def test_list_paging_and_delete(self):
        names = ["page-%d" % i for i in range(5)]
        for n in names:
            self.create(n)
        seen, marker, pages = [], None, 0
        while True:
            kw = {"MaxItems": 2}
            if marker:
                kw["Marker"] = marker
            page = self.lam.list_functions(**kw)
            pages += 1
            self.assertLessEqual(len(page["Functions"]), 2)
            seen += [f["FunctionName"] for f in page["Functions"] if f["FunctionName"].startswith("page-")]
            marker = page.get("NextMarker")
            if not marker:
                break
        self.assertEqual(seen, names)
        self.assertGreaterEqual(pages, 3)
        # The paginator the SDK ships works too.
        all_names = [f["FunctionName"] for p in self.lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 3}) for f in p["Functions"]]
        self.assertTrue(set(names) <= set(all_names))
        self.lam.delete_function(FunctionName="page-0")
        self.assertError("ResourceNotFoundException", lambda: self.lam.get_function(FunctionName="page-0"), 404)
        self.assertError("ResourceNotFoundException", lambda: self.lam.delete_function(FunctionName="page-0"), 404)
        self.assertNotIn("page-0", self.stored_names())

    def test_account_settings(self):
        s = self.lam.get_account_settings()
        self.assertEqual(s["AccountLimit"]["CodeSizeZipped"], 52428800)
        self.assertEqual(s["AccountLimit"]["CodeSizeUnzipped"], 262144000)
        self.assertGreaterEqual(s["AccountUsage"]["FunctionCount"], 0)
        # An operation Petrel does not implement is refused in Lambda's shape.
        self.assertError("UnknownOperationException", lambda: self.lam.list_code_signing_configs(), 404)

    # --- validation: refused, nothing stored ----------------------------------------------

    def test_validation_errors_store_nothing(self):
        before, blobs = self.stored_names(), self.code_blobs()
        bad = [
            ("ValidationException", dict(FunctionName="bad name!")),
            ("ValidationException", dict(FunctionName="x" * 65)),
            ("ValidationException", dict(FunctionName="v-mem", MemorySize=127)),
            ("ValidationException", dict(FunctionName="v-mem", MemorySize=10241)),
            ("ValidationException", dict(FunctionName="v-to", Timeout=901)),
            ("ValidationException", dict(FunctionName="v-eph", EphemeralStorage={"Size": 511})),
            ("ValidationException", dict(FunctionName="v-eph", EphemeralStorage={"Size": 10241})),
            ("InvalidParameterValueException", dict(FunctionName="v-env", Environment={"Variables": {"BIG": "x" * 5000}})),
            ("InvalidParameterValueException", dict(FunctionName="v-env", Environment={"Variables": {"AWS_REGION": "x"}})),
            ("InvalidParameterValueException", dict(FunctionName="v-env", Environment={"Variables": {"PETREL_RUNTIME_API_SOCKET": "@x"}})),
            ("InvalidParameterValueException", dict(FunctionName="v-rt", Runtime="python2.7")),
            ("InvalidParameterValueException", dict(FunctionName="v-arch", Architectures=["arm64"])),
            ("ValidationException", dict(FunctionName="v-role", Role="not-a-role")),
        ]
        for code, kw in bad:
            args = dict(FunctionName="ok", Runtime="python3.11", Role=ROLE, Handler="app.handler", Code={"ZipFile": self.py_zip})
            args.update(kw)
            with self.subTest(kw=str(kw)[:80]):
                self.assertError(code, lambda: self.raw.create_function(**args), 400)
        self.assertEqual(self.stored_names(), before)
        self.assertEqual(self.code_blobs(), blobs)
        # A name that is taken.
        self.create("v-dup")
        self.assertError("ResourceConflictException", lambda: self.create("v-dup"), 409)
        # Updates are validated the same way and change nothing.
        cfg = self.config("v-dup")
        self.assertError("ValidationException", lambda: self.raw.update_function_configuration(FunctionName="v-dup", MemorySize=64))
        self.assertError("ValidationException", lambda: self.raw.update_function_configuration(FunctionName="v-dup", Timeout=0))
        self.assertEqual(self.config("v-dup"), cfg)

    def test_bad_zips_are_refused_and_store_nothing(self):
        before, blobs = self.stored_names(), self.code_blobs()
        import io, zipfile
        bomb = io.BytesIO()
        with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("a.bin", b"\0" * (130 * 1024 * 1024))
            z.writestr("b.bin", b"\0" * (130 * 1024 * 1024))
        cases = {
            "traversal": make_zip({"../escape.py": "x = 1"}),
            "deep-traversal": make_zip({"lib/../../escape.py": "x = 1"}),
            "absolute": make_zip({"/etc/evil.py": "x = 1"}),
            "link-out": make_zip({"app.py": PY_APP}, links={"passwd": "../../../../etc/passwd"}),
            "link-absolute": make_zip({"app.py": PY_APP}, links={"passwd": "/etc/passwd"}),
            "link-dangling": make_zip({"app.py": PY_APP}, links={"nothing": "missing.txt"}),
            # Each link stays inside on paper; together, "b" resolves to the package's parent.
            "link-chain": make_zip({"app.py": PY_APP}, links={"a": ".", "b": "a/.."}),
            "bomb": bomb.getvalue(),
            "not-a-zip": b"this is not a zip file at all",
        }
        for label, z in cases.items():
            with self.subTest(zip=label):
                err = self.assertError("InvalidParameterValueException", lambda: self.create("zip-" + label, z), 400)
        self.assertEqual(self.stored_names(), before)
        self.assertEqual(self.code_blobs(), blobs)
        staging = [n for n in os.listdir(os.path.join(self.daemon.run, "code")) if n.startswith(".staging")]
        self.assertEqual(staging, [])
        # A link that stays inside the package is fine.
        # (One-character names once crashed the daemon through Foundation's path code.)
        ok = make_zip({"app.py": PY_APP, "lib/data.txt": "d", "x": "one-character name", "l/y": "y"},
                      links={"data": "lib/data.txt", "z": "x"})
        self.create("zip-inside-link", ok)
        self.assertEqual(payload_json(self.invoke("zip-inside-link"))["version"], "v1")
        # Bad code on update changes nothing either.
        cfg = self.lam.get_function_configuration(FunctionName="zip-inside-link")
        self.assertError("InvalidParameterValueException", lambda: self.lam.update_function_code(FunctionName="zip-inside-link", ZipFile=cases["traversal"]))
        self.assertEqual(self.lam.get_function_configuration(FunctionName="zip-inside-link")["CodeSha256"], cfg["CodeSha256"])

    # --- what an instance can reach ----------------------------------------------------------

    def test_instance_reaches_only_its_own_runtime_api(self):
        probe = '''
import os, socket, json, urllib.request, urllib.error
def post(path, body=b"{}"):
    try:
        r = urllib.request.urlopen(urllib.request.Request("http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + path, data=body, method="POST"))
        return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
def handler(event, context):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", event["port"]))
        api = "connected"
    except OSError as e:
        api = type(e).__name__
    foreign = post("/2018-06-01/runtime/invocation/not-the-current-request/response")
    unknown = post("/2018-06-01/runtime/nothing-here")
    return {"api": api, "foreign": foreign, "unknown": unknown}
'''
        self.create("reach", make_zip({"app.py": probe}))
        out = payload_json(self.invoke("reach", {"port": self.daemon.port}))
        # The daemon's API port on loopback is the host's; the sandbox's loopback is its own.
        self.assertEqual(out["api"], "ConnectionRefusedError", out)
        # The Runtime API answers only for the invocation in flight.
        self.assertEqual(out["foreign"][0], 400, out)
        self.assertEqual(json.loads(out["foreign"][1])["errorType"], "InvalidRequestID")
        self.assertEqual(out["unknown"][0], 404, out)

    def test_instances_run_at_their_memory_share_after_init(self):
        # Init runs with every host CPU; from the first `next` on, the cgroup's quota is the
        # memory-proportional one (1,024 MB of 1,769 per CPU, per 20 ms period).
        self.create("share", MemorySize=1024)
        self.invoke("share")
        want = int(1024 / 1769 * 20000)
        boosted = os.cpu_count() * 20000
        quotas = []
        for d in sandbox_leftovers()["cgroups"]:
            for f in ("cpu.cfs_quota_us", "cpu.max"):
                try:
                    with open(os.path.join(d, f)) as fh:
                        quotas.append(int(fh.read().split()[0]))
                except (OSError, ValueError):
                    pass
        self.assertIn(want, quotas, quotas)
        self.assertNotIn(boosted, quotas, "an instance kept the CPU boost of its init: %s" % quotas)

    # --- at rest ---------------------------------------------------------------------------

    def test_code_is_encrypted_at_rest(self):
        marker = "PETREL_SECRET_MARKER_4f1c9e"
        z = make_zip({"app.py": PY_APP + "\nMARK = %r\n" % marker}, )
        # Store it uncompressed too, so a clear-text copy would show the marker plainly.
        import io, zipfile
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("app.py", PY_APP + "\nMARK = %r\n" % marker)
        self.create("at-rest", buf.getvalue())
        key = os.path.join(self.daemon.data, "master.key")
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        for root, _, files in os.walk(self.daemon.data):
            for f in files:
                p = os.path.join(root, f)
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                with open(p, "rb") as fh:
                    self.assertNotIn(marker.encode(), fh.read(), "%s holds the code in clear" % p)

    # --- logs -------------------------------------------------------------------------------

    def test_logs_can_be_read_back(self):
        self.create("py-logs")
        r = self.invoke("py-logs", {"hello": "logs"})
        rid = r["ResponseMetadata"]["RequestId"]
        logs = self.daemon.client("logs")
        import time
        deadline = time.time() + 10
        messages = []
        while time.time() < deadline:
            try:
                ev = logs.filter_log_events(logGroupName="/aws/lambda/py-logs")["events"]
            except ClientError as e:  # the first lines are written a moment after the answer
                self.assertEqual(e.response["Error"]["Code"], "ResourceNotFoundException")
                time.sleep(0.05)
                continue
            messages = [e["message"] for e in ev]
            if any(m.startswith("REPORT RequestId: " + rid) for m in messages):
                break
            time.sleep(0.2)
        self.assertIn("START RequestId: %s Version: $LATEST" % rid, messages)
        self.assertTrue(any(m.startswith("hello from py-logs " + rid) for m in messages), messages)
        streams = logs.describe_log_streams(logGroupName="/aws/lambda/py-logs")["logStreams"]
        self.assertEqual(len(streams), 1)
        self.assertRegex(streams[0]["logStreamName"], r"^\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}$")
        got = logs.get_log_events(logGroupName="/aws/lambda/py-logs", logStreamName=streams[0]["logStreamName"])["events"]
        self.assertEqual([e["message"] for e in got], messages)
        with self.assertRaises(ClientError) as cm:
            logs.filter_log_events(logGroupName="/aws/lambda/never-ran")
        self.assertEqual(cm.exception.response["Error"]["Code"], "ResourceNotFoundException")

    # --- the AWS CLI ------------------------------------------------------------------------

    def test_aws_cli(self):
        zpath = os.path.join(self.daemon.root, "cli.zip")
        with open(zpath, "wb") as f:
            f.write(self.py_zip)
        out = json.loads(self.daemon.aws("lambda", "create-function", "--function-name", "cli-fn", "--runtime", "python3.11",
                                         "--handler", "app.handler", "--role", ROLE, "--zip-file", "fileb://" + zpath).stdout)
        self.assertEqual(out["FunctionName"], "cli-fn")
        res = os.path.join(self.daemon.root, "cli-out.json")
        meta = json.loads(self.daemon.aws("lambda", "invoke", "--function-name", "cli-fn", "--payload", '{"cli": true}',
                                          "--log-type", "Tail", res).stdout)
        self.assertEqual(meta["StatusCode"], 200)
        with open(res) as f:
            self.assertEqual(json.load(f)["echo"], {"cli": True})
        self.assertIn("REPORT RequestId:", base64.b64decode(meta["LogResult"]).decode())
        r = self.daemon.aws("lambda", "get-function", "--function-name", "nope", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ResourceNotFoundException", r.stderr)
        self.assertIn("Function not found", r.stderr)
        self.daemon.aws("lambda", "delete-function", "--function-name", "cli-fn")


class LogRetentionTest(unittest.TestCase):
    """Function logs are kept for their group's retention (PutRetentionPolicy), else the
    daemon's log_retention_days; older events are deleted (at start, then every 10 minutes)."""

    def test_old_logs_are_deleted_by_their_groups_retention(self):
        import sqlite3
        d = Daemon(extra_env={"PETREL_LOG_RETENTION_DAYS": "30"}).start()
        try:
            with d.log_on_failure():
                lam, logs = d.client(), d.client("logs")
                names = ["ret-default", "ret-own", "ret-keep", "ret-reset"]
                for name in names:
                    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                        Code={"ZipFile": make_zip({"app.py": PY_APP})})
                    lam.invoke(FunctionName=name, Payload=b"{}")
                def messages(name):
                    try:
                        return [e["message"] for e in logs.filter_log_events(logGroupName="/aws/lambda/" + name)["events"]]
                    except ClientError as e:
                        self.assertEqual(e.response["Error"]["Code"], "ResourceNotFoundException")
                        return None
                def wait(cond, what):
                    deadline = time.time() + 15
                    while time.time() < deadline:
                        if cond():
                            return
                        time.sleep(0.1)
                    self.fail(what)
                for name in names:
                    wait(lambda: any(m.startswith("REPORT") for m in messages(name) or []), "no REPORT line for " + name)
                def retention():
                    return {g["logGroupName"].rsplit("/", 1)[1]: g.get("retentionInDays")
                            for g in logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/ret-")["logGroups"]}
                self.assertEqual(retention(), dict.fromkeys(names, 30))
                logs.put_retention_policy(logGroupName="/aws/lambda/ret-own", retentionInDays=7)
                d.aws("logs", "put-retention-policy", "--log-group-name", "/aws/lambda/ret-keep", "--retention-in-days", "60")
                logs.put_retention_policy(logGroupName="/aws/lambda/ret-reset", retentionInDays=3653)
                logs.delete_retention_policy(logGroupName="/aws/lambda/ret-reset")
                self.assertEqual(retention(), {"ret-default": 30, "ret-own": 7, "ret-keep": 60, "ret-reset": 30})
                # Refused, changing nothing: a value CloudWatch does not offer, a group that does not exist.
                raw = d.client("logs", validate=False)
                for days in (8, 0, "7"):
                    with self.assertRaises(ClientError) as cm:
                        raw.put_retention_policy(logGroupName="/aws/lambda/ret-own", retentionInDays=days)
                    self.assertEqual(cm.exception.response["Error"]["Code"], "InvalidParameterException")
                    self.assertEqual(cm.exception.response["ResponseMetadata"]["HTTPStatusCode"], 400)
                for call in (lambda: logs.put_retention_policy(logGroupName="/aws/lambda/nope", retentionInDays=7),
                             lambda: logs.delete_retention_policy(logGroupName="/aws/lambda/nope")):
                    with self.assertRaises(ClientError) as cm:
                        call()
                    self.assertEqual(cm.exception.response["Error"]["Code"], "ResourceNotFoundException")
                self.assertEqual(retention(), {"ret-default": 30, "ret-own": 7, "ret-keep": 60, "ret-reset": 30})
                kept = messages("ret-keep")
                # Make the events old: stop the daemon, move their times back, start it again.
                self.assertEqual(d.stop(), 0)
                db = sqlite3.connect(os.path.join(d.data, "petrel.sqlite"))
                day = 86400000
                for name, days in (("ret-default", 31), ("ret-own", 8), ("ret-keep", 40), ("ret-reset", 29)):
                    group = "000000000000/aws/lambda/" + name
                    # A chunk's line times are kept relative to its base_ts: moving the base moves them all.
                    db.execute("UPDATE log_chunks SET base_ts = base_ts - ?1, min_ts = min_ts - ?1, max_ts = max_ts - ?1"
                               " WHERE stream IN (SELECT id FROM log_streams WHERE log_group = ?2)", (days * day, group))
                    db.execute("UPDATE log_streams SET created = created - ?, last_event = last_event - ? WHERE log_group = ?",
                               (days * day, days * day, group))
                db.commit()
                db.close()
                d.start()
                lam, logs = d.client(), d.client("logs")
                wait(lambda: messages("ret-default") is None and messages("ret-own") is None, "old events were not deleted")
                self.assertEqual(messages("ret-keep"), kept)
                self.assertTrue(any(m.startswith("REPORT") for m in messages("ret-reset")))
                self.assertEqual(retention(), {"ret-keep": 60, "ret-reset": 30})
                # A group whose events all went comes back with the next invocation, its policy with it.
                lam.invoke(FunctionName="ret-own", Payload=b"{}")
                wait(lambda: any(m.startswith("REPORT") for m in messages("ret-own") or []), "ret-own logs nothing after expiry")
                self.assertEqual(retention()["ret-own"], 7)
        finally:
            d.stop_and_check()


class RuntimeFallbackTest(unittest.TestCase):
    """Petrel's runtimes on the host, against a fake Runtime API: when the abstract socket
    they are told of is not there, they use AWS_LAMBDA_RUNTIME_API instead."""

    def falls_back(self, handler_file, handler_source, command, env):
        """Runs `command` (a bootstrap of rootfs/runtimes/, with the handler in a directory of
        its own) against a fake Runtime API that hands out two events; checks it answered both."""
        import tempfile
        rootfs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "rootfs")
        api = FakeRuntimeAPI([{"n": 1}, {"n": 2}])
        with tempfile.TemporaryDirectory() as task:
            with open(os.path.join(task, handler_file), "w") as f:
                f.write(handler_source)
            base = {"PATH": "/usr/bin:/bin", "AWS_LAMBDA_RUNTIME_API": api.address, "AWS_LAMBDA_FUNCTION_NAME": "fallback",
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
                    "PETREL_RUNTIME_API_SOCKET": "@petrel-test-absent-%d-%d" % (os.getpid(), time.monotonic_ns())}
            base.update({k: v.replace("{task}", task) for k, v in env.items()})
            proc = subprocess.Popen([c.replace("{rootfs}", rootfs) for c in command], env=base,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                self.assertTrue(api.done.wait(30), "the runtime did not come back for a second event")
            finally:
                proc.kill()
                out = proc.communicate()[0]
                api.close()
        self.assertEqual([a[2] for a in api.answers], [{"got": {"n": 1}, "id": "req-0"}, {"got": {"n": 2}, "id": "req-1"}], out)
        self.assertTrue(all(a[0] == "POST" and a[1].endswith("/response") for a in api.answers), api.answers)

    def test_python_falls_back_to_tcp(self):
        self.falls_back("app.py", "def handler(e, c):\n    return {'got': e, 'id': c.aws_request_id}\n",
                        ["/usr/bin/python3", "-S", "-u", "{rootfs}/runtimes/python/bootstrap.py"],
                        {"_HANDLER": "app.handler", "PYTHONPATH": "{task}", "PYTHONDONTWRITEBYTECODE": "1"})

    def test_node_falls_back_to_tcp(self):
        self.falls_back("index.js", "exports.handler = async (e, c) => ({got: e, id: c.awsRequestId});\n",
                        ["/usr/bin/node", "{rootfs}/runtimes/node/bootstrap.js"],
                        {"_HANDLER": "index.handler", "LAMBDA_TASK_ROOT": "{task}"})


class RestartTest(unittest.TestCase):
    def test_kill_9_loses_no_answered_invocations_log_lines(self):
        # What a function printed is journaled before its invocation is answered: a kill -9
        # right after a burst of answers loses none of their lines (they are stored at the
        # next start). Without the journal the lines of the last batch window were lost.
        with Daemon().started() as d:
            lam = d.client()
            lam.create_function(FunctionName="durable", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": "def handler(e, c):\n    print('printed', e['i'])\n    return e\n"})})
            keys = d.admin_keys()
            answered, lock, killed = set(), threading.Lock(), threading.Event()
            def invoke_until_killed(k):
                import boto3, botocore.config
                c = boto3.client("lambda", endpoint_url=d.endpoint, region_name="us-east-1", aws_access_key_id=keys[0],
                                 aws_secret_access_key=keys[1],
                                 config=botocore.config.Config(retries={"max_attempts": 0}, connect_timeout=2, read_timeout=30))
                i = k
                while not killed.is_set():
                    try:
                        r = c.invoke(FunctionName="durable", Payload=json.dumps({"i": i}).encode())
                    except Exception:
                        return
                    if r["StatusCode"] == 200 and "FunctionError" not in r:
                        with lock:
                            answered.add(i)
                            if len(answered) >= 400 and not killed.is_set():
                                killed.set()
                                d.proc.send_signal(signal.SIGKILL)
                    i += 8
            threads = [threading.Thread(target=invoke_until_killed, args=(k,)) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            self.assertTrue(killed.is_set())
            d.proc.wait()
            d.proc = None
            d.log.close()
            d.start()
            printed = {int(e["message"].split()[1]) for e in log_events(d, "/aws/lambda/durable", "printed ")}
            missing = sorted(answered - printed)
            self.assertEqual(missing, [], "%d of %d answered invocations lack their line after kill -9" % (len(missing), len(answered)))

    def test_sigterm_drains_in_flight_invocations(self):
        with Daemon().started() as d:
            lam = d.client()
            lam.create_function(FunctionName="drain", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": PY_APP})}, Timeout=20)
            lam.invoke(FunctionName="drain")  # warm
            result = {}
            def slow():
                result["r"] = payload_json(lam.invoke(FunctionName="drain", Payload=json.dumps({"sleep": 2}).encode()))
            t = threading.Thread(target=slow)
            t.start()
            import time
            time.sleep(0.7)
            d.proc.send_signal(signal.SIGTERM)
            t.join(30)
            self.assertEqual(result.get("r", {}).get("echo"), {"sleep": 2}, "the in-flight invocation must finish")
            self.assertEqual(d.proc.wait(30), 0)
            d.proc = None
            d.log.close()
            left = sandbox_leftovers()
            self.assertFalse(left["loops"] or left["procs"] or left["cgroups"], left)

    def test_altered_code_is_never_run(self):
        with Daemon().started() as d:
            lam = d.client()
            lam.create_function(FunctionName="sealed", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": PY_APP})})
            self.assertEqual(d.stop(), 0)
            blobs = [os.path.join(d.data, "code", n) for n in os.listdir(os.path.join(d.data, "code"))]
            self.assertEqual(len(blobs), 1)
            with open(blobs[0], "r+b") as f:
                f.seek(40)
                b = f.read(1)
                f.seek(40)
                f.write(bytes([b[0] ^ 0xFF]))
            d.start()
            with self.assertRaises(ClientError) as cm:
                d.client().invoke(FunctionName="sealed")
            e = cm.exception.response
            self.assertEqual(e["ResponseMetadata"]["HTTPStatusCode"], 500)
            self.assertEqual(e["Error"]["Code"], "ServiceException")
            self.assertIn("does not decrypt", e["Error"]["Message"])

    def test_one_daemon_per_data_directory(self):
        with Daemon().started() as d:
            second = subprocess.run([d.proc.args[0], "serve", "--listen", "127.0.0.1:1", "--data-dir", d.data, "--run-dir", d.run + "2"],
                                    capture_output=True, text=True, timeout=60)
            self.assertNotEqual(second.returncode, 0)
            self.assertIn("another petreld (pid %d) is using the data directory" % d.proc.pid, second.stderr)

    def test_one_daemon_per_run_directory(self):
        # A second daemon with a data directory of its own but the first one's run directory
        # would stage the runtimes over the files the first one's sandboxes bind.
        with Daemon().started() as d:
            lam = d.client()
            lam.create_function(FunctionName="staged", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": PY_APP})})
            self.assertEqual(payload_json(lam.invoke(FunctionName="staged"))["echo"], {})
            def staged_files():
                out = {}
                for top, _, files in os.walk(d.run):
                    if os.path.relpath(top, d.run).split(os.sep)[0].startswith("rootfs"):
                        for f in files:
                            out[os.path.join(top, f)] = os.stat(os.path.join(top, f)).st_ino
                return out
            before = staged_files()
            self.assertTrue(before)
            other = tempfile.mkdtemp(prefix="petrel-e2e-", dir="/var/tmp")
            try:
                second = subprocess.run([PETRELD, "serve", "--listen", "127.0.0.1:%d" % free_port(),
                                         "--data-dir", os.path.join(other, "data"), "--run-dir", d.run],
                                        capture_output=True, text=True, timeout=60)
            finally:
                shutil.rmtree(other, ignore_errors=True)
            self.assertNotEqual(second.returncode, 0)
            self.assertIn("another petreld (pid %d) is using the run directory %s" % (d.proc.pid, d.run), second.stderr)
            # The first daemon's staged files are the same files, and its cold starts still work.
            self.assertEqual(staged_files(), before)
            lam.update_function_configuration(FunctionName="staged", Environment={"Variables": {"GREETING": "again"}})
            self.assertEqual(payload_json(lam.invoke(FunctionName="staged"))["greeting"], "again")


    def test_functions_survive_a_restart(self):
        with Daemon().started() as d:
            lam = d.client()
            z = make_zip({"app.py": PY_APP})
            for i in range(3):
                lam.create_function(FunctionName="keep-%d" % i, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                    Code={"ZipFile": z}, Environment={"Variables": {"GREETING": "g%d" % i}})
            before = lam.list_functions()["Functions"]
            self.assertEqual(payload_json(lam.invoke(FunctionName="keep-1"))["greeting"], "g1")
            self.assertEqual(d.stop(), 0)
            d.start()
            lam = d.client()
            after = lam.list_functions()["Functions"]
            self.assertEqual(after, before)
            for i in range(3):
                self.assertEqual(payload_json(lam.invoke(FunctionName="keep-%d" % i))["greeting"], "g%d" % i)
            # A daemon killed outright also keeps them. Its port is closed at once: no
            # sandbox it was preparing holds a copy of its listener (one did, and took the
            # next daemon's first connections, then reset them).
            d.stop(sig=9)
            with self.assertRaises(OSError, msg="something still accepts on the killed daemon's port"):
                socket.create_connection(("127.0.0.1", d.port), timeout=1).close()
            d.start()
            self.assertEqual(d.client().list_functions()["Functions"], before)
            self.assertEqual(payload_json(d.client().invoke(FunctionName="keep-2"))["greeting"], "g2")


if __name__ == "__main__":
    unittest.main()
