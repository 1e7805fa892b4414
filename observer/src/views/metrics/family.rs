//! One metric family being built — series by label set, summed (or maxed, for ages) when
//! `--metrics-labels` makes several containers' series coincide — and the Prometheus text
//! exposition format (0.0.4) of a list of them.
//!
//! The text is written here rather than through the `prometheus` crate's data model: that
//! model allocates a label pair per label per series (five strings per container series,
//! ~17,000 series at 1,000 containers) and took 60 ms of a 100-ms scrape there. Each
//! container's labels are rendered once (`LabelSets`) and every series refers to them by
//! number. The format is small (HELP/TYPE lines, `name{labels} value`, three escapes);
//! the tests check the output line for line against the `prometheus` crate's encoder.

use std::{collections::BTreeMap, fmt::Write};

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Agg {
    Sum,
    Max,
}

/// A label set's number, by the set.
pub(super) type SetIds<'a> = BTreeMap<&'a [(String, String)], u32>;

/// Label sets rendered once (`k="v",k="v"`), referred to by number; 0 is the empty set.
pub(super) struct LabelSets {
    texts: Vec<String>,
}

impl LabelSets {
    /// Numbers the distinct sets of `sets` in their sorted order (so series come out in
    /// label order, as Prometheus clients write them).
    pub(super) fn new<'a>(
        sets: impl Iterator<Item = &'a [(String, String)]>,
    ) -> (Self, SetIds<'a>) {
        let mut ids: SetIds<'a> = sets.map(|s| (s, 0)).collect();
        let mut texts = vec![String::new()];
        for (set, id) in &mut ids {
            if set.is_empty() {
                continue;
            }
            *id = texts.len() as u32;
            texts.push(render(set));
        }
        (LabelSets { texts }, ids)
    }
}

pub(super) struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    pub(super) agg: Agg,
    /// By (label set, further labels rendered like a set's): appended as added, sorted
    /// and merged by `merge` (cheaper than keeping ~17,000 series in a map as they come).
    pub(super) series: Vec<((u32, String), f64)>,
}

impl Family {
    pub(super) fn new(name: &'static str, help: &'static str, counter: bool) -> Self {
        Family {
            name,
            help,
            counter,
            agg: Agg::Sum,
            series: Vec::new(),
        }
    }

    /// Adds `v` to the series of label set `set` with the further labels `extra`.
    pub(super) fn add_set(&mut self, set: u32, extra: &[(&str, &str)], v: f64) {
        self.series.push(((set, render(extra)), v));
    }

    /// Sorts the series by label set and merges those with the same labels (summed, or
    /// the largest for `Agg::Max`).
    pub(super) fn merge(&mut self) {
        self.series.sort_by(|a, b| a.0.cmp(&b.0));
        let max = self.agg == Agg::Max;
        self.series.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = if max {
                    kept.1.max(later.1)
                } else {
                    kept.1 + later.1
                };
            }
            same
        });
    }

    pub(super) fn add(&mut self, labels: &[(&str, &str)], v: f64) {
        self.add_set(0, labels, v);
    }

    pub(super) fn add1(&mut self, k: &str, val: &str, v: f64) {
        self.add(&[(k, val)], v);
    }
}

/// `k="v",...` with the text format's escapes in values. Labels with an empty value are
/// left out: to Prometheus an empty label is an absent one, and at 1,000 containers the
/// empty `pod` and `namespace` of every series were a fifth of the scrape.
fn render<K: AsRef<str>, V: AsRef<str>>(labels: &[(K, V)]) -> String {
    let mut s = String::new();
    for (k, v) in labels.iter().filter(|(_, v)| !v.as_ref().is_empty()) {
        if !s.is_empty() {
            s.push(',');
        }
        s.push_str(k.as_ref());
        s.push_str("=\"");
        escape(&mut s, v.as_ref(), true);
        s.push('"');
    }
    s
}

/// Label values escape `\`, newline and `"`; HELP text the first two.
fn escape(out: &mut String, v: &str, quote: bool) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// The families with series, in order, as Prometheus text.
pub(super) fn encode(fams: &mut [Family], sets: &LabelSets) -> String {
    encode_above(fams, sets, PARALLEL_SERIES)
}

fn encode_above(fams: &mut [Family], sets: &LabelSets, parallel_series: usize) -> String {
    // At 1,000 containers ~17,000 series take ~4 ms to sort and write: two halves (by
    // series) on two threads, joined in order. Small answers stay on this thread.
    let total: usize = fams.iter().map(|f| f.series.len()).sum();
    if total < parallel_series {
        return encode_part(fams, sets);
    }
    let mut acc = 0;
    let mid = fams
        .iter()
        .position(|f| {
            acc += f.series.len();
            acc >= total / 2
        })
        .map_or(fams.len(), |i| i + 1);
    let (first, second) = fams.split_at_mut(mid);
    std::thread::scope(|s| {
        let later = s.spawn(|| encode_part(second, sets));
        let mut out = encode_part(first, sets);
        match later.join() {
            Ok(rest) => out.push_str(&rest),
            Err(panic) => std::panic::resume_unwind(panic),
        }
        out
    })
}

