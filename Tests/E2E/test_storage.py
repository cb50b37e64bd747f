"""The data directory on a small disk of the test's own: function logs stay within
their budget, a noisy function cannot push a quiet one's logs out, and when the
disk fills anyway petreld keeps answering, counts what it could not store, keeps
what it stored intact, and stores again once there is room."""

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import unittest

from harness import ROLE, Daemon, log_events, make_zip, metric, payload_json, sandbox_leftovers

# Prints `size` bytes of text that does not compress, then its marker line.
NOISY = '''
import os, base64
def handler(event, context):
    print(base64.b64encode(os.urandom(event.get("size", 12000))).decode())
    print("marker", event.get("i"))
    return {"i": event.get("i")}
'''


class SmallDisk:
    """An ext4 filesystem of `mb` MB on a loop device, mounted at a directory of its own."""

    def __init__(self, mb):
        self.base = tempfile.mkdtemp(prefix="petrel-smalldisk-", dir="/var/tmp")
        self.image = os.path.join(self.base, "disk.img")
        self.mnt = os.path.join(self.base, "mnt")
        os.mkdir(self.mnt)
        with open(self.image, "wb") as f:
            f.truncate(mb << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", self.image], check=True)
        subprocess.run(["mount", "-o", "loop", self.image, self.mnt], check=True)

    def free(self):
        st = os.statvfs(self.mnt)
        return st.f_bavail * st.f_frsize

    def remove(self):
        subprocess.run(["umount", self.mnt], check=False)
        shutil.rmtree(self.base, ignore_errors=True)


def du(path):
    total = 0
    for top, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(top, f)).st_blocks * 512
            except OSError:
                pass
    return total


