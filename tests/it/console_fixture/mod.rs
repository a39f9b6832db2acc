//! A fixed console state for reducer and snapshot tests: two polled instances (one
//! down), a third known only from presence (offline), PostgreSQL and Redis up,
//! documents, sessions, awareness, traffic, runs, events and chart history, at a
//! fixed "now" so every age on screen is stable.
#![allow(dead_code)]

use std::collections::VecDeque;

use serde_json::json;
use synckit::console::app::{App, FleetEvent, InstanceView, Point};
use synckit::console::model::*;
use synckit::testing::admin_api::{
    ConnectionStats, DocumentStats, MessageStats, PersistenceStats, PubSubStats,
};
use synckit::testing::admin_api::{EventKind, FleetEntry, Severity};

/// 2026-01-15T12:00:00Z.
pub const NOW: i64 = 1_768_478_400_000;
pub const A: &str = "http://10.0.0.1:9091";
pub const B: &str = "http://10.0.0.2:9091";

fn sec(s: i64) -> i64 {
    NOW - s * 1000
}

fn live_session(n: u64, user: &str, subs: &[&str], connected: i64, seen: i64) -> SessionInfo {
    SessionInfo {
        id: format!("inst-aaaa-1111:conn-{n}"),
        user: Some(user.into()),
        client: Some("Mozilla/5.0 (X11; Linux x86_64) SyncKit/0.3".into()),
        instance: Some("inst-aaaa-1111".into()),
        remote: Some(format!("192.168.1.{n}")),
        connected_at_ms: sec(connected),
        last_seen_ms: sec(seen),
        subscriptions: subs.iter().map(|s| s.to_string()).collect(),
        live: true,
        via: Some(A.into()),
    }
}

