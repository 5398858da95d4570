//! A real nginx on a spare loopback port, run from a config the test writes (no system
//! config, no root-owned paths), stopped on drop.

use crate::rest::{free_port, wait_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The nginx binary; panics with what to install when it is missing.
pub fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("nginx is not installed: apt-get install nginx-light (tests/run installs it)");
}

pub struct Nginx {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Nginx {
    /// Start nginx with `locations` (the inside of its one `server { }` block, where
    /// `{PORT}` is replaced by its port).
    pub fn start(locations: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        for d in ["logs", "tmp"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("nginx dirs");
        }
        // As root, nginx would switch its workers to an unprivileged user who cannot
        // reach our sockets; run them as ourselves.
        let user = if nix::unistd::getuid().is_root() { "user root root;" } else { "" };
        let tmp = dir.path().join("tmp");
        let conf = format!(
            r#"{user}
worker_processes 1;
daemon off;
pid {pid};
error_log {err} info;
events {{ worker_connections 256; }}
http {{
    access_log {acc};
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
{locations}
    }}
}}
"#,
            pid = dir.path().join("nginx.pid").display(),
            err = dir.path().join("logs/error.log").display(),
            acc = dir.path().join("logs/access.log").display(),
            tmp = tmp.display(),
            locations = locations.replace("{PORT}", &port.to_string()),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(nginx_binary())
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        wait_port(port, "nginx", &dir.path().join("logs/error.log"));
        Nginx { child, port, dir }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGQUIT,
        );
        let _ = self.child.wait();
    }
}
