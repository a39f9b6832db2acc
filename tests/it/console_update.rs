//! The reducer, key by key and view by view: every binding in every view, the
//! overlays (help, confirmation), filter editing, pause, and how source reports are
//! folded in (rates, bounded traffic, selection clamping).

use crate::console_fixture;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use synckit::console::action::{Action, Effect, OperatorAction};
use synckit::console::app::{App, Overlay, View, EVENTS_LEN, RATE_WINDOW_MS, TRAFFIC_LEN};
use synckit::console::model::*;
use synckit::console::rows;
use synckit::console::update::{self, update};
use synckit::testing::admin_api::{ConnectionStats, MessageStats};
use synckit::testing::admin_api::{Event, EventKind};

fn app_in(view: View) -> App {
    let mut app = console_fixture::app();
    app.view = view;
    app
}

fn press(app: &mut App, code: KeyCode) -> Option<Effect> {
    update(app, Action::Key(KeyEvent::from(code)))
}

fn chars(app: &mut App, text: &str) {
    for c in text.chars() {
        press(app, KeyCode::Char(c));
    }
}

#[test]
fn number_keys_tab_and_backtab_switch_views_from_every_view() {
    for from in View::ALL {
        for (i, to) in View::ALL.iter().enumerate() {
            let mut app = app_in(from);
            press(&mut app, KeyCode::Char(char::from(b'1' + i as u8)));
            assert_eq!(app.view, *to, "{from:?} + {}", i + 1);
        }
        let mut app = app_in(from);
        press(&mut app, KeyCode::Tab);
        assert_eq!(app.view, from.next());
        press(&mut app, KeyCode::BackTab);
        assert_eq!(app.view, from);
    }
    let mut app = app_in(View::Charts);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.view, View::Overview, "Tab wraps");
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.view, View::Charts, "BackTab wraps");
}

#[test]
fn movement_keys_in_every_view() {
    // Charts has no rows to move through.
    for view in View::ALL.into_iter().filter(|v| *v != View::Charts) {
        let app = app_in(view);
        let len = rows::len(&app, view);
        assert!(len >= 2, "{view:?} fixture has rows");
        let i = view.index();
        let mut app = app_in(view);
        for (code, expected) in [
            (KeyCode::Char('j'), 1),
            (KeyCode::Down, 2.min(len - 1)),
            (KeyCode::Char('k'), 2.min(len - 1) - 1),
            (KeyCode::Up, 0),
            (KeyCode::Up, 0),
            (KeyCode::Char('G'), len - 1),
            (KeyCode::Char('j'), len - 1),
            (KeyCode::Char('g'), 0),
            (KeyCode::End, len - 1),
            (KeyCode::Home, 0),
            (KeyCode::PageDown, 10.min(len - 1)),
            (KeyCode::PageUp, 0),
        ] {
            press(&mut app, code);
            assert_eq!(app.selected[i], expected, "{view:?} after {code:?}");
        }
        // Other views keep their own selection.
        assert!(app
            .selected
            .iter()
            .enumerate()
            .all(|(k, s)| k == i || *s == 0));
    }
}

#[test]
fn slash_edits_only_the_current_views_filter() {
    for view in View::ALL {
        let mut app = app_in(view);
        press(&mut app, KeyCode::Char('j'));
        press(&mut app, KeyCode::Char('/'));
        assert!(app.editing_filter);
        // While editing, keys are text: q, 1 and ? do not quit, switch or help.
        chars(&mut app, "q1?x");
        assert_eq!(app.filter(), "q1?x");
        assert!(app.running);
        assert_eq!(app.view, view);
        assert_eq!(app.overlay, Overlay::None);
        assert_eq!(
            app.selected[view.index()],
            0,
            "selection resets as the filter changes"
        );
        press(&mut app, KeyCode::Backspace);
        assert_eq!(app.filter(), "q1?");
        press(&mut app, KeyCode::Enter);
        assert!(!app.editing_filter);
        assert_eq!(app.filter(), "q1?", "Enter keeps the filter");
        for other in View::ALL.iter().filter(|v| **v != view) {
            assert!(app.filters[other.index()].is_empty());
        }
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.filter(), "", "Esc clears a kept filter");
        press(&mut app, KeyCode::Char('/'));
        chars(&mut app, "zz");
        press(&mut app, KeyCode::Esc);
        assert!(!app.editing_filter);
        assert_eq!(app.filter(), "", "Esc while typing clears and stops");
    }
}

