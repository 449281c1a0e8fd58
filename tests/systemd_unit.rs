//! `contrib/warden.service`: what the unit must say (exit codes that must
//! not restart, a user and a state directory of its own, the filter variable
//! warden reads, hardening, no dangling Documentation=), and that
//! `systemd-analyze verify` accepts it without a warning, run against this
//! build's binary in ExecStart/ExecStop (skipped, loudly, where
//! systemd-analyze is missing).

use std::path::Path;
use std::process::Command;

fn unit() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/warden.service"))
        .unwrap()
}

/// The `key=value` lines of the unit (comments dropped).
fn directives(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn value(text: &str, key: &str) -> Option<String> {
    directives(text)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[test]
fn the_unit_says_what_an_operator_needs() {
    let text = unit();
    assert_eq!(
        value(&text, "RestartPreventExitStatus").as_deref(),
        Some("69 78")
    );
    assert!(
        value(&text, "DynamicUser").as_deref() == Some("yes") || value(&text, "User").is_some(),
        "a user other than root"
    );
    assert_eq!(value(&text, "StateDirectory").as_deref(), Some("warden"));
    let start = value(&text, "ExecStart").unwrap();
    assert!(start.contains("--state-dir /var/lib/warden"), "{start}");
    let stop = value(&text, "ExecStop").unwrap();
    assert!(stop.contains("--state-dir /var/lib/warden"), "{stop}");
    assert!(
        value(&text, "ExecReload").is_some(),
        "systemctl reload works"
    );
    let environment: Vec<String> = directives(&text)
        .into_iter()
        .filter(|(k, _)| k == "Environment")
        .map(|(_, v)| v)
        .collect();
    assert!(
        environment.iter().all(|v| !v.contains("RUST_LOG")),
        "RUST_LOG is only a fallback: the unit sets WARDEN_LOG"
    );
    assert!(
        environment.iter().any(|v| v.starts_with("WARDEN_LOG=")),
        "{environment:?}"
    );
    assert_eq!(
        value(&text, "Documentation"),
        None,
        "no link to a file nothing installs"
    );
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
    ] {
        assert_eq!(value(&text, key).as_deref(), Some(want), "{key}");
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "\n*** SKIPPED systemd_analyze_verify_accepts_the_unit: systemd-analyze is not \
             installed (Debian package systemd) ***"
        );
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.service");
    std::fs::write(
        &path,
        unit().replace("/usr/local/bin/warden", env!("CARGO_BIN_EXE_warden")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("warden.service"))
        .collect();
    assert!(complaints.is_empty(), "systemd-analyze warns:\n{stderr}");
}
