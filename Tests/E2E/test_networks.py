"""Networks for functions (Lambda's VpcConfig on the operator's own networks): the test builds
the "outside" from network namespaces of its own (a router that forwards inside its own
namespace, a database-like server, a forbidden server) and proves that an attached
function reaches exactly what its network and rule set allow; that port 25 stays shut; that
instances on one network cannot connect to each other; that a function without VpcConfig, or
detached with empty lists, reaches nothing; and that nothing is left behind. Nothing touches
the root namespace's forwarding or NAT."""

import json
import os
import subprocess
import tempfile
import textwrap
import time
import unittest

from harness import ROLE, Daemon, assert_client_error, make_zip, payload_json

TAG = "pt%d" % (os.getpid() % 100000)
ROUTER, DB, OTHER = TAG + "-router", TAG + "-db", TAG + "-other"

PROBE = """\
import socket

def handler(event, context):
    out = {}
    for target in event.get("targets", []):
        host, port = target.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            out[target] = "ok"
        except OSError as e:
            out[target] = type(e).__name__
    return out
"""

LISTENER = """\
import socket, threading

def serve(s):
    while True:
        c, _ = s.accept()
        c.close()

def handler(event, context):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 7000))
    s.listen(8)
    threading.Thread(target=serve, args=(s,), daemon=True).start()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect(("10.199.1.2", 9))  # no packet: only picks the address the route gives
    return probe.getsockname()[0]
"""

