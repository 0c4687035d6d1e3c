//! Results: one [`Row`] per metric with our figure, the peer's and the floor's (each a median
//! over runs with its spread, or the reason it is missing), the ratio, and the part's targets
//! with PASS/SHORT. Rendered as a plain-text table, as Markdown and as JSON.

use serde::Serialize;

/// A figure measured over several runs: the median and the spread.
#[derive(Debug, Clone, Serialize)]
pub struct Stat {
    /// Median over the runs.
    pub median: f64,
    /// Lowest run.
    pub min: f64,
    /// Highest run.
    pub max: f64,
    /// Number of runs that produced a figure.
    pub runs: usize,
}

impl Stat {
    /// The median and spread of `values` (`None` when empty).
    pub fn of(values: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
            runs: n,
        })
    }
}

/// One column of a row: a measured figure or why there is none.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cell {
    /// Measured.
    Value(Stat),
    /// Not measured, with the reason (shown in the table).
    NotAvailable(String),
    /// This column does not apply to the metric.
    None,
}

impl Cell {
    /// A cell from per-run values, or "not available" with `why_empty` when there are none.
    pub fn from_runs(values: &[f64], why_empty: &str) -> Cell {
        match Stat::of(values) {
            Some(s) => Cell::Value(s),
            None => Cell::NotAvailable(why_empty.to_string()),
        }
    }

    /// The median, when measured.
    pub fn median(&self) -> Option<f64> {
        match self {
            Cell::Value(s) => Some(s.median),
            _ => None,
        }
    }
}

impl From<anyhow::Result<Vec<f64>>> for Cell {
    fn from(r: anyhow::Result<Vec<f64>>) -> Cell {
        match r {
            Ok(v) => Cell::from_runs(&v, "no successful run"),
            Err(e) => Cell::NotAvailable(format!("{e:#}")),
        }
    }
}

/// Which column the ratio divides ours by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Against {
    /// The real peer (the Python implementation).
    Peer,
    /// The physical floor (raw sockets).
    Floor,
}

/// A goal from the part's issue.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Target {
    /// ours / reference ≥ x (throughput against a peer).
    RatioAtLeast {
        /// The column divided by.
        against: Against,
        /// The bound.
        x: f64,
    },
    /// ours / reference ≤ x (latency against a floor).
    RatioAtMost {
        /// The column divided by.
        against: Against,
        /// The bound.
        x: f64,
    },
    /// ours ≥ x in the row's unit.
    AtLeast {
        /// The bound.
        x: f64,
    },
    /// ours ≤ x in the row's unit.
    AtMost {
        /// The bound.
        x: f64,
    },
}

impl Target {
    /// Short text such as `≥ 30× peer` or `≤ 15 KiB/client`.
    pub fn describe(&self, unit: &str) -> String {
        match self {
            Target::RatioAtLeast { against, x } => format!("≥ {}× {}", fmt_num(*x), who(*against)),
            Target::RatioAtMost { against, x } => format!("≤ {}× {}", fmt_num(*x), who(*against)),
            Target::AtLeast { x } => format!("≥ {} {unit}", fmt_num(*x)),
            Target::AtMost { x } => format!("≤ {} {unit}", fmt_num(*x)),
        }
    }

    /// PASS (true) / SHORT (false), or `None` when a needed figure is missing.
    pub fn check(&self, row: &Row) -> Option<bool> {
        let ours = row.ours.median()?;
        match self {
            Target::RatioAtLeast { against, x } => Some(ours / row.reference(*against)? >= *x),
            Target::RatioAtMost { against, x } => Some(ours / row.reference(*against)? <= *x),
            Target::AtLeast { x } => Some(ours >= *x),
            Target::AtMost { x } => Some(ours <= *x),
        }
    }
}

fn who(a: Against) -> &'static str {
    match a {
        Against::Peer => "peer",
        Against::Floor => "floor",
    }
}