pub fn app() -> App {
    let mut app = App::new(NOW, 1000, true);
    let up = InstanceReport {
        address: A.into(),
        state: SourceState::Up { latency_ms: 2 },
        sampled_at_ms: NOW,
        stats: Some(Stats {
            instance_id: Some("inst-aaaa-1111".into()),
            version: Some("0.1.0".into()),
            host: Some("web-1".into()),
            started_at_ms: Some(NOW - 93_780_000),
            uptime_seconds: Some(93_780.0),
            connections: ConnectionStats {
                open: Some(3),
                users: Some(2),
                ..ConnectionStats::default()
            },
            documents: DocumentStats {
                cached: Some(3),
                subscriptions: Some(4),
                ..DocumentStats::default()
            },
            messages: MessageStats {
                inbound: Some([("delta".to_owned(), 12_000)].into_iter().collect()),
                outbound: Some([("delta".to_owned(), 30_000)].into_iter().collect()),
                invalid_frames: Some(1),
                rate_limited: Some(0),
            },
            errors: Some(
                [("Invalid message format".to_owned(), 1)]
                    .into_iter()
                    .collect(),
            ),
            persistence: PersistenceStats {
                backend: Some("postgres".into()),
                degraded: Some(false),
                backlog: Some(0),
                ..PersistenceStats::default()
            },
            pubsub: PubSubStats {
                backend: Some("redis".into()),
                state: Some("connected".into()),
                ..PubSubStats::default()
            },
            instances: vec![FleetEntry {
                server_id: "inst-cccc-3333".into(),
                status: PeerStatus::Offline,
                is_self: false,
                first_seen: Some(sec(7200)),
                last_seen: Some(sec(40)),
                metadata: PresenceMetadata {
                    host: Some("web-3".into()),
                    version: Some("0.1.0".into()),
                    admin: Some("http://10.0.0.3:9091".into()),
                    ..PresenceMetadata::default()
                },
            }],
            ..Stats::default()
        }),
        documents: vec![
            LiveDocument {
                id: "room:lobby".into(),
                subscribers: 2,
                fields: 5,
                approximate_bytes: 1800,
                last_modified_ms: sec(4),
                awareness_subscribers: 2,
            },
            LiveDocument {
                id: "todo-42".into(),
                subscribers: 1,
                fields: 12,
                approximate_bytes: 5300,
                last_modified_ms: sec(65),
                awareness_subscribers: 0,
            },
            LiveDocument {
                id: "wordwall".into(),
                subscribers: 1,
                fields: 40,
                approximate_bytes: 9100,
                last_modified_ms: sec(2),
                awareness_subscribers: 1,
            },
        ],
        sessions: vec![
            live_session(1, "alice", &["room:lobby", "todo-42"], 3600, 1),
            live_session(2, "bob", &["room:lobby"], 600, 3),
            live_session(3, "carol", &["wordwall"], 7200, 12),
        ],
        awareness: vec![
            AwarenessClient {
                document_id: "room:lobby".into(),
                client_id: "client-alice".into(),
                state: json!({"cursor": {"x": 10, "y": 4}, "name": "Alice"}),
                clock: 7,
                last_seen_ms: sec(2),
                expires_in_ms: Some(28_000),
            },
            AwarenessClient {
                document_id: "room:lobby".into(),
                client_id: "client-bob".into(),
                state: json!({"name": "Bob", "typing": true}),
                clock: 3,
                last_seen_ms: sec(27),
                expires_in_ms: Some(3_000),
            },
            AwarenessClient {
                document_id: "wordwall".into(),
                client_id: "client-carol".into(),
                state: json!({"name": "Carol"}),
                clock: 12,
                last_seen_ms: sec(10),
                expires_in_ms: Some(20_000),
            },
        ],
        jobs: vec![
            JobInfo {
                name: "cleanup".into(),
                schedule: "0 3 * * *".into(),
                enabled: true,
                next_run_ms: Some(NOW + 15 * 3600 * 1000),
                instance: "inst-aaaa-1111".into(),
            },
            JobInfo {
                name: "awareness-prune".into(),
                schedule: "*/30 * * * * *".into(),
                enabled: true,
                next_run_ms: Some(NOW + 12_000),
                instance: "inst-aaaa-1111".into(),
            },
            JobInfo {
                name: "compaction".into(),
                schedule: "30 * * * *".into(),
                enabled: false,
                next_run_ms: None,
                instance: "inst-aaaa-1111".into(),
            },
        ],
        runs: vec![],
        events: vec![],
        cleanup: Some(CleanupRetention {
            sessions_older_than_secs: Some(86_400),
            deltas_older_than_secs: Some(30 * 86_400),
            snapshots_older_than_secs: Some(7 * 86_400),
            max_snapshots_per_document: Some(10),
        }),
        problems: vec![],
    };
    let down = InstanceReport {
        address: B.into(),
        state: SourceState::Down {
            error: "unreachable: Connection refused (os error 111)".into(),
        },
        sampled_at_ms: NOW,
        ..InstanceReport::default()
    };
    app.instances = vec![
        InstanceView {
            report: up,
            known_id: Some("inst-aaaa-1111".into()),
            rate_in: Some(42.5),
            rate_out: Some(120.0),
            counters: VecDeque::new(),
            history: (0..120)
                .map(|i| Point {
                    at_ms: NOW - (119 - i) * 2000,
                    rate_in: (i * 7 % 50) as f64,
                    rate_out: (i * 13 % 140) as f64,
                    connections: (2 + i / 40) as f64,
                    backlog: if (60..70).contains(&i) { 40.0 } else { 0.0 },
                })
                .collect::<VecDeque<_>>(),
        },
        InstanceView {
            report: down,
            known_id: Some("inst-bbbb-2222".into()),
            ..InstanceView::default()
        },
    ];
    app.events = [
        (
            "inst-aaaa-1111",
            "web-1",
            12,
            40,
            EventKind::PeerOffline,
            "peer inst-ccc (web-3) offline (said goodbye)",
            1,
        ),
        (
            "inst-aaaa-1111",
            "web-1",
            11,
            95,
            EventKind::AuthFailures,
            "57 more within 60s; last: 3 rejected credentials",
            57,
        ),
        (
            "inst-bbbb-2222",
            "inst-bbb",
            7,
            300,
            EventKind::StorageDegraded,
            "storage degraded: writes wait in memory: connection refused",
            1,
        ),
        (
            "inst-aaaa-1111",
            "web-1",
            3,
            3600,
            EventKind::PeerOnline,
            "peer inst-ccc (web-3) online",
            1,
        ),
    ]
    .into_iter()
    .map(|(id, name, seq, ago, kind, message, count)| FleetEvent {
        instance_id: id.into(),
        instance: name.into(),
        event: Event {
            seq,
            at_ms: sec(ago),
            kind,
            severity: kind.severity(),
            message: message.into(),
            count,
        },
    })
    .collect();
    let _ = Severity::Info;
    app.database = DatabaseReport {
        state: SourceState::Up { latency_ms: 1 },
        documents: vec![
            StoredDocument {
                id: "wordwall".into(),
                fields: 40,
                size_bytes: 9000,
                version: 310,
                updated_at_ms: sec(3),
            },
            StoredDocument {
                id: "room:lobby".into(),
                fields: 5,
                size_bytes: 1700,
                version: 12,
                updated_at_ms: sec(5),
            },
            StoredDocument {
                id: "invoice-2025-001".into(),
                fields: 8,
                size_bytes: 2400,
                version: 3,
                updated_at_ms: sec(86_400 * 3),
            },
            StoredDocument {
                id: "notes/alice".into(),
                fields: 2,
                size_bytes: 300,
                version: 9,
                updated_at_ms: sec(7200),
            },
        ],
        documents_total: 100_000,
        sessions_total: 10_000,
        sessions: vec![SessionInfo {
            id: "inst-dead-2222:conn-9".into(),
            user: Some("dave".into()),
            client: Some("node".into()),
            instance: Some("inst-dead-2222".into()),
            remote: Some("10.1.2.3".into()),
            connected_at_ms: sec(90_000),
            last_seen_ms: sec(80_000),
            subscriptions: vec![],
            live: false,
            via: None,
        }],
        awareness: vec![],
        runs: vec![
            RunInfo {
                id: 12,
                job: "cleanup".into(),
                instance_id: "inst-aaaa-1111".into(),
                started_at_ms: sec(9 * 3600),
                finished_at_ms: Some(sec(9 * 3600) + 340),
                outcome: "ok".into(),
                counts: json!({"sessionsDeleted": 120, "deltasDeleted": 5400, "snapshotsDeleted": 3}),
                error: None,
            },
            RunInfo {
                id: 13,
                job: "awareness-prune".into(),
                instance_id: "inst-aaaa-1111".into(),
                started_at_ms: sec(18),
                finished_at_ms: Some(sec(18) + 4),
                outcome: "ok".into(),
                counts: json!({"expired": 2}),
                error: None,
            },
            RunInfo {
                id: 11,
                job: "compaction".into(),
                instance_id: "inst-dead-2222".into(),
                started_at_ms: sec(30 * 3600),
                finished_at_ms: Some(sec(30 * 3600) + 1200),
                outcome: "failed".into(),
                counts: json!({}),
                error: Some("storage unavailable: connection refused".into()),
            },
        ],
        query_ms: 6,
    };
    app.redis = RedisReport {
        state: SourceState::Up { latency_ms: 1 },
        samples: vec![],
        rates: vec![
            ChannelRate {
                kind: "awareness".into(),
                per_second: 3.5,
                total: 8_200,
            },
            ChannelRate {
                kind: "delta".into(),
                per_second: 41.0,
                total: 96_000,
            },
            ChannelRate {
                kind: "presence".into(),
                per_second: 0.2,
                total: 310,
            },
        ],
        fleet: vec![FleetMember {
            server_id: "inst-aaaa-1111".into(),
            last_seen_ms: sec(5),
            status: PeerStatus::Online,
            metadata: PresenceMetadata {
                admin: Some(A.into()),
                host: Some("web-1".into()),
                version: Some("0.1.0".into()),
                heartbeat_interval_ms: Some(10_000),
                ..PresenceMetadata::default()
            },
        }],
    };
    app.traffic = (0..8)
        .map(|i| TrafficSample {
            at_ms: sec(8 - i),
            channel: if i % 3 == 2 {
                "synckit:awareness:room:lobby".into()
            } else {
                "synckit:delta:wordwall".into()
            },
            kind: if i % 3 == 2 {
                "awareness_update".into()
            } else {
                "delta".into()
            },
            document: Some(if i % 3 == 2 {
                "room:lobby".into()
            } else {
                "wordwall".into()
            }),
            size: 180 + (i as usize) * 12,
            origin: Some(if i % 2 == 0 {
                "inst-aaaa-1111".into()
            } else {
                "inst-bbbb-3333".into()
            }),
            // As the Redis tap keeps it: long values cut.
            payload: Some(synckit::console::feed::redis::truncate_payload(&if i % 3 == 2 {
                json!({"type": "awareness_update", "documentId": "room:lobby",
                       "clientId": "client-alice", "state": {"cursor": {"x": i, "y": 4}, "name": "Alice"}})
            } else {
                json!({"type": "delta", "documentId": "wordwall", "origin": "inst-aaaa-1111",
                       "changes": [{"field": "words", "value": ["sync", "kit", "a very long value that the console cuts when it is shown in the payload window of the Traffic view"]}]})
            })),
        })
        .collect();
    app
}

