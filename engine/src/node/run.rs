//! `reckon node`: load config, genesis and keys; restore state; start every stage on its pinned
//! thread; run until SIGTERM/SIGINT; then drain and stop.

use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::bounded;

use crate::consensus::bls::{BlsCrypto, VerifyCache};
use crate::consensus::{Config, Core, ValidatorIndex};
use crate::crypto::{load_key_file, BatchVerifier, KeyKind};
use crate::mempool::{Mempool, MempoolConfig};
use crate::net::{tls, IssuedCert, Server, ServerOptions};
use crate::storage::{BlockLog, LogConfig, WriteBackend};

use super::batches::BatchStore;
use super::config::NodeConfig;
use super::consensus_stage::{ConsensusStage, CONSENSUS_QUEUE_MAX, EXECUTE_QUEUE_COMMITS_MAX};
use super::dissemination::{Dissemination, DISSEMINATION_QUEUE_MAX};
use super::execute::{Execute, REPLY_QUEUE_BLOCKS_MAX};
use super::genesis::{Genesis, LoadedGenesis};
use super::ingress::Ingress;
use super::layout::{cores_available, pin_current, Layout, Stage};
use super::metrics::{Metrics, MetricsServer};
use super::peers::{run_dispatch, Peers};
use super::recover::restore;
use super::reply::Reply;
use super::state::Shared;
use super::verify::{Verify, QUERY_QUEUE_MAX};

