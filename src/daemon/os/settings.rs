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
//! The file system is distrusted as sshd does ([`check_state_dir`]): a state
//! directory another user can write or owns is refused, the auto-loaded file
//! is read only from a trusted directory and only when private, and every
//! config file must be a regular file of at most [`MAX_CONFIG_BYTES`].
//!
//! This is the edge where the environment (`HOME`) and the file system are
//! read; parsing and validation are the pure `crate::config`'s.

use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::{
    ConfigError, ConfigOverrides, DEFAULT_LOG_FILE, DEFAULT_STATE_DIR, Profile, WardenConfig,
    expand_home, parse_config_with_profile,
};
use crate::pidfile::Invocation;

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
    /// The flags this configuration came from, paths made absolute: what
    /// the daemon records in its PID file for `warden restart` (`detach`
    /// is the caller's to set).
    pub invocation: Invocation,
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
    #[error(
        "the config file {} is not a regular file (it is {kind}); warden reads its config only \
         from a regular file. Point --config at one.",
        .path.display()
    )]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(
        "refusing to load {}: it is writable by {} (mode {mode:04o}), so they could configure \
         warden. Fix: chmod go-w {}",
        .path.display(), writable_by(*.mode), .path.display()
    )]
    ConfigWritable { path: PathBuf, mode: u32 },
    #[error(
        "refusing to load {}: it is owned by uid {owner}, not by uid {euid} (this user), so its \
         owner could configure warden. Fix: chown {euid} {} (as root), or remove it.",
        .path.display(), .path.display()
    )]
    ConfigForeignOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error(
        "WARDEN_AUTH_TOKEN is not a valid token: it must be {} to {} visible ASCII characters \
         (no spaces); its value is not shown. Fix the variable or unset it.",
        crate::config::AUTH_TOKEN_CHARS.0,
        crate::config::AUTH_TOKEN_CHARS.1
    )]
    BadEnvToken,
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error("{0}")]
    Invalid(#[from] ConfigError),
}

/// The environment variable that sets `server.auth_token` over the config
/// file (a unit's `Environment=`/`EnvironmentFile=`, a container's secret).
pub const AUTH_TOKEN_ENV: &str = "WARDEN_AUTH_TOKEN";

/// Why a state directory is not trusted (the rules of sshd's `StrictModes`):
/// the directory must be this user's and writable by nobody else, and no
/// directory above it may let another user replace it. Each message names
/// the path, what is wrong, and the command that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error(
        "refusing to use the state directory {}: it is writable by {} (mode {mode:04o}), so \
         another user could plant a PID file, a log link or a config there. \
         Fix: chmod 700 {}",
        .path.display(), writable_by(*.mode), .path.display()
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error(
        "refusing to use the state directory {}: it is owned by uid {owner}, not by uid {euid} \
         (this user), so its owner controls warden's PID file and config. \
         Fix: chown {euid} {} (as root), or choose another --state-dir.",
        .path.display(), .path.display()
    )]
    ForeignOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error(
        "refusing to use the state directory {}: the directory above it, {}, is writable by {} \
         without the sticky bit (mode {mode:04o}), so another user could replace the state \
         directory. Fix: chmod go-w {} (or chmod +t {} if it is shared, as /tmp is), or choose \
         another --state-dir.",
        .path.display(), .parent.display(), writable_by(*.mode), .parent.display(), .parent.display()
    )]
    ParentWritable {
        path: PathBuf,
        parent: PathBuf,
        mode: u32,
    },
    #[error(
        "refusing to use the state directory {}: the directory above it, {}, is owned by uid \
         {owner}, neither root nor uid {euid} (this user), so its owner could replace the state \
         directory. Fix: choose a --state-dir under a directory that you or root own.",
        .path.display(), .parent.display()
    )]
    ParentForeignOwner {
        path: PathBuf,
        parent: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error(
        "the state directory {} is not a directory. Move it away or choose another --state-dir.",
        .path.display()
    )]
    NotADirectory { path: PathBuf },
    #[error("cannot inspect the state directory {}: {source}", .path.display())]
    Stat { path: PathBuf, source: io::Error },
}

