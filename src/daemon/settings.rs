//! The effective configuration of one CLI invocation: which file is read,
//! which state directory is used, and the typed config with every path made
//! absolute.
//!
//! Precedence, lowest first: defaults < profile < the file < flags (and
//! `WARDEN_STATE_DIR`, which stands for `--state-dir`). The file is the
//! explicit `--config` (which must exist) or `<state dir>/socketio-config.json`
//! when present, where the state directory is the flag's or the default
//! `~/.claude-mpm`. The state directory the daemon then uses is the flag's,
//! else the file's `server.state_dir`, else the default. The default log file
//! (`~/.claude-mpm/socketio-server.log`) follows the state directory, as
//! `ServerConfig::state_dir` documents: a daemon started with another state
//! directory keeps its log there too.
//!
//! This is the edge where the environment (`HOME`) and the file system are
//! read; parsing and validation are the pure `crate::config`'s.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::{
    ConfigError, ConfigOverrides, DEFAULT_LOG_FILE, DEFAULT_STATE_DIR, Profile, WardenConfig,
    expand_home, parse_config_with_profile,
};

/// The name of the config file inside the state directory.
pub const CONFIG_FILE_NAME: &str = "socketio-config.json";
/// The name of the default log file inside the state directory.
pub const LOG_FILE_NAME: &str = "socketio-server.log";
/// Largest config file read; a bigger one is certainly not a config.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// What the command line says about the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigRequest {
    /// `--config`: must exist when given.
    pub config_file: Option<PathBuf>,
    /// `--state-dir` or `WARDEN_STATE_DIR`.
    pub state_dir: Option<PathBuf>,
    /// `--profile`: replaces the file's `profile` key.
    pub profile: Option<Profile>,
    /// `--host`, `--port` (the state directory override is `state_dir`).
    pub host: Option<String>,
    pub port: Option<u16>,
}

/// The configuration a command runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Effective {
    /// With `server.state_dir` set to [`Effective::state_dir`] and
    /// `logging.file` absolute.
    pub config: WardenConfig,
    /// The file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Absolute (or as given, when relative) state directory.
    pub state_dir: PathBuf,
}

impl Effective {
    pub fn port(&self) -> u16 {
        self.config.server.port
    }

    pub fn host(&self) -> &str {
        &self.config.server.host
    }
}

/// Why the configuration could not be loaded. Every variant says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "cannot expand `~` in {}: HOME is not set. Set HOME or pass an absolute --state-dir.",
        .path.display()
    )]
    NoHome { path: PathBuf },
    #[error("the config file {} does not exist (given with --config)", .path.display())]
    Missing { path: PathBuf },
    #[error("cannot read the config file {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "the config file {} is larger than {MAX_CONFIG_BYTES} bytes; it is not a warden config",
        .path.display()
    )]
    TooLarge { path: PathBuf },
    #[error("{0}")]
    Invalid(#[from] ConfigError),
}

/// `$HOME`, when set and not empty.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Expands a leading `~` with `home`; an error if there is one but no home.
pub fn expand(path: &Path, home: Option<&Path>) -> Result<PathBuf, LoadError> {
    if path.starts_with("~") {
        match home {
            Some(home) => Ok(expand_home(path, home)),
            None => Err(LoadError::NoHome {
                path: path.to_path_buf(),
            }),
        }
    } else {
        Ok(path.to_path_buf())
    }
}

/// Loads the effective configuration for `req`, reading `$HOME` and the file.
pub fn load(req: &ConfigRequest) -> Result<Effective, LoadError> {
    load_with_home(req, home_dir().as_deref())
}

