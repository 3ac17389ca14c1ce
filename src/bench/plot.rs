//! `capstan bench plot`: draws latency against load from saved JSON reports of
//! `capstan bench api` and `capstan bench etcd` (one shape), one line per label, so a run of
//! scripts/bench-api ends with a picture next to its table.
//!
//! The first chart has the achieved write rate across and the create p99 up (p50 dashed,
//! log scale); a second chart, drawn when some reports have watchers, has the watch
//! delivery p99 (across servers where measured) against the same rate. Raw-SQL ceilings
//! can be marked as vertical lines. The output is SVG, drawn without font files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

/// The full-speed marker: a square of 8 pixels around its point.
const SQUARE: [(i32, i32); 2] = [(-4, -4), (4, 4)];

/// Options of `capstan bench plot`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Each REPORT is a file of reports from `capstan bench api --json` or \
`capstan bench etcd --json`: one JSON object, a JSON array of them, or one per line. A report's \
`label` field names its line (reports without one take the file's name); `LABEL=FILE` labels \
every report of FILE. Paced reports (`rate_offered` set) of a label are joined in order of \
their write rate; full-speed ones are drawn as squares apart from the line (filled: p99, \
hollow: p50).\n\n\
Example: capstan bench plot --output docs/bench/latency-vs-load.svg \
'etcd 3.4=out/etcd.jsonl' out/capstan-postgres.jsonl --ceiling 'pgbench=9000'"
)]
pub struct PlotArgs {
    /// The SVG file to write.
    #[arg(long, value_name = "FILE.svg")]
    pub output: PathBuf,
    /// The chart's title.
    #[arg(long, default_value = "Write latency against load")]
    pub title: String,
    /// A raw ceiling to mark as a vertical line: `LABEL=WRITES_PER_SECOND` (repeatable).
    #[arg(long, value_name = "LABEL=RATE")]
    pub ceiling: Vec<String>,
    /// Report files, each `FILE` or `LABEL=FILE`.
    #[arg(value_name = "REPORT", required = true)]
    pub reports: Vec<String>,
}

/// One report reduced to what the charts show.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Achieved writes per second.
    pub writes_per_sec: f64,
    /// Create (or, without creates, update) latency percentiles, milliseconds.
    pub write_p50_ms: f64,
    /// The same, 99th percentile.
    pub write_p99_ms: f64,
    /// Watch delivery p99 (cross-server when measured), milliseconds.
    pub watch_p99_ms: Option<f64>,
    /// Whether the run was paced (`rate_offered` set); full-speed runs are drawn as
    /// separate squares, not joined to the paced line (often another workload).
    pub paced: bool,
}

/// The points of one label, in order of write rate.
pub type Series = BTreeMap<String, Vec<Point>>;

