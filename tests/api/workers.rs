//! The one harness for real `stayafrica worker` processes (and CLI runs
//! with the same settings) used by the job tests: [`Workers`].

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::helpers::{SHARED_REDIS, TestApp, wait_until};

/// `stayafrica` worker processes with one set of settings; all killed when
/// dropped (also when the test fails). Their output goes to log files
/// shown when a wait times out.
pub struct Workers {
    children: Vec<(String, Child)>,
    env: Vec<(String, String)>,
    logs: tempfile::TempDir,
}

impl Workers {
    /// Workers of `app` on the tests' shared Redis.
    pub fn for_app(app: &TestApp) -> anyhow::Result<Workers> {
        Workers::for_app_on(app, SHARED_REDIS)
    }

    /// Workers on the Redis at `base` (one server, a cluster, a Sentinel's
    /// master), which must be the app's, with the app's database, prefix
    /// and mail directory.
    pub fn for_app_on(app: &TestApp, base: &str) -> anyhow::Result<Workers> {
        let mut w = Workers::on(base, &app.state.settings.key_prefix, &app.db_url)?;
        w.set("STAYAFRICA_VIEW_FLUSH_SECS", "1");
        w.set(
            "STAYAFRICA_EMAIL",
            &format!("file:{}", app.email_dir.display()),
        );
        Ok(w)
    }

    /// Workers on the Redis at `base` under `prefix`, on a SQLite file of
    /// their own, without an app (the test queues through a queue handle).
    /// The periodic view flush is far away (a job of its own otherwise).
    pub fn on_queue(base: &str, prefix: &str) -> anyhow::Result<Workers> {
        let logs = tempfile::tempdir()?;
        let db = format!("sqlite://{}", logs.path().join("w.db").display());
        let mut w = Workers::on(base, prefix, &db)?;
        w.logs = logs;
        w.set("STAYAFRICA_VIEW_FLUSH_SECS", &FLUSH_SECS.to_string());
        w.set("STAYAFRICA_EMAIL", "log");
        Ok(w)
    }

    fn on(base: &str, prefix: &str, database_url: &str) -> anyhow::Result<Workers> {
        Ok(Workers {
            children: Vec::new(),
            env: vec![
                ("DATABASE_URL".into(), database_url.into()),
                ("REDIS_URL".into(), base.into()),
                ("STAYAFRICA_KEY_PREFIX".into(), prefix.into()),
                ("RUST_LOG".into(), "info,sqlx=warn".into()),
            ],
            logs: tempfile::tempdir()?,
        })
    }

    /// Sets an environment variable of every process started from now on.
    pub fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    pub fn set_log_level(&mut self, level: &str) {
        self.set("RUST_LOG", level);
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stayafrica"));
        cmd.args(args).stdin(Stdio::null());
        for var in [
            "STAYAFRICA_CONFIG",
            "STAYAFRICA_JOB_PARTITIONS",
            "REDIS_CACHE_URL",
            "REDIS_SESSIONS_URL",
            "REDIS_RATELIMIT_URL",
            "REDIS_BROKER_URL",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `stayafrica worker ARGS…`; returns its index.
    pub fn start(&mut self, args: &[&str]) -> anyhow::Result<usize> {
        let n = self.children.len();
        let log = self.logs.path().join(format!("worker-{n}.log"));
        let out = std::fs::File::create(&log)?;
        let child = self
            .command(&[&["worker"], args].concat())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("running the stayafrica binary")?;
        self.children.push((log.display().to_string(), child));
        Ok(n)
    }

    pub fn pid(&self, n: usize) -> u32 {
        self.children[n].1.id()
    }

    /// SIGKILL: the worker dies mid-job, as in a crash or an OOM kill.
    pub fn kill(&mut self, n: usize) -> anyhow::Result<()> {
        let child = &mut self.children[n].1;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// SIGTERM (as systemd or Kubernetes stop a worker); waits for the exit
    /// and returns whether it was clean.
    pub fn terminate(&mut self, n: usize) -> anyhow::Result<bool> {
        let child = &mut self.children[n].1;
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("the worker did not exit within 20 s of SIGTERM")
    }

    /// Runs a CLI subcommand to completion; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "stayafrica {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last lines of every worker's log (for failure messages).
    pub fn tails(&self) -> String {
        self.children
            .iter()
            .map(|(path, _)| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(30);
                format!("--- {path}\n{}", lines[from..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// [`wait_until`], with the workers' logs in the error.
    pub async fn wait<F, Fut>(&self, limit: Duration, what: &str, check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        wait_until(limit, what, check)
            .await
            .with_context(|| self.tails())
    }
}

/// The view-flush period of [`Workers::on_queue`]: longer than any test.
pub const FLUSH_SECS: i64 = 100_000_000;

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