/// Series above which `encode` uses a second thread.
const PARALLEL_SERIES: usize = 4096;

fn encode_part(fams: &mut [Family], sets: &LabelSets) -> String {
    fams.iter_mut().for_each(Family::merge);
    let mut out = String::with_capacity(fams.iter().map(|f| f.series.len()).sum::<usize>() * 160);
    for f in fams.iter().filter(|f| !f.series.is_empty()) {
        out.push_str("# HELP ");
        out.push_str(f.name);
        out.push(' ');
        escape(&mut out, f.help, false);
        out.push_str("\n# TYPE ");
        out.push_str(f.name);
        out.push_str(if f.counter { " counter\n" } else { " gauge\n" });
        for ((set, extra), v) in &f.series {
            out.push_str(f.name);
            let labels = &sets.texts[*set as usize];
            if !labels.is_empty() || !extra.is_empty() {
                out.push('{');
                out.push_str(labels);
                if !labels.is_empty() && !extra.is_empty() {
                    out.push(',');
                }
                out.push_str(extra);
                out.push('}');
            }
            let _ = writeln!(out, " {v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

    use super::*;

    /// The same family in the `prometheus` crate's model.
    fn proto(
        f: &Family,
        sets: &[Vec<(String, String)>],
        extras: &[Vec<(String, String)>],
    ) -> MetricFamily {
        let mut mf = MetricFamily::default();
        mf.set_name(f.name.to_string());
        mf.set_help(f.help.to_string());
        mf.set_field_type(if f.counter {
            MetricType::COUNTER
        } else {
            MetricType::GAUGE
        });
        let mut metrics = Vec::new();
        for ((set, extra), v) in &f.series {
            let extra = extras.iter().find(|e| render(e) == *extra).unwrap();
            let mut m = Metric::default();
            m.set_label(
                sets[*set as usize]
                    .iter()
                    .chain(extra)
                    .filter(|(_, val)| !val.is_empty())
                    .map(|(k, val)| {
                        let mut lp = LabelPair::default();
                        lp.set_name(k.clone());
                        lp.set_value(val.clone());
                        lp
                    })
                    .collect(),
            );
            if f.counter {
                let mut c = Counter::default();
                c.set_value(*v);
                m.set_counter(c);
            } else {
                let mut g = Gauge::default();
                g.set_value(*v);
                m.set_gauge(g);
            }
            metrics.push(m);
        }
        mf.set_metric(metrics);
        mf
    }

    #[test]
    fn text_is_what_the_prometheus_crate_writes() {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let all_sets = [
            Vec::new(),
            pairs(&[("container_name", "web"), ("pod", "")]),
            pairs(&[
                ("container_name", "a \"quoted\" \\ back\nslash ü"),
                ("pod", "p"),
            ]),
        ];
        let (sets, ids) = LabelSets::new(all_sets.iter().map(Vec::as_slice));
        // `sets` numbers in sorted order: the ids index `ordered`.
        let mut ordered = vec![Vec::new(); all_sets.len()];
        for (s, id) in &ids {
            ordered[*id as usize] = s.to_vec();
        }
        let extras = vec![
            Vec::new(),
            pairs(&[("signal", "SIGKILL"), ("result", "delivered")]),
        ];
        let mut c = Family::new("observer_c_total", "Help with \\ and\nnewline \"q\".", true);
        let mut g = Family::new("observer_g", "Plain.", false);
        for (i, s) in all_sets.iter().enumerate() {
            c.add_set(ids[s.as_slice()], &[], i as f64 + 0.5);
            c.add_set(
                ids[s.as_slice()],
                &[("signal", "SIGKILL"), ("result", "delivered")],
                3.0,
            );
            g.add_set(ids[s.as_slice()], &[], 1e21);
        }
        let empty = Family::new("observer_empty", "None.", false);
        let mut fams = [c, empty, g];
        let ours = encode(&mut fams, &sets);
        // Split over two threads, the same text.
        assert_eq!(encode_above(&mut fams, &sets, 0), ours);
        let mut theirs = String::new();
        let protos: Vec<MetricFamily> = fams
            .iter()
            .filter(|f| !f.series.is_empty())
            .map(|f| proto(f, &ordered, &extras))
            .collect();
        prometheus::TextEncoder::new()
            .encode_utf8(&protos, &mut theirs)
            .unwrap();
        assert_eq!(ours, theirs);
        assert!(
            ours.contains("observer_g{container_name=\"web\"} "),
            "empty pod left out"
        );
        assert!(ours.contains("container_name=\"a \\\"quoted\\\" \\\\ back\\nslash ü\""));
    }
}
