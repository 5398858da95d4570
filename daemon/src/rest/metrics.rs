//! `GET /-/metrics`: every store's stats in the Prometheus text exposition format 0.0.4.
//!
//! Only `borgstored` serves it (the per-store mount, where no store name starts with
//! `-`), and only with `--rest-metrics` / `rest_metrics = true`. It needs neither the
//! REST Accept header nor Basic auth, so bind such a listener to loopback or let nginx
//! guard the path. The output names stores and stat keys only, never URLs or paths.
//!
//! Each stat key becomes `borgstore_<key>` with the store as its one label, e.g.
//! `borgstore_load_calls{store="main"} 12`; bools are 0/1. Keys ending in `_calls`,
//! `_volume`, `_time`, `_hits`, `_misses` or `_errors` only grow and are typed
//! `counter`, everything else `gauge`. Metrics are sorted by name, then store.
//!
//! Per principal, four counters carry a second label, the rule's label:
//! `borgstore_principal_calls{store="main",principal="uid:1001"}`,
//! `borgstore_principal_in_volume`, `borgstore_principal_out_volume` (value bytes) and
//! `borgstore_principal_refused_calls`. Labels come from the configured rules only, so
//! clients cannot make the output grow.

use super::RestApp;
use crate::actor::registry::Registry;
use crate::commands::lifecycle::GetStats;
use crate::policy::principals::PrincipalStats;
use actix_web::http::{header, Method};
use actix_web::{HttpRequest, HttpResponse};
use borgstore_ipc::{StatValue, Stats};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The request path (exact; the query string is ignored).
pub const PATH: &str = "/-/metrics";

/// The media type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metric name prefix.
const PREFIX: &str = "borgstore_";

/// Suffixes of stat keys that only ever grow.
const COUNTER_SUFFIXES: [&str; 6] = ["_calls", "_volume", "_time", "_hits", "_misses", "_errors"];

/// Answer a request for [`PATH`].
pub async fn respond(req: &HttpRequest, app: &RestApp) -> HttpResponse {
    if req.method() != Method::GET {
        return HttpResponse::MethodNotAllowed().insert_header((header::ALLOW, "GET")).finish();
    }
    let stores = collect(&app.registry).await;
    let mut principals = Vec::new();
    for entry in app.registry.entries() {
        principals.push((entry.name.clone(), entry.principal_stats().await));
    }
    HttpResponse::Ok().content_type(CONTENT_TYPE).body(render_with_principals(&stores, &principals))
}

/// The stats of every store, in store order, through each store's actor. A store whose
/// actor does not answer (shutting down) is left out.
pub async fn collect(registry: &Registry) -> Vec<(String, Stats)> {
    let mut out = Vec::new();
    for entry in registry.entries() {
        match entry.handle().run(GetStats).await {
            Ok(stats) => out.push((entry.name.clone(), stats)),
            Err(e) => tracing::warn!(store = %entry.name, "metrics: no stats: {}", e.message),
        }
    }
    out
}

/// `borgstore_<key>` with every character outside `[a-zA-Z0-9_]` replaced by `_`.
pub fn metric_name(key: &str) -> String {
    let mut name = String::with_capacity(PREFIX.len() + key.len());
    name.push_str(PREFIX);
    name.extend(key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }));
    name
}

/// `counter` or `gauge` for a metric name.
pub fn metric_type(name: &str) -> &'static str {
    if COUNTER_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        "counter"
    } else {
        "gauge"
    }
}

/// A label value escaped for the text format: `\`, `"` and newline.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value as the text format writes it.
fn sample(value: StatValue) -> String {
    match value {
        StatValue::Int(i) => i.to_string(),
        StatValue::Bool(b) => u8::from(b).to_string(),
        StatValue::Float(f) if f.is_nan() => "NaN".into(),
        StatValue::Float(f) if f == f64::INFINITY => "+Inf".into(),
        StatValue::Float(f) if f == f64::NEG_INFINITY => "-Inf".into(),
        StatValue::Float(f) => f.to_string(),
    }
}

/// The exposition text for `stores` (name, stats). When two keys of one store sanitize
/// to the same metric name, the first in key order wins.
pub fn render(stores: &[(String, Stats)]) -> String {
    render_with_principals(stores, &[])
}

/// One counter of a principal's stats.
type Counter = fn(&PrincipalStats) -> u64;

