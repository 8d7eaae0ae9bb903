//! The local cluster `bench-harness e2e` drives: `reckon init`, one `reckon node` child process
//! per validator on loopback in a temp dir, their client files and digests. Children are killed
//! on every exit path (Drop).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use engine::client::{Client, ClientFile};
use engine::node::config::NodeConfig;

/// Bounded wait for the cluster to answer status and commit.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// The institutions `reckon init` is given.
pub(crate) const INSTITUTIONS: &str = "webank,huarui,luoyang,changsha";

/// Child node processes in a temp dir; killed on drop.
pub(crate) struct LocalCluster {
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl LocalCluster {
    /// Stops the nodes (SIGKILL) and copies their logs (`node-<i>.log`: the slow-request and
    /// slow-block lines among them) into `dest`, before the temporary directory goes.
    pub(crate) fn stop_keeping_logs(mut self, dest: &std::path::Path) -> Result<(), String> {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        for i in 0..self.children.len() {
            let name = format!("node-{i}.log");
            std::fs::copy(self.dir.path().join(&name), dest.join(&name))
                .map_err(|e| format!("copy {name}: {e}"))?;
        }
        Ok(())
    }

    pub(crate) fn out(&self) -> PathBuf {
        self.dir.path().join("consortium")
    }

    pub(crate) fn start(nodes: usize, tune: &Tuning) -> Result<LocalCluster, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let bin = exe.with_file_name("reckon");
        if !bin.exists() {
            return Err(format!(
                "{} not found: build it (cargo build --release --bin reckon)",
                bin.display()
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let mut cluster = LocalCluster {
            dir,
            children: Vec::new(),
        };
        let base_port = free_base_port(nodes)?;
        let status = Command::new(&bin)
            .args(["init", "--nodes", &nodes.to_string(), "--out"])
            .arg(cluster.out())
            .args(["--institutions", INSTITUTIONS])
            .args(["--base-port", &base_port.to_string()])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("reckon init: {e}"))?;
        if !status.success() {
            return Err(format!("reckon init failed: {status}"));
        }
        for i in 0..nodes {
            tune.apply(&cluster.out().join(format!("node-{i}.toml")))?;
        }
        for i in 0..nodes {
            let log_path = cluster.dir.path().join(format!("node-{i}.log"));
            let log = std::fs::File::create(&log_path).map_err(|e| format!("log: {e}"))?;
            let child = Command::new(&bin)
                .args(["node", "--config"])
                .arg(cluster.out().join(format!("node-{i}.toml")))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("spawn reckon node: {e}"))?;
            cluster.children.push(child);
        }
        cluster.wait_ready(nodes)?;
        Ok(cluster)
    }

    /// Waits (bounded) until every node answers status at height >= 2.
    fn wait_ready(&mut self, nodes: usize) -> Result<(), String> {
        let file = ClientFile::load(&self.out().join("clients/institution-0.toml"))
            .map_err(|e| e.to_string())?;
        let tls = file.tls().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let height = |addr: SocketAddr| -> Option<u64> {
            let mut client = Client::connect(addr, &tls).ok()?;
            client.timeout = Duration::from_secs(2);
            client.status().ok()?.get("height")?.as_u64()
        };
        loop {
            let ready = file.nodes.iter().filter(|a| height(**a).unwrap_or(0) >= 2);
            if ready.count() == nodes {
                return Ok(());
            }
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("node {i} exited early: {status}"));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("cluster not ready after {STARTUP_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every node's executed height and ledger digest (None for a node that does not answer).
    pub(crate) fn digests(&self) -> Result<Vec<Option<(u64, String)>>, String> {
        let file = ClientFile::load(&self.out().join("clients/institution-0.toml"))
            .map_err(|e| e.to_string())?;
        let tls = file.tls().map_err(|e| e.to_string())?;
        Ok(file
            .nodes
            .iter()
            .map(|addr| {
                let mut client = Client::connect(*addr, &tls).ok()?;
                client.timeout = Duration::from_secs(2);
                let status = client.status().ok()?;
                let height = status.get("height")?.as_u64()?;
                Some((height, status.get("ledger_digest")?.as_str()?.to_string()))
            })
            .collect())
    }
}

/// What `e2e` changes in each node's config file after `reckon init`.
pub(crate) struct Tuning {
    pub transfers_capacity: usize,
    pub verify_deadline_us: Option<u64>,
    pub batch_deadline_ms: Option<u64>,
    /// `--node-set`: (SECTION.KEY, TOML value), applied last.
    pub node_set: Vec<(String, String)>,
}

impl Tuning {
    fn apply(&self, path: &std::path::Path) -> Result<(), String> {
        NodeConfig::edit(path, |config| {
            config.ledger.transfers_capacity = self.transfers_capacity;
            if let Some(us) = self.verify_deadline_us {
                config.verify.batch_deadline_us = us;
            }
            if let Some(ms) = self.batch_deadline_ms {
                config.consensus.batch_deadline_ms = ms;
            }
            // Every request slower than the target's p99 is logged with its phases.
            config.log.slow_request_ms = crate::e2e::TARGET_P99_MS as u64;
            config.log.slow_block_ms = 30;
        })
        .map_err(|e| e.to_string())?;
        set_keys(path, &self.node_set)
    }
}

/// Sets `SECTION.KEY = VALUE` (VALUE in TOML) in a node's config file, then loads it back: an
/// unknown key or a bad value fails here with the node config's own error.
fn set_keys(path: &std::path::Path, keys: &[(String, String)]) -> Result<(), String> {
    if keys.is_empty() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut doc: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for (key, value) in keys {
        let (section, name) = key
            .split_once('.')
            .ok_or_else(|| format!("--node-set {key}: expected SECTION.KEY"))?;
        let parsed: toml::Table = format!("v = {value}")
            .parse()
            .map_err(|e| format!("--node-set {key}={value}: not a TOML value: {e}"))?;
        let value = parsed.get("v").cloned().ok_or("parsed above")?;
        let table = doc
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("--node-set {key}: `{section}` is not a section"))?;
        table.insert(name.to_string(), value);
    }
    let text = toml::to_string(&doc).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    NodeConfig::load(path)
        .map(|_| ())
        .map_err(|e| format!("--node-set: {e}"))
}

/// A base port P with P+i, P+100+i, P+200+i free for i < n (probed, then released).
fn free_base_port(n: usize) -> Result<u16, String> {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize)
        .unwrap_or(0)
        ^ std::process::id() as usize;
    engine::net::ports::free_base_port(n, seed).ok_or_else(|| "no free port range".into())
}

#[cfg(test)]
mod tests {
    use super::set_keys;
    use engine::node::config::NodeConfig;
    use engine::node::init::{init, InitOptions};

    fn one_node_config(dir: &std::path::Path) -> std::path::PathBuf {
        let out = dir.join("c");
        init(&InitOptions {
            nodes: 1,
            institutions: vec!["a".into()],
            out: out.clone(),
            base_port: 40_000,
            chain_id: 1,
        })
        .expect("init");
        out.join("node-0.toml")
    }

    #[test]
    fn node_set_changes_one_key_and_refuses_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = one_node_config(dir.path());
        let set = |k: &str, v: &str| set_keys(&path, &[(k.to_string(), v.to_string())]);
        set("consensus.unreachable_leader_timeout_ms", "0").expect("a known key");
        let config = NodeConfig::load(&path).expect("loads");
        assert_eq!(config.consensus.unreachable_leader_timeout_ms, 0);
        let unknown = set("consensus.no_such_key", "1").expect_err("unknown");
        assert!(unknown.contains("no_such_key"), "{unknown}");
        let bad = set("consensus.round_timeout_ms", "\"soon\"").expect_err("bad type");
        assert!(bad.contains("round_timeout_ms"), "{bad}");
    }
}
