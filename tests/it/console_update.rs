//! The reducer, key by key and view by view: every binding in every view, the
//! overlays (help, confirmation), filter editing, pause, and how source reports are
//! folded in (rates, bounded traffic, selection clamping).

use crate::console_fixture;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use synckit::console::action::{Action, Effect, OperatorAction};
use synckit::console::app::{App, DocumentSort, Overlay, SessionSort, View, TRAFFIC_LEN};
use synckit::console::model::*;
use synckit::console::rows;
use synckit::console::update::update;

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
    let mut app = app_in(View::Maintenance);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.view, View::Overview, "Tab wraps");
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.view, View::Maintenance, "BackTab wraps");
}

#[test]
fn movement_keys_in_every_view() {
    for view in View::ALL {
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
fn enter_and_esc_drill_into_a_document_only_in_documents() {
    for view in View::ALL {
        let mut app = app_in(view);
        press(&mut app, KeyCode::Char('j'));
        press(&mut app, KeyCode::Enter);
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
fn s_sorts_documents_and_sessions_only() {
    for view in View::ALL {
        let mut app = app_in(view);
        press(&mut app, KeyCode::Char('s'));
        match view {
            View::Documents => {
                assert_eq!(app.document_sort, DocumentSort::Id);
                let ids: Vec<String> = rows::documents(&app).into_iter().map(|r| r.id).collect();
                let mut sorted = ids.clone();
                sorted.sort();
                assert_eq!(ids, sorted);
                press(&mut app, KeyCode::Char('s'));
                assert_eq!(app.document_sort, DocumentSort::Size);
                press(&mut app, KeyCode::Char('s'));
                assert_eq!(app.document_sort, DocumentSort::Subscribers);
                assert_eq!(rows::documents(&app)[0].id, "room:lobby");
                press(&mut app, KeyCode::Char('s'));
                assert_eq!(app.document_sort, DocumentSort::LastChange);
            }
            View::Sessions => {
                assert_eq!(app.session_sort, SessionSort::User);
                assert_eq!(rows::sessions(&app)[0].user.as_deref(), Some("alice"));
                press(&mut app, KeyCode::Char('s'));
                assert_eq!(app.session_sort, SessionSort::ConnectedSince);
                assert_eq!(rows::sessions(&app)[0].user.as_deref(), Some("dave"));
                press(&mut app, KeyCode::Char('s'));
                assert_eq!(app.session_sort, SessionSort::LastSeen);
            }
            _ => {
                assert_eq!(app.document_sort, DocumentSort::LastChange);
                assert_eq!(app.session_sort, SessionSort::LastSeen);
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

#[test]
fn c_and_a_ask_to_confirm_in_every_view() {
    for view in View::ALL {
        let mut app = app_in(view);
        press(&mut app, KeyCode::Char('c'));
        assert_eq!(
            app.overlay,
            Overlay::Confirm(OperatorAction::Cleanup {
                via: console_fixture::A.into()
            }),
            "{view:?}"
        );
        let mut app = app_in(view);
        press(&mut app, KeyCode::Char('a'));
        assert_eq!(
            app.overlay,
            Overlay::Confirm(OperatorAction::PruneAwareness {
                via: console_fixture::A.into()
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
        assert_eq!(
            effect,
            Some(Effect::Perform(OperatorAction::Cleanup {
                via: console_fixture::A.into()
            }))
        );
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
            KeyCode::Char('7'),
            KeyCode::F(5),
            KeyCode::Left,
            KeyCode::Insert,
        ] {
            assert_eq!(press(&mut app, code), None);
        }
        assert_eq!(app, before, "{view:?}");
    }
}

#[test]
fn message_rates_come_from_successive_polls() {
    let mut app = App::new(0, 1000, false);
    let poll = |at: i64, id: &str, inbound: u64, outbound: u64| InstanceReport {
        address: "http://a".into(),
        state: SourceState::Up { latency_ms: 1 },
        sampled_at_ms: at,
        stats: Some(InstanceStats {
            instance_id: id.into(),
            messages_in: inbound,
            messages_out: outbound,
            ..InstanceStats::default()
        }),
        ..InstanceReport::default()
    };
    update(&mut app, Action::Instances(vec![poll(0, "i", 100, 100)]));
    assert!(
        app.instances[0].history_in.is_empty(),
        "one poll: no rate yet"
    );
    update(&mut app, Action::Instances(vec![poll(2000, "i", 300, 700)]));
    assert_eq!(
        (app.instances[0].rate_in, app.instances[0].rate_out),
        (100.0, 300.0)
    );
    update(
        &mut app,
        Action::Instances(vec![poll(3000, "restarted", 5, 5)]),
    );
    assert_eq!(
        app.instances[0].rate_in, 0.0,
        "a restart is not a negative rate"
    );
    assert_eq!(
        app.instances[0]
            .history_in
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![100, 0]
    );
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
    update(&mut app, Action::ActionDone(Ok("cleanup done".into())));
    assert_eq!(app.notice, Some(("cleanup done".into(), false)));
    update(&mut app, Action::ActionDone(Err("refused".into())));
    assert_eq!(app.notice, Some(("refused".into(), true)));
    update(&mut app, Action::Tick(42));
    assert_eq!(app.now_ms, 42);
    let before = app.clone();
    update(&mut app, Action::Resize);
    assert_eq!(app, before);
}
