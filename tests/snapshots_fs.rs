//! Snapshot tests for the messages of warden's file-system checks: an
//! untrusted state directory, a config file that is not a regular file or
//! not private, a log file that is a link, a PID file whose lock holder is
//! not the recorded process. Paths and ids are fixed values.

use std::path::PathBuf;

use warden::daemon::os::settings::{LoadError, StateDirError};

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("fs__{}", $name), $value);
        })
    };
}

fn state() -> PathBuf {
    PathBuf::from("/home/user/.claude-mpm")
}

#[test]
fn state_dir_writable_by_others() {
    let e = StateDirError::Writable {
        path: state(),
        mode: 0o777,
    };
    snap!("state_dir_writable", e.to_string());
    let e = StateDirError::Writable {
        path: state(),
        mode: 0o770,
    };
    snap!("state_dir_group_writable", e.to_string());
}

#[test]
fn state_dir_owned_by_another_user() {
    let e = StateDirError::ForeignOwner {
        path: state(),
        owner: 1001,
        euid: 1000,
    };
    snap!("state_dir_foreign_owner", e.to_string());
}

#[test]
fn state_dir_parent_unsafe() {
    let e = StateDirError::ParentWritable {
        path: PathBuf::from("/srv/shared/warden"),
        parent: PathBuf::from("/srv/shared"),
        mode: 0o777,
    };
    snap!("state_dir_parent_writable", e.to_string());
    let e = StateDirError::ParentForeignOwner {
        path: PathBuf::from("/home/other/warden"),
        parent: PathBuf::from("/home/other"),
        owner: 1001,
        euid: 1000,
    };
    snap!("state_dir_parent_foreign_owner", e.to_string());
}

#[test]
fn config_not_a_regular_file() {
    let e = LoadError::NotRegular {
        path: PathBuf::from("/home/user/warden.fifo"),
        kind: "a FIFO",
    };
    snap!("config_fifo", e.to_string());
    let e = LoadError::TooLarge {
        path: PathBuf::from("/dev/stdin"),
    };
    snap!("config_too_large", e.to_string());
}

#[test]
fn auto_loaded_config_not_private() {
    let path = state().join("socketio-config.json");
    let e = LoadError::ConfigWritable {
        path: path.clone(),
        mode: 0o666,
    };
    snap!("config_writable", e.to_string());
    let e = LoadError::ConfigForeignOwner {
        path,
        owner: 1001,
        euid: 1000,
    };
    snap!("config_foreign_owner", e.to_string());
}

#[test]
fn log_file_is_a_link() {
    use warden::daemon::os::logging::LoggingError;
    let log = state().join("socketio-server.log");
    snap!(
        "log_symlink",
        LoggingError::Symlink(log.clone()).to_string()
    );
    snap!("log_not_regular", LoggingError::NotRegular(log).to_string());
}

#[test]
fn lock_holder_is_not_the_recorded_pid() {
    use warden::daemon::cli::control::LockHolderMismatch;
    let e = LockHolderMismatch::OtherHolder {
        recorded: 4242,
        holders: vec![31337],
    };
    snap!("lock_holder_other", e.to_string());
    let e = LockHolderMismatch::HolderUnknown { recorded: 4242 };
    snap!("lock_holder_unknown", e.to_string());
}
