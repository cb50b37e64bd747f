"""The Debian package (Scripts/package): lintian reports no errors; it installs, runs,
upgrades keeping the data and the operator's configuration, and purges cleanly, on this
machine and in a fresh debootstrap root."""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import unittest

import boto3
import botocore.config
import botocore.exceptions

from harness import REPO, ROLE, free_port, make_zip, parse_credentials, sandbox_leftovers

APP = "import boto3\ndef handler(e, c):\n    return {'got': e, 'sdk': boto3.__file__}\n"

CHROOT_TAR = "/var/cache/petrel-tests/debootstrap-bookworm.tar"
INSTALLED = ["/usr/bin/petreld", "/usr/bin/petrel", "/usr/lib/petrel/petrel-init", "/usr/lib/petrel/petrel_sam.py",
             "/usr/share/petrel/rootfs/etc/passwd", "/usr/share/petrel/policies/default.toml", "/etc/petrel/petreld.toml",
             "/lib/systemd/system/petreld.service", "/usr/share/man/man8/petreld.8.gz", "/usr/share/man/man1/petrel.1.gz",
             "/usr/share/doc/petrel/copyright"]


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 600), **kw)
    if r.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n%s" % (" ".join(cmd), r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
    return r


OFFLINE = ("-o", "Acquire::http::Proxy=http://127.0.0.1:9/")
APT = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.out = tempfile.mkdtemp(prefix="petrel-deb-", dir="/var/tmp")
        env = dict(os.environ, PETREL_BUILD="debug")
        cls.debs = {}
        for revision in ("1", "2"):
            r = run([os.path.join(REPO, "Scripts", "package"), "--out", cls.out], env=dict(env, PETREL_PACKAGE_REVISION=revision),
                    timeout=1200)
            cls.debs[revision] = r.stdout.strip().splitlines()[-1]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.out, ignore_errors=True)

    def test_lintian_reports_no_errors(self):
        deb = self.debs["1"]
        self.assertTrue(os.path.basename(deb).startswith("petrel_0.1.0-1_"), deb)
        r = subprocess.run(["lintian", "--tag-display-limit", "0", deb], capture_output=True, text=True, timeout=600)
        errors = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("E:")]
        self.assertEqual(errors, [], r.stdout + r.stderr)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        info = run(["dpkg-deb", "-f", deb]).stdout
        for field in ("Package: petrel", "Version: 0.1.0-1", "libseccomp2", "nftables", "python3"):
            self.assertIn(field, info)
        listing = run(["dpkg-deb", "-c", deb]).stdout
        self.assertIn("./usr/lib/petrel/swift/libswiftCore.so", listing)
        self.assertIn(" ./etc/petrel/petreld.toml", listing)
        self.assertEqual(run(["dpkg-deb", "-I", deb, "conffiles"]).stdout.split(), ["/etc/petrel/petreld.toml"])

    def test_install_run_upgrade_purge_here(self):
        # The test installs and purges the package on this machine: it never touches a
        # daemon's data or configuration that it did not make.
        for path in ("/var/lib/petrel", "/etc/petrel", "/usr/bin/petreld"):
            self.assertFalse(os.path.exists(path), "%s exists on this machine; the package test installs and purges petrel "
                                                   "here and will not touch it: move it away and run the test again" % path)
        try:
            run(["apt-get", "install", "-y", "-q", self.debs["1"]], env=APT)
            for path in INSTALLED:
                self.assertTrue(os.path.exists(path), path)
            self.assertEqual(stat.S_IMODE(os.stat("/var/lib/petrel").st_mode), 0o700)
            self.assertIn("petreld 0.1.0", run(["/usr/bin/petreld", "--version"]).stdout)
            self.assertIn("petrel 0.1.0", run(["/usr/bin/petrel", "--version"]).stdout)
            self.assertIn("petreld.8", run(["man", "-w", "petreld"]).stdout)
            run(["systemd-analyze", "verify", "/lib/systemd/system/petreld.service"])

            # The installed daemon runs on its installed configuration, rootfs and sandbox init.
            self.serve_and_invoke("before")
            with open("/etc/petrel/petreld.toml", "a") as f:
                f.write("\n# an operator's edit\n")

            run(["apt-get", "install", "-y", "-q", self.debs["2"]], env=APT)
            self.assertIn("Version: 0.1.0-2", run(["dpkg", "-s", "petrel"]).stdout)
            with open("/etc/petrel/petreld.toml") as f:
                self.assertIn("# an operator's edit", f.read(), "the upgrade kept the operator's configuration")
            # The data came through: the function made before the upgrade still answers.
            self.serve_and_invoke("after")

            run(["apt-get", "purge", "-y", "-q", "petrel"], env=APT)
            for path in INSTALLED + ["/var/lib/petrel", "/etc/petrel", "/usr/lib/petrel", "/usr/share/petrel"]:
                self.assertFalse(os.path.exists(path), "%s is left after the purge" % path)
            self.assertNotEqual(subprocess.run(["dpkg", "-s", "petrel"], capture_output=True).returncode, 0)
        finally:
            if subprocess.run(["dpkg", "-s", "petrel"], capture_output=True).returncode == 0:
                subprocess.run(["apt-get", "purge", "-y", "-q", "petrel"], env=APT, capture_output=True, timeout=300)
            shutil.rmtree("/var/lib/petrel", ignore_errors=True)
            shutil.rmtree("/etc/petrel", ignore_errors=True)

    def serve_and_invoke(self, phase):
        port, url_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PETREL_")}
        env["PETREL_URL_LISTEN"] = "127.0.0.1:%d" % url_port
        log = open(os.path.join(self.out, "petreld-%s.log" % phase), "wb")
        proc = subprocess.Popen(["/usr/bin/petreld", "serve", "--listen", "127.0.0.1:%d" % port], stdout=log,
                                stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.time() + 30
            while True:
                self.assertIsNone(proc.poll(), "the installed petreld exited: " + self.read(log.name))
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    self.assertLess(time.time(), deadline, "the installed petreld did not listen")
                    time.sleep(0.1)
            with open("/var/lib/petrel/admin-credentials") as f:
                key, secret = parse_credentials(f.read())
            lam = boto3.client("lambda", endpoint_url="http://127.0.0.1:%d" % port, region_name="us-east-1",
                               aws_access_key_id=key, aws_secret_access_key=secret,
                               config=botocore.config.Config(retries={"max_attempts": 0}, read_timeout=60))
            if phase == "before":
                # The package's default refuses role ARNs that name no role: the function gets a real one.
                iam = boto3.client("iam", endpoint_url="http://127.0.0.1:%d" % port, region_name="us-east-1",
                                   aws_access_key_id=key, aws_secret_access_key=secret)
                with self.assertRaises(botocore.exceptions.ClientError):
                    lam.create_function(FunctionName="packaged", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                        Code={"ZipFile": make_zip({"app.py": APP})})
                trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                                 "Principal": {"Service": "lambda.amazonaws.com"}}]}
                role = iam.create_role(RoleName="packaged", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
                lam.create_function(FunctionName="packaged", Runtime="python3.11", Role=role, Handler="app.handler",
                                    Code={"ZipFile": make_zip({"app.py": APP})})
            out = json.loads(lam.invoke(FunctionName="packaged", Payload=json.dumps({"phase": phase}))["Payload"].read())
            # boto3 from the package's own copy, compiled by postinst.
            self.assertEqual(out, {"got": {"phase": phase}, "sdk": "/var/lang/python-sdk/boto3/__init__.py"})
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            log.close()
        self.assertEqual(code, 0, self.read(log.name))
        deadline = time.time() + 3
        while time.time() < deadline and any(sandbox_leftovers().values()):
            time.sleep(0.1)
        self.assertFalse(any(sandbox_leftovers().values()), sandbox_leftovers())

    def test_install_upgrade_purge_in_a_fresh_debootstrap_root(self):
        self.assertTrue(os.path.exists(CHROOT_TAR), "%s is missing: Scripts/setup makes it (debootstrap)" % CHROOT_TAR)
        root = tempfile.mkdtemp(prefix="petrel-chroot-", dir="/var/tmp")
        proc_mounted = False
        try:
            run(["tar", "-C", root, "-xf", CHROOT_TAR])
            for rev, deb in self.debs.items():
                shutil.copy(deb, os.path.join(root, "tmp", "petrel-%s.deb" % rev))
            run(["mount", "-t", "proc", "proc", os.path.join(root, "proc")])
            proc_mounted = True

            def chroot(*cmd):
                # From / inside the root: apt resolves paths against the working directory.
                return run(["chroot", root, "/bin/sh", "-c", 'cd / && exec "$@"', "sh"] + list(cmd), env=APT)
            # What petrel leaves behind is measured against the root with its dependencies
            # (whose own files are theirs to keep or remove).
            fields = run(["dpkg-deb", "-f", self.debs["1"], "Depends", "Recommends"]).stdout.replace("\n", ",")
            deps = sorted({p.split("(")[0].split(":")[-1].strip() for p in fields.split(",") if p.split("(")[0].split(":")[-1].strip()})
            chroot("apt-get", "install", "-y", "-q", *OFFLINE, *deps)
            before = self.files(root)
            # Only what the root's apt cache holds: apt's proxy is a loopback port where nothing
            # listens, so a package missing from the cache fails the install instead of being
            # fetched. (apt 2.6's --no-download cannot install a local .deb.)
            chroot("apt-get", "install", "-y", "-q", *OFFLINE, "/tmp/petrel-1.deb")
            self.assertIn("petreld 0.1.0", chroot("/usr/bin/petreld", "--version").stdout)
            self.assertIn("petrel 0.1.0", chroot("/usr/bin/petrel", "--version").stdout)
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(root, "var/lib/petrel")).st_mode), 0o700)
            with open(os.path.join(root, "var/lib/petrel/marker"), "w") as f:
                f.write("data")
            chroot("apt-get", "install", "-y", "-q", *OFFLINE, "/tmp/petrel-2.deb")
            self.assertIn("Version: 0.1.0-2", chroot("dpkg", "-s", "petrel").stdout)
            with open(os.path.join(root, "var/lib/petrel/marker")) as f:
                self.assertEqual(f.read(), "data", "the upgrade kept the data")
            chroot("apt-get", "purge", "-y", "-q", "petrel")
            for rev in self.debs:
                os.remove(os.path.join(root, "tmp", "petrel-%s.deb" % rev))
            run(["umount", os.path.join(root, "proc")])
            proc_mounted = False
            after = self.files(root)
            self.assertEqual(sorted(after - before), [], "files left after the purge")
        finally:
            if proc_mounted:
                subprocess.run(["umount", "-l", os.path.join(root, "proc")])
            shutil.rmtree(root, ignore_errors=True)
        with open("/proc/mounts") as f:
            self.assertFalse([m for m in f.read().splitlines() if "petrel-chroot-" in m])

    @staticmethod
    def read(path):
        with open(path, errors="replace") as f:
            return f.read()[-3000:]

    @staticmethod
    def files(root):
        """Every path of the root but the package manager's own records, logs and caches."""
        skip = ("var/lib/dpkg", "var/lib/apt", "var/log", "var/cache", "var/lib/systemd/deb-systemd-helper",
                "etc/ld.so.cache", "proc", "tmp", "var/lib/python", "etc/systemd/system")
        out = set()
        for dirpath, dirs, files in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            if rel != "." and rel.startswith(skip):
                dirs[:] = []
                continue
            for name in files + dirs:
                out.add(os.path.join(rel, name))
        return out


if __name__ == "__main__":
    unittest.main()