#[test]
fn filters_narrow_each_views_rows() {
    let cases = [
        (View::Documents, "lobby", 1),
        (View::Sessions, "bob", 1),
        (View::Awareness, "typing", 1),
        (View::Traffic, "awareness", 2),
        (View::Maintenance, "cleanup", 1),
        (View::Events, "web-3", 2),
        (View::Events, "storage_degraded", 1),
        (View::Overview, "zzz", 3),
    ];
    for (view, text, expected) in cases {
        let mut app = app_in(view);
        press(&mut app, KeyCode::Char('/'));
        chars(&mut app, text);
        assert_eq!(rows::len(&app, view), expected, "{view:?} /{text}");
    }
    let mut app = app_in(View::Documents);
    press(&mut app, KeyCode::Char('/'));
    chars(&mut app, "LOBBY");
    assert_eq!(rows::len(&app, View::Documents), 1, "case-insensitive");
    assert_eq!(
        app.feed_request().documents_filter,
        "LOBBY",
        "pushed to the query"
    );
}

#[test]
fn enter_and_esc_drill_into_a_document_or_open_a_message_only() {
    for view in View::ALL {
        let mut app = app_in(view);
        press(&mut app, KeyCode::Char('j'));
        press(&mut app, KeyCode::Enter);
        if view == View::Traffic {
            let second = rows::traffic(&app)[1].clone();
            assert_eq!(app.overlay, Overlay::Payload(Box::new(second)));
            continue;
        }
        if view == View::Documents {
            let second = rows::documents(&app)[1].id.clone();
            assert_eq!(app.detail.as_deref(), Some(second.as_str()));
            assert_eq!(app.feed_request().detail.as_deref(), Some(second.as_str()));
            // j/k scroll the detail rather than moving the list.
            press(&mut app, KeyCode::Char('j'));
            press(&mut app, KeyCode::Char('j'));
            assert_eq!(app.detail_scroll, 2);
            assert_eq!(app.selected[view.index()], 1);
            press(&mut app, KeyCode::Char('k'));
            assert_eq!(app.detail_scroll, 1);
            press(&mut app, KeyCode::Esc);
            assert_eq!(app.detail, None);
            assert_eq!(app.detail_scroll, 0);
        } else {
            assert_eq!(app, {
                let mut same = app_in(view);
                press(&mut same, KeyCode::Char('j'));
                same
            });
        }
    }
}

#[test]
fn details_are_kept_only_for_the_open_document() {
    let mut app = app_in(View::Documents);
    update(
        &mut app,
        Action::Detail(Box::new(console_fixture::detail())),
    );
    assert_eq!(app.detail_data, None, "nothing open");
    press(&mut app, KeyCode::Enter);
    update(
        &mut app,
        Action::Detail(Box::new(console_fixture::detail())),
    );
    assert_eq!(
        app.detail_data.as_ref().map(|d| d.id.as_str()),
        Some("wordwall")
    );
    let mut other = console_fixture::detail();
    other.id = "todo-42".into();
    update(&mut app, Action::Detail(Box::new(other)));
    assert_eq!(
        app.detail_data.as_ref().map(|d| d.id.as_str()),
        Some("wordwall")
    );
}

#[test]
fn p_pauses_updates_in_every_view() {
    for view in View::ALL {
        let mut app = app_in(view);
        press(&mut app, KeyCode::Char('p'));
        assert!(app.paused);
        let before = app.clone();
        update(&mut app, Action::Database(Box::default()));
        update(&mut app, Action::Instances(Vec::new()));
        update(&mut app, Action::Redis(Box::default()));
        assert_eq!(app.database, before.database);
        assert_eq!(app.instances, before.instances);
        assert_eq!(app.traffic, before.traffic);
        // Time still moves (ages stay true while paused).
        update(&mut app, Action::Tick(console_fixture::NOW + 5000));
        assert_eq!(app.now_ms, console_fixture::NOW + 5000);
        press(&mut app, KeyCode::Char('p'));
        assert!(!app.paused);
        update(&mut app, Action::Database(Box::default()));
        assert_eq!(app.database, DatabaseReport::default());
    }
}

