"""Running under systemd: the unit in Config/systemd passes `systemd-analyze verify`, and
petreld speaks the readiness protocol its `Type=notify` relies on (READY=1 once the API
listens, STOPPING=1 when it begins to drain, RELOADING=1 then READY=1 around a reload), and
reloads its configuration on SIGHUP (the unit's ExecReload)."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest

import botocore.exceptions

from harness import PETRELD, REPO, ROLE, Daemon, make_zip, wait_for

UNIT = os.path.join(REPO, "Config", "systemd", "petreld.service")


class Systemd(unittest.TestCase):
    def test_the_unit_verifies(self):
        root = tempfile.mkdtemp(prefix="petrel-unit-", dir="/var/tmp")
        try:
            with open(UNIT) as f:
                text = f.read()
            for key in ("Type=notify", "Delegate=yes", "KillMode=mixed", "Restart=on-failure", "LimitNOFILE=",
                        "ExecReload=/bin/kill -HUP $MAINPID"):
                self.assertIn(key, text)
            # (verify wants the ExecStart binary to exist: the build's stands in for /usr/bin/petreld.)
            path = os.path.join(root, "petreld.service")
            with open(path, "w") as f:
                f.write(text.replace("/usr/bin/petreld", os.path.abspath(PETRELD)))
            r = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertNotIn("petreld.service", r.stderr)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def test_ready_and_stopping_notifications(self):
        root = tempfile.mkdtemp(prefix="petrel-notify-", dir="/var/tmp")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        daemon = None
        try:
            path = os.path.join(root, "notify")
            sock.bind(path)
            sock.settimeout(60)
            daemon = Daemon(extra_env={"NOTIFY_SOCKET": path}).start()
            ready = sock.recv(4096).decode()
            self.assertIn("READY=1", ready.split("\n"))
            # Ready means serving: the API answers at once.
            daemon.client().list_functions()
            daemon.proc.send_signal(signal.SIGTERM)
            self.assertIn("STOPPING=1", sock.recv(4096).decode().split("\n"))
            daemon.proc.wait(timeout=60)
            self.assertEqual(daemon.proc.returncode, 0)
        finally:
            sock.close()
            if daemon is not None:
                daemon.stop_and_check()
            shutil.rmtree(root, ignore_errors=True)

    def test_a_strict_umask_and_run_directory_do_not_lock_sandboxes_out(self):
        # What a unit with UMask=0077 and RuntimeDirectoryMode=0700 gives petreld: the code it
        # unpacks and stages must still be reachable by the sandboxes' unprivileged users.
        daemon = Daemon()
        os.makedirs(daemon.run, mode=0o700)
        os.chmod(daemon.run, 0o700)
        old = os.umask(0o077)
        try:
            daemon.start()
        finally:
            os.umask(old)
        try:
            with daemon.log_on_failure():
                lam = daemon.client()
                lam.create_function(FunctionName="strict", Runtime="python3.11", Role=ROLE, Handler="a.handler",
                                    Code={"ZipFile": make_zip({"a.py": "def handler(e, c):\n    return 'reached'\n"})})
                r = lam.invoke(FunctionName="strict")
                body = r["Payload"].read()
                self.assertNotIn("FunctionError", r, body)
                self.assertEqual(body, b'"reached"')
                self.assertEqual(os.stat(daemon.run).st_mode & 0o777, 0o711)
        finally:
            daemon.stop_and_check()

    def test_sighup_reloads_what_it_can(self):
        root = tempfile.mkdtemp(prefix="petrel-reload-", dir="/var/tmp")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        daemon = None
        config = os.path.join(root, "petreld.toml")

        def write(text):
            with open(config + ".tmp", "w") as f:
                f.write(text)
            os.replace(config + ".tmp", config)
        try:
            path = os.path.join(root, "notify")
            sock.bind(path)
            sock.settimeout(60)
            write('[logging]\nlevel = "info"\n[sources]\nkafka_allow = ""\n')
            daemon = Daemon(extra_env={"NOTIFY_SOCKET": path}, config=config).start()
            with daemon.log_on_failure():
                self.assertIn("READY=1", sock.recv(4096).decode().split("\n"))
                lam = daemon.client()
                lam.create_function(FunctionName="reload", Runtime="python3.11", Role=ROLE, Handler="a.handler",
                                    Code={"ZipFile": make_zip({"a.py": "def handler(e, c):\n    return 1\n"})})
                mapping = {"FunctionName": "reload", "Topics": ["t"], "StartingPosition": "LATEST",
                           "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["127.0.0.1:9"]}}}
                with self.assertRaises(botocore.exceptions.ClientError) as cm:
                    lam.create_event_source_mapping(**mapping)
                self.assertIn("kafka_allow", cm.exception.response["Error"]["Message"])
                lam.list_functions()
                self.assertNotIn("api.action=ListFunctions", daemon.read_log(), "no debug lines at level info")

                # The level and the Kafka allow list change at once; the retention waits for a restart.
                write('[logging]\nlevel = "debug"\n[sources]\nkafka_allow = "127.0.0.1:9"\n'
                      '[storage]\nlog_retention_days = 7\n')
                daemon.proc.send_signal(signal.SIGHUP)
                self.assertIn("RELOADING=1", sock.recv(4096).decode().split("\n"))
                self.assertIn("READY=1", sock.recv(4096).decode().split("\n"))
                log = wait_for(lambda: "configuration reloaded" in daemon.read_log() and daemon.read_log(), what="the reload")
                self.assertIn("applied=kafka_allow,log_level", log)
                self.assertIn("restart.needed=log_retention_days", log)
                uuid = lam.create_event_source_mapping(**mapping)["UUID"]
                lam.delete_event_source_mapping(UUID=uuid)
                lam.list_functions()
                wait_for(lambda: "api.action=ListFunctions" in daemon.read_log(), what="a debug line after the reload")

                # A configuration that does not load changes nothing, and the daemon goes on.
                write('[logging]\nlevel = "loud"\n')
                daemon.proc.send_signal(signal.SIGHUP)
                self.assertIn("RELOADING=1", sock.recv(4096).decode().split("\n"))
                self.assertIn("READY=1", sock.recv(4096).decode().split("\n"))
                wait_for(lambda: "was not reloaded" in daemon.read_log(), what="the refused reload")
                self.assertIn("unknown log level loud", daemon.read_log())
                before = daemon.read_log().count("api.action=ListFunctions")
                lam.list_functions()
                wait_for(lambda: daemon.read_log().count("api.action=ListFunctions") > before, what="still at debug")
                self.assertIsNone(daemon.proc.poll())
        finally:
            sock.close()
            if daemon is not None and daemon.proc is not None:
                daemon.stop_and_check()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
