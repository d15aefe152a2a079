//! The rows of `cargo xtask bench e2e`'s table (its own rows and the
//! iperf3 rows of `bench_iperf`), and the table printed from them.

/// What a row's ratio should reach (issue 10, item 8).
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// At least this ratio.
    AtLeast(f64),
    /// No target: shown for the record.
    None,
}

/// One row of the table: a ratio of two figures measured in this run.
pub struct Row {
    /// What is compared with what.
    pub what: String,
    /// The two figures.
    pub figures: String,
    /// The first figure over the second.
    pub ratio: f64,
    /// Its target.
    pub target: Target,
}

impl Row {
    fn cells(&self) -> [String; 5] {
        let (target, verdict) = match self.target {
            Target::AtLeast(t) => (
                format!(">= {t:.1}"),
                if self.ratio >= t { "met" } else { "missed" },
            ),
            Target::None => ("-".into(), "-"),
        };
        [
            self.what.clone(),
            self.figures.clone(),
            format!("{:.2}", self.ratio),
            target,
            verdict.into(),
        ]
    }
}

/// The rows as a Markdown table (what the README shows).
pub fn print_table(rows: &[Row]) {
    println!("| row | measured (this run) | ratio | target | |");
    println!("| --- | --- | --- | --- | --- |");
    for r in rows {
        println!("| {} |", r.cells().join(" | "));
    }
}
