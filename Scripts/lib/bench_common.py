"""What the benchmarks share: percentiles, waiting for a condition, and the latencies a
function printed (its `LAT <ms>` lines, read back through the Logs API)."""

import time


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def wait_until(fn, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(0.01)
    raise RuntimeError("timed out")


def latencies(d, function, n):
    logs = d.client("logs")
    out, token = [], None
    deadline = time.time() + 30
    while len(out) < n and time.time() < deadline:
        out, token = [], None
        while True:
            kw = {"logGroupName": "/aws/lambda/" + function, "filterPattern": '"LAT"'}
            if token:
                kw["nextToken"] = token
            try:
                page = logs.filter_log_events(**kw)
            except Exception:
                break
            # (START lines match "LAT" too: "Version: $LATEST".)
            out += [float(e["message"].split()[1]) for e in page["events"] if e["message"].startswith("LAT ")]
            token = page.get("nextToken")
            if not token:
                break
        time.sleep(0.2)
    return out
