//! The status page in a real headless Chromium, driven through chromedriver
//! (W3C WebDriver: a handful of JSON requests, sent with reqwest, already a
//! dev-dependency; no WebDriver crate needed). The real `warden` binary
//! serves the page; the tests read the page's DOM, never the daemon's JSON:
//!
//! - a healthy daemon: the page says "healthy" with no console errors, an
//!   event posted to /api/events shows in the tail, the pause button holds
//!   the tail, and when the daemon stops the "unreachable" banner appears;
//! - a forced ladder (memory_mb 1): the page shows critical, the rung and the
//!   recovery events without a reload, reconnects by itself after
//!   restart_service and says so, and shows the banner once the emergency
//!   stop ends the daemon;
//! - a watcher that stops reading is dropped (a `lagged` event, then the
//!   stream ends) instead of being buffered for.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the tests
//! FAIL with the install command. `WARDEN_UPDATE_SCREENSHOT=1` rewrites
//! docs/status-page.png from the healthy test.

mod daemon_common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_common::{DEADLINE, Daemon, Env, free_port};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL_HINT: &str =
    "the status page tests need a real browser: apt-get install chromium chromium-driver";

/// A chromedriver process and one browser session on it.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let request = self.http.delete(url).timeout(Duration::from_secs(10));
        let _ = self.rt.block_on(async { request.send().await });
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    fn start() -> Browser {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: {INSTALL_HINT}"
            );
        }
        let port = free_port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {CHROMEDRIVER}: {e}; {INSTALL_HINT}"));
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("chromedriver exited with {status}; {INSTALL_HINT}");
            }
            assert!(start.elapsed() < DEADLINE, "chromedriver never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = reqwest::Client::new();
        let profile = tempfile::tempdir().unwrap();
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--window-size=1000,1300".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let base = format!("http://127.0.0.1:{port}");
        let answer: Value = rt
            .block_on(async {
                http.post(format!("{base}/session"))
                    .json(&caps)
                    .timeout(DEADLINE)
                    .send()
                    .await?
                    .json()
                    .await
            })
            .unwrap_or_else(|e| panic!("chromedriver session: {e}; {INSTALL_HINT}"));
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session from chromedriver: {answer}; {INSTALL_HINT}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            rt,
            http,
            _profile: profile,
        }
    }

    /// One WebDriver command; its `value`.
    fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url).timeout(DEADLINE);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = self
            .rt
            .block_on(async { request.send().await?.json().await })
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        answer["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    fn eval(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// What the tests read of the page.
    fn page(&self) -> Value {
        self.eval(
            "var t = function (id) { var e = document.getElementById(id); return e ? e.textContent : null; };
             return { overall: t('overall'), conn: t('conn'), banner: t('banner'),
                      banner_shown: !document.getElementById('banner').hidden,
                      errors: t('errors'), recovery: t('recoveries'), ladder: t('ladder'),
                      tail: t('tail'), checks: t('checks') };",
        )
    }

    /// Polls the page until `ok` holds; panics with the last view.
    fn wait_for(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let page = self.page();
            if ok(&page) {
                return page;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the page never showed {what}; last view: {page:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The browser's console entries at SEVERE level.
    fn console_errors(&self) -> Vec<String> {
        let log = self.command(
            reqwest::Method::POST,
            "/se/log",
            Some(json!({ "type": "browser" })),
        );
        log.as_array()
            .expect("chromedriver's browser log is a list")
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].to_string())
            .collect()
    }

    fn screenshot(&self) -> Vec<u8> {
        let encoded = self.command(reqwest::Method::GET, "/screenshot", None);
        base64_decode(encoded.as_str().expect("a base64 screenshot"))
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|c| *c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn spawn_with(env: &Env, config: Value) -> Daemon {
    let path = env.state_dir().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let path = path.to_str().unwrap().to_string();
    let mut daemon = env.spawn(&["--config", &path]);
    env.wait_ready(&mut daemon);
    daemon
}

fn text(page: &Value, key: &str) -> String {
    page[key].as_str().unwrap_or_default().to_string()
}

fn post_event(port: u16, body: &Value) {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
}

#[test]
fn a_healthy_daemon_its_event_tail_and_the_unreachable_banner() {
    let browser = Browser::start();
    let env = Env::new();
    let mut daemon = spawn_with(&env, json!({"health_monitoring": {"check_interval": 1}}));
    browser.goto(&env.url());
    let page = browser.wait_for("healthy", |p| text(p, "overall") == "healthy");
    assert_eq!(text(&page, "conn"), "Live", "{page:#}");
    assert!(text(&page, "checks").contains("memory_mb"), "{page:#}");

    post_event(env.port, &json!({"type": "page_probe", "n": 1}));
    browser.wait_for("the posted event in the tail", |p| {
        text(p, "tail").contains("page_probe")
    });

    // Paused, a new event is held back; resumed, it shows.
    browser.eval("document.getElementById('pause').click(); return null;");
    post_event(env.port, &json!({"type": "held_back"}));
    post_event(env.port, &json!({"type": "after_hold"}));
    let stats = browser.wait_for("3 events processed", |_| {
        browser
            .eval("return document.getElementById('counts').textContent;")
            .as_str()
            .is_some_and(|t| t.contains("Events processed3"))
    });
    assert!(!text(&stats, "tail").contains("held_back"), "{stats:#}");
    browser.eval("document.getElementById('pause').click(); return null;");
    browser.wait_for("the held events after resume", |p| {
        text(p, "tail").contains("held_back") && text(p, "tail").contains("after_hold")
    });

    let shot = browser.screenshot();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
    if std::env::var_os("WARDEN_UPDATE_SCREENSHOT").is_some() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
        std::fs::write(path, &shot).unwrap();
    }

    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    assert_eq!(browser.page()["errors"], "", "the page's error hook");
    // The console check can see an error: one logged now is reported.
    browser.eval("console.error('status page probe'); return null;");
    let errors = browser.console_errors();
    assert!(
        errors.iter().any(|e| e.contains("status page probe")),
        "the browser log misses a console error: {errors:?}"
    );

    // Phone width: nothing wider than the screen.
    browser.command(
        reqwest::Method::POST,
        "/window/rect",
        Some(json!({"width": 390, "height": 844})),
    );
    let start = Instant::now();
    loop {
        let widths = browser.eval(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];",
        );
        let (scroll, client) = (widths[0].as_u64(), widths[1].as_u64());
        if client.is_some_and(|c| c <= 400) {
            assert!(
                scroll <= client,
                "the page overflows a phone's width: {widths}"
            );
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the window never narrowed: {widths}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    daemon.signal(libc::SIGTERM);
    daemon.wait_exit();
    let page = browser.wait_for("the unreachable banner", |p| {
        p["banner_shown"] == true && text(p, "banner").contains("Daemon unreachable")
    });
    assert!(text(&page, "conn").contains("reconnecting"), "{page:#}");
}

#[test]
fn a_forced_ladder_shows_critical_and_recovery_reconnects_after_restart_then_the_banner() {
    let browser = Browser::start();
    let env = Env::new();
    // memory_mb 1: every check is critical. One critical per rung, at least
    // 8 s apart: clear_connections, then restart_service, then the
    // emergency stop, each in view of an open page.
    let config = json!({
        "health_monitoring": {"check_interval": 1, "thresholds": {"memory_mb": 1}},
        "recovery": {
            "min_recovery_interval": 8,
            "strategy": {"warning_threshold": 2, "critical_threshold": 1}
        }
    });
    let _daemon = spawn_with(&env, config);
    browser.goto(&env.url());
    let page = browser.wait_for("critical", |p| text(p, "overall") == "critical");
    assert!(text(&page, "checks").contains("(critical)"), "{page:#}");
    browser.wait_for("clear_connections in the recovery events", |p| {
        text(p, "recovery").contains("clear_connections")
    });
    let page = browser.wait_for("restart_service and a reconnection", |p| {
        text(p, "recovery").contains("restart_service") && text(p, "conn").contains("Reconnected")
    });
    assert!(!text(&page, "ladder").contains("Rungnone"), "{page:#}");
    let errors = browser.console_errors();
    // A dropped stream is reported by Chromium as a network error, not a
    // script error; the page's own hook must stay empty.
    assert!(
        errors.iter().all(|e| e.contains("status-page/events")),
        "console errors: {errors:?}"
    );
    assert_eq!(browser.page()["errors"], "", "the page's error hook");
    browser.wait_for("the unreachable banner after the emergency stop", |p| {
        p["banner_shown"] == true && text(p, "banner").contains("Daemon unreachable")
    });
}

/// A stream whose reader stops reading is dropped once it falls more than
/// the tap's capacity (256 events) behind: it gets a `lagged` event and
/// ends, instead of the daemon buffering for it without bound. 400 events of
/// 100 kB (40 MB) are more than loopback's socket buffers hold.
#[test]
fn a_watcher_that_stops_reading_is_dropped_not_buffered() {
    use std::io::{Read, Write};
    let env = Env::new();
    let _daemon = spawn_with(&env, json!({"health_monitoring": {"check_interval": 30}}));
    let mut watcher = TcpStream::connect(("127.0.0.1", env.port)).unwrap();
    write!(
        watcher,
        "GET /status-page/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 64];
    let n = watcher.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &first[..n]);

    let filler = "x".repeat(100_000);
    for i in 0..400 {
        post_event(
            env.port,
            &json!({"type": "flood", "i": i, "filler": filler}),
        );
    }

    watcher.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut rest = Vec::new();
    watcher
        .read_to_end(&mut rest)
        .expect("the stream ends (EOF) instead of waiting for the reader");
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("event: lagged"), "no lagged notice");
    let delivered = rest.matches("event: claude_event").count();
    assert!(delivered < 400, "every event was buffered: {delivered}");
    assert_eq!(env.http_get("/livez").0, 200);
}
