"""Issue 27 (running under systemd; the parts done so far): the unit in Config/systemd passes
`systemd-analyze verify`, and petreld speaks the readiness protocol its `Type=notify`
relies on: READY=1 once the API listens, STOPPING=1 when it begins to drain."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest

from harness import PETRELD, REPO, Daemon

UNIT = os.path.join(REPO, "Config", "systemd", "petreld.service")


class Systemd(unittest.TestCase):
    def test_the_unit_verifies(self):
        root = tempfile.mkdtemp(prefix="petrel-unit-", dir="/var/tmp")
        try:
            with open(UNIT) as f:
                text = f.read()
            for key in ("Type=notify", "Delegate=yes", "KillMode=mixed", "Restart=on-failure", "LimitNOFILE="):
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


if __name__ == "__main__":
    unittest.main()
