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

/// Transfers per second of workload each demo node's ledger is sized for at start. A ledger table
/// that doubles mid-run copies itself on every node's execute thread at the same height: with 4 Mi
/// reserved, runs that booked about 2.67 M operations stalled every request in flight for
/// 3.6-5.1 s (8 s with `--duration 30`; docs/CAPACITY.md, session 7), which puts the workload at
/// about 1.57 transfers per operation (inferred from where the stall fell, not counted). The
/// fastest demo measured made 126,850 operations/s, so by that ratio about 200,000 transfers/s;
/// this leaves a quarter more.
const DEMO_TRANSFERS_PER_S: usize = 250_000;
/// The least each node reserves (short runs).
const DEMO_TRANSFERS_MIN: usize = 1 << 20;

/// Transfers each demo node's ledger reserves for a run of `duration_s` seconds.
pub fn demo_transfers_capacity(duration_s: u64) -> usize {
    DEMO_TRANSFERS_PER_S
        .saturating_mul(duration_s as usize)
        .clamp(DEMO_TRANSFERS_MIN, engine::ledger::TRANSFERS_MAX)
}

impl Consortium {
    /// Writes the consortium (`reckon init --nodes 4 --institutions webank,...`) and starts it.
    pub fn start(stop: &Arc<AtomicBool>, transfers_capacity: usize) -> Result<Consortium, String> {
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
                c.ledger.transfers_capacity = transfers_capacity
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The default run reserves past the 4 Mi transfers at which runs of session 7 stalled, short
    /// runs keep a floor, and no duration overflows the ledger's bound.
    #[test]
    fn the_ledger_is_reserved_for_the_whole_run() {
        assert!(demo_transfers_capacity(20) > 4 << 20);
        assert!(demo_transfers_capacity(40) > demo_transfers_capacity(20));
        assert_eq!(demo_transfers_capacity(1), DEMO_TRANSFERS_MIN);
        assert_eq!(
            demo_transfers_capacity(u64::MAX),
            engine::ledger::TRANSFERS_MAX
        );
    }
}
