//! `reckon node`: load config, genesis and keys; restore state; start every stage on its pinned
//! thread; run until SIGTERM/SIGINT; then drain and stop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, Receiver, Sender};

use crate::consensus::validator_crypto::{ValidatorCrypto, VerifyCache};
use crate::consensus::{Config, Core, ValidatorIndex};
use crate::crypto::{load_validator_key, BatchVerifier, Registry, ValidatorKey, ValidatorSet};
use crate::mempool::{Mempool, MempoolConfig};
use crate::net::{tls, Inbound, IssuedCert, Server, ServerOptions};
use crate::storage::{BlockLog, Cipher, EncryptionConfig, LogConfig, WriteBackend};

use super::batches::BatchStore;
use super::config::NodeConfig;
use super::consensus_stage::{
    Commit, ConsensusIn, ConsensusStage, CONSENSUS_QUEUE_MAX, EXECUTE_QUEUE_COMMITS_MAX,
};
use super::dissemination::{Dissemination, DisseminationIn, DISSEMINATION_QUEUE_MAX};
use super::execute::{
    Execute, ExecutedBlock, LogRead, LOG_FETCH_QUEUE_MAX, REPLY_QUEUE_BLOCKS_MAX,
};
use super::genesis::{Genesis, LoadedGenesis};
use super::ingress::{Ingress, VerifyJob};
use super::layout::{cores_available, pin_current, Layout, Stage};
use super::metrics::{Metrics, MetricsServer};
use super::peers::{run_dispatch, Peers};
use super::recover::{restore, Restored};
use super::reply::Reply;
use super::serve_budget::ServeBudget;
use super::snapshots::SnapshotWriter;
use super::state::Shared;
use super::verify::{PeerBatchJob, Verify, PEER_BATCH_QUEUE_MAX, QUERY_QUEUE_MAX};

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
    pair: ValidatorKey,
    validators: Option<ValidatorSet>,
}

fn load_keys(config: &NodeConfig, genesis: &LoadedGenesis) -> Result<Keys, NodeError> {
    let pair = load_validator_key(&config.files.validator_key)
        .map_err(|e| start_err("validator key")(e.to_string()))?;
    let keys = genesis.genesis.validator_keys()?;
    let index = config.node.index as usize;
    let Some(mine) = keys.get(index) else {
        return Err(start_err("node.index")(format!(
            "{index} is not a genesis validator ({} validators)",
            keys.len()
        )));
    };
    if mine != pair.public() {
        return Err(start_err("validator key")(format!(
            "{} is not validator {index}'s key in the genesis",
            config.files.validator_key.display()
        )));
    }
    let validators =
        ValidatorSet::new(keys).map_err(|e| start_err("genesis validators")(e.to_string()))?;
    Ok(Keys {
        pair,
        validators: Some(validators),
    })
}

