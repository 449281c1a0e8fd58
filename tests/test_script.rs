//! `scripts/test`, README's test command: on a machine without the test
//! dependencies it installs them (one `apt-get update`, then the packages),
//! then runs `cargo test --workspace` with the arguments given; with them
//! present it installs nothing; `WARDEN_SKIP_REDIS_TESTS=1` installs no Redis.
//!
//! The script runs for real, with a PATH holding only stubs: `apt-get`,
//! `npm`, `pip` and `cargo` record their arguments, `redis-server` exists or
//! not per case. The stock clients' directory is a copy in a temp dir
//! (`WARDEN_TEST_CLIENTS_DIR`), prepared or not per case.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test")
}

fn stub(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs the script with a PATH of stubs; returns (exit code, the calls log).
fn run(with_redis: bool, skip_redis: bool, with_browser: bool) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("calls.log");
    let log_s = log.display().to_string();
    for tool in [
        "dirname", "cat", "sed", "cmp", "mkdir", "touch", "chmod", "printf",
    ] {
        if let Some(real) = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
        {
            std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
        }
    }
    stub(&bin, "id", "echo 0");
    // Node and Python are on a fresh machine (the Rust kind has both); the
    // stubs record what the script asks of them.
    let clients = dir.path().join("clients");
    std::fs::create_dir(&clients).unwrap();
    for file in ["package.json", "package-lock.json", "requirements.txt"] {
        std::fs::write(clients.join(file), "{}\n").unwrap();
    }
    let clients_s = clients.display().to_string();
    stub(&bin, "node", "true");
    stub(
        &bin,
        "npm",
        &format!(
            "echo \"npm $*\" >> {log_s}; mkdir -p {clients_s}/node_modules; \
             touch {clients_s}/node_modules/.package-lock.json"
        ),
    );
    stub(
        &bin,
        "python3",
        &format!(
            "if [ \"$1\" = -m ]; then echo \"python3 $*\" >> {log_s}; mkdir -p \"$3/bin\"; \
             printf '#!/bin/bash\\necho \"pip $*\" >> {log_s}\\n' > \"$3/bin/pip\"; \
             chmod +x \"$3/bin/pip\"; fi"
        ),
    );
    if with_browser {
        // A prepared machine: the clients were installed after their lockfiles.
        std::fs::create_dir_all(clients.join("node_modules")).unwrap();
        std::fs::write(clients.join("node_modules/.package-lock.json"), "").unwrap();
        std::fs::create_dir_all(clients.join(".venv")).unwrap();
        std::fs::write(clients.join(".venv/.installed"), "").unwrap();
    }
    stub(&bin, "apt-get", &format!("echo \"apt-get $*\" >> {log_s}"));
    stub(&bin, "cargo", &format!("echo \"cargo $*\" >> {log_s}"));
    if with_redis {
        stub(&bin, "redis-server", "true");
        stub(&bin, "redis-cli", "true");
    }
    if with_browser {
        stub(&bin, "chromium", "true");
        stub(&bin, "chromedriver", "true");
    }
    let mut command = Command::new("/bin/bash");
    command
        .arg(script())
        .args(["--", "--nocapture"])
        .env_clear()
        .env("PATH", &bin)
        .env("HOME", dir.path())
        .env("WARDEN_TEST_CLIENTS_DIR", &clients);
    if skip_redis {
        command.env("WARDEN_SKIP_REDIS_TESTS", "1");
    }
    let out = command.output().unwrap();
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    (
        out.status.code(),
        calls,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_fresh_machine_gets_redis_installed_then_the_workspace_tested() {
    let (code, calls, stderr) = run(false, false, false);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("apt-get update"))
            .count(),
        1,
        "one apt-get update: {calls}"
    );
    assert!(lines[0].starts_with("apt-get update"), "{calls}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("apt-get install") && l.ends_with(" redis-server")),
        "{calls}"
    );
    // The status page's browser tests need Debian's Chromium and its driver.
    for package in [" chromium", " chromium-driver"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("apt-get install") && l.ends_with(package)),
            "{package}: {calls}"
        );
    }
    // The stock clients, from their lockfile and pinned requirements.
    assert!(lines.iter().any(|l| l.starts_with("npm ci")), "{calls}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("pip install") && l.contains("requirements.txt")),
        "{calls}"
    );
    assert_eq!(
        lines.last(),
        Some(&"cargo test --workspace -- --nocapture"),
        "{calls}"
    );
}

#[test]
fn a_prepared_machine_installs_nothing() {
    let (code, calls, stderr) = run(true, false, true);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(calls.trim(), "cargo test --workspace -- --nocapture");
}

#[test]
fn skipping_redis_knowingly_installs_no_redis_and_says_so() {
    let (code, calls, stderr) = run(false, true, true);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(calls.trim(), "cargo test --workspace -- --nocapture");
    assert!(stderr.contains("SKIPPED"), "{stderr}");
}

#[test]
fn ci_and_readme_use_the_script() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == "scripts/test"),
        ".ci/run runs scripts/test"
    );
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("\nscripts/test "), "README's test command");
    let mode = std::fs::metadata(script()).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "scripts/test is executable");
}