/// As [`load`], with the home directory given (tests).
pub fn load_with_home(req: &ConfigRequest, home: Option<&Path>) -> Result<Effective, LoadError> {
    let bootstrap_dir = match &req.state_dir {
        Some(dir) => expand(dir, home)?,
        None => expand(Path::new(DEFAULT_STATE_DIR), home)?,
    };
    let file = match &req.config_file {
        Some(path) => {
            let path = expand(path, home)?;
            if !path.exists() {
                return Err(LoadError::Missing { path });
            }
            Some(path)
        }
        None => {
            let candidate = bootstrap_dir.join(CONFIG_FILE_NAME);
            candidate.exists().then_some(candidate)
        }
    };
    let mut config = match &file {
        Some(path) => {
            let text = read_config(path)?;
            parse_config_with_profile(&text, path, req.profile)?
        }
        None => match req.profile {
            Some(profile) => WardenConfig::for_profile(profile),
            None => WardenConfig::default(),
        },
    };
    config.apply(&ConfigOverrides {
        host: req.host.clone(),
        port: req.port,
        state_dir: req.state_dir.clone(),
        log_level: None,
    })?;
    let state_dir = match &config.server.state_dir {
        Some(dir) => expand(dir, home)?,
        None => bootstrap_dir,
    };
    config.server.state_dir = Some(state_dir.clone());
    config.logging.file = match config.logging.file.take() {
        Some(f) if f == Path::new(DEFAULT_LOG_FILE) => Some(state_dir.join(LOG_FILE_NAME)),
        Some(f) => Some(expand(&f, home)?),
        None => None,
    };
    Ok(Effective {
        config,
        config_file: file,
        state_dir,
    })
}

fn read_config(path: &Path) -> Result<String, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    std::fs::read_to_string(path).map_err(read_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_live_under_home() {
        let home = tempfile::tempdir().unwrap();
        let e = load_with_home(&ConfigRequest::default(), Some(home.path())).unwrap();
        assert_eq!(e.state_dir, home.path().join(".claude-mpm"));
        assert_eq!(e.config_file, None);
        assert_eq!(e.port(), 8765);
        assert_eq!(e.host(), "localhost");
        assert_eq!(
            e.config.logging.file.as_deref(),
            Some(
                home.path()
                    .join(".claude-mpm/socketio-server.log")
                    .as_path()
            )
        );
    }

    #[test]
    fn state_dir_file_then_flags() {
        let home = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        write(
            state.path(),
            CONFIG_FILE_NAME,
            r#"{"server": {"port": 9100, "host": "127.0.0.1"}, "logging": {"file": "~/x.log"}}"#,
        );
        let mut req = ConfigRequest {
            state_dir: Some(state.path().to_path_buf()),
            ..ConfigRequest::default()
        };
        let e = load_with_home(&req, Some(home.path())).unwrap();
        assert_eq!(e.config_file, Some(state.path().join(CONFIG_FILE_NAME)));
        assert_eq!((e.host(), e.port()), ("127.0.0.1", 9100));
        assert_eq!(e.state_dir, state.path());
        assert_eq!(
            e.config.logging.file.as_deref(),
            Some(home.path().join("x.log").as_path())
        );
        req.port = Some(9200);
        req.profile = Some(Profile::Development);
        let e = load_with_home(&req, Some(home.path())).unwrap();
        assert_eq!(e.port(), 9200);
        assert_eq!(e.config.recovery.circuit_breaker.failure_threshold, 3);
    }

    #[test]
    fn file_state_dir_applies_unless_a_flag_says_otherwise() {
        let home = tempfile::tempdir().unwrap();
        let cfg_dir = tempfile::tempdir().unwrap();
        let file = write(
            cfg_dir.path(),
            "c.json",
            r#"{"server": {"state_dir": "~/elsewhere"}}"#,
        );
        let req = ConfigRequest {
            config_file: Some(file),
            ..ConfigRequest::default()
        };
        let e = load_with_home(&req, Some(home.path())).unwrap();
        assert_eq!(e.state_dir, home.path().join("elsewhere"));
        assert_eq!(
            e.config.logging.file.as_deref(),
            Some(home.path().join("elsewhere").join(LOG_FILE_NAME).as_path())
        );
    }

    #[test]
    fn explicit_missing_config_and_bad_config_are_errors() {
        let home = tempfile::tempdir().unwrap();
        let req = ConfigRequest {
            config_file: Some(home.path().join("nope.json")),
            ..ConfigRequest::default()
        };
        assert!(matches!(
            load_with_home(&req, Some(home.path())),
            Err(LoadError::Missing { .. })
        ));
        let bad = write(home.path(), "bad.json", "{\n  \"server\": {\"prot\": 1}\n}");
        let req = ConfigRequest {
            config_file: Some(bad),
            ..ConfigRequest::default()
        };
        let err = load_with_home(&req, Some(home.path())).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("bad.json:2:") && text.contains("server.prot"),
            "{text}"
        );
    }

    #[test]
    fn tilde_without_home_is_an_error() {
        assert!(matches!(
            load_with_home(&ConfigRequest::default(), None),
            Err(LoadError::NoHome { .. })
        ));
    }
}
