//! The runner in-process (`run::Daemon`): a restart requested through the
//! control handle rebinds the same address with the PID file untouched and
//! the lock held; an emergency stop request ends the run and the shutdown
//! removes the PID file; a failed start leaves nothing behind.

use std::sync::Arc;

use warden::daemon::hub::Hub;
use warden::daemon::os::clock::SystemClock;
use warden::daemon::os::settings::{self, ConfigRequest, Effective};
use warden::daemon::runner::run::{self, Daemon, DaemonExit, StartError};
use warden::daemon::serve::server::ShutdownSignals;
use warden::daemon::serve::serving::Services;

fn effective(state: &std::path::Path, home: &std::path::Path, port: u16) -> Effective {
    let req = ConfigRequest {
        state_dir: Some(state.to_path_buf()),
        host: Some("127.0.0.1".to_string()),
        port: Some(port),
        ..ConfigRequest::default()
    };
    settings::load_with_home(&req, Some(home)).expect("valid defaults")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(e: &Effective) -> Result<Daemon, StartError> {
    let hub = Hub::new(run::hub_settings(&e.config), Arc::new(SystemClock::new()));
    Daemon::start(e, hub, Services::basic()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_through_the_control_handle_keeps_the_pid_file_and_the_address() {
    let (state, home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let e = effective(state.path(), home.path(), free_port());
    let mut daemon = start(&e).await.expect("start");
    let addr = daemon.local_addr();
    let pid_file = daemon.pid_guard().path().to_path_buf();
    let before = std::fs::read(&pid_file).unwrap();
    let control = daemon.control();
    assert!(!control.is_draining());

    let mut signals = ShutdownSignals::install().unwrap();
    let requester = tokio::spawn(async move {
        let report = control.restart_service().await;
        (report, control)
    });
    // The run loop serves the request, then the emergency stop ends it.
    let run = tokio::spawn(async move {
        let exit = daemon.run_until_stopped(&mut signals).await;
        (exit, daemon)
    });
    let (report, control) = requester.await.unwrap();
    report.expect("restart succeeds");
    assert_eq!(control.restarts(), 1);
    assert!(!control.is_draining());
    assert_eq!(
        std::fs::read(&pid_file).unwrap(),
        before,
        "PID file untouched"
    );
    let (code, _) = tokio::task::spawn_blocking(move || http_status(addr.port()))
        .await
        .unwrap();
    assert_eq!(code, 200, "serving again on {addr}");

    control.emergency_stop("test").await.unwrap();
    let (exit, daemon) = run.await.unwrap();
    assert_eq!(
        exit,
        DaemonExit::EmergencyStop {
            reason: "test".to_string()
        }
    );
    daemon.shutdown().await;
    assert!(!pid_file.exists(), "shutdown removes the PID file");
    assert!(std::net::TcpStream::connect(addr).is_err());
}

fn http_status(port: u16) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let code = raw.split(' ').nth(1).unwrap().parse().unwrap();
    (code, raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_in_the_same_process_conflicts_and_leaves_the_first_intact() {
    let (state, home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let e = effective(state.path(), home.path(), free_port());
    let first = start(&e).await.expect("start");
    let before = std::fs::read(first.pid_guard().path()).unwrap();
    match start(&e).await {
        Err(StartError::DaemonConflict(err)) => {
            assert_eq!(err.existing_pid, Some(std::process::id()));
        }
        other => panic!("expected a daemon conflict, got {other:?}"),
    }
    assert_eq!(std::fs::read(first.pid_guard().path()).unwrap(), before);
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_conflict_releases_the_pid_file() {
    let (state, home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let e = effective(state.path(), home.path(), port);
    match start(&e).await {
        Err(StartError::PortConflict(err)) => {
            let holder_pid = err.conflicting_process.as_ref().map(|h| h.pid);
            assert_eq!(holder_pid, Some(std::process::id()));
        }
        other => panic!("expected a port conflict, got {other:?}"),
    }
    assert!(
        !state
            .path()
            .join(format!("socketio-server-{port}.pid"))
            .exists()
    );
}
