//! Section `rest`: the Python borgstore REST client (store, load, info, list of 4 KiB
//! values) against the Python `borgstore-server-rest` and ours on the same workload, and
//! `wrk` on GET of one 4 KiB object against both.

use crate::common::Mode;
use std::collections::BTreeMap;

/// Python REST client against Python's server and ours; wrk GETs against both.
pub fn section(mode: Mode) {
    use borgstore_tests::python::{run_ok, Version};
    use borgstore_tests::rest::{request, Impl, RestServer};
    let n = mode.pick(20, 300, 2000);
    println!("== REST: Python borgstore REST client, 4 KiB values, {n} items (list: whole listings/s; fsync = off)\n");
    let mut rates: Vec<BTreeMap<String, f64>> = Vec::new();
    let mut wrk_rates = Vec::new();
    for which in [Impl::Python, Impl::Ours] {
        // Python's server does not flush; ours is compared on the same terms.
        let extra: &[&str] = if which == Impl::Ours { &["--fsync", "off"] } else { &[] };
        let server = RestServer::start(which, extra);
        let out = run_ok(Version::V070, "bench_rest.py", &[&server.url(None), "4096", &n.to_string()], &[]);
        rates.push(serde_json::from_str(&out).expect("bench_rest.py output"));
        assert_eq!(request(server.port, "POST", "/?cmd=create", None, &[], b"").status, 200);
        assert_eq!(request(server.port, "POST", "/data/obj", None, &[], &[7u8; 4096]).status, 200);
        let secs = mode.pick(1, 5, 10);
        wrk_rates.push(wrk(&format!("http://127.0.0.1:{}/data/obj", server.port), secs));
    }
    println!("{:<7} {:>16} {:>16} {:>8}", "op", "Python server", "our server", "ratio");
    for op in ["store", "load", "info", "list"] {
        let (p, o) = (rates[0][op], rates[1][op]);
        println!("{op:<7} {p:>16.0} {o:>16.0} {:>8.2}", o / p);
    }
    println!();
    match (&wrk_rates[0], &wrk_rates[1]) {
        (Ok(p), Ok(o)) => {
            println!("wrk, GET of one 4 KiB object, 2 threads, 16 connections: requests/s");
            println!("{:<7} {p:>16.0} {o:>16.0} {:>8.2}\n", "GET", o / p);
        }
        (Err(e), _) | (_, Err(e)) => println!("(no wrk numbers: {e})\n"),
    }
}

/// Requests/s of `wrk` GETting `url` for `secs` seconds.
fn wrk(url: &str, secs: usize) -> Result<f64, String> {
    let out = std::process::Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{secs}s"), "-H", "Accept: application/vnd.x.borgstore.rest.v1", url])
        .output()
        .map_err(|e| format!("wrk: {e} (apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("unexpected wrk output: {text}"))
}
