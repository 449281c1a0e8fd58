//! docs/api.md cannot drift from the code: every route the daemon registers
//! (`.route("…")` in src/daemon) and every Socket.IO event name the hub
//! handles or emits (`pub const …: &str` in src/daemon/hub/mod.rs) is listed
//! there, and every `GET` path it lists answers on a running daemon.

mod daemon_common;

use std::path::Path;

use daemon_common::Env;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn doc() -> String {
    std::fs::read_to_string(root().join("docs/api.md")).unwrap()
}

/// Every `.rs` file under `dir`, in every subsystem folder.
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The first string literal after each `.route(` in `text`.
fn routes(text: &str) -> Vec<String> {
    text.split(".route(")
        .skip(1)
        .filter_map(|rest| {
            let start = rest.find('"')? + 1;
            let end = start + rest[start..].find('"')?;
            Some(rest[start..end].to_string())
        })
        .collect()
}

#[test]
fn every_route_the_daemon_registers_is_documented() {
    let doc = doc();
    let mut seen = 0;
    for path in rust_files(&root().join("src/daemon")) {
        for route in routes(&std::fs::read_to_string(&path).unwrap()) {
            seen += 1;
            assert!(
                doc.contains(&format!(" {route}`")),
                "{route} (registered in {}) is not in docs/api.md",
                path.display()
            );
        }
    }
    assert!(
        seen >= 10,
        "found only {seen} routes: has the layout moved?"
    );
}

#[test]
fn every_socketio_event_name_is_documented() {
    let doc = doc();
    let hub = std::fs::read_to_string(root().join("src/daemon/hub/mod.rs")).unwrap();
    let mut seen = 0;
    for line in hub.lines() {
        let Some(rest) = line.strip_prefix("pub const ") else {
            continue;
        };
        let Some((name, value)) = rest.split_once(": &str = \"") else {
            continue;
        };
        let value = value.trim_end_matches("\";");
        seen += 1;
        assert!(
            doc.contains(&format!("`{value}`")),
            "{name} = {value:?} is not in docs/api.md"
        );
    }
    assert!(seen >= 8, "found only {seen} event names");
}

#[test]
fn every_documented_get_answers() {
    let doc = doc();
    let paths: Vec<&str> = doc
        .split("`GET ")
        .skip(1)
        .filter_map(|rest| rest.split('`').next())
        .collect();
    assert!(paths.len() >= 10, "{paths:?}");
    let env = Env::new();
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    for path in paths {
        let code = status_of(env.port, path);
        assert_ne!(code, 404, "GET {path}");
    }
}

/// The status code of `GET path`, read from the status line alone (the
/// status page's event stream never ends).
fn status_of(port: u16, path: &str) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
