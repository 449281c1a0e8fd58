//! Finding who holds a TCP port from /proc, with real sockets.

use std::net::TcpListener;

use warden::daemon::os::port::{is_addr_in_use, listens_on, port_owner};

#[test]
fn finds_our_own_listener_and_nobody_on_a_closed_port() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    if cfg!(target_os = "linux") {
        let owner = port_owner(port).expect("the OS tells who listens");
        assert_eq!(owner.pid, std::process::id());
        assert!(!owner.name.is_empty());
        assert!(!owner.cmdline.is_empty());
        assert!(!owner.command().is_empty());
    }
    let err = TcpListener::bind(("127.0.0.1", port)).expect_err("port is taken");
    assert!(is_addr_in_use(&err));
    drop(listener);
    assert_eq!(
        port_owner(port),
        None,
        "nobody listens after the listener closed"
    );
}

/// Another process holds the port: the scan goes beyond our own fds.
#[test]
fn finds_another_process_holding_the_port() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    // The child inherits the listening socket as its stdin, then we close ours.
    let fd = std::os::fd::OwnedFd::from(listener);
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .stdin(std::process::Stdio::from(fd))
        .spawn()
        .expect("spawn sleep");
    let owner = port_owner(port);
    let _ = child.kill();
    let _ = child.wait();
    let owner = owner.expect("the child is found");
    assert_eq!(owner.pid, child.id());
    assert_eq!(owner.name, "sleep");
    assert_eq!(owner.cmdline, vec!["sleep".to_string(), "30".to_string()]);
}

/// Whether one pid listens on a port: ours does on our listener's port, and
/// not once it is closed; a process without the socket does not.
#[test]
fn listens_on_tells_one_pid_apart() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("spawn sleep");
    assert_eq!(listens_on(std::process::id(), port), Some(true));
    assert_eq!(listens_on(sleeper.id(), port), Some(false));
    drop(listener);
    assert_eq!(listens_on(std::process::id(), port), Some(false));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}
