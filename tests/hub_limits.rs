//! `server.max_clients` is a hard limit: a client beyond it gets a Socket.IO
//! connect error saying why and is not counted; once a client leaves, the
//! next one gets in. (Before, max_clients only fed a health threshold: 1,200
//! clients were accepted with a maximum of 1,000.)

mod hub_common;

use hub_common::{TestClient, TestHub, settings, wait_until};
use serde_json::Value;

/// A raw Engine.IO polling client: handshake, namespace connect, then the
/// server's answer to the connect (the Socket.IO packet of the next poll,
/// skipping Engine.IO pings).
async fn polling_connect(hub: &TestHub) -> String {
    let http = reqwest::Client::new();
    let open = http
        .get(hub.http("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .expect("handshake")
        .text()
        .await
        .expect("handshake body");
    let open: Value = serde_json::from_str(open.trim_start_matches('0')).expect("open packet");
    let sid = open["sid"].as_str().expect("sid");
    let url = hub.http(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    http.post(&url)
        .body("40")
        .send()
        .await
        .expect("namespace connect");
    let body = http
        .get(&url)
        .send()
        .await
        .expect("poll")
        .text()
        .await
        .expect("poll body");
    body.split('\u{1e}')
        .find(|packet| packet.starts_with('4'))
        .unwrap_or_else(|| panic!("no Socket.IO packet in {body:?}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_beyond_max_clients_is_refused_with_a_reason_and_not_counted() {
    let mut s = settings();
    s.max_clients = 2;
    let hub = TestHub::start(s).await;
    let first = TestClient::connect(&hub.url()).await;
    let _second = TestClient::connect(&hub.url()).await;

    let answer = polling_connect(&hub).await;
    let error = answer
        .strip_prefix("44")
        .unwrap_or_else(|| panic!("a connect error packet, got {answer:?}"));
    let error: Value = serde_json::from_str(error).expect("connect error JSON");
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!("hub__server_full", error["message"].as_str().expect("message"));
    });
    let stats = hub.hub.stats().snapshot();
    assert_eq!(stats.clients_connected, 2);
    assert_eq!(stats.clients_refused_max_clients, 1);

    // One leaves: the next one is admitted.
    first.client.disconnect().await.expect("disconnect");
    wait_until("one client left", || {
        hub.hub.stats().clients_connected() == 1
    })
    .await;
    let answer = polling_connect(&hub).await;
    assert!(answer.starts_with("40"), "admitted: {answer:?}");
    assert_eq!(hub.hub.stats().clients_connected(), 2);
}
