"""Scripts/bench compare OTHER: petreld's CPU per warm invocation, this checkout's release
build beside OTHER's (another checkout, built with -c release), in paired rounds.

Both daemons run at once, each with the same function (it prints one line); the rounds
alternate between them (ABBA), each round the same number of invocations at concurrency 8,
and the CPU petreld spent (utime + stime from /proc) is divided by the invocations. On a
shared host absolute figures drift by tens of microseconds between runs minutes apart;
paired rounds see the same stretches of load, so the medians compare."""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_seconds(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("other", help="another checkout with a release build")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--runtime", default="python3.11", help="python3.11 or nodejs20.x")
    a = ap.parse_args()
    builds = {"this": os.path.join(HERE, ".build/release"), "other": os.path.join(os.path.abspath(a.other), ".build/release")}
    for name, b in builds.items():
        if not os.access(os.path.join(b, "petreld"), os.X_OK):
            sys.exit("Scripts/bench compare: %s has no release build of petreld (swift build -c release)" % b)
    petrel = os.path.join(builds["this"], "petrel")
    fn = tempfile.mkdtemp(prefix="petrel-compare-fn-", dir="/var/tmp")
    if a.runtime.startswith("node"):
        open(fn + "/index.js", "w").write("exports.handler = async (e, c) => { console.log('hello', c.awsRequestId); return e; };\n")
        handler = "index.handler"
    else:
        open(fn + "/app.py", "w").write("def handler(e, c):\n    print('hello', c.aws_request_id)\n    return e\n")
        handler = "app.handler"
    daemons = {}
    try:
        for i, (name, b) in enumerate(builds.items()):
            root = tempfile.mkdtemp(prefix="petrel-compare-", dir="/var/tmp")
            port = 9700 + i
            p = subprocess.Popen([b + "/petreld", "serve", "--listen", "127.0.0.1:%d" % port, "--data-dir", root + "/data",
                                  "--run-dir", root + "/run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=dict(os.environ, PETREL_URL_LISTEN="127.0.0.1:%d" % (port + 10)))
            daemons[name] = (p, root, port)
        time.sleep(4)

        def tool(name, *args):
            p, root, port = daemons[name]
            env = dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=root + "/data/admin-credentials", AWS_DEFAULT_REGION="us-east-1")
            return subprocess.run([petrel] + list(args) + ["--endpoint", "http://127.0.0.1:%d" % port], env=env, check=True,
                                  capture_output=True, text=True).stdout

        for name in daemons:
            tool(name, "deploy", fn, "--name", "f", "--runtime", a.runtime, "--handler", handler, "--memory", "1769")
            tool(name, "load", "--function", "f", "--concurrency", "8", "--requests", "5000", "--json")  # warm
        per = {n: [] for n in daemons}
        for r in range(a.rounds):
            for name in (["this", "other"] if r % 2 == 0 else ["other", "this"]):
                pid = daemons[name][0].pid
                c0 = cpu_seconds(pid)
                tool(name, "load", "--function", "f", "--concurrency", "8", "--requests", str(a.requests), "--json")
                per[name].append((cpu_seconds(pid) - c0) * 1e6 / a.requests)
        print("petreld CPU per warm invocation (%s, 1769 MB, concurrency 8, %d rounds of %d, alternating)" % (a.runtime, a.rounds, a.requests))
        for name, label in (("this", HERE), ("other", os.path.abspath(a.other))):
            v = per[name]
            print("  %-5s %6.1f us median  (rounds: %s)  %s" % (name, statistics.median(v), " ".join("%.0f" % x for x in v), label))
        print("  difference: %+.1f us (this - other)" % (statistics.median(per["this"]) - statistics.median(per["other"])))
    finally:
        for p, root, port in daemons.values():
            p.terminate()
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
            shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(fn, ignore_errors=True)


if __name__ == "__main__":
    main()
