"""Scripts/bench queues: Petrel's SQS queues and event source mappings on this
machine, beside the asynchronous Event invoke path measured in the same run
(the platform's other durable way into a function):

  accepted/s     SendMessage and SendMessageBatch (10 per request), each message
                 fsynced before its answer, beside Event invocations accepted/s;
  delivered/s    a backlog drained through an SQS mapping (batches of 10) into a
                 no-op function, beside the same number of Event invocations run;
  idle latency   send -> the function has it, one message at a time into an idle
                 mapping, beside an Event invocation's queue -> function.

All driven by `petrel load` (the senders) and boto3 (set-up). Prints a table; --json for machines."""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "E2E"))
from harness import ROLE, Daemon, make_zip, metric  # noqa: E402
from bench_common import latencies, pct, wait_until  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOOP = "def handler(event, context):\n    return None\n"
# Prints how long ago each record was sent (SQS: SentTimestamp; Event: the payload's "sent").
LATENCY = """import time
def handler(event, context):
    now = time.time() * 1000
    if "Records" in event:
        for r in event["Records"]:
            print("LAT %.3f" % (now - int(r["attributes"]["SentTimestamp"])))
    else:
        print("LAT %.3f" % (now - event["sent"]))
"""


def load(d, petrel, args, seconds=None, concurrency=8):
    """`petrel load` for `seconds`, or (None) until the `--requests` in `args` are done."""
    timing = ["--duration", str(seconds)] if seconds else []
    r = subprocess.run([petrel, "load", "--concurrency", str(concurrency), "--json", "--endpoint", d.endpoint] + timing + args,
                       capture_output=True, text=True, check=True, env=d.tool_env())
    return json.loads(r.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--backlog", type=int, default=20000, help="messages (and events) drained end to end")
    ap.add_argument("--samples", type=int, default=50, help="idle-latency samples")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    petreld = os.path.join(REPO, ".build", "release", "petreld")
    petrel = os.path.join(REPO, ".build", "release", "petrel")
    os.environ["PETRELD"] = petreld
    import harness
    harness.PETRELD = petreld
    d = Daemon(root=tempfile.mkdtemp(prefix="petrel-bench-", dir="/var/tmp"), extra_env={"PETREL_LOG_LEVEL": "warning"})
    results = {}
    try:
        d.start()
        lam, sqs = d.client(), d.client("sqs")
        lam.create_function(FunctionName="bench-noop", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": NOOP})}, Timeout=10)
        # Accepting: each answer means stored and fsynced.
        sink = sqs.create_queue(QueueName="bench-sink")["QueueUrl"]
        body = json.dumps({"order": 12345, "items": ["a", "b", "c"], "note": "x" * 100})
        with open(os.path.join(d.root, "body.json"), "w") as f:
            f.write(body)
        results["send"] = load(d, petrel, ["--queue", sink, "--payload", "@" + os.path.join(d.root, "body.json")], a.seconds)
        sqs.purge_queue(QueueUrl=sink)
        results["batch"] = load(d, petrel, ["--queue", sink, "--batch", "10", "--payload", "@" + os.path.join(d.root, "body.json")], a.seconds)
        sqs.purge_queue(QueueUrl=sink)
        # The peer: Event invocations of a function with no consumer running meanwhile? It runs:
        # its events are consumed as they come, as they would be in use.
        results["event"] = load(d, petrel, ["--function", "bench-noop", "--event", "--payload", "@" + os.path.join(d.root, "body.json")], a.seconds)
        wait_until(lambda: (metric(d, "petrel_async_queue_depth") or 0) == 0, 300)

        # Delivered end to end: a backlog drained through a mapping, beside the same number of Event invocations.
        src = sqs.create_queue(QueueName="bench-src", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        load(d, petrel, ["--queue", src, "--batch", "10", "--requests", str(a.backlog // 10), "--payload", "@" + os.path.join(d.root, "body.json")])
        started = time.time()
        m = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName="bench-noop", BatchSize=10)
        def drained():
            at = sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["All"])["Attributes"]
            return at["ApproximateNumberOfMessages"] == "0" and at["ApproximateNumberOfMessagesNotVisible"] == "0"
        wait_until(drained, 600)
        results["mapping_drain"] = {"messages": a.backlog, "seconds": time.time() - started}
        lam.delete_event_source_mapping(UUID=m["UUID"])
        before = metric(d, "petrel_async_events_total", outcome="succeeded") or 0
        started = time.time()
        load(d, petrel, ["--function", "bench-noop", "--event", "--requests", str(a.backlog), "--payload", "@" + os.path.join(d.root, "body.json")])
        wait_until(lambda: (metric(d, "petrel_async_events_total", outcome="succeeded") or 0) - before >= a.backlog, 600)
        results["event_drain"] = {"events": a.backlog, "seconds": time.time() - started}

        # Idle latency: one message at a time, into an idle mapping; one Event at a time.
        lam.create_function(FunctionName="bench-lat-sqs", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": LATENCY})}, Timeout=10)
        lam.create_function(FunctionName="bench-lat-event", Runtime="python3.11", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": LATENCY})}, Timeout=10)
        lat = sqs.create_queue(QueueName="bench-lat")["QueueUrl"]
        lat_arn = sqs.get_queue_attributes(QueueUrl=lat, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        lam.create_event_source_mapping(EventSourceArn=lat_arn, FunctionName="bench-lat-sqs", BatchSize=10)
        sqs.send_message(QueueUrl=lat, MessageBody="warm")
        lam.invoke(FunctionName="bench-lat-event", InvocationType="Event", Payload=json.dumps({"sent": time.time() * 1000}))
        time.sleep(1)
        for _ in range(a.samples):
            sqs.send_message(QueueUrl=lat, MessageBody="m")
            lam.invoke(FunctionName="bench-lat-event", InvocationType="Event", Payload=json.dumps({"sent": time.time() * 1000}))
            time.sleep(0.1)
        results["latency_sqs"] = latencies(d, "bench-lat-sqs", a.samples + 1)[1:]
        results["latency_event"] = latencies(d, "bench-lat-event", a.samples + 1)[1:]
    finally:
        d.stop()
        shutil.rmtree(d.root, ignore_errors=True)

    if a.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return
    s, b, e = results["send"], results["batch"], results["event"]
    md, ed = results["mapping_drain"], results["event_drain"]
    ls, le = results["latency_sqs"], results["latency_event"]
    rows = [
        ("accepted, fsynced (c=8)", "Petrel", "beside: Event invoke"),
        ("  SendMessage", "%.0f msg/s (p50 %.2f ms)" % (s["messagesPerSecond"], s["latencyMs"]["p50"]),
         "%.0f events/s (p50 %.2f ms)" % (e["throughputPerSecond"], e["latencyMs"]["p50"])),
        ("  SendMessageBatch x10", "%.0f msg/s (p50 %.2f ms)" % (b["messagesPerSecond"], b["latencyMs"]["p50"]), ""),
        ("delivered to a no-op function", "SQS mapping, batches of 10", "Event invoke"),
        ("  %d queued" % md["messages"], "%.0f msg/s" % (md["messages"] / md["seconds"]), "%.0f events/s" % (ed["events"] / ed["seconds"])),
        ("idle: sent -> in the function", "SQS mapping", "Event invoke"),
        ("  p50 / p90 (%d samples)" % len(ls), "%.1f / %.1f ms" % (pct(ls, 50), pct(ls, 90)), "%.1f / %.1f ms" % (pct(le, 50), pct(le, 90))),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for r in rows:
        print(r[0].ljust(w0) + "  " + r[1].ljust(w1) + "  " + r[2])


if __name__ == "__main__":
    main()
