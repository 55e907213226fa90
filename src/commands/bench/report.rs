//! The bench's result: a table for people, each figure beside its ceiling and the
//! ratio, under a header of machine facts and parameters; or one JSON object.

use std::fmt::Write as _;

use serde::Serialize;

/// The unit of a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Unit {
    /// Events per second.
    PerSecond,
    /// Milliseconds.
    Ms,
    /// Bytes.
    Bytes,
    /// A plain multiple.
    Times,
}

impl Unit {
    fn show(self, value: f64) -> String {
        match self {
            Self::PerSecond => format!("{value:.0}/s"),
            Self::Ms => format!("{value:.2} ms"),
            Self::Bytes => format!("{:.1} MB", value / 1_000_000.0),
            Self::Times => format!("{value:.2}x"),
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Figure {
    /// A stable name for scripts, e.g. `ingest.saturation`.
    pub(super) id: String,
    /// The section it belongs to.
    pub(super) section: &'static str,
    /// What it is, for people.
    pub(super) name: String,
    /// The measurement.
    pub(super) value: f64,
    /// Its unit.
    pub(super) unit: Unit,
    /// What it is compared with, and that bound's value (same unit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ceiling: Option<Ceiling>,
    /// `value / ceiling`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ratio: Option<f64>,
    /// The target this figure is held to, as people say it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) target: Option<String>,
}

/// A bound a figure is read against.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Ceiling {
    /// What the bound is.
    pub(super) name: String,
    /// Its value, in the figure's unit.
    pub(super) value: f64,
}

impl Figure {
    /// A figure with no ceiling and no target.
    pub(super) fn new(
        id: &str,
        section: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: Unit,
    ) -> Self {
        Self {
            id: id.to_owned(),
            section,
            name: name.into(),
            value,
            unit,
            ceiling: None,
            ratio: None,
            target: None,
        }
    }

    /// The same figure read against `ceiling`.
    #[must_use]
    pub(super) fn against(mut self, name: impl Into<String>, ceiling: f64) -> Self {
        self.ratio = super::stats::ratio(self.value, ceiling);
        self.ceiling = Some(Ceiling {
            name: name.into(),
            value: ceiling,
        });
        self
    }

    /// The same figure with its target.
    #[must_use]
    pub(super) fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }
}

/// The machine the bench ran on.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Machine {
    /// Cores this process may use.
    pub(super) cores: usize,
    /// The processor, where the system names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cpu: Option<String>,
    /// Operating system and architecture.
    pub(super) os: String,
    /// `release` or `debug`: a debug build's figures mean little.
    pub(super) build: &'static str,
}

impl Machine {
    /// This machine, and this build.
    pub(super) fn this() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, name)| name.trim().to_owned())
            });
        Self {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Report {
    /// When the run started, RFC 3339 UTC.
    pub(super) date: String,
    /// Where it ran.
    pub(super) machine: Machine,
    /// How it ran.
    pub(super) parameters: serde_json::Value,
    /// What it measured.
    pub(super) figures: Vec<Figure>,
    /// Whatever makes the figures doubtful: refused webhooks, a hit in-flight cap, a
    /// debug build.
    pub(super) warnings: Vec<String>,
}

impl Report {
    /// The report as a table for people.
    pub(super) fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "hoox bench, {}", self.date);
        let _ = writeln!(
            out,
            "machine: {} cores, {}, {}; {} build",
            m.cores,
            m.os,
            m.cpu.as_deref().unwrap_or("unknown cpu"),
            m.build
        );
        if let Some(parameters) = self.parameters.as_object() {
            let shown: Vec<String> = parameters
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            let _ = writeln!(out, "parameters: {}", shown.join(" "));
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "WARNING: {warning}");
        }
        let _ = writeln!(out);
        let rows: Vec<[String; 6]> = self
            .figures
            .iter()
            .map(|f| {
                [
                    f.section.to_owned(),
                    f.name.clone(),
                    f.unit.show(f.value),
                    f.ceiling
                        .as_ref()
                        .map(|c| format!("{} ({})", f.unit.show(c.value), c.name))
                        .unwrap_or_default(),
                    f.ratio
                        .map(|r| format!("{:.0}%", r * 100.0))
                        .unwrap_or_default(),
                    f.target.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let header = ["section", "figure", "value", "ceiling", "ratio", "target"].map(String::from);
        let mut widths = header.clone().map(|h| h.chars().count());
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(i, (cell, width))| {
                    if i == 2 || i == 4 {
                        format!("{cell:>width$}")
                    } else {
                        format!("{cell:<width$}")
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            date: "2026-01-01T00:00:00Z".into(),
            machine: Machine {
                cores: 2,
                cpu: None,
                os: "linux x86_64".into(),
                build: "release",
            },
            parameters: serde_json::json!({"quick": true}),
            figures: vec![
                Figure::new(
                    "ingest.saturation",
                    "ingest",
                    "webhooks/s at saturation",
                    1500.0,
                    Unit::PerSecond,
                )
                .against("pipelined publish", 3000.0)
                .target(">= 50%"),
                Figure::new(
                    "ingest.p99",
                    "ingest",
                    "p99 at half saturation",
                    4.25,
                    Unit::Ms,
                ),
            ],
            warnings: vec!["3 webhooks answered 503".into()],
        }
    }

    #[test]
    fn the_table_shows_each_figure_beside_its_ceiling_and_ratio() {
        let table = report().table();
        let line = table.lines().find(|l| l.contains("saturation")).unwrap();
        for cell in ["1500/s", "3000/s (pipelined publish)", "50%", ">= 50%"] {
            assert!(line.contains(cell), "{line}");
        }
        assert!(table.contains("4.25 ms"), "{table}");
        assert!(
            table.contains("WARNING: 3 webhooks answered 503"),
            "{table}"
        );
        assert!(table.contains("release build"), "{table}");
    }

    #[test]
    fn the_json_report_names_each_figure_and_its_ratio() {
        let json = serde_json::to_value(report()).unwrap();
        assert_eq!(json["figures"][0]["id"], "ingest.saturation");
        assert_eq!(json["figures"][0]["ratio"], 0.5);
        assert_eq!(json["figures"][0]["ceiling"]["value"], 3000.0);
        assert_eq!(json["figures"][1]["unit"], "ms");
        assert!(json["figures"][1].get("ratio").is_none());
        assert_eq!(json["machine"]["cores"], 2);
    }
}
