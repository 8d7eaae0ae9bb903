//! `reckon demo`: a 4-node consortium in a temporary directory, run as child processes of this
//! binary, killed on every exit path (Drop).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::client::{Client, ClientFile};
use engine::net::ports;
use engine::node::config::NodeConfig;
use engine::node::init::{init, InitOptions};

pub const NODES: usize = 4;
pub const BANKS: [&str; 4] = ["webank", "huarui", "luoyang", "changsha"];
/// Longest wait for every node to answer status.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a node to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// The running consortium: its directory and node processes.
pub struct Consortium {
    pub dir: PathBuf,
    pub base_port: u16,
    children: Vec<Option<Child>>,
    /// Set once the run succeeded: the directory is removed on drop (kept otherwise, for logs).
    pub remove_dir: bool,
}

/// A base port P such that P+i, P+100+i, P+200+i are free for i < NODES.
fn free_base_port() -> Result<u16, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize)
        .unwrap_or(0);
    ports::free_base_port(NODES, std::process::id() as usize ^ nanos).ok_or_else(|| {
        format!(
            "no free loopback port range after {} probes",
            ports::PORT_PROBES_MAX
        )
    })
}

fn temp_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("reckon-demo-{}-{nanos}", std::process::id()))
}

/// Transfers each demo node's ledger is sized for at start: the 20 s run books about 3 M, and a
/// table that doubles mid-run copies itself on the execute thread (a latency spike).
const DEMO_TRANSFERS_CAPACITY: usize = 4 << 20;

impl Consortium {
    /// Writes the consortium (`reckon init --nodes 4 --institutions webank,...`) and starts it.
    pub fn start(stop: &Arc<AtomicBool>) -> Result<Consortium, String> {
        let dir = temp_dir();
        let base_port = free_base_port()?;
        let options = InitOptions {
            nodes: NODES,
            institutions: BANKS.iter().map(|s| s.to_string()).collect(),
            out: dir.clone(),
            base_port,
            chain_id: 1,
        };
        init(&options).map_err(|e| format!("init {}: {e}", dir.display()))?;
        for i in 0..NODES {
            NodeConfig::edit(&dir.join(format!("node-{i}.toml")), |c| {
                c.ledger.transfers_capacity = DEMO_TRANSFERS_CAPACITY
            })
            .map_err(|e| e.to_string())?;
        }
        let mut consortium = Consortium {
            dir,
            base_port,
            children: Vec::new(),
            remove_dir: false,
        };
        let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
        for i in 0..NODES {
            let child = consortium.spawn(&exe, i)?;
            consortium.children.push(Some(child));
        }
        consortium.wait_ready(stop)?;
        Ok(consortium)
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node-{i}.log"))
    }

    fn spawn(&self, exe: &Path, i: usize) -> Result<Child, String> {
        let log = std::fs::File::create(self.log_path(i))
            .map_err(|e| format!("{}: {e}", self.log_path(i).display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        Command::new(exe)
            .arg("node")
            .arg("--config")
            .arg(self.dir.join(format!("node-{i}.toml")))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("node {i} did not start: {e}"))
    }

    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base_port + 100 + i as u16))
    }

    pub fn client_file(&self, institution: u32) -> Result<ClientFile, String> {
        let path = self
            .dir
            .join(format!("clients/institution-{institution}.toml"));
        ClientFile::load(&path).map_err(|e| e.to_string())
    }

    /// Node `i`'s status JSON (None if it does not answer).
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let tls = self.client_file(0).ok()?.tls().ok()?;
        let mut client = Client::connect(self.client_addr(i), &tls).ok()?;
        client.timeout = Duration::from_secs(2);
        client.status().ok()
    }

    /// Waits (bounded) until every node answers status and has committed a block.
    fn wait_ready(&mut self, stop: &AtomicBool) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut ready = [false; NODES];
        while Instant::now() < deadline {
            if stop.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            for (i, done) in ready.iter_mut().enumerate() {
                self.check_alive(i)?;
                if !*done {
                    *done = self
                        .status(i)
                        .is_some_and(|s| s["height"].as_u64().unwrap_or(0) >= 1);
                }
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let i = ready.iter().position(|r| !r).unwrap_or(0);
        Err(format!(
            "node {i} did not answer status within {START_TIMEOUT:?}; its log: {}",
            self.log_path(i).display()
        ))
    }

    /// Fails if node `i` has exited.
    pub fn check_alive(&mut self, i: usize) -> Result<(), String> {
        let log = self.log_path(i);
        if let Some(Some(child)) = self.children.get_mut(i) {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "node {i} exited ({status}); its log: {}",
                    log.display()
                ));
            }
        }
        Ok(())
    }

    fn stop_all(&mut self) {
        for child in self.children.iter_mut().flatten() {
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for slot in self.children.iter_mut() {
            if let Some(mut child) = slot.take() {
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Consortium {
    fn drop(&mut self) {
        self.stop_all();
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
