//! The door's user-facing messages as reviewed snapshots: the JSON bodies of
//! refused requests (403 foreign origin, 401 token, 415 content type), the
//! Socket.IO connect errors, the startup warning for an exposed daemon
//! without a token, and the config error for a bad token (which never
//! echoes the token).

use std::path::Path;

use warden::config::parse_config;
use warden::daemon::hub::door::SocketAuthError;
use warden::daemon::hub::http::Refusal;
use warden::daemon::serve::server::exposure_warning;

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("door__{}", $name), $value);
        })
    };
}

fn refusal(r: Refusal) -> String {
    format!("{} {}", r.status(), r.body())
}

#[test]
fn refused_requests_say_why_and_what_to_send() {
    snap!(
        "foreign_origin",
        refusal(Refusal::ForeignOrigin {
            origin: "https://evil.example".into()
        })
    );
    snap!(
        "foreign_host",
        refusal(Refusal::ForeignHost {
            host: "evil.example:8765".into()
        })
    );
    snap!("missing_token", refusal(Refusal::MissingToken));
    snap!("wrong_token", refusal(Refusal::WrongToken));
    snap!(
        "not_json",
        refusal(Refusal::NotJson {
            got: "\"text/plain\"".into()
        })
    );
}

#[test]
fn socket_connect_errors_say_how_to_send_the_token() {
    snap!(
        "socket_missing_token",
        SocketAuthError::MissingToken.to_string()
    );
    snap!(
        "socket_wrong_token",
        SocketAuthError::WrongToken.to_string()
    );
}

#[test]
fn an_exposed_daemon_without_a_token_is_warned_about() {
    let exposed = exposure_warning("0.0.0.0:8765".parse().unwrap(), false).unwrap();
    snap!("exposure_warning", exposed);
    assert!(exposure_warning("0.0.0.0:8765".parse().unwrap(), true).is_none());
    assert!(exposure_warning("127.0.0.1:8765".parse().unwrap(), false).is_none());
    assert!(exposure_warning("[::1]:8765".parse().unwrap(), false).is_none());
}

#[test]
fn a_bad_token_from_the_environment_is_refused_without_being_shown() {
    snap!(
        "env_token_invalid",
        warden::daemon::os::settings::LoadError::BadEnvToken.to_string()
    );
}

#[test]
fn a_bad_token_is_refused_without_being_shown() {
    let text = r#"{"server": {"auth_token": "short secret"}}"#;
    let error = parse_config(
        text,
        Path::new("/home/user/.claude-mpm/socketio-config.json"),
    )
    .unwrap_err()
    .to_string();
    assert!(!error.contains("short secret"), "{error}");
    snap!("bad_auth_token", error);
}
