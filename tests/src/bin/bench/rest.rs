//! Section `rest`: the REST protocol, two ways.
//!
//! 1. Drop-in comparison: the Python borgstore REST client (store, load, info, list of
//!    4 KiB values) against Python's `borgstore-server-rest` and ours on the same
//!    workload, and `wrk` GETs of one 4 KiB object against both.
//! 2. The REST front end of borgstored (`--rest`, Basic auth, fsync off) against the
//!    machine: GET of a 4 KiB object vs nginx serving the very same file statically
//!    (wrk, same threads and connections for both); PUT of 4 KiB values vs raw file
//!    stores on as many threads as connections; GET of 8 MiB values on one connection vs
//!    the in-process engine loading them (and vs nginx serving them, same client).

use crate::common::{keys, make_dirs_for, nested, BenchDaemon, Mode, Results, REST_AUTH};
use crate::ipc::engine_run;
use crate::limits::{nginx_static, raw_fs, settle_writes, wrk, HttpLoad};
use borgstore_tests::python::{run_ok, Version};
use borgstore_tests::rest::{request, Impl, RestServer};
use std::collections::BTreeMap;

/// wrk's threads and connections for every 4 KiB GET line.
const WRK_THREADS: usize = 2;
const WRK_CONNS: usize = 16;

pub async fn section(d: &BenchDaemon, mode: Mode, res: &mut Results) {
    python_clients(mode);
    daemon_vs_machine(d, mode, res).await;
}

/// Python REST client against Python's server and ours; wrk GETs against both.
fn python_clients(mode: Mode) {
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
        wrk_rates.push(wrk(&format!("http://127.0.0.1:{}/data/obj", server.port), WRK_THREADS, WRK_CONNS, secs, None));
    }
    println!("{:<7} {:>16} {:>16} {:>8}", "op", "Python server", "our server", "ratio");
    for op in ["store", "load", "info", "list"] {
        let (p, o) = (rates[0][op], rates[1][op]);
        println!("{op:<7} {p:>16.0} {o:>16.0} {:>8.2}", o / p);
    }
    println!();
    match (&wrk_rates[0], &wrk_rates[1]) {
        (Ok(p), Ok(o)) => {
            println!("wrk, GET of one 4 KiB object, {WRK_THREADS} threads, {WRK_CONNS} connections: requests/s");
            println!("{:<7} {p:>16.0} {o:>16.0} {:>8.2}\n", "GET", o / p);
        }
        (Err(e), _) | (_, Err(e)) => println!("(no wrk numbers: {e})\n"),
    }
}

/// One line of the table: what, ours, the limit, what the limit is.
fn line(what: &str, ours: f64, limit: f64, limit_is: &str) {
    println!("{what:<34} {ours:>9.0} {limit:>9.0} {:>6.2}  {limit_is}", ours / limit);
}

async fn daemon_vs_machine(d: &BenchDaemon, mode: Mode, res: &mut Results) {
    let port = d.rest_port;
    let auth = Some(REST_AUTH);
    let n = mode.pick(20, 500, 3000);
    let big_n = mode.pick(2, 8, 40);
    println!("== REST front end of borgstored (--rest, Basic auth, fsync = off) vs the machine; requests/s\n");
    println!("{:<34} {:>9} {:>9} {:>6}  limit", "", "ours", "limit", "ratio");
    let fresh = || {
        let _ = request(port, "DELETE", "/rest/?cmd=destroy", auth, &[], b"");
        assert_eq!(request(port, "POST", "/rest/?cmd=create", auth, &[], b"").status, 200);
    };
    let url = |k: &str| format!("/rest/data/{}", nested(k));
    let ks = keys(n);
    let paths: Vec<String> = ks.iter().map(|k| url(k)).collect();
    let small = vec![0x5au8; 4096];
    let put = |conns: usize, paths: &[String], body: &[u8]| {
        HttpLoad { port, method: "POST", paths, body, conns, auth, expect_len: None }.run()
    };

    // PUT: a fresh store each time, as the raw stores get a fresh directory.
    for conns in [WRK_CONNS, 1] {
        let raw = raw_fs(&ks, 4096, conns, 1)["store"];
        fresh();
        // As for the raw stores: into directories that exist.
        make_dirs_for(&d.store_dir("rest").join("data"), &ks);
        settle_writes();
        let ours = put(conns, &paths, &small);
        line(
            &format!("PUT 4 KiB, {conns} conn."),
            ours,
            raw,
            &format!("raw fs store, {conns} thread{}", if conns == 1 { "" } else { "s" }),
        );
        if conns == WRK_CONNS {
            res.set("rest/put4k", ours);
            res.set("rest/put4k/raw", raw);
        }
    }

    // GET of one 4 KiB object: ours, and nginx serving its file.
    let nginx = nginx_static("rest", &d.store_dir("rest"));
    let secs = mode.pick(1, 5, 10);
    let ours = wrk(&format!("http://127.0.0.1:{port}{}", paths[0]), WRK_THREADS, WRK_CONNS, secs, auth);
    let static_ = wrk(&format!("http://127.0.0.1:{}{}", nginx.port, paths[0]), WRK_THREADS, WRK_CONNS, secs, None);
    match (ours, static_) {
        (Ok(o), Ok(s)) => {
            let what = format!("GET 4 KiB, wrk {WRK_THREADS} thr. {WRK_CONNS} conn.");
            line(&what, o, s, "nginx static, same file, same wrk");
            res.set("rest/get4k", o);
            res.set("rest/get4k/nginx", s);
        }
        (Err(e), _) | (_, Err(e)) => println!("(no GET 4 KiB numbers: {e})"),
    }

    // GET of 8 MiB values on one connection: vs the in-process engine, and vs nginx.
    fresh();
    let big = vec![0x5au8; 8 << 20];
    let big_paths = &paths[..big_n.min(paths.len())];
    put(1, big_paths, &big);
    let get = |port: u16| HttpLoad {
        port,
        method: "GET",
        paths: big_paths,
        body: b"",
        conns: 1,
        auth,
        expect_len: Some(big.len()),
    };
    let engine = engine_run(8 << 20, big_n, 1).await["load"];
    let ours = get(port).run();
    let static_ = get(nginx.port).run();
    line("GET 8 MiB, 1 conn.", ours, engine, "in-process engine load, 1 thread");
    line("GET 8 MiB, 1 conn.", ours, static_, "nginx static, same files, same client");
    res.set("rest/get8m", ours);
    res.set("rest/get8m/engine", engine);
    let _ = request(port, "DELETE", "/rest/?cmd=destroy", auth, &[], b"");
    println!();
}
