//! Shared helpers for the workspace-level integration tests in `tests/tests/`: a cluster of real
//! `reckon node` processes on 127.0.0.1, made with `reckon init` in a temp dir. Children are
//! killed on drop; every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engine::client::{Client, ClientTls, Signer};

/// A base port P such that P+i, P+100+i, P+200+i are free for i < n (probed, then released).
pub fn free_base_port(n: usize) -> u16 {
    // Tests of one process run in parallel: a process-wide counter keeps their ranges apart.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let turn = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize)
        .unwrap_or(0);
    let seed = std::process::id() as usize ^ nanos ^ (turn * 4099);
    engine::net::ports::free_base_port(n, seed).expect("a free loopback port range")
}

/// Polls `check` every 100 ms until it returns Some or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Retries an exec that failed with ETXTBSY: a parallel test's fork can briefly hold the write
/// descriptor of our freshly copied binary (between its fork and exec). Bounded attempts.
fn retry_busy<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    const ATTEMPTS_MAX: usize = 100;
    for _ in 0..ATTEMPTS_MAX {
        match f() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other,
        }
    }
    f()
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub nodes: usize,
    pub base_port: u16,
    children: Vec<Option<Child>>,
}

impl Cluster {
    /// `reckon init` with `nodes` nodes and four banks; the binary is copied into the temp dir
    /// first, so another build overwriting the target dir cannot change it mid-test.
    pub fn init(bin: &Path, nodes: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let copy = dir.path().join("reckon");
        std::fs::copy(bin, &copy).expect("copy the reckon binary");
        let base_port = free_base_port(nodes);
        let out = dir.path().join("consortium");
        let status = retry_busy(|| {
            Command::new(&copy)
                .args(["init", "--nodes", &nodes.to_string(), "--out"])
                .arg(&out)
                .args(["--institutions", "webank,huarui,luoyang,changsha"])
                .args(["--base-port", &base_port.to_string()])
                .stdout(Stdio::null())
                .status()
        })
        .expect("run reckon init");
        assert!(status.success(), "reckon init failed");
        Cluster {
            dir,
            bin: copy,
            nodes,
            base_port,
            children: (0..nodes).map(|_| None).collect(),
        }
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path().join("consortium")
    }

    /// Replaces `from` with `to` in node `i`'s config file (e.g. a smaller snapshot period).
    pub fn edit_config(&self, i: usize, from: &str, to: &str) {
        let path = self.out().join(format!("node-{i}.toml"));
        let text = std::fs::read_to_string(&path).expect("read config");
        assert!(text.contains(from), "{from:?} not in node-{i}.toml");
        std::fs::write(&path, text.replace(from, to)).expect("write config");
    }

    /// Runs `reckon status` against node `i` with node 0's config; returns its stdout.
    pub fn status_cli(&self, i: usize) -> String {
        let output = Command::new(&self.bin)
            .args([
                "status",
                "--node",
                &self.client_addr(i).to_string(),
                "--config",
            ])
            .arg(self.out().join("node-0.toml"))
            .output()
            .expect("run reckon status");
        assert!(
            output.status.success(),
            "reckon status failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    pub fn start(&mut self, i: usize) {
        assert!(self.children[i].is_none(), "node {i} already running");
        let log =
            std::fs::File::create(self.dir.path().join(format!("node-{i}.log"))).expect("log file");
        let config = self.out().join(format!("node-{i}.toml"));
        let child = retry_busy(|| {
            Command::new(&self.bin)
                .args(["node", "--config"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log.try_clone()?)
                .spawn()
        })
        .expect("spawn reckon node");
        self.children[i] = Some(child);
    }

    pub fn start_all(&mut self) {
        (0..self.nodes).for_each(|i| self.start(i));
    }

    /// SIGKILL: no drain, no flush.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends node `i` a signal (SIGSTOP hangs it as a hung host would: its sockets stay open
    /// and its kernel keeps accepting bytes; SIGCONT resumes it). A no-op for a node not running.
    pub fn signal(&self, i: usize, signal: libc::c_int) {
        if let Some(child) = &self.children[i] {
            // SAFETY: kill(2) on a child pid we own and have not reaped; no memory is touched.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn terminate(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.children[i].take()?;
        // SAFETY: kill(2) on a child pid we own; no memory is touched.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let status = wait_until(timeout, || child.try_wait().ok().flatten());
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + 100 + i as u16))
    }

    pub fn client_tls(&self, institution: u32) -> ClientTls {
        let out = self.out();
        ClientTls::load(
            &out.join("tls/ca.pem"),
            &out.join(format!("tls/institution-{institution}.pem")),
            &out.join(format!("tls/institution-{institution}.key")),
        )
        .expect("client tls")
    }

    pub fn signer(&self, institution: u32) -> Signer {
        let key = self
            .out()
            .join(format!("keys/institution-{institution}.bls"));
        Signer::load(institution, 1, &key).expect("signer")
    }

    /// A client of `institution` connected to node `i`, retried until the node listens (bounded).
    pub fn client(&self, i: usize, institution: u32) -> Client {
        let tls = self.client_tls(institution);
        let addr = self.client_addr(i);
        wait_until(Duration::from_secs(20), || Client::connect(addr, &tls).ok())
            .unwrap_or_else(|| panic!("node {i} does not accept clients at {addr}"))
    }

    /// Node `i`'s status, if it answers within 2 s.
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let mut client = Client::connect(self.client_addr(i), &self.client_tls(0)).ok()?;
        client.timeout = Duration::from_secs(2);
        client.status().ok()
    }

    pub fn height(&self, i: usize) -> Option<u64> {
        self.status(i)?.get("height")?.as_u64()
    }

    /// Node `i`'s Prometheus metrics: GET /metrics over plain HTTP on its metrics port (`reckon
    /// init` puts it at base port + 200 + i), bounded by socket timeouts.
    pub fn metrics(&self, i: usize) -> String {
        use std::io::{Read, Write};
        let port = self.base_port + 200 + i as u16;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("request");
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    }

    /// The node's log so far (for assertion messages).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{i}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            self.kill9(i);
        }
    }
}