#[test]
fn plus_and_minus_step_the_refresh_rate_in_every_view() {
    for view in View::ALL {
        let mut app = app_in(view);
        assert_eq!(app.refresh_ms, 1000);
        press(&mut app, KeyCode::Char('+'));
        assert_eq!(app.refresh_ms, 500);
        press(&mut app, KeyCode::Char('='));
        assert_eq!(app.refresh_ms, 250);
        press(&mut app, KeyCode::Char('+'));
        assert_eq!(app.refresh_ms, 250, "fastest step holds");
        for _ in 0..10 {
            press(&mut app, KeyCode::Char('-'));
        }
        assert_eq!(app.refresh_ms, 30_000, "slowest step holds");
        assert_eq!(app.feed_request().refresh_ms, 30_000);
    }
}

#[test]
fn s_steps_the_sort_column_and_shift_s_reverses_it_in_documents_and_sessions_only() {
    for view in View::ALL {
        let mut app = app_in(view);
        let before = app.sorts;
        press(&mut app, KeyCode::Char('s'));
        match view {
            View::Documents => {
                assert_eq!(app.sort(view).label(view).as_deref(), Some("Document▲"));
                let ids: Vec<String> = rows::documents(&app).into_iter().map(|r| r.id).collect();
                let mut sorted = ids.clone();
                sorted.sort();
                assert_eq!(ids, sorted);
                press(&mut app, KeyCode::Char('S'));
                assert_eq!(app.sort(view).label(view).as_deref(), Some("Document▼"));
                let reversed: Vec<String> =
                    rows::documents(&app).into_iter().map(|r| r.id).collect();
                assert_eq!(reversed, sorted.into_iter().rev().collect::<Vec<_>>());
                press(&mut app, KeyCode::Char('s'));
                assert_eq!(app.sort(view).label(view).as_deref(), Some("Size▼"));
                assert_eq!(rows::documents(&app)[0].id, "wordwall");
                press(&mut app, KeyCode::Char('s'));
                assert_eq!(app.sort(view).label(view).as_deref(), Some("Subs▼"));
                assert_eq!(rows::documents(&app)[0].id, "room:lobby");
                press(&mut app, KeyCode::Char('S'));
                assert_eq!(rows::documents(&app)[0].subscribers, 0, "fewest first");
                press(&mut app, KeyCode::Char('s'));
                press(&mut app, KeyCode::Char('s'));
                assert_eq!(
                    app.sort(view).label(view).as_deref(),
                    Some("Last change▼"),
                    "wraps"
                );
            }
            View::Sessions => {
                assert_eq!(app.sort(view).label(view).as_deref(), Some("User▲"));
                assert_eq!(rows::sessions(&app)[0].user.as_deref(), Some("alice"));
                press(&mut app, KeyCode::Char('S'));
                assert_eq!(rows::sessions(&app)[0].user.as_deref(), Some("dave"));
                press(&mut app, KeyCode::Char('s'));
                assert_eq!(app.sort(view).label(view).as_deref(), Some("Since▲"));
                assert_eq!(
                    rows::sessions(&app)[0].user.as_deref(),
                    Some("dave"),
                    "oldest first"
                );
            }
            _ => {
                assert_eq!(app.sorts, before, "{view:?}");
                press(&mut app, KeyCode::Char('S'));
                assert_eq!(app.sorts, before, "{view:?}");
            }
        }
    }
}

#[test]
fn actions_are_refused_without_allow_actions_in_every_view() {
    for view in View::ALL {
        for key in ['c', 'a', 'd'] {
            let mut app = app_in(view);
            app.allow_actions = false;
            let effect = press(&mut app, KeyCode::Char(key));
            assert_eq!(effect, None);
            assert_eq!(app.overlay, Overlay::None, "{view:?} {key}");
            if key != 'd' || matches!(view, View::Sessions | View::Documents) {
                let (text, error) = app.notice.clone().expect("a notice");
                assert!(
                    error && text.contains("--allow-actions"),
                    "{view:?} {key}: {text}"
                );
            }
        }
    }
}