/// [`render`] plus the counters per principal of each store, all metrics in name order.
pub fn render_with_principals(
    stores: &[(String, Stats)],
    principals: &[(String, BTreeMap<String, PrincipalStats>)],
) -> String {
    // metric name -> labels (as written) -> sample
    let mut metrics: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (store, stats) in stores {
        for (key, value) in stats {
            let labels = format!("store=\"{}\"", escape_label(store));
            metrics.entry(metric_name(key)).or_default().entry(labels).or_insert_with(|| sample(*value));
        }
    }
    let counters: [(&str, Counter); 4] = [
        ("principal_calls", |s| s.calls),
        ("principal_in_volume", |s| s.bytes_in),
        ("principal_out_volume", |s| s.bytes_out),
        ("principal_refused_calls", |s| s.refusals),
    ];
    for (store, by_principal) in principals {
        for (principal, stats) in by_principal {
            for (key, value) in counters {
                let labels = format!("store=\"{}\",principal=\"{}\"", escape_label(store), escape_label(principal));
                metrics.entry(metric_name(key)).or_default().insert(labels, value(stats).to_string());
            }
        }
    }
    let mut out = String::new();
    for (name, samples) in &metrics {
        let _ = writeln!(out, "# TYPE {name} {}", metric_type(name));
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(pairs: &[(&str, StatValue)]) -> Stats {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn text_format() {
        let main = stats(&[
            ("load_calls", StatValue::Int(12)),
            ("load_time", StatValue::Float(0.5)),
            ("load_throughput", StatValue::Float(2048.25)),
            ("cache_disabled", StatValue::Bool(true)),
            ("cache_hit_ratio", StatValue::Float(0.0)),
        ]);
        let other = stats(&[("load_calls", StatValue::Int(0)), ("cache_disabled", StatValue::Bool(false))]);
        let text = render(&[("other".into(), other), ("main".into(), main)]);
        assert_eq!(
            text,
            "# TYPE borgstore_cache_disabled gauge\n\
             borgstore_cache_disabled{store=\"main\"} 1\n\
             borgstore_cache_disabled{store=\"other\"} 0\n\
             # TYPE borgstore_cache_hit_ratio gauge\n\
             borgstore_cache_hit_ratio{store=\"main\"} 0\n\
             # TYPE borgstore_load_calls counter\n\
             borgstore_load_calls{store=\"main\"} 12\n\
             borgstore_load_calls{store=\"other\"} 0\n\
             # TYPE borgstore_load_throughput gauge\n\
             borgstore_load_throughput{store=\"main\"} 2048.25\n\
             # TYPE borgstore_load_time counter\n\
             borgstore_load_time{store=\"main\"} 0.5\n"
        );
        assert_eq!(render(&[]), "");
    }

    #[test]
    fn counters_and_gauges() {
        for key in ["load_calls", "store_volume", "hash_time", "cache_hits", "cache_misses", "cache_errors"] {
            assert_eq!(metric_type(&metric_name(key)), "counter", "{key}");
        }
        for key in ["load_throughput", "cache_hit_ratio", "cache_disabled", "calls_total"] {
            assert_eq!(metric_type(&metric_name(key)), "gauge", "{key}");
        }
    }

    #[test]
    fn names_are_sanitized_and_labels_escaped() {
        assert_eq!(metric_name("load_calls"), "borgstore_load_calls");
        assert_eq!(metric_name("Odd-key.x y/ü:1"), "borgstore_Odd_key_x_y___1");
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        // Two keys that sanitize alike give one series per store, the first key's value.
        let st = stats(&[("a-b", StatValue::Int(1)), ("a_b", StatValue::Int(2))]);
        assert_eq!(render(&[("s\"1".into(), st)]), "# TYPE borgstore_a_b gauge\nborgstore_a_b{store=\"s\\\"1\"} 1\n");
    }

    #[test]
    fn special_floats() {
        assert_eq!(sample(StatValue::Float(f64::NAN)), "NaN");
        assert_eq!(sample(StatValue::Float(f64::INFINITY)), "+Inf");
        assert_eq!(sample(StatValue::Float(f64::NEG_INFINITY)), "-Inf");
        assert_eq!(sample(StatValue::Float(1e-7)), "0.0000001");
        assert_eq!(sample(StatValue::Int(-3)), "-3");
    }
}
