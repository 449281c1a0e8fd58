//! A real `redis-server` for the tests that need one (cluster mode):
//! started on a free loopback port with persistence off, killed on drop.
//! `redis-server` must be on the PATH (Debian package `redis-server`;
//! `scripts/test` installs it).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use super::free_port;

/// A `redis-server` of this test; killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// Extra `redis-server` arguments.
    extra: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts a server.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// [`Redis::start`] with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let mut redis = Redis {
            port: free_port(),
            child: None,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            _dir: dir,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli <args>` against this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli (package redis-tools, installed with redis-server)");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Connections Redis accepted since it started (`INFO stats`).
    pub fn connections_received(&self) -> u64 {
        self.cli(&["INFO", "stats"])
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("total_connections_received")
    }

    /// (Re)starts the server on the same port and waits until it accepts.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self._dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): the cluster tests need it. Run the tests \
                     with `scripts/test` (installs it), or install it yourself (Debian: \
                     apt-get install redis-server), or build and run them with \
                     WARDEN_SKIP_REDIS_TESTS=1 to skip them knowingly"
                )
            });
        self.child = Some(child);
        let port = self.port;
        super::wait_until(&format!("redis-server on {port}"), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// `kill -9`: Redis vanishes without closing anything gracefully.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