/// The cleanup the fixture's first instance would run, with its retention.
fn cleanup() -> OperatorAction {
    OperatorAction::Cleanup {
        via: console_fixture::A.into(),
        target: "web-1".into(),
        retention: console_fixture::app().instances[0].report.cleanup,
    }
}

#[test]
fn the_cleanup_dialog_names_the_retention_it_applies() {
    let text = cleanup().describe();
    assert!(
        text.contains("on web-1 (http://10.0.0.1:9091): delete sessions idle over 24h, deltas older than 30d, snapshots older than 7d and all but the newest 10 per document"),
        "{text}"
    );
    let unknown = OperatorAction::Cleanup {
        via: "http://x".into(),
        target: "x".into(),
        retention: None,
    };
    assert!(unknown.describe().contains("does not report it"));
}

#[test]
fn without_a_credential_actions_are_unavailable_before_any_dialog() {
    for view in View::ALL {
        for key in ['c', 'a', 'd'] {
            let mut app = app_in(view);
            app.has_credential = false;
            assert_eq!(press(&mut app, KeyCode::Char(key)), None);
            assert_eq!(app.overlay, Overlay::None, "{view:?} {key}");
            if key != 'd' || matches!(view, View::Sessions | View::Documents) {
                let (text, error) = app.notice.clone().expect("a notice");
                assert!(error && text.contains("no admin credential"), "{text}");
            }
        }
    }
    let mut app = app_in(View::Overview);
    app.has_credential = false;
    chars(&mut app, ":cleanup");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.overlay, Overlay::None, ":cleanup too");
}

#[test]
fn c_and_a_ask_to_confirm_in_every_view() {
    for view in View::ALL {
        let mut app = app_in(view);
        press(&mut app, KeyCode::Char('c'));
        assert_eq!(app.overlay, Overlay::Confirm(cleanup()), "{view:?}");
        let mut app = app_in(view);
        press(&mut app, KeyCode::Char('a'));
        assert_eq!(
            app.overlay,
            Overlay::Confirm(OperatorAction::PruneAwareness {
                via: console_fixture::A.into(),
                target: "web-1".into(),
            })
        );
    }
    let mut app = App::new(console_fixture::NOW, 1000, true);
    press(&mut app, KeyCode::Char('c'));
    assert_eq!(app.overlay, Overlay::None, "no instance answers");
    assert!(app.notice.as_ref().is_some_and(|(_, error)| *error));
}

#[test]
fn d_acts_on_the_selection_in_sessions_and_documents_only() {
    for view in View::ALL {
        let mut app = app_in(view);
        press(&mut app, KeyCode::Char('d'));
        match view {
            View::Sessions => assert_eq!(
                app.overlay,
                Overlay::Confirm(OperatorAction::Disconnect {
                    session: "inst-aaaa-1111:conn-1".into(),
                    user: "alice".into(),
                    via: console_fixture::A.into(),
                })
            ),
            View::Documents => assert_eq!(
                app.overlay,
                Overlay::Confirm(OperatorAction::DeleteDocument {
                    id: "wordwall".into(),
                    via: console_fixture::A.into(),
                })
            ),
            _ => {
                assert_eq!(app.overlay, Overlay::None);
                assert_eq!(app.notice, None);
            }
        }
    }
    // A persisted-only session cannot be disconnected.
    let mut app = app_in(View::Sessions);
    press(&mut app, KeyCode::Char('G'));
    press(&mut app, KeyCode::Char('d'));
    assert_eq!(app.overlay, Overlay::None);
    assert!(app.notice.as_ref().is_some_and(|(_, error)| *error));
    // In a document's detail, d deletes that document; a stored-only one goes
    // through the first instance that answers.
    let mut app = app_in(View::Documents);
    press(&mut app, KeyCode::Char('G'));
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Char('d'));
    assert_eq!(
        app.overlay,
        Overlay::Confirm(OperatorAction::DeleteDocument {
            id: "invoice-2025-001".into(),
            via: console_fixture::A.into(),
        })
    );
}

