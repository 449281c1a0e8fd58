//! `warden doctor`, in three steps: [`gather`] the facts (the only I/O: the
//! PID file, the process table, the port's owner, the daemon's own answers),
//! [`diagnose`] them (pure: findings and the typed errors whose guides apply)
//! and [`render`] the report. The diagnosis of each situation (healthy,
//! critical, stale file, port conflict, not running) is snapshot-tested from
//! facts written by hand (`tests/snapshots_doctor.rs`).
//!
//! Not here: the command line and exit codes (`cli`), deciding what a PID
//! file means (`control`, the core's `pidfile`), rendering a guide
//! (`crate::errors`).

use std::path::{Path, PathBuf};

use crate::daemon::cli::client::{ClientError, HttpResponse};
use crate::daemon::cli::control::Instance;
use crate::daemon::os::port::PortOwner;
use crate::daemon::os::settings::Effective;
use crate::errors::{
    ConflictingProcess, DaemonConflictError, HealthCheckError, Platform, PortConflictError,
    PortHolder, StaleProcessError, WardenError, format_troubleshooting_guide_with_log,
};
use crate::health::{HealthReport, HealthStatus};
use crate::pidfile::StaleReason;
use crate::probe::{ProbeOutcome, ProcessProbe};
use crate::time::WallTime;
use serde_json::Value;

/// Everything doctor looked at.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    pub state_dir: PathBuf,
    pub config_file: Option<PathBuf>,
    /// Why the configuration could not be used (the rest was diagnosed with
    /// the defaults and the flags).
    pub config_error: Option<String>,
    pub host: String,
    pub port: u16,
    pub log_file: Option<PathBuf>,
    pub observed_at: WallTime,
    pub instance: InstanceFacts,
    /// Who listens on the port, where the OS tells.
    pub port_owner: Option<PortOwner>,
    /// Whether the port accepts a connection (asked only when no owner is
    /// visible and no warden runs).
    pub port_accepts: bool,
}

/// What the PID file and the process table say.
#[derive(Clone, Debug, PartialEq)]
pub enum InstanceFacts {
    /// The PID file cannot be used (a symlink, permissions...).
    Unusable {
        why: String,
    },
    NotRunning {
        pid_file: PathBuf,
    },
    Stale {
        pid_file: PathBuf,
        pid: Option<u32>,
        reason: StaleReason,
        /// The recorded pid's state now (`not found`, `zombie`...).
        process_status: String,
    },
    Running {
        pid_file: PathBuf,
        pid: u32,
        server_id: String,
        process: ConflictingProcess,
        /// The host it was asked on.
        contact: String,
        answer: Box<Answer>,
    },
    Unverifiable {
        pid_file: PathBuf,
        why: String,
    },
}

/// How the running daemon answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// `/health` (and `/diagnostics` for the details) answered.
    Health {
        status: HealthStatus,
        /// Every warning or critical checker of the latest report.
        failing: Vec<HealthCheckError>,
        /// The cluster section of `/diagnostics`, in cluster mode.
        cluster: Option<ClusterFacts>,
    },
    /// Something answered, but not as a healthy warden should.
    HttpStatus(u16),
    /// Nothing answered.
    Unreachable(String),
}

/// A cluster node's link to Redis, as `/diagnostics` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterFacts {
    pub node_id: String,
    /// Without its password.
    pub redis_url: String,
    /// `connected`, `connecting`, `disconnected`...
    pub redis_state: String,
    pub redis_state_since: Option<String>,
    pub redis_rtt_ms: Option<f64>,
    pub peers_seen: Vec<String>,
    pub last_error: Option<String>,
}