/// Reads the reports and writes the SVG.
pub fn run(args: &PlotArgs) -> anyhow::Result<()> {
    let mut series = Series::new();
    for spec in &args.reports {
        let (label, path) = match spec.split_once('=') {
            Some((label, path)) if !Path::new(spec).exists() => (Some(label), path),
            _ => (None, spec.as_str()),
        };
        load(&mut series, Path::new(path), label)?;
    }
    let ceilings = args
        .ceiling
        .iter()
        .map(|spec| {
            let (label, rate) = spec
                .rsplit_once('=')
                .with_context(|| format!("--ceiling {spec:?} is not LABEL=RATE"))?;
            let rate: f64 = rate
                .parse()
                .with_context(|| format!("--ceiling {spec:?}: {rate:?} is not a number"))?;
            Ok((label.to_string(), rate))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    draw(&args.output, &args.title, &series, &ceilings)?;
    println!(
        "wrote {} ({} series, {} points)",
        args.output.display(),
        series.len(),
        series.values().map(Vec::len).sum::<usize>()
    );
    Ok(())
}

/// Adds the reports of one file to `series`, under `label` or their own `label` field.
pub fn load(series: &mut Series, path: &Path, label: Option<&str>) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let reports: Vec<Value> = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => items,
        Ok(item @ Value::Object(_)) => vec![item],
        _ => text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .enumerate()
            .map(|(number, line)| {
                serde_json::from_str(line).with_context(|| {
                    format!("{} line {}: not a JSON report", path.display(), number + 1)
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    if reports.is_empty() {
        bail!("{} holds no report", path.display());
    }
    let fallback = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    for report in reports {
        let name = label
            .map(str::to_string)
            .or_else(|| report["label"].as_str().map(str::to_string))
            .unwrap_or_else(|| fallback.clone());
        let point = point(&report)
            .with_context(|| format!("a report in {} (label {name:?})", path.display()))?;
        let points = series.entry(name).or_default();
        points.push(point);
        points.sort_by(|a, b| a.writes_per_sec.total_cmp(&b.writes_per_sec));
    }
    Ok(())
}

/// The plotted values of one report.
pub fn point(report: &Value) -> anyhow::Result<Point> {
    let number = |value: &Value| value.as_f64();
    let verb = ["create", "update", "delete"]
        .iter()
        .map(|verb| &report["verbs"][verb])
        .find(|verb| verb.is_object())
        .context("the report has no create, update or delete latencies under `verbs`")?;
    let writes_per_sec = number(&report["writes_per_sec"])
        .or_else(|| number(&verb["per_sec"]))
        .context("the report has no `writes_per_sec`")?;
    let watch = &report["watch"];
    Ok(Point {
        writes_per_sec,
        write_p50_ms: number(&verb["p50_ms"]).context("no p50_ms")?,
        write_p99_ms: number(&verb["p99_ms"]).context("no p99_ms")?,
        watch_p99_ms: watch_p99(watch),
        paced: number(&report["rate_offered"]).is_some_and(|rate| rate > 0.0),
    })
}

/// The cross-server watch p99 when the run measured any (two servers or more), else the
/// same-server one.
fn watch_p99(watch: &Value) -> Option<f64> {
    let cross_samples = watch["cross_server_samples"].as_u64();
    let cross = watch["cross_server_p99_ms"]
        .as_f64()
        .filter(|p99| cross_samples.map_or(*p99 > 0.0, |samples| samples > 0));
    cross.or_else(|| watch["p99_ms"].as_f64())
}

/// Draws the charts into an SVG file.
pub fn draw(
    output: &Path,
    title: &str,
    series: &Series,
    ceilings: &[(String, f64)],
) -> anyhow::Result<()> {
    if series.is_empty() {
        bail!("nothing to plot");
    }
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let with_watch = series
        .values()
        .flatten()
        .any(|point| point.watch_p99_ms.is_some());
    let height = if with_watch { 1100 } else { 600 };
    let root = SVGBackend::new(output, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = if with_watch {
        let (top, bottom) = root.split_vertically(600);
        (top, Some(bottom))
    } else {
        (root.clone(), None)
    };
    let max_rate = series
        .values()
        .flatten()
        .map(|p| p.writes_per_sec)
        .chain(ceilings.iter().map(|(_, rate)| *rate))
        .fold(1.0, f64::max)
        * 1.08;
    let colors: BTreeMap<&str, RGBColor> = series
        .keys()
        .enumerate()
        .map(|(index, label)| (label.as_str(), color(index)))
        .collect();

    // Latency chart: p99 solid with dots, p50 dashed.
    let latencies = series
        .values()
        .flatten()
        .flat_map(|p| [p.write_p50_ms, p.write_p99_ms]);
    let (low, high) = bounds(latencies);
    let mut chart = rate_chart(
        &top,
        (title, 24),
        max_rate,
        (low, high),
        "create latency, ms (p99 solid, p50 dashed; squares: full speed)",
    )?;
    for (label, points) in series {
        let color = colors[label.as_str()];
        let paced = || points.iter().filter(|p| p.paced);
        let p99: Vec<(f64, f64)> = paced()
            .map(|p| (p.writes_per_sec, p.write_p99_ms.max(low)))
            .collect();
        let p50: Vec<(f64, f64)> = paced()
            .map(|p| (p.writes_per_sec, p.write_p50_ms.max(low)))
            .collect();
        chart
            .draw_series(LineSeries::new(p99.clone(), color.stroke_width(2)))?
            .label(format!("{label} p99"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            p99.iter()
                .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
        )?;
        chart.draw_series(DashedLineSeries::new(p50, 6, 4, color.stroke_width(1)))?;
        // Full-speed runs: a filled square at p99, a hollow one at p50.
        for point in points.iter().filter(|p| !p.paced) {
            let (x, p99, p50) = (
                point.writes_per_sec,
                point.write_p99_ms.max(low),
                point.write_p50_ms.max(low),
            );
            chart.draw_series([
                EmptyElement::at((x, p99)) + Rectangle::new(SQUARE, color.filled()),
                EmptyElement::at((x, p50)) + Rectangle::new(SQUARE, color.stroke_width(1)),
            ])?;
        }
    }
    // Ceilings: dotted grey verticals, each named beside its line at its own height.
    for (index, (label, rate)) in ceilings.iter().enumerate() {
        let grey = RGBColor(60 + 50 * (index % 3) as u8, 60, 60);
        let text = format!("{label} ceiling ({rate:.0}/s)");
        chart
            .draw_series(DashedLineSeries::new(
                vec![(*rate, low), (*rate, high)],
                3,
                3,
                grey.stroke_width(1),
            ))?
            .label(text.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1))
            });
        let height = high / 10f64.powf(0.2 * (index + 1) as f64);
        let anchor = if *rate > max_rate * 0.6 {
            Pos::new(HPos::Right, VPos::Center)
        } else {
            Pos::new(HPos::Left, VPos::Center)
        };
        let style = TextStyle::from(("sans-serif", 12).into_font())
            .color(&grey)
            .pos(anchor);
        chart.draw_series(std::iter::once(Text::new(
            format!(" {text} "),
            (*rate, height),
            style,
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;

    // Watch chart: only the series that measured watches.
    if let Some(bottom) = bottom {
        let (low, high) = bounds(series.values().flatten().filter_map(|p| p.watch_p99_ms));
        let mut chart = rate_chart(
            &bottom,
            ("Watch delivery p99 against load", 20),
            max_rate,
            (low, high),
            "watch p99, ms (cross-server where measured)",
        )?;
        for (label, points) in series {
            let watched: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.paced)
                .filter_map(|p| Some((p.writes_per_sec, p.watch_p99_ms?.max(low))))
                .collect();
            let full_speed: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| !p.paced)
                .filter_map(|p| Some((p.writes_per_sec, p.watch_p99_ms?.max(low))))
                .collect();
            if watched.is_empty() && full_speed.is_empty() {
                continue;
            }
            let color = colors[label.as_str()];
            chart.draw_series(
                full_speed
                    .iter()
                    .map(|&point| EmptyElement::at(point) + Rectangle::new(SQUARE, color.filled())),
            )?;
            chart
                .draw_series(LineSeries::new(watched.clone(), color.stroke_width(2)))?
                .label(format!("{label} watch p99"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(
                watched
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    root.present()
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(())
}

/// A chart of milliseconds (log scale, `latency` bounds) against achieved writes per
/// second, with its caption, axes and labels drawn.
fn rate_chart<'a, DB: DrawingBackend + 'a>(
    area: &'a DrawingArea<DB, plotters::coord::Shift>,
    (caption, size): (&str, u32),
    max_rate: f64,
    (low, high): (f64, f64),
    y_desc: &str,
) -> anyhow::Result<
    ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, LogCoord<f64>>>,
>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", size))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_rate, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("achieved writes per second")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| milliseconds(*y))
        .draw()?;
    Ok(chart)
}

/// A log-scale range around the values: whole decades, at least 0.1 ms to 10 ms.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut low, mut high) = (f64::MAX, 0.0_f64);
    for value in values.filter(|v| v.is_finite() && *v > 0.0) {
        low = low.min(value);
        high = high.max(value);
    }
    if high == 0.0 {
        return (0.1, 10.0);
    }
    let low = 10f64.powf(low.log10().floor()).clamp(0.01, 1.0);
    let high = 10f64.powf(high.log10().ceil()).max(10.0);
    (low, high)
}

/// An axis label in milliseconds: decimals only below 1.
fn milliseconds(value: f64) -> String {
    if value < 1.0 {
        format!("{value}")
    } else {
        format!("{value:.0}")
    }
}

/// Distinct colours that read on white.
fn color(index: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0xe3, 0x77, 0xc2),
        RGBColor(0x17, 0xbe, 0xcf),
    ];
    COLORS[index % COLORS.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(label: &str, rate: f64, p99: f64, watch: Option<f64>) -> Value {
        serde_json::json!({
            "label": label, "servers": 2, "clients": 32, "watchers": 2, "workload": "mixed",
            "rate_offered": rate, "writes_per_sec": rate * 0.98,
            "verbs": {"create": {"count": 10, "errors": 0, "per_sec": rate / 2.0,
                                 "p50_ms": p99 / 4.0, "p90_ms": p99 / 2.0, "p99_ms": p99}},
            "watch": watch.map(|w| serde_json::json!({"p99_ms": w, "cross_server_p99_ms": w})),
        })
    }

    #[test]
    fn two_series_render_to_an_svg_with_labels_and_a_legend() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // One file as a JSON array, one as JSON lines with a label given on the command line.
        let capstan = dir.path().join("capstan.json");
        let reports: Vec<Value> = [(100.0, 4.0), (500.0, 6.0), (2000.0, 30.0)]
            .iter()
            .map(|&(rate, p99)| report("Capstan Postgres (2 servers)", rate, p99, Some(p99 * 2.0)))
            .collect();
        std::fs::write(&capstan, serde_json::to_string(&reports).expect("json"))
            .expect("write reports");
        let etcd = dir.path().join("etcd.jsonl");
        let lines: Vec<String> = [(1000.0, 3.0), (250.0, 1.5)]
            .iter()
            .map(|&(rate, p99)| report("ignored", rate, p99, None).to_string())
            .collect();
        std::fs::write(&etcd, lines.join("\n")).expect("write reports");

        let output = dir.path().join("plots/latency.svg");
        run(&PlotArgs {
            output: output.clone(),
            title: "Write latency against load".into(),
            ceiling: vec!["pgbench=2500".into()],
            reports: vec![
                capstan.display().to_string(),
                format!("etcd 3.4={}", etcd.display()),
            ],
        })
        .expect("the plot is drawn");

        let svg = std::fs::read_to_string(&output).expect("the SVG exists");
        assert!(
            svg.starts_with("<svg"),
            "not an SVG: {}",
            &svg[..svg.len().min(80)]
        );
        for text in [
            "Capstan Postgres (2 servers) p99",
            "etcd 3.4 p99",
            "Capstan Postgres (2 servers) watch p99",
            "pgbench ceiling (2500/s)",
            "achieved writes per second",
            "create latency, ms",
            "Watch delivery p99 against load",
        ] {
            assert!(svg.contains(text), "the SVG lacks {text:?}");
        }
        assert!(
            !svg.contains("ignored"),
            "the command-line label replaces the report's"
        );
    }

    #[test]
    fn points_of_a_label_are_ordered_by_rate() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("etcd.jsonl");
        let lines = [
            report("etcd", 900.0, 2.0, None),
            report("etcd", 100.0, 1.0, None),
        ]
        .map(|r| r.to_string())
        .join("\n");
        std::fs::write(&file, lines).expect("write reports");
        let mut series = Series::new();
        load(&mut series, &file, None).expect("loads");
        let rates: Vec<f64> = series["etcd"].iter().map(|p| p.writes_per_sec).collect();
        assert_eq!(rates, vec![98.0, 882.0]);
        assert_eq!(series["etcd"][0].watch_p99_ms, None);
    }

    #[test]
    fn one_server_runs_show_their_same_server_watch_latency_and_full_speed_is_apart() {
        let report = serde_json::json!({
            "rate_offered": null, "writes_per_sec": 3000.0,
            "verbs": {"create": {"p50_ms": 8.0, "p99_ms": 37.0}},
            "watch": {"p99_ms": 6.5, "cross_server_p99_ms": 0.0, "cross_server_samples": 0},
        });
        let point = point(&report).expect("a full report");
        assert_eq!(point.watch_p99_ms, Some(6.5));
        assert!(
            !point.paced,
            "a run without an offered rate is a full-speed one"
        );
    }

    #[test]
    fn a_report_without_write_latencies_is_refused() {
        let error = point(&serde_json::json!({"writes_per_sec": 5, "verbs": {"get": {}}}))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("create"), "{error}");
    }
}