/// The detail of `wordwall`, as the feed would report it.
pub fn detail() -> DocumentDetail {
    DocumentDetail {
        id: "wordwall".into(),
        fields: json!({"title": "Word wall", "words": ["sync", "kit"], "count": 2}),
        clock: [
            ("client-alice".to_string(), 17u64),
            ("srv-inst-1".to_string(), 4),
        ]
        .into_iter()
        .collect(),
        subscribers: vec!["inst-aaaa-1111:conn-3".into()],
        awareness: vec![AwarenessClient {
            document_id: "wordwall".into(),
            client_id: "client-carol".into(),
            state: json!({"name": "Carol"}),
            clock: 12,
            last_seen_ms: sec(10),
            expires_in_ms: Some(20_000),
        }],
        deltas: vec![
            DeltaInfo {
                client_id: "client-alice".into(),
                operation: "set".into(),
                field: "count".into(),
                value: Some(json!(2)),
                clock: 17,
                at_ms: sec(3),
            },
            DeltaInfo {
                client_id: "client-alice".into(),
                operation: "set".into(),
                field: "words".into(),
                value: Some(json!(["sync", "kit"])),
                clock: 16,
                at_ms: sec(4),
            },
        ],
        snapshots: vec![SnapshotInfo {
            id: "5f1c2a9e-0000-4000-8000-000000000001".into(),
            size_bytes: 2048,
            created_at_ms: sec(3600),
        }],
        loaded_on: vec!["inst-aaa".into()],
        problems: vec![],
    }
}
