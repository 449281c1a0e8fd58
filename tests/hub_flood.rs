//! One fast sender against the real `warden` binary (default config): 50,000
//! `claude_event`s back to back to three dashboards, three times. Every event
//! the hub accepted reaches every dashboard, in order, and every event it did
//! not accept was refused to the sender, which was told (`event_refused`).
//! Nothing is lost silently and nothing counts as a hub error.
//!
//! (Before: the sender's relay queue held 8,192 events; an event that found
//! it full was kept in the history, dropped for every receiver, counted as a
//! service error and logged as one WARN line per event.)
//!
//! No timing assertions: every wait polls with a generous deadline.

mod daemon_common;
mod hub_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use daemon_common::Env;
use futures_util::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Payload, TransportType};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(180);
const EVENTS: u64 = 50_000;
const RUNS: u64 = 3;

/// What a dashboard saw: per run, how many events and whether they came in
/// the order sent (each `n` above the previous one).
#[derive(Default)]
struct Seen {
    per_run: [AtomicU64; RUNS as usize],
    last_n: [AtomicU64; RUNS as usize],
    out_of_order: AtomicU64,
}

async fn connect(url: &str, on_event: &'static str, seen: Arc<Seen>) -> Client {
    let acked = Arc::new(AtomicU64::new(0));
    let ack_flag = Arc::clone(&acked);
    let client = ClientBuilder::new(url)
        .transport_type(TransportType::Websocket)
        .reconnect(false)
        .on("connection_ack", move |_: Payload, _: Client| {
            let flag = Arc::clone(&ack_flag);
            async move {
                flag.store(1, Ordering::SeqCst);
            }
            .boxed()
        })
        .on(on_event, move |payload: Payload, _: Client| {
            let seen = Arc::clone(&seen);
            async move {
                let Payload::Text(values) = payload else {
                    return;
                };
                let Some(event) = values.first() else { return };
                let run = event["run"].as_u64().unwrap_or(0) as usize;
                let n = event["n"].as_u64().unwrap_or(0);
                if run < RUNS as usize {
                    seen.per_run[run].fetch_add(1, Ordering::SeqCst);
                    let before = seen.last_n[run].swap(n + 1, Ordering::SeqCst);
                    if n < before {
                        seen.out_of_order.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    // event_refused: no run field; count it in run 0's slot
                    // of the sender's own tally.
                    seen.per_run[0].fetch_add(1, Ordering::SeqCst);
                }
            }
            .boxed()
        })
        .connect()
        .await
        .expect("socket.io connect");
    let start = Instant::now();
    while acked.load(Ordering::SeqCst) == 0 {
        assert!(start.elapsed() < DEADLINE, "no connection_ack");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client
}

fn stats(env: &Env) -> Value {
    let (code, body) = env.http_get("/stats");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("stats JSON")
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {stats}"))
}

async fn wait_for(what: &str, env: &Env, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < DEADLINE,
            "gave up waiting for {what}: {}",
            tokio::task::block_in_place(|| stats(env))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_sender_loses_nothing_silently_in_any_run() {
    let env = Env::new();
    let mut daemon = env.spawn(&[]);
    tokio::task::block_in_place(|| env.wait_ready(&mut daemon));
    let url = env.url();

    let mut dashboards = Vec::new();
    for _ in 0..3 {
        let seen = Arc::new(Seen::default());
        let client = connect(&url, "claude_event", Arc::clone(&seen)).await;
        dashboards.push((client, seen));
    }
    let refusals = Arc::new(Seen::default());
    let sender = connect(&url, "event_refused", Arc::clone(&refusals)).await;

    let mut accepted_before = 0;
    for run in 0..RUNS {
        let refused_before = refusals.per_run[0].load(Ordering::SeqCst);
        let mut sent = 0;
        for n in 0..EVENTS {
            if sender
                .emit(
                    "claude_event",
                    json!({"run": run, "n": n, "pad": "x".repeat(64)}),
                )
                .await
                .is_ok()
            {
                sent += 1;
            }
        }
        assert_eq!(sent, EVENTS, "the sender was not cut off");

        // Every event sent was either accepted or refused (and told).
        let mut accepted = 0;
        wait_for("every event accepted or refused", &env, || {
            let s = tokio::task::block_in_place(|| stats(&env));
            accepted = counter(&s, "events_processed") - accepted_before;
            let refused = refusals.per_run[0].load(Ordering::SeqCst) - refused_before;
            accepted + refused == EVENTS
        })
        .await;
        accepted_before += accepted;

        // Every accepted event reaches every dashboard, in order.
        for (i, (_, seen)) in dashboards.iter().enumerate() {
            let what = format!("dashboard {i}: {accepted} events of run {run}");
            wait_for(&what, &env, || {
                seen.per_run[run as usize].load(Ordering::SeqCst) >= accepted
            })
            .await;
            assert_eq!(seen.per_run[run as usize].load(Ordering::SeqCst), accepted);
            assert_eq!(seen.out_of_order.load(Ordering::SeqCst), 0);
        }
        let s = tokio::task::block_in_place(|| stats(&env));
        assert_eq!(counter(&s, "events_dropped"), 0, "{s}");
        assert_eq!(counter(&s, "errors"), 0, "{s}");
        eprintln!(
            "run {run}: {accepted} accepted, {} refused",
            EVENTS - accepted
        );
    }
    let log = daemon.stderr();
    let refused_lines = log.matches("refused to its sender").count();
    assert!(
        refused_lines <= 20,
        "repeated warnings are throttled:\n{log}"
    );
    for (client, _) in dashboards {
        let _ = client.disconnect().await;
    }
    let _ = sender.disconnect().await;
}

/// A reader that never reads (a polling client that never polls) fills its
/// buffer; the relay waits `slow_reader_timeout` for it, the sender's small
/// queue fills meanwhile and its next events are refused to it, told. An
/// honest dashboard gets every accepted event; nothing is silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_reader_costs_the_sender_refusals_it_is_told_of_never_silent_loss() {
    let mut settings = hub_common::settings();
    settings.inbound_queue_events = 16;
    settings.socket_buffer_packets = 8_192;
    settings.client_error_budget = 100_000;
    settings.slow_reader_timeout = Duration::from_millis(500);
    let hub = hub_common::TestHub::start(settings).await;
    let dashboard = Arc::new(Seen::default());
    let honest = connect(&hub.url(), "claude_event", Arc::clone(&dashboard)).await;

    let _never_polled = hub_common::stalled_reader(&hub.http("")).await;
    hub_common::wait_until("two clients", || hub.hub.stats().clients_connected() == 2).await;

    let refusals = Arc::new(Seen::default());
    let sender = connect(&hub.url(), "event_refused", Arc::clone(&refusals)).await;
    // More than the stalled reader's buffer holds; its refusal notices fit
    // the sender's.
    let sent = 12_000;
    for n in 0..sent {
        sender
            .emit("claude_event", json!({"run": 0, "n": n}))
            .await
            .expect("emit");
    }
    let mut accepted = 0;
    hub_common::wait_until("every event accepted or refused", || {
        accepted = hub.hub.stats().snapshot().events_processed;
        accepted + refusals.per_run[0].load(Ordering::SeqCst) == sent
    })
    .await;
    hub_common::wait_until("the honest dashboard has every accepted event", || {
        dashboard.per_run[0].load(Ordering::SeqCst) >= accepted
    })
    .await;
    let stats = hub.hub.stats().snapshot();
    assert!(stats.events_refused > 0, "{stats:?}");
    assert_eq!(stats.events_refused, sent - accepted);
    assert_eq!(dashboard.per_run[0].load(Ordering::SeqCst), accepted);
    assert_eq!(dashboard.out_of_order.load(Ordering::SeqCst), 0);
    assert_eq!(stats.errors, 0, "a sender's overload is not a hub error");
    assert_eq!(
        stats.events_dropped, stats.events_dropped_recipient_full,
        "every drop is the stalled reader's: {stats:?}"
    );
    let _ = honest.disconnect().await;
    let _ = sender.disconnect().await;
}

/// A reader whose buffer fills while it does not read is waited for, not
/// dropped: the relay hands the event to the dashboards, waits for the late
/// reader (`slow_reader_timeout` is far away), and once it polls it gets
/// every event, in order. (A relay that dropped a full recipient's delivery
/// at once would lose it about 200 of them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_that_reads_late_is_waited_for_and_loses_nothing() {
    let mut settings = hub_common::settings();
    settings.inbound_queue_events = 1_024;
    settings.socket_buffer_packets = 256;
    settings.slow_reader_timeout = Duration::from_secs(120);
    let hub = hub_common::TestHub::start(settings).await;
    let mut dashboards = Vec::new();
    for _ in 0..3 {
        let seen = Arc::new(Seen::default());
        let client = connect(&hub.url(), "claude_event", Arc::clone(&seen)).await;
        dashboards.push((client, seen));
    }
    let poll_url = hub_common::stalled_reader(&hub.http("")).await;
    hub_common::wait_until("every client connected", || {
        hub.hub.stats().clients_connected() == 4
    })
    .await;

    let sender = connect(&hub.url(), "event_refused", Arc::new(Seen::default())).await;
    let sent = 450;
    for n in 0..sent {
        sender
            .emit("claude_event", json!({"run": 0, "n": n}))
            .await
            .expect("emit");
    }
    hub_common::wait_until("every event accepted", || {
        hub.hub.stats().snapshot().events_processed == sent
    })
    .await;

    // Now the late reader reads, answering pings, until it has every event.
    let received = hub_common::read_late(&poll_url, sent as usize, "n").await;
    assert_eq!(
        received,
        (0..sent).collect::<Vec<_>>(),
        "every event, in order"
    );
    for (i, (_, seen)) in dashboards.iter().enumerate() {
        hub_common::wait_until(&format!("dashboard {i} has every event"), || {
            seen.per_run[0].load(Ordering::SeqCst) >= sent
        })
        .await;
        assert_eq!(seen.out_of_order.load(Ordering::SeqCst), 0, "dashboard {i}");
    }
    let stats = hub.hub.stats().snapshot();
    assert_eq!(stats.events_dropped, 0, "{stats:?}");
    assert_eq!(stats.errors, 0, "{stats:?}");
    for (client, _) in dashboards {
        let _ = client.disconnect().await;
    }
    let _ = sender.disconnect().await;
}

/// The relay hands each event's one encoded packet to every recipient with
/// room at once and only then waits for the full ones (together, once), so
/// several readers that never read, among dashboards whose small buffers
/// fill now and then, cost the dashboards nothing: each gets every accepted
/// event, in order; every drop is a stalled reader's; the sender is told of
/// every refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_readers_among_many_dashboards_cost_the_dashboards_nothing() {
    const DASHBOARDS: usize = 5;
    const STALLED: u64 = 3;
    let mut settings = hub_common::settings();
    // The sender's queue holds the whole burst, so that the stalled readers
    // fill their small buffers (the first 256 events) and the relay then
    // waits for them; the dashboards' buffers fill now and then.
    settings.inbound_queue_events = 1_024;
    settings.socket_buffer_packets = 256;
    settings.client_error_budget = 100_000;
    settings.slow_reader_timeout = Duration::from_secs(2);
    let hub = hub_common::TestHub::start(settings).await;
    let mut dashboards = Vec::new();
    for _ in 0..DASHBOARDS {
        let seen = Arc::new(Seen::default());
        let client = connect(&hub.url(), "claude_event", Arc::clone(&seen)).await;
        dashboards.push((client, seen));
    }
    for _ in 0..STALLED {
        let _never_polled = hub_common::stalled_reader(&hub.http("")).await;
    }
    hub_common::wait_until("every client connected", || {
        hub.hub.stats().clients_connected() == DASHBOARDS as u64 + STALLED
    })
    .await;

    let refusals = Arc::new(Seen::default());
    let sender = connect(&hub.url(), "event_refused", Arc::clone(&refusals)).await;
    let sent = 450;
    for n in 0..sent {
        sender
            .emit("claude_event", json!({"run": 0, "n": n}))
            .await
            .expect("emit");
    }
    let mut accepted = 0;
    hub_common::wait_until("every event accepted or refused", || {
        accepted = hub.hub.stats().snapshot().events_processed;
        accepted + refusals.per_run[0].load(Ordering::SeqCst) == sent
    })
    .await;
    for (i, (_, seen)) in dashboards.iter().enumerate() {
        hub_common::wait_until(&format!("dashboard {i} has every accepted event"), || {
            seen.per_run[0].load(Ordering::SeqCst) >= accepted
        })
        .await;
        assert_eq!(
            seen.per_run[0].load(Ordering::SeqCst),
            accepted,
            "dashboard {i}"
        );
        assert_eq!(seen.out_of_order.load(Ordering::SeqCst), 0, "dashboard {i}");
    }
    let stats = hub.hub.stats().snapshot();
    assert_eq!(stats.events_refused, sent - accepted);
    assert_eq!(stats.errors, 0, "a sender's overload is not a hub error");
    assert!(stats.events_dropped_recipient_full > 0, "{stats:?}");
    assert!(
        stats.events_dropped_recipient_full <= STALLED * accepted,
        "only the stalled readers lose deliveries: {stats:?}"
    );
    assert_eq!(
        stats.events_dropped, stats.events_dropped_recipient_full,
        "every drop is a stalled reader's: {stats:?}"
    );
    for (client, _) in dashboards {
        let _ = client.disconnect().await;
    }
    let _ = sender.disconnect().await;
}