/// One metric of one suite.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Suite name.
    pub suite: String,
    /// What is measured.
    pub metric: String,
    /// Unit of the figures.
    pub unit: String,
    /// Whether a larger figure is better (throughput) or worse (latency, memory).
    pub higher_is_better: bool,
    /// bistream's figure.
    pub ours: Cell,
    /// The real peer's figure.
    pub peer: Cell,
    /// The floor's figure.
    pub floor: Cell,
    /// The column the ratio column divides ours by.
    pub ratio_against: Option<Against>,
    /// The goals checked against ours.
    pub targets: Vec<Target>,
    /// Free text: workload details, what failed.
    pub note: String,
}

impl Row {
    /// A row with empty columns; fill them with the builder methods.
    pub fn new(suite: &str, metric: impl Into<String>, unit: &str, higher_is_better: bool) -> Row {
        Row {
            suite: suite.to_string(),
            metric: metric.into(),
            unit: unit.to_string(),
            higher_is_better,
            ours: Cell::None,
            peer: Cell::None,
            floor: Cell::None,
            ratio_against: None,
            targets: Vec::new(),
            note: String::new(),
        }
    }

    /// Sets our figure.
    pub fn ours(mut self, c: Cell) -> Row {
        self.ours = c;
        self
    }
    /// Sets the peer's figure.
    pub fn peer(mut self, c: Cell) -> Row {
        self.peer = c;
        self
    }
    /// Sets the floor's figure.
    pub fn floor(mut self, c: Cell) -> Row {
        self.floor = c;
        self
    }
    /// Shows ours ÷ that column as the ratio.
    pub fn ratio(mut self, a: Against) -> Row {
        self.ratio_against = Some(a);
        self
    }
    /// Adds a goal.
    pub fn target(mut self, t: Target) -> Row {
        self.targets.push(t);
        self
    }
    /// Sets the free-text note.
    pub fn note(mut self, n: impl Into<String>) -> Row {
        self.note = n.into();
        self
    }

    fn reference(&self, a: Against) -> Option<f64> {
        match a {
            Against::Peer => self.peer.median(),
            Against::Floor => self.floor.median(),
        }
        .filter(|v| *v != 0.0)
    }

    /// ours / reference column, when both are measured.
    pub fn ratio_value(&self) -> Option<f64> {
        Some(self.ours.median()? / self.reference(self.ratio_against?)?)
    }

    /// "target PASS|SHORT|n/a" for each target, joined.
    pub fn verdicts(&self) -> Vec<(String, Option<bool>)> {
        self.targets
            .iter()
            .map(|t| (t.describe(&self.unit), t.check(self)))
            .collect()
    }
}

/// Formats a number with 3-4 significant digits and thousands grouping for large values.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a >= 10_000.0 {
        let r = v.round() as i64;
        let s = r.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        if r < 0 {
            out.insert(0, '-');
        }
        out
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// "median [min–max]" or the reason it is missing.
pub fn fmt_cell(c: &Cell, with_spread: bool) -> String {
    match c {
        Cell::Value(s) if with_spread && s.runs > 1 => format!(
            "{} [{}–{}]",
            fmt_num(s.median),
            fmt_num(s.min),
            fmt_num(s.max)
        ),
        Cell::Value(s) => fmt_num(s.median),
        Cell::NotAvailable(why) => format!("not available: {why}"),
        Cell::None => "—".to_string(),
    }
}

fn fmt_ratio(r: &Row) -> String {
    match r.ratio_value() {
        Some(x) => format!(
            "{}× {}",
            fmt_num(x),
            r.ratio_against.map(who).unwrap_or_default()
        ),
        None => "—".to_string(),
    }
}

/// Verdict words: PASS/SHORT, or in quick mode "met"/"below" marked as no verdict (one short
/// run on a shared machine is too short to judge a target).
fn fmt_verdicts(r: &Row, quick: bool) -> (String, String) {
    let v = r.verdicts();
    if v.is_empty() {
        return ("—".into(), String::new());
    }
    let targets = v.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>();
    let results = v
        .iter()
        .map(|(_, p)| match p {
            Some(true) if quick => "met (quick: no verdict)",
            Some(false) if quick => "below (quick: no verdict)",
            Some(true) => "PASS",
            Some(false) => "SHORT",
            None => "n/a",
        })
        .collect::<Vec<_>>();
    (targets.join("; "), results.join("; "))
}

