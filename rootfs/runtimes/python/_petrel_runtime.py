"""Petrel's python3.11 runtime: pulls invocations from the Runtime API
(AWS_LAMBDA_RUNTIME_API), calls the handler named by _HANDLER
(module.function) and posts the result or the error, in the shapes AWS
Lambda's own Python runtime produces. `bootstrap.py` starts it: as an imported
module it is read from the bytecode petreld compiles when it starts, where a
main script would be compiled again at every cold start."""

import os
import sys
import time

# Start-up is part of every cold start. `json` (which imports `re`), `socket` (which
# imports `enum`) and `traceback` are slow imports (`python3 -S -X importtime` shows
# them); the runtime uses the C parts directly and loads the rest only when it needs them.
try:
    import _socket as socket
    import _json

    class _ScanContext:
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__
        memo = {}

    _scan = _json.make_scanner(_ScanContext())

    def _no_default(o):
        raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)


    def json_loads(text):
        i, n = 0, len(text)
        while i < n and text[i] in " \t\n\r":
            i += 1
        try:
            obj, end = _scan(text, i)
        except StopIteration:
            raise ValueError("Expecting value at char %d" % i) from None
        while end < n and text[end] in " \t\n\r":
            end += 1
        if end != n:
            raise ValueError("Extra data at char %d" % end)
        return obj

    def json_dumps(obj):
        # A fresh encoder each time: its circular-reference markers must start empty.
        encode = _json.make_encoder({}, _no_default, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)
        return "".join(encode(obj, 0))
except ImportError:  # another Python: the plain modules
    import json
    import socket
    json_loads, json_dumps = json.loads, json.dumps

API = "127.0.0.1:9001"  # AWS_LAMBDA_RUNTIME_API, read by main()
# The type of a generator (without importing `types` at every cold start).
_GENERATOR = type((lambda: (yield))())
BASE = "/2018-06-01/runtime"
NEXT = BASE + "/invocation/next"


