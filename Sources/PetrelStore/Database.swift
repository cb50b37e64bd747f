import Foundation
import GRDB
import Glibc
import PetrelCore
import PetrelSystem
import Synchronization

/// The metadata store: one SQLite database in WAL mode (`<data>/petrel.sqlite`).
public final class PetrelDatabase: Sendable {
    public let pool: DatabasePool
    /// The directory the database lives in (the data directory).
    public let directory: String
    /// That directory, held open: a file in it is looked up from here in one step
    /// (the key generation is checked on every request).
    let directoryFD: Int32

    /// `adminAccount` owns what a data directory from before accounts holds.
    public init(path: String, adminAccount: String = "000000000000") throws {
        directory = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        directoryFD = try Sys.open(directory, O_DIRECTORY | O_RDONLY)
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            // NORMAL: in WAL mode a commit survives the process's death; the event queue's
            // commits (GroupCommit) switch to FULL for theirs, to survive the machine's too.
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // After a checkpoint the WAL is cut back to 4 MiB: without a limit it keeps the size
            // of its busiest stretch (tens of MB under a load test) for good.
            try db.execute(sql: "PRAGMA journal_size_limit = 4194304")
        }
        pool = try DatabasePool(path: path, configuration: config)
        try Self.migrator(adminAccount: adminAccount).migrate(pool)
    }

    deinit {
        Sys.close(directoryFD)
    }

    /// Runs `sql`, a DELETE whose last parameter is the most rows it may take, with
    /// `values` and then `limit`, one transaction at a time until a round takes fewer:
    /// the writer never waits long behind an expiry. Returns how many rows went.
    func deleteInBatches(_ sql: String, _ values: [(any DatabaseValueConvertible)?], limit: Int) throws -> Int {
        var deleted = 0
        while true {
            let n = try pool.write { db -> Int in
                try db.execute(sql: sql, arguments: StatementArguments(values + [limit]))
                return db.changesCount
            }
            deleted += n
            if n < limit { return deleted }
        }
    }

    static func migrator(adminAccount: String) -> DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE functions (
                        name TEXT PRIMARY KEY NOT NULL,
                        record TEXT NOT NULL,
                        code_hex TEXT NOT NULL
                    );
                    CREATE TABLE log_streams (
                        log_group TEXT NOT NULL,
                        log_stream TEXT NOT NULL,
                        created INTEGER NOT NULL,
                        last_event INTEGER NOT NULL,
                        PRIMARY KEY (log_group, log_stream)
                    );
                    CREATE TABLE log_events (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        log_group TEXT NOT NULL,
                        log_stream TEXT NOT NULL,
                        timestamp INTEGER NOT NULL,
                        ingested INTEGER NOT NULL,
                        message TEXT NOT NULL
                    );
                    CREATE INDEX log_events_by_stream ON log_events (log_group, log_stream, id);
                    CREATE INDEX log_events_by_time ON log_events (log_group, timestamp, id);
                    """)
        }
        m.registerMigration("v2-accounts") { db in
            precondition(adminAccount.utf8.allSatisfy { (48...57).contains($0) })
            try db.execute(
                sql: """
                    CREATE TABLE accounts (
                        id TEXT PRIMARY KEY NOT NULL,
                        name TEXT NOT NULL,
                        admin INTEGER NOT NULL DEFAULT 0,
                        created INTEGER NOT NULL
                    );
                    CREATE TABLE access_keys (
                        id TEXT PRIMARY KEY NOT NULL,
                        account TEXT NOT NULL,
                        secret_sealed BLOB NOT NULL,
                        status TEXT NOT NULL,
                        created INTEGER NOT NULL,
                        revoked INTEGER
                    );
                    CREATE INDEX access_keys_by_account ON access_keys (account);
                    CREATE TABLE data_keys (
                        id TEXT PRIMARY KEY NOT NULL,
                        account TEXT,
                        wrapped BLOB NOT NULL,
                        master_id TEXT NOT NULL,
                        created INTEGER NOT NULL,
                        description TEXT NOT NULL DEFAULT ''
                    );
                    CREATE TABLE audit (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        time INTEGER NOT NULL,
                        account TEXT,
                        key_id TEXT,
                        source TEXT NOT NULL,
                        action TEXT NOT NULL,
                        resource TEXT,
                        parameters TEXT NOT NULL,
                        status INTEGER NOT NULL,
                        error TEXT
                    );
                    CREATE INDEX audit_by_time ON audit (time);
                    CREATE TRIGGER audit_is_append_only_u BEFORE UPDATE ON audit
                        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
                    CREATE TRIGGER audit_is_append_only_d BEFORE DELETE ON audit
                        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
                    ALTER TABLE functions RENAME TO functions_v1;
                    CREATE TABLE functions (
                        account TEXT NOT NULL,
                        name TEXT NOT NULL,
                        record TEXT NOT NULL,
                        code_hex TEXT NOT NULL,
                        env_sealed BLOB,
                        PRIMARY KEY (account, name)
                    );
                    CREATE INDEX functions_by_code ON functions (code_hex);
                    INSERT INTO functions (account, name, record, code_hex)
                        SELECT '\(adminAccount)', name, json_set(record, '$.account', '\(adminAccount)'), code_hex FROM functions_v1;
                    DROP TABLE functions_v1;
                    UPDATE log_streams SET log_group = '\(adminAccount)' || log_group WHERE log_group LIKE '/%';
                    UPDATE log_events SET log_group = '\(adminAccount)' || log_group WHERE log_group LIKE '/%';
                    """)
        }
        m.registerMigration("v3-events") { db in
            try db.execute(
                sql: """
                    CREATE TABLE events (
                        id TEXT NOT NULL,
                        account TEXT NOT NULL,
                        function TEXT NOT NULL,
                        payload BLOB NOT NULL,
                        created INTEGER NOT NULL,
                        due INTEGER NOT NULL,
                        attempts INTEGER NOT NULL DEFAULT 0,
                        source TEXT NOT NULL,
                        last_response BLOB,
                        last_error TEXT,
                        PRIMARY KEY (account, id)
                    );
                    CREATE INDEX events_by_due ON events (due);
                    CREATE TABLE event_configs (
                        account TEXT NOT NULL,
                        function TEXT NOT NULL,
                        config TEXT NOT NULL,
                        PRIMARY KEY (account, function)
                    );
                    CREATE TABLE dead_letters (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        account TEXT NOT NULL,
                        function TEXT NOT NULL,
                        request_id TEXT NOT NULL,
                        condition TEXT NOT NULL,
                        created INTEGER NOT NULL,
                        record BLOB NOT NULL,
                        payload BLOB NOT NULL
                    );
                    CREATE INDEX dead_letters_by_function ON dead_letters (account, function, id);
                    CREATE TABLE schedules (
                        account TEXT NOT NULL,
                        name TEXT NOT NULL,
                        function TEXT NOT NULL,
                        expression TEXT NOT NULL,
                        input TEXT,
                        description TEXT NOT NULL DEFAULT '',
                        created INTEGER NOT NULL,
                        last_slot INTEGER,
                        PRIMARY KEY (account, name)
                    );
                    """)
        }
        m.registerMigration("v4-log-stream-ids") { db in
            // Events name their stream by its id, not by group and stream names: a row and
            // its index entries shrink from ~90 bytes of names to a few bytes of integers,
            // so the log store writes about half as much per line. Ids and order are kept.
            try db.execute(
                sql: """
                    CREATE TABLE log_streams_v4 (
                        id INTEGER PRIMARY KEY,
                        log_group TEXT NOT NULL,
                        log_stream TEXT NOT NULL,
                        created INTEGER NOT NULL,
                        last_event INTEGER NOT NULL,
                        UNIQUE (log_group, log_stream)
                    );
                    INSERT INTO log_streams_v4 (log_group, log_stream, created, last_event)
                        SELECT log_group, log_stream, created, last_event FROM log_streams ORDER BY created, log_group, log_stream;
                    INSERT OR IGNORE INTO log_streams_v4 (log_group, log_stream, created, last_event)
                        SELECT log_group, log_stream, MIN(timestamp), MAX(timestamp) FROM log_events GROUP BY log_group, log_stream;
                    CREATE TABLE log_events_v4 (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        stream INTEGER NOT NULL,
                        timestamp INTEGER NOT NULL,
                        ingested INTEGER NOT NULL,
                        message TEXT NOT NULL
                    );
                    INSERT INTO log_events_v4 (id, stream, timestamp, ingested, message)
                        SELECT e.id, s.id, e.timestamp, e.ingested, e.message
                        FROM log_events e JOIN log_streams_v4 s ON s.log_group = e.log_group AND s.log_stream = e.log_stream
                        ORDER BY e.id;
                    DROP TABLE log_events;
                    DROP TABLE log_streams;
                    ALTER TABLE log_streams_v4 RENAME TO log_streams;
                    ALTER TABLE log_events_v4 RENAME TO log_events;
                    CREATE INDEX log_events_by_stream ON log_events (stream, id);
                    CREATE INDEX log_events_by_time ON log_events (stream, timestamp);
                    """)
        }
        m.registerMigration("v5-log-retention") { db in
            // PutRetentionPolicy: days per log group (as the store files it); groups without
            // a row keep their events for the daemon's log_retention_days.
            try db.execute(
                sql: """
                    CREATE TABLE log_retention (
                        log_group TEXT PRIMARY KEY NOT NULL,
                        days INTEGER NOT NULL
                    ) WITHOUT ROWID;
                    """)
        }
        m.registerMigration("v6-audit-retention") { db in
            // The trail may lose records only by age: those older than its horizon, a time that
            // only moves forward. Every record at or after it still refuses DELETE, as before.
            try db.execute(
                sql: """
                    CREATE TABLE audit_horizon (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        time INTEGER NOT NULL
                    );
                    INSERT INTO audit_horizon (id, time) VALUES (1, 0);
                    CREATE TRIGGER audit_horizon_moves_forward BEFORE UPDATE ON audit_horizon
                        WHEN new.time < old.time OR new.id != old.id
                        BEGIN SELECT RAISE(ABORT, 'the audit horizon only moves forward'); END;
                    CREATE TRIGGER audit_horizon_stays BEFORE DELETE ON audit_horizon
                        BEGIN SELECT RAISE(ABORT, 'the audit horizon only moves forward'); END;
                    DROP TRIGGER audit_is_append_only_d;
                    CREATE TRIGGER audit_is_append_only_d BEFORE DELETE ON audit
                        WHEN old.time >= (SELECT time FROM audit_horizon WHERE id = 1)
                        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only; only records older than its horizon expire'); END;
                    """)
        }
        m.registerMigration("v7-log-chunks") { db in
            // Lines are stored a chunk (a batch, compressed) per row instead of a row per line;
            // events keep their ids (a chunk's are first_id ..< first_id + count). Each stream
            // row counts the bytes its chunks take, for the store's size budget.
            try db.execute(
                sql: """
                    CREATE TABLE log_chunks (
                        first_id INTEGER PRIMARY KEY,
                        stream INTEGER NOT NULL,
                        count INTEGER NOT NULL,
                        base_ts INTEGER NOT NULL,
                        min_ts INTEGER NOT NULL,
                        max_ts INTEGER NOT NULL,
                        ingested INTEGER NOT NULL,
                        text_bytes INTEGER NOT NULL,
                        data BLOB NOT NULL
                    );
                    CREATE INDEX log_chunks_by_stream ON log_chunks (stream, first_id);
                    ALTER TABLE log_streams ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
                    CREATE TRIGGER log_chunks_charged AFTER INSERT ON log_chunks
                        BEGIN UPDATE log_streams SET bytes = bytes + length(new.data) + \(LogStore.chunkOverhead) WHERE id = new.stream; END;
                    CREATE TRIGGER log_chunks_refunded AFTER DELETE ON log_chunks
                        BEGIN UPDATE log_streams SET bytes = bytes - length(old.data) - \(LogStore.chunkOverhead) WHERE id = old.stream; END;
                    CREATE TABLE log_meta (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        next_event_id INTEGER NOT NULL,
                        journal_applied INTEGER NOT NULL
                    );
                    """)
            // Each run of events with consecutive ids, one stream and one ingestion time (what one
            // transaction wrote of one batch) becomes a chunk.
            var run: (first: Int64, last: Int64, stream: Int64, ingested: Int64, lines: [LogChunk.Line])?
            func flush() throws {
                guard let r = run else { return }
                run = nil
                try LogStore.insertChunk(db, first: r.first, stream: r.stream, lines: r.lines, ingested: r.ingested)
            }
            let rows = try Row.fetchCursor(db, sql: "SELECT id, stream, timestamp, ingested, message FROM log_events ORDER BY id")
            while let row = try rows.next() {
                let (id, stream, ingested): (Int64, Int64, Int64) = (row["id"], row["stream"], row["ingested"])
                let line = LogChunk.Line(row["timestamp"], row["message"])
                if let r = run, r.last + 1 == id, r.stream == stream, r.ingested == ingested, r.lines.count < LogStore.chunkLines {
                    run!.last = id
                    run!.lines.append(line)
                } else {
                    try flush()
                    run = (id, id, stream, ingested, [line])
                }
            }
            try flush()
            // New events continue after every id the old table ever gave (AUTOINCREMENT's high-water mark).
            let high = max(
                try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'log_events'") ?? 0,
                try Int64.fetchOne(db, sql: "SELECT max(id) FROM log_events") ?? 0)
            try db.execute(sql: "INSERT INTO log_meta (id, next_event_id, journal_applied) VALUES (1, ?, 0)", arguments: [high + 1])
            try db.execute(sql: "DROP TABLE log_events")
        }
        m.registerMigration("v8-versions") { db in
            // Published versions are frozen copies of a function's record ($LATEST stays in
            // `functions`); aliases name them; layer versions are kept once deleted (as
            // tombstones: their numbers are never given again, and functions that use them
            // keep them). An event remembers the qualifier it was sent to.
            try db.execute(
                sql: """
                    CREATE TABLE function_versions (
                        account TEXT NOT NULL,
                        name TEXT NOT NULL,
                        version INTEGER NOT NULL,
                        record TEXT NOT NULL,
                        code_hex TEXT NOT NULL,
                        env_sealed BLOB,
                        PRIMARY KEY (account, name, version)
                    );
                    CREATE INDEX function_versions_by_code ON function_versions (code_hex);
                    CREATE TABLE function_aliases (
                        account TEXT NOT NULL,
                        function TEXT NOT NULL,
                        name TEXT NOT NULL,
                        record TEXT NOT NULL,
                        PRIMARY KEY (account, function, name)
                    );
                    CREATE TABLE layer_versions (
                        account TEXT NOT NULL,
                        name TEXT NOT NULL,
                        version INTEGER NOT NULL,
                        record TEXT NOT NULL,
                        code_hex TEXT NOT NULL,
                        deleted INTEGER NOT NULL DEFAULT 0,
                        PRIMARY KEY (account, name, version)
                    );
                    CREATE INDEX layer_versions_by_code ON layer_versions (code_hex);
                    ALTER TABLE events ADD COLUMN qualifier TEXT;
                    """)
        }
        m.registerMigration("v9-function-urls") { db in
            // One URL per function and qualifier ('' for the function itself). Every id ever
            // given stays in url_ids, so none is given twice.
            try db.execute(
                sql: """
                    CREATE TABLE function_urls (
                        id TEXT PRIMARY KEY,
                        account TEXT NOT NULL,
                        function TEXT NOT NULL,
                        qualifier TEXT NOT NULL,
                        record TEXT NOT NULL,
                        UNIQUE (account, function, qualifier)
                    );
                    CREATE TABLE url_ids (id TEXT PRIMARY KEY);
                    """)
        }
        m.registerMigration("v10-queues-topics-mappings") { db in
            // SQS queues and their messages (bodies sealed), the FIFO queues' deduplication
            // window; SNS topics and subscriptions; Lambda's event source mappings. A queue's
            // row id is never given again (AUTOINCREMENT), so a message of a deleted queue
            // cannot turn up in a new one of the same name.
            try db.execute(
                sql: """
                    CREATE TABLE queues (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        account TEXT NOT NULL,
                        name TEXT NOT NULL,
                        attributes TEXT NOT NULL,
                        tags TEXT NOT NULL DEFAULT '{}',
                        created INTEGER NOT NULL,
                        modified INTEGER NOT NULL,
                        UNIQUE (account, name)
                    );
                    CREATE TABLE queue_messages (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        queue INTEGER NOT NULL,
                        id TEXT NOT NULL,
                        body BLOB NOT NULL,
                        attributes BLOB,
                        md5 TEXT NOT NULL,
                        md5_attributes TEXT,
                        sender TEXT NOT NULL,
                        sent INTEGER NOT NULL,
                        visible_at INTEGER NOT NULL,
                        receive_count INTEGER NOT NULL DEFAULT 0,
                        first_receive INTEGER,
                        receipt TEXT,
                        group_id TEXT,
                        dedup_id TEXT,
                        dead_letter_source TEXT
                    );
                    CREATE INDEX queue_messages_by_visibility ON queue_messages (queue, visible_at, seq);
                    CREATE INDEX queue_messages_by_group ON queue_messages (queue, group_id, seq);
                    CREATE TABLE queue_dedup (
                        queue INTEGER NOT NULL,
                        dedup_id TEXT NOT NULL,
                        expires INTEGER NOT NULL,
                        message_id TEXT NOT NULL,
                        seq INTEGER NOT NULL,
                        PRIMARY KEY (queue, dedup_id)
                    );
                    CREATE TABLE topics (
                        account TEXT NOT NULL,
                        name TEXT NOT NULL,
                        attributes TEXT NOT NULL,
                        tags TEXT NOT NULL DEFAULT '{}',
                        created INTEGER NOT NULL,
                        PRIMARY KEY (account, name)
                    );
                    CREATE TABLE subscriptions (
                        arn TEXT PRIMARY KEY,
                        account TEXT NOT NULL,
                        topic TEXT NOT NULL,
                        protocol TEXT NOT NULL,
                        endpoint TEXT NOT NULL,
                        attributes TEXT NOT NULL,
                        created INTEGER NOT NULL
                    );
                    CREATE INDEX subscriptions_by_topic ON subscriptions (account, topic);
                    CREATE TABLE event_source_mappings (
                        uuid TEXT PRIMARY KEY,
                        account TEXT NOT NULL,
                        function TEXT NOT NULL,
                        source TEXT NOT NULL,
                        record TEXT NOT NULL
                    );
                    CREATE INDEX event_source_mappings_by_function ON event_source_mappings (account, function);
                    """)
        }
        m.registerMigration("v11-sns-http") { db in
            // Notifications for HTTP(S) subscribers wait here (bodies sealed) until the endpoint
            // takes them, so a publish is answered once they are stored, as for queues.
            try db.execute(
                sql: """
                    CREATE TABLE sns_outbox (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        account TEXT NOT NULL,
                        subscription TEXT NOT NULL,
                        message_type TEXT NOT NULL,
                        message_id TEXT NOT NULL,
                        body BLOB NOT NULL,
                        attempts INTEGER NOT NULL DEFAULT 0,
                        due INTEGER NOT NULL,
                        created INTEGER NOT NULL
                    );
                    CREATE INDEX sns_outbox_by_due ON sns_outbox (due);
                    """)
        }
        m.registerMigration("v12-secrets") { db in
            // Secrets Manager's secrets: each version's value sealed; `deleted` is when a secret
            // marked for deletion goes for good (nil: not marked).
            try db.execute(
                sql: """
                    CREATE TABLE secrets (
                        arn TEXT PRIMARY KEY,
                        account TEXT NOT NULL,
                        name TEXT NOT NULL,
                        description TEXT NOT NULL DEFAULT '',
                        tags TEXT NOT NULL DEFAULT '[]',
                        created INTEGER NOT NULL,
                        changed INTEGER NOT NULL,
                        accessed INTEGER,
                        deleted INTEGER,
                        UNIQUE (account, name)
                    );
                    CREATE TABLE secret_versions (
                        arn TEXT NOT NULL,
                        version TEXT NOT NULL,
                        value BLOB NOT NULL,
                        binary INTEGER NOT NULL,
                        stages TEXT NOT NULL,
                        created INTEGER NOT NULL,
                        PRIMARY KEY (arn, version)
                    );
                    """)
        }
        m.registerMigration("v13-stream-checkpoints") { db in
            // Where an ordered stream's partition stands beyond what its source keeps (a
            // PostgreSQL slot advances by whole transactions: the records of a transaction
            // already done are counted here).
            try db.execute(
                sql: """
                    CREATE TABLE stream_checkpoints (
                        mapping TEXT NOT NULL,
                        partition TEXT NOT NULL,
                        position TEXT NOT NULL,
                        PRIMARY KEY (mapping, partition)
                    );
                    """)
        }
        m.registerMigration("v14-bucket-notifications") { db in
            // Which functions a bucket of an operator's object store notifies (S3's
            // notification configuration), owned by one account.
            try db.execute(
                sql: """
                    CREATE TABLE bucket_notifications (
                        store TEXT NOT NULL,
                        bucket TEXT NOT NULL,
                        account TEXT NOT NULL,
                        record TEXT NOT NULL,
                        PRIMARY KEY (store, bucket)
                    );
                    """)
        }
        m.registerMigration("v15-schedule-qualifier") { db in
            // A schedule may target a version or alias (an EventBridge target's qualified ARN).
            try db.execute(sql: "ALTER TABLE schedules ADD COLUMN qualifier TEXT")
        }
        m.registerMigration("v16-roles") { db in
            // Execution roles and their inline policies (IAM's subset); who signed each audited
            // call (an assumed role's session); and how each account treats a function's role
            // ARN that names no role: accounts from before roles existed keep accepting them.
            try db.execute(
                sql: """
                    CREATE TABLE roles (
                        account TEXT NOT NULL,
                        name TEXT NOT NULL COLLATE NOCASE,
                        id TEXT NOT NULL UNIQUE,
                        path TEXT NOT NULL,
                        description TEXT NOT NULL DEFAULT '',
                        trust_policy TEXT NOT NULL,
                        max_session INTEGER NOT NULL,
                        created INTEGER NOT NULL,
                        PRIMARY KEY (account, name)
                    );
                    CREATE TABLE role_policies (
                        account TEXT NOT NULL,
                        role TEXT NOT NULL COLLATE NOCASE,
                        name TEXT NOT NULL,
                        document TEXT NOT NULL,
                        PRIMARY KEY (account, role, name)
                    );
                    ALTER TABLE audit ADD COLUMN principal TEXT;
                    ALTER TABLE accounts ADD COLUMN unknown_roles TEXT;
                    UPDATE accounts SET unknown_roles = 'accept';
                    """)
        }
        return m
    }
}
