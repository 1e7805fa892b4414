//! One metric family being built: series by label set, summed (or maxed, for ages) when
//! `--metrics-labels` makes several containers' series coincide, then the `prometheus`
//! crate's data model for its text encoder.

use std::collections::BTreeMap;

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Agg {
    Sum,
    Max,
}

pub(super) struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    pub(super) agg: Agg,
    pub(super) series: BTreeMap<Vec<(String, String)>, f64>,
}

impl Family {
    pub(super) fn new(name: &'static str, help: &'static str, counter: bool) -> Self {
        Family {
            name,
            help,
            counter,
            agg: Agg::Sum,
            series: BTreeMap::new(),
        }
    }

    pub(super) fn add(&mut self, labels: &[(String, String)], v: f64) {
        let e = self
            .series
            .entry(labels.to_vec())
            .or_insert(if self.agg == Agg::Max { f64::MIN } else { 0.0 });
        *e = if self.agg == Agg::Max {
            e.max(v)
        } else {
            *e + v
        };
    }

    pub(super) fn add1(&mut self, k: &str, val: &str, v: f64) {
        self.add(&[(k.to_string(), val.to_string())], v);
    }

    pub(super) fn into_proto(self) -> MetricFamily {
        let mut mf = MetricFamily::default();
        mf.set_name(self.name.to_string());
        mf.set_help(self.help.to_string());
        mf.set_field_type(if self.counter {
            MetricType::COUNTER
        } else {
            MetricType::GAUGE
        });
        let metrics = self
            .series
            .into_iter()
            .map(|(labels, v)| {
                let mut m = Metric::default();
                m.set_label(
                    labels
                        .into_iter()
                        .map(|(k, val)| {
                            let mut lp = LabelPair::default();
                            lp.set_name(k);
                            lp.set_value(val);
                            lp
                        })
                        .collect(),
                );
                if self.counter {
                    let mut c = Counter::default();
                    c.set_value(v);
                    m.set_counter(c);
                } else {
                    let mut g = Gauge::default();
                    g.set_value(v);
                    m.set_gauge(g);
                }
                m
            })
            .collect();
        mf.set_metric(metrics);
        mf
    }
}