class RuntimeAPI:
    """A minimal HTTP/1.1 client on one keep-alive connection: to Petrel's abstract
    socket when PETREL_RUNTIME_API_SOCKET names one (the same API without the TCP/IP
    stack in every exchange), else to AWS_LAMBDA_RUNTIME_API."""

    def __init__(self, address, unix=""):
        host, _, port = address.rpartition(":")
        self.address = (host, int(port))
        # An abstract name, NUL-padded to the whole sun_path (108 bytes) as petreld binds it.
        self.unix = ("\0" + unix[1:]).ljust(108, "\0") if unix.startswith("@") and 1 < len(unix) < 108 else None
        self.sock = None
        self.buf = b""

    def _connect(self):
        self.buf = b""
        if self.unix:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.unix)
                self.sock = s
                return
            except OSError:
                s.close()
                self.unix = None  # not there: TCP from now on
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.connect(self.address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, method, path, body=b"", headers=None):
        return self._retrying(lambda: self._exchange([(method, path, body, headers or {})])[0])

    def post_then_next(self, path, body, headers):
        """POSTs a result and asks for the next invocation in the same write
        (HTTP/1.1 pipelining): one wake-up for the 202 and the event together.
        Returns the answer to `next`."""
        return self._retrying(lambda: self._exchange([("POST", path, body, headers), ("GET", NEXT, b"", {})])[-1])

    def _retrying(self, exchange):
        for attempt in (0, 1):
            try:
                if self.sock is None:
                    self._connect()
                return exchange()
            except (ConnectionError, OSError):
                self.sock = None
                if attempt:
                    raise

    def _exchange(self, requests):
        out = []
        for method, path, body, headers in requests:
            lines = ["%s %s HTTP/1.1" % (method, path), "Host: " + API, "Content-Length: %d" % len(body)]
            lines += ["%s: %s" % kv for kv in headers.items()]
            out.append(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        self.sock.sendall(b"".join(out))
        answers = []
        for i in range(len(requests)):
            if self.sock is None:  # the server closed after an answer: ask again for what is left
                self._connect()
                return answers + self._exchange(requests[i:])
            answers.append(self._read())
        return answers

    def _read(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        hdrs = {}
        for line in header_lines:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        length = int(hdrs.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        payload, self.buf = self.buf[:length], self.buf[length:]
        if hdrs.get("connection", "").lower() == "close":
            self.sock.close()
            self.sock = None
        return status, hdrs, payload

    def stream(self, rid, items):
        """POSTs a response in the Runtime API's streaming mode: each item of `items`
        (bytes, or str as UTF-8) is sent as a chunk as soon as it is produced; an exception
        ends the stream with Lambda's error trailers. Returns the answer to `next`."""
        if self.sock is None:
            self._connect()
        s = self.sock
        s.sendall(("POST %s/invocation/%s/response HTTP/1.1\r\nHost: %s\r\n"
                   "Lambda-Runtime-Function-Response-Mode: streaming\r\nContent-Type: application/octet-stream\r\n"
                   "Transfer-Encoding: chunked\r\n"
                   "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n"
                   % (BASE, rid, API)).encode("latin-1"))
        try:
            for item in items:
                b = item.encode("utf-8") if isinstance(item, str) else bytes(item)
                if b:  # an empty chunk would end the body
                    s.sendall(b"%x\r\n%s\r\n" % (len(b), b))
            end = b"0\r\n\r\n"
        except Exception as e:
            import binascii
            doc = error_document(e, rid)
            log_error(doc)
            end = (b"0\r\nLambda-Runtime-Function-Error-Type: " + doc["errorType"].encode("latin-1", "replace")
                   + b"\r\nLambda-Runtime-Function-Error-Body: " + binascii.b2a_base64(json_dumps(doc).encode(), newline=False)
                   + b"\r\n\r\n")
        sys.stdout.flush()
        sys.stderr.flush()
        s.sendall(end)
        self._read()  # the 202
        return self.request("GET", NEXT)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the Runtime API closed the connection")
        self.buf += chunk


class LambdaContext:
    def __init__(self, request_id, headers):
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = headers.get("lambda-runtime-invoked-function-arn")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self._deadline_ms = int(headers.get("lambda-runtime-deadline-ms", "0"))
        cc = headers.get("lambda-runtime-client-context")
        ci = headers.get("lambda-runtime-cognito-identity")
        self.client_context = _Namespace(json_loads(cc)) if cc else None
        self.identity = _Namespace(json_loads(ci)) if ci else None

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def __repr__(self):
        return "LambdaContext([aws_request_id=%s,function_name=%s])" % (self.aws_request_id, self.function_name)


class _Namespace:
    def __init__(self, d):
        for k, v in (d or {}).items():
            setattr(self, k, v)


def error_document(exc, request_id=""):
    import traceback
    tb = traceback.extract_tb(exc.__traceback__)
    # Drop the runtime's own frames, as Lambda does.
    frames = [f for f in tb if not f.filename.startswith("/var/runtime/")]
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(frames),
    }


def log_error(doc):
    sys.stderr.write("[ERROR] %s: %s\nTraceback (most recent call last):\n%s" % (
        doc["errorType"], doc["errorMessage"], "".join(doc["stackTrace"])))
    sys.stderr.flush()


def init_error(api, error_type, message, stack=None):
    doc = {"errorMessage": message, "errorType": error_type, "requestId": "", "stackTrace": stack or []}
    log_error(doc)
    api.request("POST", BASE + "/init/error", json_dumps(doc).encode(),
                {"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": error_type})
    sys.exit(1)


def load_handler(api):
    handler = os.environ.get("_HANDLER", "")
    sys.path[0:0] = ["/var/task", "/opt/python/lib/python3.11/site-packages", "/opt/python"]
    # boto3 and botocore, as Lambda's runtime ships them: after the function's own and its
    # layers' (whose copies win), before nothing else.
    sys.path.append("/var/lang/python-sdk")
    # The interpreter runs without `site` (-S): give back the two names it would have added.
    import builtins
    if not hasattr(builtins, "exit"):
        builtins.exit = builtins.quit = sys.exit
    modname, _, fname = handler.rpartition(".")
    if not modname or not fname:
        init_error(api, "Runtime.MalformedHandlerName",
                   "Bad handler '%s': not enough values to unpack (expected 2, got 1)" % handler)
    modname = modname.replace("/", ".")
    try:
        # __import__ rather than importlib.import_module: importing `importlib`
        # (and `warnings` with it) would be part of every cold start.
        __import__(modname)
        module = sys.modules[modname]
    except ImportError as e:
        init_error(api, "Runtime.ImportModuleError", "Unable to import module '%s': %s" % (modname, e))
    except SyntaxError as e:
        init_error(api, "Runtime.UserCodeSyntaxError", "Syntax error in module '%s': %s" % (modname, e))
    except Exception as e:
        doc = error_document(e)
        init_error(api, doc["errorType"], doc["errorMessage"], doc["stackTrace"])
    fn = getattr(module, fname, None)
    if fn is None:
        init_error(api, "Runtime.HandlerNotFound", "Handler '%s' missing on module '%s'" % (fname, modname))
    return fn


TRACE_KEY = "_X_AMZN_TRACE_ID"


def set_trace_id(trace):
    """The invocation's trace header, in os.environ for the handler. Only Python's view
    of the environment changes: os.environ[...] = v calls setenv(), and glibc keeps every
    distinct value ever set until the process ends (about 140 bytes per invocation, since
    each one has its own id). Processes the handler starts with the inherited environment
    do not see it; pass env=os.environ to hand it on."""
    env = os.environ
    data = getattr(env, "_data", None)
    if data is None:  # not CPython's os._Environ: the plain way
        if trace:
            env[TRACE_KEY] = trace
        else:
            env.pop(TRACE_KEY, None)
        return
    if trace:
        data[env.encodekey(TRACE_KEY)] = env.encodevalue(trace)
    else:
        data.pop(env.encodekey(TRACE_KEY), None)


def prestarted():
    """A pre-started runtime (petreld started it ahead, with the runtime's constant
    variables and no function): says it has loaded, waits for its function, then makes
    its process what a fresh start's would be: the working directory and the whole
    environment (in the same order), with what the interpreter itself added to the one it
    started with (LC_CTYPE, when it coerces the C locale), as it would add it to the
    function's. Nothing here imports a module or keeps a descriptor."""
    fd = os.environ.get("PETREL_STEM_FD")
    if fd is None:
        return
    fd = int(fd)
    with open("/proc/self/environ", "rb") as f:
        started = {item.partition(b"=")[0] for item in f.read().split(b"\0")}
    added = [(k, v) for k, v in os.environ.items() if os.fsencode(k) not in started]
    os.write(fd, b"r")
    parts = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        parts.append(b)
    os.close(fd)
    fields = b"".join(parts).split(b"\0")
    env = os.environ
    env.clear()
    for item in fields[1:-1]:
        k, _, v = item.partition(b"=")
        env[os.fsdecode(k)] = os.fsdecode(v)
    for k, v in added:
        if k not in env:
            env[k] = v
    os.chdir(fields[0])


def main():
    global API
    prestarted()
    API = os.environ.get("AWS_LAMBDA_RUNTIME_API", API)
    api = RuntimeAPI(API, os.environ.get("PETREL_RUNTIME_API_SOCKET", ""))
    init_start = "%.3f" % (time.time() * 1000)
    fn = load_handler(api)
    sys.stdout.flush()
    sys.stderr.flush()
    answer = api.request("GET", NEXT, headers={"Petrel-Init-Start": init_start})
    while True:
        status, headers, body = answer
        if status != 200:
            time.sleep(0.01)
            answer = api.request("GET", NEXT)
            continue
        rid = headers.get("lambda-runtime-aws-request-id", "")
        set_trace_id(headers.get("lambda-runtime-trace-id"))
        try:
            event = json_loads(body.decode("utf-8")) if body else {}
        except ValueError as e:
            answer = post_error(api, rid, {"errorMessage": "Unable to unmarshal input: %s" % e,
                                           "errorType": "Runtime.UnmarshalError", "requestId": rid, "stackTrace": []})
            continue
        try:
            result = fn(event, LambdaContext(rid, headers))
        except Exception as e:
            doc = error_document(e, rid)
            log_error(doc)
            answer = post_error(api, rid, doc)
            continue
        if type(result) is _GENERATOR:
            # Petrel's way to stream a response (Lambda's Python runtime has none): a handler
            # that returns a generator has each item it yields sent as it is yielded.
            answer = api.stream(rid, result)
            continue
        try:
            out = json_dumps(result).encode()
        except (TypeError, ValueError, RecursionError) as e:
            answer = post_error(api, rid, {"errorMessage": "Unable to marshal response: %s" % e,
                                           "errorType": "Runtime.MarshalError", "requestId": rid, "stackTrace": []})
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        answer = api.post_then_next(BASE + "/invocation/%s/response" % rid, out, {"Content-Type": "application/json"})


def post_error(api, rid, doc):
    """Posts an invocation's error; returns the answer to the next `next`."""
    sys.stdout.flush()
    sys.stderr.flush()
    return api.post_then_next(BASE + "/invocation/%s/error" % rid, json_dumps(doc).encode(),
                              {"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": doc["errorType"]})