/// Capacity of the queues from the client and peer servers into ingress and dispatch.
pub const INBOUND_QUEUE_MAX: usize = 4096;
/// How long shutdown waits for queued requests to commit before it stops anyway.
pub const DRAIN_MS_MAX: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Config(#[from] super::config::ConfigError),
    #[error("{0}")]
    Genesis(#[from] super::genesis::GenesisError),
    #[error("{what}: {message}")]
    Start { what: &'static str, message: String },
}

fn start_err(what: &'static str) -> impl Fn(String) -> NodeError {
    move |message| NodeError::Start { what, message }
}

fn spawn(
    name: &str,
    core: usize,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, NodeError> {
    let thread_name = name.to_string();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            if !pin_current(core) {
                tracing::warn!(thread = %thread_name, core, "could not pin thread; running unpinned");
            }
            f()
        })
        .map_err(|e| NodeError::Start {
            what: "spawning a thread",
            message: e.to_string(),
        })
}

fn read(path: &Path) -> Result<String, NodeError> {
    std::fs::read_to_string(path).map_err(|e| NodeError::Start {
        what: "reading a TLS file",
        message: format!("{}: {e}", path.display()),
    })
}

struct Keys {
    secret: [u8; 32],
    validator_keys: Vec<blst::min_sig::PublicKey>,
}

fn load_keys(config: &NodeConfig, genesis: &LoadedGenesis) -> Result<Keys, NodeError> {
    let pair = load_key_file(&config.files.bls_key, KeyKind::Validator)
        .map_err(|e| start_err("BLS key")(e.to_string()))?;
    let keys = genesis.genesis.validator_keys()?;
    let index = config.node.index as usize;
    let Some(mine) = keys.get(index) else {
        return Err(start_err("node.index")(format!(
            "{index} is not a genesis validator ({} validators)",
            keys.len()
        )));
    };
    if mine.to_bytes() != pair.public().to_bytes() {
        return Err(start_err("BLS key")(format!(
            "{} is not validator {index}'s key in the genesis",
            config.files.bls_key.display()
        )));
    }
    Ok(Keys {
        secret: pair.secret_bytes(),
        validator_keys: keys.iter().map(|k| *k.blst()).collect(),
    })
}

fn open_log(config: &NodeConfig) -> Result<BlockLog, NodeError> {
    let dir = config.node.data_dir.join("log");
    std::fs::create_dir_all(&dir)
        .map_err(|e| start_err("data_dir")(format!("{}: {e}", dir.display())))?;
    let log_config = LogConfig {
        segment_bytes: config.storage.segment_bytes,
        snapshot_every_blocks: config.storage.snapshot_every_blocks,
        write_backend: if config.storage.io_uring {
            WriteBackend::Auto
        } else {
            WriteBackend::Pwrite
        },
        ..LogConfig::default()
    };
    let log =
        BlockLog::open(&dir, log_config).map_err(|e| start_err("block log")(e.to_string()))?;
    tracing::info!(report = ?log.recovery_report(), write_path = ?log.write_path(), "block log opened");
    Ok(log)
}

/// Runs a node until a signal; returns after a clean drain.
pub fn run(config_path: &Path) -> Result<(), NodeError> {
    let config = NodeConfig::load(config_path)?;
    let genesis = Genesis::load(&config.files.genesis)?;
    let keys = load_keys(&config, &genesis)?;
    let g = &genesis.genesis;
    let layout = Layout::compute(cores_available())
        .and_then(|l| l.with_override(&config.layout))
        .map_err(|e| start_err("layout")(e.to_string()))?;
    tracing::info!(node = %config.node.name, %layout, "core layout");
    let metrics =
        Metrics::new(&config.node.name).map_err(|e| start_err("metrics")(e.to_string()))?;
    let metrics_server = MetricsServer::start(config.network.metrics_listen, metrics.clone())
        .map_err(|e| start_err("metrics")(e.to_string()))?;
    let own = IssuedCert {
        cert_pem: read(&config.files.tls_cert)?,
        key_pem: read(&config.files.tls_key)?,
    };
    let ca = read(&config.files.tls_ca)?;
    let server_tls = tls::server_config(&ca, &own).map_err(|e| start_err("TLS")(e.to_string()))?;
    let client_tls = tls::client_config(&ca, &own).map_err(|e| start_err("TLS")(e.to_string()))?;

    let mut mempool_config = MempoolConfig::with_institutions(g.institutions_count());
    mempool_config.requests_max = config.mempool.requests_max as u32;
    mempool_config.bytes_max = config.mempool.bytes_max as u64;
    mempool_config.per_institution_requests_max =
        config.mempool.per_institution_requests_max as u32;
    let shared = Arc::new(Shared::new(Mempool::new(mempool_config), metrics));
    let store = Arc::new(BatchStore::default());
    let log = open_log(&config)?;
    let consensus_dir = config.node.data_dir.join("consensus");
    let restored =
        restore(&log, g, &consensus_dir, &shared, &store).map_err(start_err("restore"))?;
    shared.set_executed(restored.executed_height, restored.ledger.digest());

    let registry = Arc::new(g.registry()?);
    let stop = Arc::new(AtomicBool::new(false));
    let verify_cores = layout.verify_cores.clone();
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(verify_cores.len())
            .thread_name(|i| format!("verify-{i}"))
            .start_handler(move |i| {
                pin_current(verify_cores[i % verify_cores.len()]);
            })
            .build()
            .map_err(|e| start_err("verify pool")(e.to_string()))?,
    );

    let (client_in_tx, client_in_rx) = bounded(INBOUND_QUEUE_MAX);
    let (peer_in_tx, peer_in_rx) = bounded(INBOUND_QUEUE_MAX);
    let (verify_tx, verify_rx) = bounded(config.verify.queue_requests_max);
    let (query_tx, query_rx) = bounded(QUERY_QUEUE_MAX);
    let (cons_tx, cons_rx) = bounded(CONSENSUS_QUEUE_MAX);
    let (diss_tx, diss_rx) = bounded(DISSEMINATION_QUEUE_MAX);
    let (exec_tx, exec_rx) = bounded(EXECUTE_QUEUE_COMMITS_MAX);
    let (reply_tx, reply_rx) = bounded(REPLY_QUEUE_BLOCKS_MAX);

    let me = config.node.index as ValidatorIndex;
    let peer_addrs: Vec<(u32, std::net::SocketAddr)> = config
        .network
        .peers
        .iter()
        .map(|p| (p.index, p.addr))
        .collect();
    let peers = Arc::new(
        Peers::spawn(me, g.validators.len(), &peer_addrs, client_tls)
            .map_err(start_err("peers"))?,
    );
    let peer_server = Server::bind(
        config.network.peer_listen,
        server_tls.clone(),
        ServerOptions::default(),
        peer_in_tx,
    )
    .map_err(|e| start_err("peer_listen")(format!("{}: {e}", config.network.peer_listen)))?;

    let mut threads = Vec::new();
    let (p, c, d, s) = (
        peers.clone(),
        cons_tx.clone(),
        diss_tx.clone(),
        stop.clone(),
    );
    threads.push(spawn(
        "peer-dispatch",
        layout.core_of(Stage::Ingress),
        move || run_dispatch(peer_in_rx, p, c, d, s),
    )?);

    let consensus_config = {
        let mut c = Config::new(genesis.consensus_chain_id(), g.validators.len(), me);
        c.round_timeout_ms = config.consensus.round_timeout_ms;
        c
    };
    let stage_parts = (
        consensus_dir,
        cons_rx,
        peers.clone(),
        exec_tx,
        diss_tx.clone(),
        shared.clone(),
        stop.clone(),
    );
    let recovered = restored.consensus;
    let consensus_thread = spawn("consensus", layout.core_of(Stage::Consensus), move || {
        let (dir, input, peers, execute, dissemination, shared, stop) = stage_parts;
        let secret = blst::min_sig::SecretKey::from_bytes(&keys.secret).expect("validated at load");
        let crypto = BlsCrypto::new(
            Some(secret),
            Rc::new(keys.validator_keys),
            VerifyCache::shared(),
        );
        let core = Core::new(consensus_config, crypto, recovered);
        ConsensusStage {
            core,
            dir,
            input,
            peers,
            execute,
            dissemination,
            shared,
            stop,
        }
        .run()
    })?;

    let execute = Execute {
        ledger: restored.ledger,
        log,
        commits: exec_rx,
        queries: query_rx,
        store: store.clone(),
        dissemination: diss_tx,
        reply: reply_tx,
        shared: shared.clone(),
        stop: stop.clone(),
    };
    let execute_thread = spawn("execute", layout.core_of(Stage::Execute), move || {
        execute.run()
    })?;
    let reply = Reply {
        input: reply_rx,
        shared: shared.clone(),
    };
    let reply_thread = spawn("reply", layout.core_of(Stage::Reply), move || reply.run())?;

    let dissemination = Dissemination {
        chain: genesis.consensus_chain_id(),
        batch_requests_max: config.consensus.batch_requests_max as u32,
        batch_bytes_max: config.consensus.batch_bytes_max as u64,
        batch_deadline: Duration::from_millis(config.consensus.batch_deadline_ms.max(1)),
        input: diss_rx,
        consensus: cons_tx,
        store,
        peers: peers.clone(),
        shared: shared.clone(),
        verifier: BatchVerifier::new(registry.clone(), g.chain_id),
        pool: pool.clone(),
        stop: stop.clone(),
    };
    threads.push(spawn(
        "dissemination",
        layout.core_of(Stage::Dissemination),
        move || dissemination.run(),
    )?);
    let verify = Verify {
        input: verify_rx,
        queries: query_tx,
        shared: shared.clone(),
        verifier: BatchVerifier::new(registry, g.chain_id),
        pool,
        batch_requests_max: config.verify.batch_requests_max,
        batch_deadline: Duration::from_micros(config.verify.batch_deadline_us),
        stop: stop.clone(),
    };
    threads.push(spawn(
        "verify",
        layout.core_of(Stage::Ingress),
        move || verify.run(),
    )?);
    let ingress = Ingress {
        input: client_in_rx,
        verify: verify_tx,
        shared: shared.clone(),
        peers: peers.clone(),
        chain_id: g.chain_id,
        node_name: config.node.name.clone(),
        genesis_hash: genesis.hash,
        stop: stop.clone(),
    };
    threads.push(spawn(
        "ingress",
        layout.core_of(Stage::Ingress),
        move || ingress.run(),
    )?);
    let client_server = Server::bind(
        config.network.client_listen,
        server_tls,
        ServerOptions::default(),
        client_in_tx,
    )
    .map_err(|e| start_err("client_listen")(format!("{}: {e}", config.network.client_listen)))?;
    tracing::info!(
        node = %config.node.name, index = me, client = %client_server.local_addr(), peer = %peer_server.local_addr(),
        metrics = %metrics_server.addr, chain_id = g.chain_id, height = restored.executed_height, "node started"
    );

    wait_for_signal(&shared, &peers, &stop)?;
    drain(&shared, &stop);
    client_server.shutdown();
    stop.store(true, Ordering::Release);
    for t in threads {
        let _ = t.join();
    }
    let _ = consensus_thread.join();
    let _ = execute_thread.join();
    let _ = reply_thread.join();
    peer_server.shutdown();
    if let Ok(peers) = Arc::try_unwrap(peers) {
        peers.shutdown();
    }
    metrics_server.stop();
    let (height, digest) = shared.executed();
    tracing::info!(height, digest = %format!("{digest:032x}"), "node stopped cleanly");
    Ok(())
}

fn wait_for_signal(shared: &Shared, peers: &Peers, stop: &AtomicBool) -> Result<(), NodeError> {
    let signal = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, signal.clone())
            .map_err(|e| start_err("signals")(e.to_string()))?;
    }
    while !signal.load(Ordering::Acquire) && !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        let up = peers.up();
        shared
            .figures
            .peers_up
            .store(up.len() as u64, Ordering::Relaxed);
    }
    tracing::info!("signal received: draining");
    Ok(())
}

/// Stops accepting submissions and waits (bounded) until everything queued has committed.
fn drain(shared: &Shared, stop: &AtomicBool) {
    shared.draining.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_millis(DRAIN_MS_MAX);
    while Instant::now() < deadline && !stop.load(Ordering::Acquire) {
        if shared.mempool.is_empty() && shared.pending_len() == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::warn!(
        pending = shared.pending_len(),
        mempool = shared.mempool.len(),
        "drain deadline reached; stopping with work queued"
    );
}