#[test]
fn the_confirmation_dialog_takes_only_yes_or_no() {
    for yes in [KeyCode::Char('y'), KeyCode::Char('Y'), KeyCode::Enter] {
        let mut app = app_in(View::Maintenance);
        press(&mut app, KeyCode::Char('c'));
        let effect = press(&mut app, yes);
        assert_eq!(effect, Some(Effect::Perform(cleanup())));
        assert_eq!(app.overlay, Overlay::None);
    }
    for no in [
        KeyCode::Char('n'),
        KeyCode::Char('N'),
        KeyCode::Esc,
        KeyCode::Char('q'),
    ] {
        let mut app = app_in(View::Maintenance);
        press(&mut app, KeyCode::Char('a'));
        assert_eq!(press(&mut app, no), None);
        assert_eq!(app.overlay, Overlay::None);
        assert!(app.running, "q cancels the dialog, it does not quit");
    }
    let mut app = app_in(View::Maintenance);
    press(&mut app, KeyCode::Char('c'));
    for other in [
        KeyCode::Char('1'),
        KeyCode::Char('j'),
        KeyCode::Tab,
        KeyCode::Char('d'),
    ] {
        assert_eq!(press(&mut app, other), None);
        assert!(matches!(app.overlay, Overlay::Confirm(_)));
        assert_eq!(app.view, View::Maintenance);
    }
}

#[test]
fn help_opens_in_every_view_and_holds_other_keys() {
    for view in View::ALL {
        let mut app = app_in(view);
        press(&mut app, KeyCode::Char('?'));
        assert_eq!(app.overlay, Overlay::Help);
        for other in [
            KeyCode::Char('2'),
            KeyCode::Char('j'),
            KeyCode::Char('/'),
            KeyCode::Char('c'),
        ] {
            press(&mut app, other);
        }
        assert_eq!(app.view, view);
        assert!(!app.editing_filter);
        assert_eq!(app.overlay, Overlay::Help);
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.overlay, Overlay::None);
        press(&mut app, KeyCode::Char('?'));
        press(&mut app, KeyCode::Char('?'));
        assert_eq!(app.overlay, Overlay::None);
        press(&mut app, KeyCode::Char('?'));
        assert_eq!(press(&mut app, KeyCode::Char('q')), Some(Effect::Quit));
    }
}

#[test]
fn q_and_ctrl_c_quit_from_every_view() {
    for view in View::ALL {
        let mut app = app_in(view);
        assert_eq!(press(&mut app, KeyCode::Char('q')), Some(Effect::Quit));
        assert!(!app.running);
        let mut app = app_in(view);
        press(&mut app, KeyCode::Char('/'));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(
            update(&mut app, Action::Key(ctrl_c)),
            Some(Effect::Quit),
            "even while typing"
        );
    }
}

#[test]
fn unbound_keys_change_nothing_in_every_view() {
    for view in View::ALL {
        let mut app = app_in(view);
        let before = app.clone();
        for code in [
            KeyCode::Char('x'),
            KeyCode::Char('9'),
            KeyCode::F(5),
            KeyCode::Left,
            KeyCode::Insert,
        ] {
            assert_eq!(press(&mut app, code), None);
        }
        assert_eq!(app, before, "{view:?}");
    }
}

fn poll(at: i64, id: &str, inbound: u64, outbound: u64) -> InstanceReport {
    InstanceReport {
        address: "http://a".into(),
        state: SourceState::Up { latency_ms: 1 },
        sampled_at_ms: at,
        stats: Some(Stats {
            instance_id: Some(id.into()),
            connections: ConnectionStats {
                open: Some(2),
                ..ConnectionStats::default()
            },
            messages: MessageStats {
                inbound: Some([("delta".to_owned(), inbound)].into_iter().collect()),
                outbound: Some([("delta".to_owned(), outbound)].into_iter().collect()),
                ..MessageStats::default()
            },
            ..Stats::default()
        }),
        ..InstanceReport::default()
    }
}