/// "its group", "others" or "group and others", from the write bits of `mode`.
fn writable_by(mode: u32) -> &'static str {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group and others",
        (true, false) => "its group",
        _ => "others",
    }
}

/// This process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Checks that `dir` (which must exist) can be trusted with the PID file, the
/// log and the config: a directory owned by this user (the effective uid)
/// and not writable by group or others, and, all the way up to `/`, no
/// directory that another user could use to replace it: each is owned by
/// root or this user and is not writable by group or others unless it has
/// the sticky bit (as `/tmp` has). Links are resolved first; the checks apply
/// to the real directories.
///
/// The state directory itself is refused when group- or other-writable even
/// with the sticky bit: another user could still create files in it (a PID
/// file they hold the lock of, a config).
pub fn check_state_dir(dir: &Path) -> Result<(), StateDirError> {
    check_state_dir_as(dir, euid())
}

fn check_state_dir_as(dir: &Path, euid: u32) -> Result<(), StateDirError> {
    let stat_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateDirError::Stat { path, source }
    };
    let real = std::fs::canonicalize(dir).map_err(stat_err(dir))?;
    let meta = std::fs::metadata(&real).map_err(stat_err(dir))?;
    if !meta.is_dir() {
        return Err(StateDirError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    if meta.uid() != euid {
        return Err(StateDirError::ForeignOwner {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            euid,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(StateDirError::Writable {
            path: dir.to_path_buf(),
            mode,
        });
    }
    for parent in real.ancestors().skip(1) {
        let meta = std::fs::metadata(parent).map_err(stat_err(parent))?;
        let owner = meta.uid();
        if owner != 0 && owner != euid {
            return Err(StateDirError::ParentForeignOwner {
                path: dir.to_path_buf(),
                parent: parent.to_path_buf(),
                owner,
                euid,
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(StateDirError::ParentWritable {
                path: dir.to_path_buf(),
                parent: parent.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

/// [`check_state_dir`] when `dir` exists; nothing to check when it does not
/// (warden creates it 0700 when it first writes there).
pub fn check_state_dir_if_present(dir: &Path) -> Result<(), StateDirError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        _ => check_state_dir(dir),
    }
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
    let file = config_file(req, home, &bootstrap_dir)?;
    let mut config = read_config_or_defaults(req, file.as_deref())?;
    config.apply(&ConfigOverrides {
        host: req.host.clone(),
        port: req.port,
        state_dir: req.state_dir.clone(),
        log_level: None,
    })?;
    apply_env_token(&mut config)?;
    let state_dir = match &config.server.state_dir {
        Some(dir) => expand(dir, home)?,
        None => bootstrap_dir,
    };
    check_state_dir_if_present(&state_dir)?;
    config.server.state_dir = Some(state_dir.clone());
    config.logging.file = match config.logging.file.take() {
        Some(f) if f == Path::new(DEFAULT_LOG_FILE) => Some(state_dir.join(LOG_FILE_NAME)),
        Some(f) => Some(expand(&f, home)?),
        None => None,
    };
    let invocation = Invocation {
        host: req.host.clone(),
        config: req.config_file.as_ref().and(file.as_deref()).map(absolute),
        profile: req.profile.map(|p| p.as_str().to_string()),
        state_dir: Some(absolute(&state_dir)),
        detach: false,
    };
    Ok(Effective {
        config,
        config_file: file,
        state_dir,
        invocation,
    })
}

/// The configuration file to read: the one `req` names (it must exist), or
/// else `config.json` in the bootstrap state directory if there is one
/// there (then that directory must be trusted); `None` for the defaults.
fn config_file(
    req: &ConfigRequest,
    home: Option<&Path>,
    bootstrap_dir: &Path,
) -> Result<Option<PathBuf>, LoadError> {
    if let Some(path) = &req.config_file {
        let path = expand(path, home)?;
        if !path.exists() {
            return Err(LoadError::Missing { path });
        }
        return Ok(Some(path));
    }
    let candidate = bootstrap_dir.join(CONFIG_FILE_NAME);
    if std::fs::symlink_metadata(&candidate).is_err() {
        return Ok(None);
    }
    // Whoever can write the state directory supplies this file: it is only
    // read from a trusted directory.
    check_state_dir(bootstrap_dir)?;
    Ok(Some(candidate))
}

/// `file` parsed with `req`'s profile (an auto-loaded file must be owned by
/// us), or the profile's defaults when there is no file.
fn read_config_or_defaults(
    req: &ConfigRequest,
    file: Option<&Path>,
) -> Result<WardenConfig, LoadError> {
    let auto_loaded = req.config_file.is_none();
    match file {
        Some(path) => {
            let text = read_config_as(path, auto_loaded.then(euid))?;
            Ok(parse_config_with_profile(&text, path, req.profile)?)
        }
        None => Ok(match req.profile {
            Some(profile) => WardenConfig::for_profile(profile),
            None => WardenConfig::default(),
        }),
    }
}

/// The token from the environment wins over the file's; an empty variable
/// counts as unset.
fn apply_env_token(config: &mut WardenConfig) -> Result<(), LoadError> {
    let Some(token) = std::env::var_os(AUTH_TOKEN_ENV).filter(|t| !t.is_empty()) else {
        return Ok(());
    };
    match token.into_string() {
        Ok(token) if crate::config::is_valid_auth_token(&token) => {
            config.server.auth_token = Some(token);
            Ok(())
        }
        _ => Err(LoadError::BadEnvToken),
    }
}

/// `path` made absolute against the working directory (as given when that
/// cannot be read): a recorded path must mean the same from anywhere.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Reads a config file: a regular file (a FIFO, a device or a directory is
/// refused without blocking: the file is opened non-blocking and checked with
/// `fstat` before a byte is read) of at most [`MAX_CONFIG_BYTES`].
pub fn read_config(path: &Path) -> Result<String, LoadError> {
    read_config_as(path, None)
}

/// [`read_config`]; with `owner`, the file must also be owned by that uid
/// and not writable by group or others (the auto-loaded
/// `<state dir>/socketio-config.json`).
fn read_config_as(path: &Path, owner: Option<u32>) -> Result<String, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(LoadError::NotRegular {
            path: path.to_path_buf(),
            kind: file_kind(&meta),
        });
    }
    if let Some(euid) = owner {
        if meta.uid() != euid {
            return Err(LoadError::ConfigForeignOwner {
                path: path.to_path_buf(),
                owner: meta.uid(),
                euid,
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(LoadError::ConfigWritable {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let mut bytes = Vec::new();
    (&file)
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes).map_err(|e| read_err(io::Error::new(io::ErrorKind::InvalidData, e)))
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
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
    fn state_dir_rules() {
        use std::os::unix::fs::PermissionsExt;
        let chmod = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o700);
        assert!(check_state_dir(&dir).is_ok());
        // Another euid than the owner's: refused (root is not special for
        // the directory itself).
        assert!(matches!(
            check_state_dir_as(&dir, euid().wrapping_add(1)),
            Err(StateDirError::ForeignOwner { .. })
        ));
        chmod(&dir, 0o1777);
        assert!(matches!(
            check_state_dir(&dir),
            Err(StateDirError::Writable { mode: 0o1777, .. })
        ));
        chmod(&dir, 0o700);
        chmod(top.path(), 0o777);
        assert!(matches!(
            check_state_dir(&dir),
            Err(StateDirError::ParentWritable { .. })
        ));
        chmod(top.path(), 0o1777);
        assert!(check_state_dir(&dir).is_ok());
        // A link to a trusted directory is judged by the directory.
        let link = top.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(check_state_dir(&link).is_ok());
        let file = top.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            check_state_dir(&file),
            Err(StateDirError::NotADirectory { .. })
        ));
        chmod(top.path(), 0o700);
    }

    #[test]
    fn tilde_without_home_is_an_error() {
        assert!(matches!(
            load_with_home(&ConfigRequest::default(), None),
            Err(LoadError::NoHome { .. })
        ));
    }
}
