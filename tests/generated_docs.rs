//! The shell completions and the manual page are generated from the CLI's
//! own definition (`warden completions SHELL`, `warden man`); the copies
//! committed under contrib/ must be what the binary prints, so they cannot
//! drift from the flags. `scripts/generate-docs` rewrites them.

use std::path::Path;
use std::process::Command;

fn printed(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "warden {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn committed(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn committed_completions_and_manual_match_the_cli() {
    for (args, path) in [
        (
            &["completions", "bash"][..],
            "contrib/completions/warden.bash",
        ),
        (
            &["completions", "zsh"][..],
            "contrib/completions/warden.zsh",
        ),
        (
            &["completions", "fish"][..],
            "contrib/completions/warden.fish",
        ),
        (&["man"][..], "contrib/warden.1"),
    ] {
        assert!(
            printed(args) == committed(path),
            "{path} differs from `warden {}`: run scripts/generate-docs and commit the result",
            args.join(" ")
        );
    }
}

#[test]
fn the_manual_names_every_command() {
    let page = printed(&["man"]);
    for command in [
        "start",
        "stop",
        "restart",
        "reload",
        "status",
        "health",
        "logs",
        "doctor",
        "config",
        "completions",
    ] {
        assert!(page.contains(command), "the manual lacks {command}");
    }
}