#[test]
fn message_rates_are_smoothed_over_a_window_of_polls() {
    let mut app = App::new(0, 1000, false);
    update(&mut app, Action::Instances(vec![poll(0, "i", 100, 100)]));
    assert_eq!(app.instances[0].rate_in, None, "one poll: no rate yet");
    update(&mut app, Action::Instances(vec![poll(1000, "i", 300, 700)]));
    assert_eq!(
        (app.instances[0].rate_in, app.instances[0].rate_out),
        (Some(200.0), Some(600.0))
    );
    // Counters that move in batches (+400, +0, +400, +0) give a steady rate, not
    // 400/0/400/0.
    let mut total = 300;
    let mut rates = Vec::new();
    for k in 2..12 {
        if k % 2 == 0 {
            total += 400;
        }
        update(
            &mut app,
            Action::Instances(vec![poll(k * 1000, "i", total, 700)]),
        );
        rates.push(app.instances[0].rate_in.expect("rate"));
    }
    let last = &rates[rates.len() - 3..];
    assert!(
        last.iter().all(|r| (150.0..=260.0).contains(r)),
        "smoothed: {rates:?}"
    );
    let window = app.instances[0].counters.clone();
    assert!(
        window.back().map(|c| c.0).unwrap_or(0) - window.front().map(|c| c.0).unwrap_or(0)
            <= RATE_WINDOW_MS
    );
    assert_eq!(
        app.instances[0].history.len(),
        12,
        "one chart point per poll"
    );
    update(
        &mut app,
        Action::Instances(vec![poll(13_000, "restarted", 5, 5)]),
    );
    assert_eq!(
        app.instances[0].rate_in, None,
        "a restart starts the window again (never a negative rate)"
    );
    assert_eq!(app.instances[0].history.len(), 1);
    assert_eq!(app.instances[0].known_id.as_deref(), Some("restarted"));
    // Down: no rate, the id is remembered.
    let down = InstanceReport {
        address: "http://a".into(),
        state: SourceState::Down {
            error: "refused".into(),
        },
        ..InstanceReport::default()
    };
    update(&mut app, Action::Instances(vec![down]));
    assert_eq!(app.instances[0].rate_in, None);
    assert_eq!(app.instances[0].known_id.as_deref(), Some("restarted"));
}

fn event(seq: u64, at_ms: i64) -> Event {
    Event {
        seq,
        at_ms,
        kind: EventKind::PeerOnline,
        severity: EventKind::PeerOnline.severity(),
        message: format!("event {seq}"),
        count: 1,
    }
}

#[test]
fn events_are_merged_newest_first_without_duplicates_and_bounded() {
    let mut app = App::new(0, 1000, false);
    let with_events = |id: &str, address: &str, events: Vec<Event>| {
        let mut r = poll(0, id, 0, 0);
        r.address = address.into();
        r.events = events;
        r
    };
    update(
        &mut app,
        Action::Instances(vec![
            with_events("a", "http://a", vec![event(2, 20), event(1, 10)]),
            with_events("b", "http://b", vec![event(1, 15)]),
        ]),
    );
    let order: Vec<(&str, u64)> = app
        .events
        .iter()
        .map(|e| (e.instance_id.as_str(), e.event.seq))
        .collect();
    assert_eq!(order, vec![("a", 2), ("b", 1), ("a", 1)]);
    // The same events again (a poll without `after`) add nothing; b's are kept
    // after b is no longer polled.
    update(
        &mut app,
        Action::Instances(vec![with_events("a", "http://a", vec![event(2, 20)])]),
    );
    assert_eq!(app.events.len(), 3);
    let many: Vec<Event> = (1..=(EVENTS_LEN as u64 + 10))
        .map(|i| event(i + 10, i as i64 + 100))
        .collect();
    update(
        &mut app,
        Action::Instances(vec![with_events("a", "http://a", many)]),
    );
    assert_eq!(app.events.len(), EVENTS_LEN);
    assert_eq!(
        app.events[0].event.seq,
        EVENTS_LEN as u64 + 20,
        "newest kept"
    );
}