class StorageTest(unittest.TestCase):
    def test_logs_within_budget_and_a_full_disk(self):
        disk = SmallDisk(128)
        run_dir = tempfile.mkdtemp(prefix="petrel-e2e-run-", dir="/var/tmp")
        budget = 8 << 20
        os.mkdir(os.path.join(disk.mnt, "petrel"))
        d = Daemon(root=os.path.join(disk.mnt, "petrel"), extra_env={"PETREL_LOG_STORAGE_MB": "8"})
        # Only the data directory is on the small disk: the run directory (a tmpfs in production)
        # and the daemon's own log are elsewhere.
        d.run = run_dir
        d.log_path = os.path.join(run_dir, "petreld.log")
        try:
            d.start()
            with d.log_on_failure():
                self.budget_and_fairness(d, budget)
                self.full_disk(d, disk)
            self.assertEqual(d.stop(), 0)
            left = sandbox_leftovers()
            loops = [l for l in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines() if disk.mnt in l]
            self.assertFalse(left["procs"] or left["cgroups"] or loops, (left, loops))
            # What was stored is intact: SQLite's own check of every page and index.
            db = sqlite3.connect(os.path.join(d.data, "petrel.sqlite"))
            try:
                self.assertEqual(db.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
            finally:
                db.close()
        finally:
            try:
                d.stop()
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
                disk.remove()

    def invoke_many(self, d, name, indices, size=12000, threads=4):
        """Invokes with `threads` callers at once; each call must answer 200 with its own payload."""
        keys = d.admin_keys()
        answers = {}
        def work(part):
            c = d.client(keys=keys)
            for i in part:
                try:
                    r = c.invoke(FunctionName=name, Payload=json.dumps({"i": i, "size": size}).encode())
                    answers[i] = (r["StatusCode"], r.get("FunctionError"), payload_json(r))
                except Exception as e:
                    answers[i] = (None, repr(e), None)
        threads = [threading.Thread(target=work, args=(indices[k::threads],)) for k in range(threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        self.assertEqual(sorted(answers), sorted(indices))
        for i, (status, error, body) in answers.items():
            self.assertEqual((status, error, body), (200, None, {"i": i}))

    def markers(self, d, name):
        return {int(e["message"].split()[1]) for e in log_events(d, "/aws/lambda/" + name, "marker ")}

    @staticmethod
    def whole_log(d):
        with open(d.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def events(self, d, name):
        return log_events(d, "/aws/lambda/" + name)

    def wait(self, what, cond, timeout=30):
        deadline = time.time() + timeout
        while not cond():
            self.assertLess(time.time(), deadline, what)
            time.sleep(0.2)

    def budget_and_fairness(self, d, budget):
        lam = d.client()
        for name in ("quiet", "noisy", "marker"):
            lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": NOISY})})
        self.invoke_many(d, "quiet", list(range(10)), size=100)
        # Warm, before the disk fills: a cold start there cannot make its /tmp (the scratch
        # disks' images live in the data directory), so the full-disk phase runs on warm instances.
        self.invoke_many(d, "marker", [-1], size=10)
        self.wait("the quiet lines are stored", lambda: self.markers(d, "quiet") == set(range(10)))
        # About 16 KB of stored text per invocation: 1,500 of them are three times the budget.
        self.invoke_many(d, "noisy", list(range(1500)))
        # (The gauge is published twice a second: wait for an eviction, then for the store within its budget.)
        self.wait("an eviction", lambda: (metric(d, "petrel_log_events_evicted_total") or 0) > 0)
        self.wait("the store back within its budget", lambda: (metric(d, "petrel_log_stored_bytes") or budget + 1) <= budget)
        self.assertGreater(metric(d, "petrel_log_events_evicted_total") or 0, 0)
        # The noisy group lost its oldest lines; the quiet one lost nothing.
        self.assertEqual(self.markers(d, "quiet"), set(range(10)))
        # (The writer stores the last lines up to 100 ms after their invocations answered.)
        self.wait("the newest noisy line stored", lambda: 1499 in self.markers(d, "noisy"))
        noisy = self.markers(d, "noisy")
        self.assertTrue(0 not in noisy, sorted(noisy)[:5])
        groups = {g["logGroupName"]: g["storedBytes"] for g in d.client("logs").describe_log_groups()["logGroups"]}
        self.assertLessEqual(sum(groups.values()), budget)
        # The data directory holds about the budget (SQLite reuses what was freed), not 24 MB of logs.
        self.assertLess(du(d.data), 3 * budget, "the data directory grew past the budget")

    def full_disk(self, d, disk):
        # Fill what is left of the disk, as something else on it would.
        filler = os.path.join(disk.mnt, "filler")
        with open(filler, "wb") as f:
            block = os.urandom(1 << 20)
            try:
                while True:
                    f.write(block)
                    f.flush()
            except OSError:
                pass
            try:
                while True:
                    f.write(block[:4096])
                    f.flush()
            except OSError:
                pass
        self.assertLess(disk.free(), 1 << 20)
        dropped0 = metric(d, "petrel_log_lines_dropped_total") or 0
        # Warm instances keep answering while nothing can be written; noisy output fills whatever
        # pages SQLite had free, until lines are lost (and counted).
        start = 2000
        while (metric(d, "petrel_log_lines_dropped_total") or 0) <= dropped0:
            self.assertLess(start, 6000, "4,000 noisy invocations on a full disk and not one line lost?")
            self.invoke_many(d, "noisy", list(range(start, start + 200)))
            start += 200
            time.sleep(0.5)
        self.assertIn("cannot store log lines", self.whole_log(d))
        # Every line is stored or counted as lost: five per marker invocation (START, its two
        # lines, END, REPORT), while nothing else runs.
        def settled(read):
            last = None
            for _ in range(20):
                time.sleep(0.3)
                now = read()
                if now == last:
                    return now
                last = now
            return last
        before = settled(lambda: (len(self.events(d, "marker")), metric(d, "petrel_log_lines_dropped_total") or 0))
        self.invoke_many(d, "marker", list(range(100)), size=10, threads=1)
        self.wait("every marker line stored or counted", lambda: (len(self.events(d, "marker")) - before[0])
                  + ((metric(d, "petrel_log_lines_dropped_total") or 0) - before[1]) >= 500)
        after = settled(lambda: (len(self.events(d, "marker")), metric(d, "petrel_log_lines_dropped_total") or 0))
        self.assertEqual((after[0] - before[0]) + (after[1] - before[1]), 500, "lines neither stored nor counted: %s -> %s" % (before, after))
        # What was stored before is still there.
        self.assertEqual(self.markers(d, "quiet"), set(range(10)))
        # Room again: lines are stored again, without a restart.
        os.unlink(filler)
        self.invoke_many(d, "marker", list(range(200, 220)), size=10, threads=1)
        self.wait("storing again", lambda: set(range(200, 220)) <= self.markers(d, "marker"))
        self.wait("the daemon says so", lambda: "can store log lines again" in self.whole_log(d))


if __name__ == "__main__":
    unittest.main()