/// Truncates long "not available" reasons for the fixed-width table.
fn clip(s: String, n: usize) -> String {
    if s.chars().count() <= n {
        s
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// What quick mode prints under its table instead of verdicts.
pub const QUICK_NOTE: &str = "quick mode: one short run per figure is too short to judge the \
targets, so results say met or below, not a verdict; run `bistream bench` (full mode) to judge them";

/// The plain-text table for stdout (`quick`: no PASS/SHORT verdicts).
pub fn text_table(rows: &[Row], quick: bool) -> String {
    let header = [
        "suite", "metric", "unit", "ours", "peer", "floor", "ratio", "target", "result",
    ];
    let mut lines: Vec<[String; 9]> = vec![header.map(String::from)];
    for r in rows {
        let (t, res) = fmt_verdicts(r, quick);
        lines.push([
            r.suite.clone(),
            r.metric.clone(),
            r.unit.clone(),
            clip(fmt_cell(&r.ours, false), 40),
            clip(fmt_cell(&r.peer, false), 40),
            clip(fmt_cell(&r.floor, false), 40),
            fmt_ratio(r),
            t,
            res,
        ]);
    }
    let mut widths = [0usize; 9];
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The Markdown table (with the spread of every figure; `quick`: no PASS/SHORT verdicts).
pub fn markdown_table(rows: &[Row], quick: bool) -> String {
    let mut out = String::from(
        "| suite | metric | unit | ours | peer | floor | ratio | target | result |\n\
         |---|---|---|---:|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        let (t, res) = fmt_verdicts(r, quick);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            md_escape(&r.suite),
            md_escape(&r.metric),
            md_escape(&r.unit),
            md_escape(&fmt_cell(&r.ours, true)),
            md_escape(&fmt_cell(&r.peer, true)),
            md_escape(&fmt_cell(&r.floor, true)),
            md_escape(&fmt_ratio(r)),
            md_escape(&t),
            md_escape(&if res.is_empty() { "—".into() } else { res }),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let s = Stat::of(&[3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        assert_eq!(Stat::of(&[1.0, 2.0]).unwrap().median, 1.5);
        assert!(Stat::of(&[]).is_none());
    }

    #[test]
    fn targets_and_ratios() {
        let v = |x: f64| Cell::from_runs(&[x], "");
        let r = Row::new("relay", "forwarded", "msg/s", true)
            .ours(v(300.0))
            .peer(v(10.0))
            .ratio(Against::Peer)
            .target(Target::RatioAtLeast {
                against: Against::Peer,
                x: 30.0,
            })
            .target(Target::AtLeast { x: 1000.0 });
        assert_eq!(r.ratio_value(), Some(30.0));
        let v2: Vec<_> = r.verdicts().into_iter().map(|x| x.1).collect();
        assert_eq!(v2, vec![Some(true), Some(false)]);
        let missing = Row::new("relay", "x", "µs", false)
            .ours(v(1.0))
            .floor(Cell::NotAvailable("down".into()))
            .ratio(Against::Floor)
            .target(Target::RatioAtMost {
                against: Against::Floor,
                x: 2.0,
            });
        assert_eq!(missing.ratio_value(), None);
        assert_eq!(missing.verdicts()[0].1, None);
        let rows = [r, missing];
        let t = text_table(&rows, false);
        assert!(t.contains("PASS; SHORT"), "{t}");
        assert!(t.contains("not available: down"), "{t}");
        // Quick mode never prints a verdict.
        let q = text_table(&rows, true);
        assert!(!q.contains("PASS") && !q.contains("SHORT"), "{q}");
        assert!(
            q.contains("met (quick: no verdict); below (quick: no verdict)"),
            "{q}"
        );
        let md = markdown_table(&rows, true);
        assert!(!md.contains("SHORT") && md.contains("below (quick"), "{md}");
    }

    #[test]
    fn numbers() {
        assert_eq!(fmt_num(1_234_567.0), "1,234,567");
        assert_eq!(fmt_num(123.4), "123");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(0.1234), "0.123");
    }
}