#[test]
fn events_that_arrive_while_paused_are_added_on_resume() {
    let mut app = App::new(0, 1000, false);
    let mut report = poll(0, "a", 0, 0);
    report.events = vec![event(1, 10)];
    update(&mut app, Action::Instances(vec![report.clone()]));
    press(&mut app, KeyCode::Char('p'));
    report.events = vec![event(3, 30), event(2, 20)];
    update(&mut app, Action::Instances(vec![report]));
    assert_eq!(app.events.len(), 1, "the screen holds still");
    press(&mut app, KeyCode::Char('p'));
    let seqs: Vec<u64> = app.events.iter().map(|e| e.event.seq).collect();
    assert_eq!(
        seqs,
        vec![3, 2, 1],
        "the feed sends each event once: none lost"
    );
    assert!(app.held_events.is_empty());
}

#[test]
fn the_fleet_lists_every_instance_heard_of_and_counts_only_the_running() {
    let app = console_fixture::app();
    let fleet = rows::fleet(&app);
    let names: Vec<(&str, &str)> = fleet
        .iter()
        .map(|r| (r.name.as_str(), r.status.label()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("10.0.0.2:9091", "DOWN"),
            ("web-1", "up"),
            ("web-3", "offline")
        ]
    );
    let sum = rows::summary(&fleet);
    assert_eq!(
        (sum.members, sum.running, sum.offline, sum.unreachable),
        (3, 1, 1, 1)
    );
    assert_eq!(
        sum.connections,
        Some(3),
        "only the instance that answers counts"
    );
    assert_eq!(sum.versions, vec!["0.1.0"]);
    // A stopped instance whose API no longer answers is offline, not down, once a
    // peer heard its goodbye.
    let mut app = console_fixture::app();
    if let Some(stats) = app.instances[0].report.stats.as_mut() {
        stats.instances[0].server_id = "inst-bbbb-2222".into();
    }
    let fleet = rows::fleet(&app);
    assert_eq!(fleet.len(), 2);
    assert!(fleet.iter().any(|r| r.name == "web-3"
        && r.status.label() == "offline"
        && r.address.as_deref() == Some(console_fixture::B)));
    // An unknown number stays unknown in the totals.
    let mut app = console_fixture::app();
    if let Some(stats) = app.instances[0].report.stats.as_mut() {
        stats.connections.open = None;
    }
    assert_eq!(rows::summary(&rows::fleet(&app)).connections, None);
}

#[test]
fn colon_opens_a_command_line_with_completion() {
    for view in View::ALL {
        let mut app = app_in(view);
        press(&mut app, KeyCode::Char(':'));
        assert_eq!(app.command.as_deref(), Some(""));
        chars(&mut app, "ev");
        assert_eq!(app.view, view, "typing is text");
        press(&mut app, KeyCode::Tab);
        assert_eq!(
            app.command.as_deref(),
            Some("events"),
            "one candidate completes"
        );
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.command, None);
        assert_eq!(app.view, View::Events);
    }
    let mut app = app_in(View::Overview);
    chars(&mut app, ":d");
    press(&mut app, KeyCode::Tab);
    assert_eq!(
        app.command.as_deref(),
        Some("doc"),
        "several: the common prefix"
    );
    assert_eq!(update::completions("doc"), vec!["documents", "docs"]);
    chars(&mut app, "s");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.view, View::Documents);
    for (typed, view) in [
        ("sessions", View::Sessions),
        ("aw", View::Awareness),
        ("traffic", View::Traffic),
        ("jobs", View::Maintenance),
        ("maintenance", View::Maintenance),
        ("charts", View::Charts),
        ("overview", View::Overview),
    ] {
        chars(&mut app, &format!(":{typed}"));
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.view, view, ":{typed}");
    }
    chars(&mut app, ":cleanup");
    press(&mut app, KeyCode::Enter);
    assert_eq!(
        app.overlay,
        Overlay::Confirm(cleanup()),
        ":cleanup asks like c"
    );
    press(&mut app, KeyCode::Esc);
    chars(&mut app, ":prune");
    press(&mut app, KeyCode::Enter);
    assert!(matches!(
        app.overlay,
        Overlay::Confirm(OperatorAction::PruneAwareness { .. })
    ));
    press(&mut app, KeyCode::Esc);
    chars(&mut app, ":nope");
    press(&mut app, KeyCode::Enter);
    let (text, error) = app.notice.clone().expect("notice");
    assert!(error && text.contains("unknown command :nope"), "{text}");
    chars(&mut app, ":s");
    press(&mut app, KeyCode::Enter);
    assert!(app
        .notice
        .as_ref()
        .is_some_and(|(t, e)| *e && t.contains("ambiguous")));
    chars(&mut app, ":pause");
    press(&mut app, KeyCode::Enter);
    assert!(app.paused);
    chars(&mut app, ":help");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.overlay, Overlay::Help);
    press(&mut app, KeyCode::Esc);
    // Esc and Backspace on an empty line close it; q inside it is text.
    chars(&mut app, ":q");
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.command, None);
    assert!(app.running);
    chars(&mut app, ":x");
    press(&mut app, KeyCode::Backspace);
    assert_eq!(app.command.as_deref(), Some(""));
    press(&mut app, KeyCode::Backspace);
    assert_eq!(app.command, None);
    let mut app = app_in(View::Documents);
    chars(&mut app, ":sort");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.sort(View::Documents).column, 1);
    chars(&mut app, ":reverse");
    press(&mut app, KeyCode::Enter);
    assert!(app.sort(View::Documents).descending);
    chars(&mut app, ":q");
    assert_eq!(press(&mut app, KeyCode::Enter), Some(Effect::Quit));
}