SERVER = """\
import socket, sys, threading
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        c.close()
for p in sys.argv[2:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True, text=True)


class NetworksTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.servers = []
        cls.made = []
        try:
            cls.build_outside()
            cls.config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
            cls.config.write(textwrap.dedent("""\
                [logging]
                level = "debug"
                [networks.db]
                namespace = "%s"
                subnet = "10.199.0.0/24"
                allow = ["10.199.1.0/24:5432", "10.199.2.0/24:5432", "10.199.1.2:25", "10.199.0.0/24:7000"]
                [networks.elsewhere]
                namespace = "%s"
                subnet = "10.199.8.0/24"
                allow = ["10.199.1.0/24"]
                accounts = ["123456789012"]
                [security_groups.pg]
                allow = ["10.199.1.2:5432"]
                [security_groups.all]
                allow = ["0.0.0.0/0"]
                """ % (ROUTER, ROUTER)))
            cls.config.close()
            cls.daemon = Daemon(config=cls.config.name).start()
            cls.lam = cls.daemon.client()
        except BaseException:
            cls.tear_outside()
            raise

    @classmethod
    def build_outside(cls):
        # A router (forwarding inside its own namespace), a database-like server behind it
        # (5432, 6000, 25) and a forbidden one (5432), each in a namespace of the test's own.
        for ns in (ROUTER, DB, OTHER):
            sh("ip", "netns", "add", ns)
            cls.made.append(ns)
        sh("ip", "netns", "exec", ROUTER, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for ns, net, veth in ((DB, "10.199.1", TAG + "d"), (OTHER, "10.199.2", TAG + "o")):
            sh("ip", "-n", ROUTER, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", ROUTER, "addr", "add", net + ".1/24", "dev", veth)
            sh("ip", "-n", ROUTER, "link", "set", veth, "up")
            sh("ip", "-n", ns, "addr", "add", net + ".2/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", net + ".1")
        for ns, addr, ports in ((DB, "10.199.1.2", ["5432", "6000", "25"]), (OTHER, "10.199.2.2", ["5432"])):
            p = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", SERVER, addr] + ports,
                                 stdout=subprocess.PIPE, text=True)
            cls.servers.append(p)
            assert p.stdout.readline().strip() == "ready"

    @classmethod
    def tear_outside(cls):
        for p in cls.servers:
            p.kill()
            p.wait()
        for ns in reversed(cls.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.daemon.stop_and_check()
            # The instances' veths in the operator's namespace went with them.
            links = subprocess.run(["ip", "-n", ROUTER, "-o", "link"], capture_output=True, text=True).stdout
            assert not [l for l in links.splitlines() if ": pv" in l], links
        finally:
            cls.tear_outside()
            os.unlink(cls.config.name)

    def run(self, result=None):
        with self.daemon.log_on_failure():
            return super().run(result)

    def create(self, name, code, vpc=None, **kw):
        args = dict(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler", Timeout=20,
                    Code={"ZipFile": make_zip({"app.py": code})}, **kw)
        if vpc is not None:
            args["VpcConfig"] = vpc
        return self.lam.create_function(**args)

    def probe(self, name, *targets):
        return payload_json(self.lam.invoke(FunctionName=name, Payload=json.dumps({"targets": list(targets)})))

    def test_reaches_exactly_what_its_network_and_rule_set_allow(self):
        created = self.create("pg-client", PROBE, {"SubnetIds": ["db"], "SecurityGroupIds": ["pg"]})
        self.assertEqual(created["VpcConfig"], {"SubnetIds": ["db"], "SecurityGroupIds": ["pg"], "VpcId": "db",
                                                "Ipv6AllowedForDualStack": False})
        out = self.probe("pg-client", "10.199.1.2:5432", "10.199.1.2:6000", "10.199.2.2:5432", "10.199.1.2:25")
        # Refused at once inside the sandbox (ICMP admin-prohibited: no timeout), port 25 with a reset.
        self.assertEqual(out, {"10.199.1.2:5432": "ok", "10.199.1.2:6000": "OSError", "10.199.2.2:5432": "OSError",
                               "10.199.1.2:25": "ConnectionRefusedError"})
        # A wider rule set: the network still bounds it (6000 is not the network's), and 25 stays shut.
        self.lam.update_function_configuration(FunctionName="pg-client",
                                               VpcConfig={"SubnetIds": ["db"], "SecurityGroupIds": ["all"]})
        self.lam.get_waiter("function_updated_v2").wait(FunctionName="pg-client")
        out = self.probe("pg-client", "10.199.1.2:5432", "10.199.2.2:5432", "10.199.1.2:6000", "10.199.1.2:25")
        self.assertEqual(out, {"10.199.1.2:5432": "ok", "10.199.2.2:5432": "ok", "10.199.1.2:6000": "OSError",
                               "10.199.1.2:25": "ConnectionRefusedError"})
        # Detached with empty lists: loopback only again, as Lambda shows it.
        self.lam.update_function_configuration(FunctionName="pg-client", VpcConfig={"SubnetIds": [], "SecurityGroupIds": []})
        self.lam.get_waiter("function_updated_v2").wait(FunctionName="pg-client")
        config = self.lam.get_function_configuration(FunctionName="pg-client")
        self.assertEqual(config["VpcConfig"], {"SubnetIds": [], "SecurityGroupIds": [], "VpcId": "",
                                               "Ipv6AllowedForDualStack": False})
        out = self.probe("pg-client", "10.199.1.2:5432")
        self.assertNotEqual(out["10.199.1.2:5432"], "ok", out)
        self.lam.delete_function(FunctionName="pg-client")

    def test_no_vpc_config_reaches_nothing(self):
        created = self.create("loner", PROBE)
        self.assertNotIn("VpcConfig", created)
        out = self.probe("loner", "10.199.1.2:5432")
        self.assertNotEqual(out["10.199.1.2:5432"], "ok", out)
        self.lam.delete_function(FunctionName="loner")

    def test_instances_on_one_network_cannot_connect_to_each_other(self):
        self.create("listener", LISTENER, {"SubnetIds": ["db"], "SecurityGroupIds": ["all"]})
        address = payload_json(self.lam.invoke(FunctionName="listener"))
        self.assertTrue(address.startswith("10.199.0."), address)
        self.create("neighbour", PROBE, {"SubnetIds": ["db"], "SecurityGroupIds": ["all"]})
        target = "%s:7000" % address
        out = self.probe("neighbour", target, "10.199.1.2:5432")
        self.assertEqual(out["10.199.1.2:5432"], "ok", out)  # the neighbour has a working network
        self.assertEqual(out[target], "ConnectionRefusedError", out)  # the listener's firewall resets it
        for name in ("listener", "neighbour"):
            self.lam.delete_function(FunctionName=name)

    def test_bad_vpc_configs_are_refused_and_change_nothing(self):
        code = {"ZipFile": make_zip({"app.py": PROBE})}
        for vpc, words in (({"SubnetIds": ["nope"], "SecurityGroupIds": ["pg"]}, "not one of this Petrel's networks"),
                           ({"SubnetIds": ["db"], "SecurityGroupIds": ["nope"]}, "not one of this Petrel's rule sets"),
                           ({"SubnetIds": ["db"], "SecurityGroupIds": []}, "SecurityGroupIds are required"),
                           ({"SubnetIds": ["db", "elsewhere"], "SecurityGroupIds": ["pg"]}, "name one network"),
                           ({"SubnetIds": ["elsewhere"], "SecurityGroupIds": ["pg"]}, "may not attach")):
            err = assert_client_error(self, "InvalidParameterValueException", lambda: self.lam.create_function(
                FunctionName="bad-vpc", Runtime="python3.11", Role=ROLE, Handler="app.handler", Code=code, VpcConfig=vpc))
            self.assertIn(words, err["Error"]["Message"])
        assert_client_error(self, "ResourceNotFoundException", lambda: self.lam.get_function(FunctionName="bad-vpc"))

    def test_a_namespace_that_does_not_exist_is_refused_at_start(self):
        # The second is a name that is not one (it would reach ip's command line): refused before it is looked for.
        for namespace, words in (("%s-missing" % TAG, "there is no network namespace %s-missing" % TAG),
                                 ("%s\\nlink del lo" % ROUTER, "a name has 1 to 64 of [A-Za-z0-9._-]")):
            with tempfile.NamedTemporaryFile("w", suffix=".toml") as bad:
                bad.write('[networks.x]\nnamespace = "%s"\nsubnet = "10.199.9.0/24"\n' % namespace)
                bad.flush()
                d = Daemon(config=bad.name)
                with self.assertRaises(RuntimeError) as cm:
                    d.start()
                self.assertIn(words, str(cm.exception))


if __name__ == "__main__":
    unittest.main()