impl ClusterFacts {
    /// One line: node, Redis and its state, round trip, peers seen (doctor's
    /// fact, `warden status`'s cluster line).
    pub fn summary(&self) -> String {
        let peers = if self.peers_seen.is_empty() {
            "none".to_string()
        } else {
            self.peers_seen.join(", ")
        };
        let rtt = self
            .redis_rtt_ms
            .map_or_else(String::new, |ms| format!(", round trip {ms:.1} ms"));
        format!(
            "cluster: node {}, Redis {} {}{rtt}, peers seen: {peers}",
            self.node_id, self.redis_url, self.redis_state
        )
    }

    /// From `/diagnostics`' `cluster` section; `None` when cluster mode is off.
    pub fn from_diagnostics(cluster: &Value) -> Option<ClusterFacts> {
        if cluster["enabled"] != Value::Bool(true) {
            return None;
        }
        let s = &cluster["state"];
        let text = |v: &Value| v.as_str().map(str::to_string);
        Some(ClusterFacts {
            node_id: text(&s["node_id"]).unwrap_or_default(),
            redis_url: text(&s["redis_url"]).unwrap_or_default(),
            redis_state: text(&s["redis_state"]).unwrap_or_else(|| "unknown".into()),
            redis_state_since: text(&s["redis_state_since"]),
            redis_rtt_ms: s["redis_rtt_ms"].as_f64(),
            peers_seen: s["peers_seen"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            last_error: text(&s["last_error"]),
        })
    }
}

/// What doctor concludes.
#[derive(Debug)]
pub struct Diagnosis {
    pub facts: Vec<String>,
    pub findings: Vec<String>,
    /// The errors whose troubleshooting guides follow the findings.
    pub guides: Vec<WardenError>,
}

/// An HTTP GET, as the CLI does it (host, port, path).
pub type Fetch<'a> = &'a dyn Fn(&str, u16, &str) -> Result<HttpResponse, ClientError>;

/// Collects the facts for `effective`'s port.
pub fn gather(
    effective: &Effective,
    config_error: Option<String>,
    host_flag: Option<&str>,
    probe: &dyn ProcessProbe,
    fetch: Fetch<'_>,
    observed_at: WallTime,
) -> Facts {
    let port = effective.port();
    let instance = match crate::daemon::cli::control::inspect(&effective.state_dir, port, probe) {
        Err(e) => InstanceFacts::Unusable { why: e.to_string() },
        Ok(instance) => instance_facts(instance, effective, host_flag, probe, fetch, observed_at),
    };
    let port_owner = crate::daemon::os::port::port_owner(port);
    let warden_runs = matches!(instance, InstanceFacts::Running { .. });
    let port_accepts = port_owner.is_none()
        && !warden_runs
        && crate::daemon::runner::run::port_accepts(effective.host(), port);
    Facts {
        state_dir: effective.state_dir.clone(),
        config_file: effective.config_file.clone(),
        config_error,
        host: effective.host().to_string(),
        port,
        log_file: effective.config.logging.file.clone(),
        observed_at,
        instance,
        port_owner,
        port_accepts,
    }
}

fn instance_facts(
    instance: Instance,
    effective: &Effective,
    host_flag: Option<&str>,
    probe: &dyn ProcessProbe,
    fetch: Fetch<'_>,
    observed_at: WallTime,
) -> InstanceFacts {
    match instance {
        Instance::NotRunning { pid_file } => InstanceFacts::NotRunning { pid_file },
        Instance::Stale {
            pid_file,
            content,
            reason,
        } => {
            let process_status = match content.pid().map(|p| probe.probe(p)) {
                Some(ProbeOutcome::Found(s)) => s.status.as_str().to_string(),
                Some(ProbeOutcome::NotFound) => "not found".to_string(),
                Some(ProbeOutcome::Unavailable { .. }) => "unknown".to_string(),
                None => "none recorded".to_string(),
            };
            InstanceFacts::Stale {
                pid_file,
                pid: content.pid(),
                reason,
                process_status,
            }
        }
        Instance::Running {
            pid_file,
            record,
            process,
        } => {
            let contact = match host_flag {
                Some(h) => h.to_string(),
                None if !record.host.is_empty() => record.host.clone(),
                None => effective.host().to_string(),
            };
            let port = effective.port();
            let answer = ask(&contact, port, record.pid, fetch, observed_at);
            InstanceFacts::Running {
                pid_file,
                pid: record.pid,
                server_id: record.server_id.clone(),
                process: ConflictingProcess {
                    name: process.name.clone(),
                    status: process.status.as_str().to_string(),
                    started: Some(process.start_time),
                    memory_mb: Some(process.memory_mb()),
                    cmdline: (!process.cmdline.is_empty()).then(|| process.cmdline.join(" ")),
                },
                contact,
                answer: Box::new(answer),
            }
        }
        Instance::Unverifiable { pid_file, why, .. } => {
            InstanceFacts::Unverifiable { pid_file, why }
        }
    }
}

/// `/health` for the verdict, `/diagnostics` for the failing checks' details.
fn ask(host: &str, port: u16, pid: u32, fetch: Fetch<'_>, observed_at: WallTime) -> Answer {
    // A daemon without the health routes answers 404: `/status` carries
    // its health then.
    let (health, key) = match fetch(host, port, "/health") {
        Ok(r) if r.status == 404 => (fetch(host, port, "/status"), "health"),
        other => (other, "status"),
    };
    let health = match health {
        Err(e) => return Answer::Unreachable(e.to_string()),
        Ok(r) if !matches!(r.status, 200 | 503) => return Answer::HttpStatus(r.status),
        Ok(r) => r,
    };
    let status = health
        .json()
        .ok()
        .and_then(|body| serde_json::from_value::<HealthStatus>(body[key].clone()).ok())
        .unwrap_or(HealthStatus::Unknown);
    let diagnostics = fetch(host, port, "/diagnostics")
        .ok()
        .and_then(|d| d.json().ok())
        .unwrap_or(Value::Null);
    let mut failing = Vec::new();
    if matches!(status, HealthStatus::Warning | HealthStatus::Critical)
        && let Ok(report) =
            serde_json::from_value::<HealthReport>(diagnostics["latest_report"].clone())
    {
        failing = report
            .results
            .iter()
            .filter_map(|r| HealthCheckError::from_result(r, host, port, Some(pid), observed_at))
            .collect();
    }
    let cluster = ClusterFacts::from_diagnostics(&diagnostics["cluster"]);
    Answer::Health {
        status,
        failing,
        cluster,
    }
}

/// The findings and guides that follow from `facts` (pure).
pub fn diagnose(facts: &Facts) -> Diagnosis {
    let mut d = Diagnosis {
        facts: vec![
            format!("state directory: {}", facts.state_dir.display()),
            format!(
                "config file: {}",
                facts.config_file.as_deref().map_or_else(
                    || "none (defaults)".to_string(),
                    |p| p.display().to_string()
                )
            ),
            format!("port: {}", facts.port),
        ],
        findings: Vec::new(),
        guides: Vec::new(),
    };
    if let Some(error) = &facts.config_error {
        d.findings
            .push(format!("The configuration is invalid: {error}"));
    }
    let warden_pid = diagnose_instance(facts, &mut d);
    diagnose_port(facts, warden_pid, &mut d);
    d
}

/// Adds what the PID file and the daemon's answer say; returns the pid of
/// the warden that runs, if one does.
fn diagnose_instance(facts: &Facts, d: &mut Diagnosis) -> Option<u32> {
    let port = facts.port;
    let pid_file_fact =
        |pid_file: &Path, state: &str| format!("PID file: {} ({state})", pid_file.display());
    match &facts.instance {
        InstanceFacts::Unusable { why } => {
            d.findings
                .push(format!("The PID file cannot be used: {why}"));
            None
        }
        InstanceFacts::NotRunning { pid_file } => {
            d.facts.push(pid_file_fact(pid_file, "not_running"));
            None
        }
        InstanceFacts::Stale {
            pid_file,
            pid,
            reason,
            process_status,
        } => {
            d.facts.push(pid_file_fact(pid_file, "stale"));
            d.findings.push(format!(
                "A stale PID file was left behind ({reason}); the next start removes it."
            ));
            d.guides.push(WardenError::StaleProcess(StaleProcessError {
                pid: *pid,
                pid_file: pid_file.clone(),
                reason: reason.clone(),
                process_status: process_status.clone(),
                cleanup_error: None,
            }));
            None
        }
        InstanceFacts::Running {
            pid_file,
            pid,
            server_id,
            process,
            contact,
            answer,
        } => {
            d.facts.push(pid_file_fact(pid_file, "running"));
            let conflict = || {
                WardenError::DaemonConflict(DaemonConflictError {
                    port,
                    existing_pid: Some(*pid),
                    server_id: Some(server_id.clone()),
                    pid_file: pid_file.clone(),
                    process: Some(process.clone()),
                    observed_at: facts.observed_at,
                })
            };
            diagnose_answer(*pid, &format!("{contact}:{port}"), answer, conflict, d);
            Some(*pid)
        }
        InstanceFacts::Unverifiable { pid_file, why } => {
            d.facts.push(pid_file_fact(pid_file, "unverifiable"));
            d.findings.push(format!(
                "The PID file {} {why}. warden will not signal it; \
                 find the holder with `lsof {}`.",
                pid_file.display(),
                pid_file.display()
            ));
            None
        }
    }
}

/// Adds what a running warden's answer to `GET /health` says: its health
/// (and cluster link), or that it answers wrongly or not at all, which
/// `conflict` describes with the seed's guide.
fn diagnose_answer(
    pid: u32,
    at: &str,
    answer: &Answer,
    conflict: impl Fn() -> WardenError,
    d: &mut Diagnosis,
) {
    match answer {
        Answer::Health {
            status,
            failing,
            cluster,
        } => {
            d.facts.push(format!(
                "warden pid {pid} runs and answers on {at}: {}",
                status.as_str()
            ));
            if let Some(cluster) = cluster {
                diagnose_cluster(cluster, d);
            }
            if matches!(status, HealthStatus::Warning | HealthStatus::Critical) {
                d.findings.push(format!(
                    "warden pid {pid} reports {} health{}.",
                    status.as_str(),
                    if failing.is_empty() {
                        String::new()
                    } else {
                        let names: Vec<&str> =
                            failing.iter().map(|e| e.check_name.as_str()).collect();
                        format!(": {}", names.join(", "))
                    }
                ));
                d.guides
                    .extend(failing.iter().cloned().map(WardenError::HealthCheck));
            }
        }
        Answer::HttpStatus(code) => {
            d.findings.push(format!(
                "warden pid {pid} runs but GET /health on {at} answered HTTP {code}"
            ));
            d.guides.push(conflict());
        }
        Answer::Unreachable(e) => {
            d.findings.push(format!(
                "warden pid {pid} holds the PID file but does not answer: {e}"
            ));
            d.guides.push(conflict());
        }
    }
}

/// The node's link to Redis: a fact while connected, a finding with steps
/// otherwise (the node then relays to its own clients only and is not
/// ready; it reconnects by itself).
fn diagnose_cluster(c: &ClusterFacts, d: &mut Diagnosis) {
    d.facts.push(c.summary());
    if c.redis_state != "connected" {
        let since = c
            .redis_state_since
            .as_deref()
            .map_or_else(String::new, |t| format!(" since {t}"));
        let error = c
            .last_error
            .as_deref()
            .map_or_else(String::new, |e| format!(" (last error: {e})"));
        d.findings.push(format!(
            "Redis at {url} is {state}{since}{error}: events reach this node's clients only \
             and /readyz answers 503 until it is back; warden reconnects by itself. Check that \
             Redis runs and answers: `redis-cli -u {url} ping` (expect PONG); on systemd \
             `systemctl status redis-server`; and that every node uses the same \
             cluster.redis_url and cluster.prefix.",
            url = c.redis_url,
            state = c.redis_state,
        ));
    }
}

fn diagnose_port(facts: &Facts, warden_pid: Option<u32>, d: &mut Diagnosis) {
    let port = facts.port;
    let conflict = |holder: Option<PortHolder>| {
        WardenError::PortConflict(PortConflictError {
            host: facts.host.clone(),
            port,
            conflicting_process: holder,
        })
    };
    match &facts.port_owner {
        Some(owner) if Some(owner.pid) != warden_pid => {
            d.findings.push(format!(
                "Port {port} is held by pid {} ({}), which is not the warden of this state \
                 directory.",
                owner.pid,
                owner.command()
            ));
            d.guides.push(conflict(Some(PortHolder {
                pid: owner.pid,
                cmdline: (!owner.cmdline.is_empty()).then(|| owner.command()),
                name: owner.name.clone(),
            })));
        }
        Some(owner) => d
            .facts
            .push(format!("port {port} is held by warden pid {}", owner.pid)),
        None if warden_pid.is_none() && facts.port_accepts => {
            d.findings.push(format!(
                "Port {port} accepts connections but its owner is not visible to this user."
            ));
            d.guides.push(conflict(None));
        }
        None => d
            .facts
            .push(format!("port {port}: no listener owned by another program")),
    }
}

/// `warden health`'s readable answer: one line for the daemon, one per
/// checker, and for each failing checker what failed (from the latest
/// report, when `/diagnostics` gave it). `health` is `/health`'s JSON.
pub fn health_summary(
    host: &str,
    port: u16,
    health: &Value,
    report: Option<&HealthReport>,
) -> String {
    let word = |v: &Value| v.as_str().unwrap_or("unknown").to_string();
    let uptime = health["uptime_seconds"].as_u64().unwrap_or(0);
    let mut out = format!(
        "warden on {host}:{port}: {} (pid {}, version {}, up {})\n",
        word(&health["status"]),
        health["pid"]
            .as_u64()
            .map_or_else(|| "?".to_string(), |p| p.to_string()),
        word(&health["version"]),
        human_duration(uptime)
    );
    if let Some(checks) = health["checks"].as_object() {
        let width = checks.keys().map(String::len).max().unwrap_or(0);
        for (name, status) in checks {
            out.push_str(&format!("  {name:<width$}  {}\n", word(status)));
            let failing = report
                .into_iter()
                .flat_map(|r| r.results.iter())
                .filter(|r| &r.checker == name)
                .flat_map(|r| r.metrics.iter())
                .filter(|m| matches!(m.status, HealthStatus::Warning | HealthStatus::Critical));
            for m in failing {
                let what = m
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("{} is {}", m.name, m.status.as_str()));
                out.push_str(&format!("  {:<width$}    {what}\n", ""));
            }
        }
    }
    let metrics = &health["metrics"];
    out.push_str(&format!(
        "  clients {}, events {}, cpu {}%, memory {} MB\n",
        metrics["clients_connected"],
        metrics["events_processed"],
        metrics["cpu_percent"],
        metrics["memory_mb"]
    ));
    out
}

fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h:02}h"),
    }
}

/// The report as doctor prints it: facts, findings, then each guide.
pub fn render(diagnosis: &Diagnosis, platform: Platform, log_file: Option<&Path>) -> String {
    let mut out = String::from("WARDEN DOCTOR\n\nFACTS\n");
    for f in &diagnosis.facts {
        out.push_str(&format!("  - {f}\n"));
    }
    out.push_str("\nFINDINGS\n");
    if diagnosis.findings.is_empty() {
        out.push_str("  No problems found.\n");
    }
    for f in &diagnosis.findings {
        out.push_str(&format!("  - {f}\n"));
    }
    for g in &diagnosis.guides {
        out.push('\n');
        out.push_str(&format_troubleshooting_guide_with_log(
            g, platform, log_file,
        ));
    }
    out
}