#[test]
fn the_payload_window_scrolls_and_closes() {
    let mut app = app_in(View::Traffic);
    press(&mut app, KeyCode::Enter);
    assert!(matches!(app.overlay, Overlay::Payload(_)));
    for (code, scroll) in [
        (KeyCode::Char('j'), 1),
        (KeyCode::Down, 2),
        (KeyCode::PageDown, 12),
        (KeyCode::Char('k'), 11),
        (KeyCode::PageUp, 1),
        (KeyCode::Up, 0),
        (KeyCode::Up, 0),
    ] {
        press(&mut app, code);
        assert_eq!(app.overlay_scroll, scroll, "{code:?}");
    }
    press(&mut app, KeyCode::Char('2'));
    assert_eq!(app.view, View::Traffic, "keys are held while it is open");
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.overlay, Overlay::None);
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.overlay, Overlay::None, "Enter closes too");
    press(&mut app, KeyCode::Enter);
    assert_eq!(press(&mut app, KeyCode::Char('q')), Some(Effect::Quit));
}

#[test]
fn traffic_is_bounded_and_selection_follows_shrinking_data() {
    let mut app = app_in(View::Traffic);
    let sample = TrafficSample {
        kind: "delta".into(),
        ..TrafficSample::default()
    };
    let report = RedisReport {
        state: SourceState::Up { latency_ms: 1 },
        samples: vec![sample; TRAFFIC_LEN + 50],
        ..RedisReport::default()
    };
    update(&mut app, Action::Redis(Box::new(report)));
    assert_eq!(app.traffic.len(), TRAFFIC_LEN);
    assert!(app.redis.samples.is_empty(), "samples move into the ring");

    let mut app = app_in(View::Sessions);
    press(&mut app, KeyCode::Char('G'));
    assert_eq!(app.selected[View::Sessions.index()], 3);
    update(&mut app, Action::Database(Box::default()));
    assert_eq!(
        app.selected[View::Sessions.index()],
        2,
        "clamped to the remaining rows"
    );
}

#[test]
fn action_results_and_ticks() {
    let mut app = app_in(View::Overview);
    update(
        &mut app,
        Action::OperatorActionDone(Ok("cleanup done".into())),
    );
    assert_eq!(app.notice, Some(("cleanup done".into(), false)));
    update(&mut app, Action::OperatorActionDone(Err("refused".into())));
    assert_eq!(app.notice, Some(("refused".into(), true)));
    update(&mut app, Action::Tick(42));
    assert_eq!(app.now_ms, 42);
    let before = app.clone();
    update(&mut app, Action::Resize);
    assert_eq!(app, before);
}
