//! Ingest and consumers as child processes, so each one's peak memory can be read: the
//! `hoox-ingest` and `hoox-consumer` binaries beside the running `hoox`, started with
//! nothing of the operator's environment (no real exchange keys, no Telegram chat),
//! stopped with SIGTERM and waited for.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a child may take to answer `/readyz`.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long a child may take to stop after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(30);
/// How many of a child's last log lines are kept to explain its failure.
const KEPT_LINES: usize = 20;

/// The two service binaries.
#[derive(Debug, Clone)]
pub(super) struct Binaries {
    /// `hoox-ingest`.
    pub(super) ingest: PathBuf,
    /// `hoox-consumer`.
    pub(super) consumer: PathBuf,
}

impl Binaries {
    /// The binaries in the folder of the running `hoox`.
    pub(super) fn beside_this_executable() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot tell where this hoox is")?;
        let dir = exe.parent().context("this hoox has no folder")?;
        Self::in_folder(dir)
    }

    /// The binaries in `dir`, or an error telling how to build them.
    pub(super) fn in_folder(dir: &Path) -> anyhow::Result<Self> {
        let find = |name: &str| {
            let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
            if path.is_file() {
                Ok(path)
            } else {
                bail!(
                    "the bench runs `{name}` from the folder of this hoox ({}), and it is not there; build every binary with `cargo build --release --workspace` and run the bench from target/release",
                    dir.display()
                )
            }
        };
        Ok(Self {
            ingest: find("hoox-ingest")?,
            consumer: find("hoox-consumer")?,
        })
    }
}

/// A running service.
pub(super) struct Service {
    name: String,
    child: Child,
    ready_url: String,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Service {
    /// Starts `program` with exactly `env`, its logs kept in memory (the last few
    /// lines), and its health endpoint at `health_addr`.
    pub(super) fn spawn(
        name: &str,
        program: &Path,
        env: &[(&str, String)],
        health_addr: &str,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(program);
        command
            .env_clear()
            // No `.env` of the operator's folder is read.
            .current_dir(std::env::temp_dir())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // The last resort if the bench itself dies before it stops its children.
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(KEPT_LINES)));
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let Ok(mut kept) = log.lock() else { return };
                    if kept.len() == KEPT_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            ready_url: format!("http://{health_addr}/readyz"),
            log,
        })
    }

    /// The service's name in messages.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The last lines it logged, for an error message.
    fn last_lines(&self) -> String {
        self.log
            .lock()
            .map(|lines| lines.iter().cloned().collect::<Vec<_>>().join("\n  "))
            .unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200; fails if the service exits or takes too long.
    pub(super) async fn ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready; its last lines:\n  {}",
                    self.name,
                    crate::terminal::escape(&self.last_lines())
                );
            }
            let answered = http.get(&self.ready_url).send().await;
            if answered.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} was not ready within {}s; its last lines:\n  {}",
                    self.name,
                    READY_WITHIN.as_secs(),
                    crate::terminal::escape(&self.last_lines())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its peak resident memory so far, in bytes (`VmHWM`), where the system tells it.
    pub(super) fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        peak_rss_from_status(&status)
    }

    /// Sends SIGTERM and waits for the service to drain and exit; kills it if it takes
    /// longer than [`STOP_WITHIN`].
    pub(super) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            // The services drain on SIGTERM; std has no portable way to send it.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(STOP_WITHIN, self.child.wait()).await {
            Ok(status) => {
                status.with_context(|| format!("waiting for {}", self.name))?;
                Ok(())
            }
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "{} did not stop within {}s of SIGTERM and was killed",
                    self.name,
                    STOP_WITHIN.as_secs()
                )
            }
        }
    }
}

/// `VmHWM` of a `/proc/<pid>/status` text, in bytes.
fn peak_rss_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let kib: u64 = parts.next()?.parse().ok()?;
    (parts.next() == Some("kB")).then_some(kib * 1024)
}

/// A free local address to listen on.
pub(super) fn free_addr() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free local port")?;
    Ok(listener.local_addr()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_is_read_from_vmhwm_in_kib() {
        let status =
            "Name:\thoox-ingest\nVmPeak:\t  123456 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(peak_rss_from_status(status), Some(20 * 1024 * 1024));
        assert_eq!(peak_rss_from_status("Name:\tx\n"), None);
        assert_eq!(peak_rss_from_status("VmHWM:\tlots\n"), None);
    }

    #[test]
    fn missing_binaries_are_named_with_how_to_build_them() {
        let empty = std::env::temp_dir().join(format!("hoox-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&empty).unwrap();
        let err = Binaries::in_folder(&empty).unwrap_err().to_string();
        std::fs::remove_dir(&empty).unwrap();
        assert!(err.contains("hoox-ingest"), "{err}");
        assert!(err.contains("cargo build --release --workspace"), "{err}");
    }
}
