//! Logging (tracing, filtered by `RUST_LOG`) and the process-wide metrics
//! recorder rendered by `/metrics`.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// How log lines are written: text for people, JSON for log shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event; coloured only on a terminal.
    Text,
    /// One JSON object per line, with the fields of the enclosing spans
    /// (request id, route, status, latency), so one request's lines can be
    /// found together.
    Json,
}

impl LogFormat {
    /// `STAYAFRICA_LOG_FORMAT` (`text` or `json`, default text). Read here and
    /// not from the settings: logging starts before the settings are loaded,
    /// so that a bad setting is itself logged.
    pub fn from_env() -> LogFormat {
        match std::env::var("STAYAFRICA_LOG_FORMAT") {
            Ok(v) if v.trim().eq_ignore_ascii_case("json") => LogFormat::Json,
            Ok(v) if v.trim().is_empty() || v.trim().eq_ignore_ascii_case("text") => {
                LogFormat::Text
            }
            Ok(v) => {
                eprintln!(
                    "STAYAFRICA_LOG_FORMAT: expected `text` or `json`, got `{v}`: using text"
                );
                LogFormat::Text
            }
            Err(_) => LogFormat::Text,
        }
    }
}

/// Installs the log subscriber (once; later calls do nothing). Logs go to
/// stderr: stdout is for command output (`cache info --json`). Colour codes
/// only when stderr is a terminal: in a file or a pipe they are noise.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match LogFormat::from_env() {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder keeps every histogram sample until it is folded into the
/// buckets, which only rendering `/metrics` or an upkeep does: without one,
/// a service nobody scrapes grew by about 40 bytes per request (1.5 MB/s
/// at 40,000 requests a second). `PrometheusBuilder::install` would start
/// this task, but it also starts its own listener; we serve `/metrics`
/// ourselves, so the upkeep runs here, on a thread of its own (it must run
/// whichever runtime, if any, the process has).
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep not started: histograms grow until scraped");
    }
}

/// The Prometheus handle of the process-wide recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_ok() {
                        spawn_upkeep(handle.clone());
                    }
                    handle
                }
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// The log subscriber for tests: output captured per test by the harness.
pub fn init_test_logging() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,sqlx=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A metric key made of static strings: a name and up to two labels,
/// compared and hashed by the strings' addresses, not their bytes (hashing
/// five strings per call was most of what a held handle cost). Two call
/// sites naming the same series with strings at different addresses hold
/// two handles of that one series, which is harmless.
#[derive(Clone, Copy)]
struct StaticKey {
    name: &'static str,
    labels: [(&'static str, &'static str); 2],
}

impl StaticKey {
    fn new<const N: usize>(name: &'static str, labels: &[(&'static str, &'static str); N]) -> Self {
        const { assert!(N <= 2, "at most two labels") };
        let mut key = StaticKey {
            name,
            labels: [("", ""); 2],
        };
        for (slot, label) in key.labels.iter_mut().zip(labels) {
            *slot = *label;
        }
        key
    }

    fn addresses(&self) -> [(usize, usize); 5] {
        let at = |s: &'static str| (s.as_ptr() as usize, s.len());
        let [(a, b), (c, d)] = self.labels;
        [at(self.name), at(a), at(b), at(c), at(d)]
    }
}

impl PartialEq for StaticKey {
    fn eq(&self, other: &Self) -> bool {
        self.addresses() == other.addresses()
    }
}

impl Eq for StaticKey {}

impl std::hash::Hash for StaticKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.addresses().hash(state);
    }
}

fn owned_labels(labels: &[(&'static str, &'static str)]) -> Vec<metrics::Label> {
    labels
        .iter()
        .map(|(k, v)| metrics::Label::from_static_parts(k, v))
        .collect()
}

type Handles<H> =
    std::cell::RefCell<std::collections::HashMap<StaticKey, H, foldhash::fast::FixedState>>;

thread_local! {
    static COUNTERS: Handles<metrics::Counter> = Handles::default();
    static HISTOGRAMS: Handles<metrics::Histogram> = Handles::default();
}

/// Runs `using` on this thread's handle of `name{labels}` from `handles`,
/// made by `make` (after the recorder is installed) the first time.
fn with_handle<H, const N: usize>(
    handles: &'static std::thread::LocalKey<Handles<H>>,
    name: &'static str,
    labels: &[(&'static str, &'static str); N],
    make: impl FnOnce(Vec<metrics::Label>) -> H,
    using: impl FnOnce(&H),
) {
    let key = StaticKey::new(name, labels);
    handles.with_borrow_mut(|handles| {
        using(handles.entry(key).or_insert_with(|| {
            let _ = metrics_handle();
            make(owned_labels(labels))
        }));
    });
}

/// Adds `n` to the counter `name{labels}` (at most two labels, checked at
/// compile time; all static strings). Each thread keeps the handles it has used: `metrics::counter!`
/// looks its key up in the recorder's registry on every call (hashing and
/// cloning the key under a lock), which cost more on the request path than
/// the increment. The recorder is installed before the first handle is
/// made, so no handle is a no-op one.
pub fn count<const N: usize>(
    name: &'static str,
    labels: &[(&'static str, &'static str); N],
    n: u64,
) {
    with_handle(
        &COUNTERS,
        name,
        labels,
        |l| metrics::counter!(name, l),
        |c| c.increment(n),
    );
}

/// Records `value` in the histogram `name{labels}`, as [`count`] does.
pub fn observe<const N: usize>(
    name: &'static str,
    labels: &[(&'static str, &'static str); N],
    value: f64,
) {
    with_handle(
        &HISTOGRAMS,
        name,
        labels,
        |l| metrics::histogram!(name, l),
        |h| h.record(value),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_handles_reach_the_rendered_metrics() -> anyhow::Result<()> {
        for _ in 0..3 {
            count(
                "telemetry_test_total",
                &[("kind", "a"), ("outcome", "ok")],
                2,
            );
        }
        count(
            "telemetry_test_total",
            &[("kind", "b"), ("outcome", "ok")],
            1,
        );
        // From another thread: its own handles, the same series.
        std::thread::spawn(|| {
            count(
                "telemetry_test_total",
                &[("kind", "a"), ("outcome", "ok")],
                4,
            )
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the counting thread panicked"))?;
        observe("telemetry_test_seconds", &[("kind", "a")], 0.002);
        let text = metrics_handle().render();
        assert!(
            text.contains("telemetry_test_total{kind=\"a\",outcome=\"ok\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("telemetry_test_total{kind=\"b\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("telemetry_test_seconds_count{kind=\"a\"} 1"),
            "{text}"
        );
        Ok(())
    }
}