fn open_log(config: &NodeConfig) -> Result<BlockLog, NodeError> {
    let dir = config.node.data_dir.join("log");
    std::fs::create_dir_all(&dir)
        .map_err(|e| start_err("data_dir")(format!("{}: {e}", dir.display())))?;
    // At-rest encryption of block payloads when the config names a key file.
    let encryption = config
        .files
        .storage_key
        .as_ref()
        .map(|key_file| EncryptionConfig {
            key_file: key_file.clone(),
            cipher: Cipher::XChaCha20Poly1305,
        });
    let log_config = LogConfig {
        encryption,
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

/// Everything loaded and restored before any stage starts.
struct Loaded {
    config: NodeConfig,
    genesis: LoadedGenesis,
    keys: Keys,
    layout: Layout,
    server_tls: Arc<rustls::ServerConfig>,
    client_tls: Arc<rustls::ClientConfig>,
    shared: Arc<Shared>,
    store: Arc<BatchStore>,
    log: BlockLog,
    restored: Restored,
    registry: Arc<Registry>,
    pool: Arc<rayon::ThreadPool>,
}

fn verify_pool(layout: &Layout) -> Result<Arc<rayon::ThreadPool>, NodeError> {
    let cores = layout.verify_cores.clone();
    assert!(!cores.is_empty(), "the layout always has a verify core");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cores.len())
        .thread_name(|i| format!("verify-{i}"))
        .start_handler(move |i| {
            pin_current(cores[i % cores.len()]);
        })
        .build()
        .map_err(|e| start_err("verify pool")(e.to_string()))?;
    Ok(Arc::new(pool))
}

fn mempool(config: &NodeConfig, institutions: u32) -> Mempool<super::state::RequestBytes> {
    let mut m = MempoolConfig::with_institutions(institutions);
    m.requests_max = config.mempool.requests_max as u32;
    m.bytes_max = config.mempool.bytes_max as u64;
    m.per_institution_requests_max = config.mempool.per_institution_requests_max as u32;
    Mempool::new(m)
}

fn load(config_path: &Path) -> Result<(Loaded, MetricsServer), NodeError> {
    let config = NodeConfig::load(config_path)?;
    let genesis = Genesis::load(&config.files.genesis)?;
    let keys = load_keys(&config, &genesis)?;
    let layout = Layout::compute(cores_available())
        .and_then(|l| l.with_override(&config.layout))
        .map_err(|e| start_err("layout")(e.to_string()))?;
    tracing::info!(node = %config.node.name, %layout, "core layout");
    tracing::info!(allocator = %crate::allocator::purge(), "memory");
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
    let g = &genesis.genesis;
    let shared = Arc::new(Shared::new(
        mempool(&config, g.institutions_count()),
        metrics,
    ));
    let store = Arc::new(
        BatchStore::default().with_index_blocks(config.consensus.committed_window_blocks as u64),
    );
    let log = open_log(&config)?;
    let consensus_dir = config.node.data_dir.join("consensus");
    let window = config.consensus.committed_window_blocks;
    let restored = restore(
        &log,
        g,
        &consensus_dir,
        &config.ledger,
        window,
        &shared,
        &store,
    )
    .map_err(start_err("restore"))?;
    shared.set_executed(restored.executed_height, restored.ledger.digest());
    let registry = Arc::new(g.registry()?);
    let pool = verify_pool(&layout)?;
    let loaded = Loaded {
        config,
        genesis,
        keys,
        layout,
        server_tls,
        client_tls,
        shared,
        store,
        log,
        restored,
        registry,
        pool,
    };
    Ok((loaded, metrics_server))
}

/// Every stage queue, each with its named capacity.
struct Queues {
    client_in: (Sender<Inbound>, Receiver<Inbound>),
    peer_in: (Sender<Inbound>, Receiver<Inbound>),
    verify: (Sender<VerifyJob>, Receiver<VerifyJob>),
    peer_batches: (Sender<PeerBatchJob>, Receiver<PeerBatchJob>),
    query: (Sender<VerifyJob>, Receiver<VerifyJob>),
    consensus: (Sender<ConsensusIn>, Receiver<ConsensusIn>),
    dissemination: (Sender<DisseminationIn>, Receiver<DisseminationIn>),
    log_fetch: (Sender<LogRead>, Receiver<LogRead>),
    execute: (Sender<Vec<Commit>>, Receiver<Vec<Commit>>),
    reply: (Sender<ExecutedBlock>, Receiver<ExecutedBlock>),
}

impl Queues {
    fn new(config: &NodeConfig) -> Queues {
        Queues {
            client_in: bounded(INBOUND_QUEUE_MAX),
            peer_in: bounded(INBOUND_QUEUE_MAX),
            verify: bounded(config.verify.queue_requests_max),
            peer_batches: bounded(PEER_BATCH_QUEUE_MAX),
            query: bounded(QUERY_QUEUE_MAX),
            consensus: bounded(CONSENSUS_QUEUE_MAX),
            dissemination: bounded(DISSEMINATION_QUEUE_MAX),
            log_fetch: bounded(LOG_FETCH_QUEUE_MAX),
            execute: bounded(EXECUTE_QUEUE_COMMITS_MAX),
            reply: bounded(REPLY_QUEUE_BLOCKS_MAX),
        }
    }
}

/// A running node: what shutdown stops, in order.
struct Running {
    /// Front stages (stop at the stop flag): dispatch, dissemination, verify, ingress.
    front: Vec<JoinHandle<()>>,
    /// Back stages (drain their queues, then stop): consensus, execute, reply.
    back: Vec<JoinHandle<()>>,
    client_server: Server,
    peer_server: Server,
    peers: Arc<Peers>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

/// Starts the consensus thread (the core is built on it: its crypto is not `Send`).
fn spawn_consensus(
    l: &mut Loaded,
    q: &Queues,
    peers: &Arc<Peers>,
    stop: &Arc<AtomicBool>,
) -> Result<JoinHandle<()>, NodeError> {
    let g = &l.genesis.genesis;
    let mut cfg = Config::new(
        l.genesis.consensus_chain_id(),
        g.validators.len(),
        l.config.node.index as ValidatorIndex,
    );
    let c = &l.config.consensus;
    cfg.round_timeout_ms = c.round_timeout_ms;
    cfg.round_timeout_ms_max = c.round_timeout_ms_max;
    cfg.block_digests_max = c.block_batches_max;
    cfg.min_idle_block_interval_ms = c.min_idle_block_interval_ms;
    cfg.unreachable_leader_timeout_ms = c.unreachable_leader_timeout_ms;
    cfg.committed_window = c.committed_window_blocks;
    let recovered = l.restored.consensus.take();
    let pair = l.keys.pair.clone();
    let validators = l
        .keys
        .validators
        .take()
        .expect("the consensus stage starts once");
    let journal = l
        .restored
        .journal
        .take()
        .expect("the consensus stage starts once");
    let (input, execute, log_reads) = (
        q.consensus.1.clone(),
        q.execute.0.clone(),
        q.log_fetch.0.clone(),
    );
    let (peers, dissemination, shared, stop) = (
        peers.clone(),
        q.dissemination.0.clone(),
        l.shared.clone(),
        stop.clone(),
    );
    let store = l.store.clone();
    spawn("consensus", l.layout.core_of(Stage::Consensus), move || {
        let crypto = ValidatorCrypto::new(Some(pair), Rc::new(validators), VerifyCache::shared());
        let core = Core::new(cfg, crypto, recovered);
        ConsensusStage {
            core,
            journal,
            input,
            peers,
            execute,
            dissemination,
            log_reads,
            shared,
            stop,
            voted_at: BTreeMap::new(),
            sync_sent_at: None,
            store,
            watch: Default::default(),
        }
        .run()
    })
}

fn spawn_back(
    mut l: Loaded,
    q: &Queues,
    peers: &Arc<Peers>,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>, NodeError> {
    let consensus = spawn_consensus(&mut l, q, peers, stop)?;
    let pace = l.config.storage.snapshot_write_mib_per_s;
    let snapshots =
        SnapshotWriter::start(l.log.snapshot_store(), pace, l.shared.clone()).map_err(|e| {
            NodeError::Start {
                what: "spawning the snapshot writer",
                message: e.to_string(),
            }
        })?;
    let execute = Execute {
        ledger: l.restored.ledger,
        log: l.log,
        snapshots,
        commits: q.execute.1.clone(),
        queries: q.query.1.clone(),
        log_reads: q.log_fetch.1.clone(),
        store: l.store.clone(),
        peers: peers.clone(),
        chain: l.genesis.consensus_chain_id(),
        reply: q.reply.0.clone(),
        shared: l.shared.clone(),
        stop: stop.clone(),
        slow_block: (l.config.log.slow_block_ms > 0)
            .then(|| Duration::from_millis(l.config.log.slow_block_ms)),
        serve_budget: ServeBudget::new(
            l.config.storage.peer_log_serve_mib_per_s,
            l.genesis.genesis.validators.len(),
        ),
    };
    let execute = spawn("execute", l.layout.core_of(Stage::Execute), move || {
        execute.run()
    })?;
    let reply = Reply {
        input: q.reply.1.clone(),
        shared: l.shared.clone(),
        slow_request: (l.config.log.slow_request_ms > 0)
            .then(|| Duration::from_millis(l.config.log.slow_request_ms)),
    };
    let reply = spawn("reply", l.layout.core_of(Stage::Reply), move || reply.run())?;
    Ok(vec![consensus, execute, reply])
}

fn spawn_front(
    l: &Loaded,
    q: &Queues,
    peers: &Arc<Peers>,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>, NodeError> {
    let (c, g) = (&l.config, &l.genesis.genesis);
    let ingress_core = l.layout.core_of(Stage::Ingress);
    let (rx, p, cs, ds, s) = (
        q.peer_in.1.clone(),
        peers.clone(),
        q.consensus.0.clone(),
        q.dissemination.0.clone(),
        stop.clone(),
    );
    let dispatch = spawn("peer-dispatch", ingress_core, move || {
        run_dispatch(rx, p, cs, ds, s)
    })?;
    let dissemination = Dissemination {
        chain: l.genesis.consensus_chain_id(),
        batch_requests_max: c.consensus.batch_requests_max as u32,
        batch_bytes_max: c.consensus.batch_bytes_max as u64,
        batch_deadline: Duration::from_millis(c.consensus.batch_deadline_ms.max(1)),
        input: q.dissemination.1.clone(),
        consensus: q.consensus.0.clone(),
        store: l.store.clone(),
        log_fetches: q.log_fetch.0.clone(),
        peers: peers.clone(),
        shared: l.shared.clone(),
        verify: q.peer_batches.0.clone(),
        stop: stop.clone(),
    };
    let dissemination = spawn(
        "dissemination",
        l.layout.core_of(Stage::Dissemination),
        move || dissemination.run(),
    )?;
    let verify = Verify {
        input: q.verify.1.clone(),
        peer_batches: q.peer_batches.1.clone(),
        queries: q.query.0.clone(),
        consensus: q.consensus.0.clone(),
        dissemination: q.dissemination.0.clone(),
        store: l.store.clone(),
        shared: l.shared.clone(),
        verifier: BatchVerifier::new(l.registry.clone(), g.chain_id),
        pool: l.pool.clone(),
        batch_requests_max: c.verify.batch_requests_max,
        batch_deadline: Duration::from_micros(c.verify.batch_deadline_us),
        peer_batch_wait: Duration::from_micros(c.verify.peer_batch_wait_us),
        stop: stop.clone(),
    };
    // The window loop runs on a worker of the verify pool (this thread only waits for it): a
    // window's checks then start on the thread that closed it, and the pool's other workers
    // steal from it only when it is big enough to split. Handing each window to the pool from
    // outside cost two thread wake-ups per window, which on a loaded host took longer than
    // checking the one or two signatures most windows hold.
    let pool = l.pool.clone();
    let verify = spawn("verify", ingress_core, move || {
        pool.install(|| verify.run())
    })?;
    let ingress = Ingress {
        input: q.client_in.1.clone(),
        verify: q.verify.0.clone(),
        shared: l.shared.clone(),
        peers: peers.clone(),
        chain_id: g.chain_id,
        node_name: c.node.name.clone(),
        genesis_hash: l.genesis.hash,
        stop: stop.clone(),
    };
    let ingress = spawn("ingress", ingress_core, move || ingress.run())?;
    Ok(vec![dispatch, dissemination, verify, ingress])
}

fn start(l: Loaded) -> Result<Running, NodeError> {
    let q = Queues::new(&l.config);
    let stop = Arc::new(AtomicBool::new(false));
    let network = l.config.network.clone();
    let me = l.config.node.index as ValidatorIndex;
    let addrs: Vec<(u32, SocketAddr)> = network.peers.iter().map(|p| (p.index, p.addr)).collect();
    let validators = l.genesis.genesis.validators.len();
    let peers = Arc::new(
        Peers::spawn(
            me,
            validators,
            &addrs,
            l.client_tls.clone(),
            l.config.consensus.peer_silence_ms,
        )
        .map_err(start_err("peers"))?,
    );
    let peer_server = Server::bind(
        network.peer_listen,
        l.server_tls.clone(),
        ServerOptions::default(),
        q.peer_in.0.clone(),
    )
    .map_err(|e| start_err("peer_listen")(format!("{}: {e}", network.peer_listen)))?;
    let front = spawn_front(&l, &q, &peers, &stop)?;
    let (shared, server_tls, height) = (
        l.shared.clone(),
        l.server_tls.clone(),
        l.restored.executed_height,
    );
    let (name, chain_id) = (l.config.node.name.clone(), l.genesis.genesis.chain_id);
    let back = spawn_back(l, &q, &peers, &stop)?;
    let client_server = Server::bind(
        network.client_listen,
        server_tls,
        ServerOptions::default(),
        q.client_in.0.clone(),
    )
    .map_err(|e| start_err("client_listen")(format!("{}: {e}", network.client_listen)))?;
    tracing::info!(node = %name, index = me, client = %client_server.local_addr(), peer = %peer_server.local_addr(), chain_id, height, "node started");
    Ok(Running {
        front,
        back,
        client_server,
        peer_server,
        peers,
        shared,
        stop,
    })
}

/// Stops accepting, stops the front stages, lets the back stages drain, joins everything.
fn stop(r: Running) {
    r.client_server.shutdown();
    r.stop.store(true, Ordering::Release);
    for t in r.front.into_iter().chain(r.back) {
        if t.join().is_err() {
            tracing::error!("a stage thread panicked");
        }
    }
    r.peer_server.shutdown();
    if let Ok(peers) = Arc::try_unwrap(r.peers) {
        peers.shutdown();
    }
}

/// Runs a node until a signal; returns after a clean drain.
pub fn run(config_path: &Path) -> Result<(), NodeError> {
    let (loaded, metrics_server) = load(config_path)?;
    let running = start(loaded)?;
    let shared = running.shared.clone();
    wait_for_signal(&shared, &running.peers, &running.stop)?;
    drain(&shared, &running.stop);
    stop(running);
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
