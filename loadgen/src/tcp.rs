//! `--target tcp`: drives a real cluster made by `reckon init` over mutual-TLS client connections.
//!
//! Design (docs/LOADGEN.md, "The TCP target"):
//! - mapping: the same `engine_map::Mapper` as the inproc target turns each loadgen batch into
//!   homogeneous engine requests (one operation, one requester); `outbox` numbers them in apply
//!   order and signs each once with the requester's key from `reckon init`
//!   (`signing::Keyring::from_files`), at send time or, for the first N, before the run
//!   (`TcpTarget::presign`: the generator shares the machine's cores with the nodes);
//! - connections: every institution's client file (`clients/institution-<id>.toml`) is loaded; a
//!   node binds a connection to the institution of its certificate, so connection j serves
//!   institution `j mod institutions` on node `(j / institutions) mod nodes`: every institution
//!   reaches every node, and its requests go round-robin over its connections;
//! - ordering (`sched`): a cluster may commit requests that are in flight together in any order,
//!   so a request is sent only when it commutes with every request in flight and every earlier
//!   request still waiting (`engine_map::ConflictIndex`); the ledger then sees every
//!   order-sensitive pair in trace order and each event gets the result it gets in process;
//! - statements get their period from the commit timestamps of the replies (`sched`), so they
//!   reconcile as matched;
//! - one reader thread per connection decodes frames into a channel; replies are correlated by
//!   (institution, request_id). A node-level rejection (`busy`, ...), a timeout or a lost
//!   connection fails the batch (`Outcome::Failed`); ledger result codes are counted per loadgen
//!   event (`record_results`, `outcome_of`). A bad frame never panics.

pub mod outbox;
mod sched;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::client::ClientFile;
use engine::net::frame::FRAME_KIND_NET_ERROR;
use engine::net::{ConnectOptions, Connection, FrameWriter};
use engine::node::init::GENESIS_LEDGER;
use engine::node::protocol::NodeFrame;
use rustls::pki_types::ServerName;

use crate::driver::EventSource;
use crate::engine_map::{MapConfig, Mapper};
use crate::op::{Op, TraceEvent};
use crate::signing::Keyring;
use crate::target::{Completion, Outcome, Target, TargetError, Ticket, BATCH_EVENTS_MAX};

pub use outbox::{PresignConfig, PresignReport};
pub use sched::TcpStats;

/// Default `MapConfig::id_base` on a cluster: loadgen ids start clear of the accounts
/// `reckon init` creates (institution × 1000 + 1..3).
pub const ID_BASE_DEFAULT: u128 = 1_000_000_000;
/// How long a reader waits per read before checking the stop flag.
const READER_POLL: Duration = Duration::from_millis(50);
/// Setup tickets count down from here (the driver's tickets are generation << 32 | slot and
/// the setup is over before the driver starts).
const SETUP_TICKET_FIRST: Ticket = u64::MAX;

pub struct TcpConfig {
    /// A `reckon init` output directory.
    pub cluster: PathBuf,
    /// Connections in all (None: institutions x nodes, so every institution reaches every node).
    pub connections: Option<usize>,
    /// Requests in flight per connection (the driver's in-flight cap is connections x this).
    pub pipeline: usize,
    /// A request with no reply this long after it was sent fails with `timeout`.
    pub reply_timeout: Duration,
    /// The mapping (`TcpConfig::map_default()`: the genesis ledger, ids from `ID_BASE_DEFAULT`).
    pub map: MapConfig,
    /// Whether conflicting requests wait for each other (see `SendOrder`).
    pub order: SendOrder,
}

/// How the target orders requests whose events do not commute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SendOrder {
    /// A request waits until it commutes with every request in flight and every earlier waiting
    /// one: each event gets the result it gets in process, at the price of a commit round trip
    /// per conflicting step (a hot account serialises the stream).
    #[default]
    Exact,
    /// Every request goes out as soon as a connection has room; the cluster orders conflicting
    /// requests as they arrive, so results can differ from in process (counted by code). For
    /// capacity runs under contention.
    Relaxed,
}

impl TcpConfig {
    pub fn map_default() -> MapConfig {
        MapConfig {
            ledger: GENESIS_LEDGER,
            reserve_floor: 0,
            reserve_warning: 0,
            id_base: ID_BASE_DEFAULT,
        }
    }

    /// Defaults for `cluster`: default connections, pipeline 16, 30 s reply timeout.
    pub fn new(cluster: PathBuf) -> TcpConfig {
        TcpConfig {
            cluster,
            connections: None,
            pipeline: 16,
            reply_timeout: Duration::from_secs(30),
            map: TcpConfig::map_default(),
            order: SendOrder::Exact,
        }
    }
}

pub(crate) enum ReaderMsg {
    Frame(NodeFrame),
    Lost { conn: usize, reason: String },
}

fn other(message: impl Into<String>) -> TargetError {
    TargetError::Other(message.into())
}

/// The client files of institutions 0 (the operator), 1, 2, ... up to the first missing one.
fn load_clients(dir: &Path) -> Result<Vec<ClientFile>, TargetError> {
    let clients = dir.join("clients");
    let mut files = Vec::new();
    for institution in 0..=u32::from(u16::MAX) + 1 {
        let path = clients.join(format!("institution-{institution}.toml"));
        if !path.exists() {
            if institution == 0 {
                continue; // the operator's file is optional
            }
            break;
        }
        files.push(ClientFile::load(&path).map_err(|e| other(e.to_string()))?);
    }
    if files.iter().all(|f| f.institution == 0) {
        return Err(other(format!(
            "{} holds no clients/institution-1.toml",
            dir.display()
        )));
    }
    Ok(files)
}

fn spawn_reader(
    mut conn: Connection,
    index: usize,
    tx: Sender<ReaderMsg>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let message = match conn.recv_timeout(READER_POLL) {
                Ok(None) => continue,
                Ok(Some(frame)) if frame.kind == FRAME_KIND_NET_ERROR => ReaderMsg::Lost {
                    conn: index,
                    reason: "net_error_frame".into(),
                },
                Ok(Some(frame)) => match NodeFrame::decode(frame.kind, &frame.payload) {
                    Ok(f) => ReaderMsg::Frame(f),
                    Err(e) => ReaderMsg::Lost {
                        conn: index,
                        reason: format!("bad reply: {e}"),
                    },
                },
                Err(e) => ReaderMsg::Lost {
                    conn: index,
                    reason: format!("connection lost: {e}"),
                },
            };
            let lost = matches!(message, ReaderMsg::Lost { .. });
            if tx.send(message).is_err() || lost {
                return;
            }
        }
    })
}

/// What the setup phase did (untimed: before the driver starts).
#[derive(Clone, Debug, Default)]
pub struct SetupReport {
    pub events: u64,
    pub batches: u64,
    pub events_committed: u64,
    /// Rejected loadgen events by ledger result code.
    pub rejections: BTreeMap<u32, u64>,
    /// Batches that got no result (first reason kept).
    pub batches_failed: u64,
    pub first_failure: Option<String>,
    pub elapsed: Duration,
}

impl SetupReport {
    pub fn render_text(&self) -> String {
        let mut s = format!(
            "SETUP (untimed)\n  events {}, batches {}, committed {}, failed batches {}, {:.2} s\n",
            self.events,
            self.batches,
            self.events_committed,
            self.batches_failed,
            self.elapsed.as_secs_f64()
        );
        for (code, n) in &self.rejections {
            let name = engine::types::ResultCode::from_u32(*code)
                .map_or("?".to_string(), |c| format!("{c:?}"));
            s += &format!("  rejected {n} events: code {code} {name}\n");
        }
        if let Some(reason) = &self.first_failure {
            s += &format!("  first failure: {reason}\n");
        }
        s
    }
}

/// Whether an event belongs to a workload's setup prefix: account and loan creations and the
/// reserve top-ups that follow them.
pub fn is_setup(op: &Op) -> bool {
    matches!(
        op,
        Op::CreateAccount { .. } | Op::CreateLoan { .. } | Op::TopUp { .. }
    )
}

pub struct TcpTarget {
    sched: sched::Scheduler,
    writers: Vec<Option<FrameWriter>>,
    rx: Receiver<ReaderMsg>,
    stop: Arc<AtomicBool>,
    readers: Vec<JoinHandle<()>>,
    in_flight_max: usize,
}

impl TcpTarget {
    pub fn connect(config: &TcpConfig) -> Result<TcpTarget, TargetError> {
        let files = load_clients(&config.cluster)?;
        let chain_id = files[0].chain_id;
        if let Some(f) = files.iter().find(|f| f.chain_id != chain_id) {
            return Err(other(format!(
                "client files disagree on the chain id ({} and {})",
                chain_id, f.chain_id
            )));
        }
        let mut keyring = Keyring::from_files(chain_id);
        for f in &files {
            keyring
                .load_key_file(f.institution, &f.bls_key)
                .map_err(|e| other(format!("institution {}: {e}", f.institution)))?;
        }
        let mapper = Mapper::new(config.map).map_err(|e| other(e.to_string()))?;
        let nodes = files[0].nodes.len();
        let k = config
            .connections
            .unwrap_or(files.len() * nodes)
            .max(files.len());
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let outbox = outbox::Outbox::new(mapper, keyring, sched::run_salt());
        let mut sched = sched::Scheduler::new(outbox, config.reply_timeout, config.order);
        let mut writers = Vec::with_capacity(k);
        let mut readers = Vec::with_capacity(k);
        for j in 0..k {
            let file = &files[j % files.len()];
            let addr = file.nodes[(j / files.len()) % file.nodes.len()];
            let tls = file.tls().map_err(|e| other(e.to_string()))?;
            let conn = Connection::connect(
                addr,
                ServerName::from(addr.ip()),
                tls.config.clone(),
                &ConnectOptions::default(),
            )
            .map_err(|e| TargetError::Disconnected(format!("{addr}: {e}")))?;
            writers.push(Some(conn.writer()));
            readers.push(spawn_reader(conn, j, tx.clone(), stop.clone()));
            sched.add_connection(file.institution, j);
        }
        Ok(TcpTarget {
            sched,
            writers,
            rx,
            stop,
            readers,
            in_flight_max: k * config.pipeline.max(1),
        })
    }

    /// Marks the sends that follow as untimed preparation (a benchmark's warm-up) or not:
    /// requests signed meanwhile count as `requests_signed_setup`, not `requests_signed_live`.
    pub fn set_untimed(&mut self, untimed: bool) {
        self.sched.set_setup_phase(untimed);
    }

    pub fn stats(&self) -> &TcpStats {
        self.sched.stats()
    }

    /// Returns the counters so far and starts them again from zero, so a benchmark that drives
    /// one target through several timed runs gets each run's own counters (in its
    /// `summary.json` too).
    pub fn take_stats(&mut self) -> TcpStats {
        self.sched.take_stats()
    }

    /// Maps, numbers and signs (on every core) the first requests the run will send, so the
    /// timed run sends them without signing (`outbox::Outbox::presign`). Untimed: call it after
    /// `setup`, if any, and before the driver starts; hand the driver the stream it returns, with
    /// the batch size and event limit of `config`. Refuses a stream with statements. Before a
    /// later run on the same target, call it again with the stream the earlier run left: it
    /// first drops the presigned requests that run did not reach (`presigned_unsent`).
    pub fn presign<'a>(
        &mut self,
        source: EventSource<'a>,
        config: &PresignConfig,
    ) -> Result<(PresignReport, EventSource<'a>), TargetError> {
        self.sched
            .outbox_mut()
            .presign(source, config)
            .map_err(|e| other(e.to_string()))
    }

    /// Presigned requests the run did not reach (it ended first).
    pub fn presigned_unsent(&self) -> u64 {
        self.sched.outbox().presigned_requests_left()
    }

    /// Handles reader messages (waiting up to `timeout` for the first), expires late requests and
    /// sends whatever may go now.
    fn pump(&mut self, timeout: Duration) -> Result<(), TargetError> {
        match self.rx.recv_timeout(timeout) {
            Ok(message) => self.sched.on_message(message, &mut self.writers),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if self.sched.busy() {
                    return Err(TargetError::Disconnected("all connections lost".into()));
                }
            }
        }
        while let Ok(message) = self.rx.try_recv() {
            self.sched.on_message(message, &mut self.writers);
        }
        self.sched.expire(Instant::now());
        self.sched.dispatch(&mut self.writers)
    }

    /// Runs the leading setup events of `source` (`is_setup`) in batches of up to
    /// `BATCH_EVENTS_MAX`, all pipelined in dependency order, waits for every one of them, and
    /// returns the rest of the stream. Untimed: call it before the driver starts.
    pub fn setup<'a>(
        &mut self,
        source: EventSource<'a>,
        wait_max: Duration,
    ) -> Result<(SetupReport, EventSource<'a>), TargetError> {
        // Setup events build on each other (accounts, then reserves and loans on them): always
        // in exact order, whatever the run's order.
        let order = self.sched.set_order(SendOrder::Exact);
        self.sched.set_setup_phase(true);
        let result = self.setup_exact(source, wait_max);
        self.sched.set_setup_phase(false);
        self.sched.set_order(order);
        result
    }

    fn setup_exact<'a>(
        &mut self,
        mut source: EventSource<'a>,
        wait_max: Duration,
    ) -> Result<(SetupReport, EventSource<'a>), TargetError> {
        let start = Instant::now();
        let mut report = SetupReport::default();
        let mut batch = Vec::with_capacity(BATCH_EVENTS_MAX);
        let mut next_ticket = SETUP_TICKET_FIRST;
        let mut open = 0u64;
        let mut first_rest = None;
        loop {
            let event = match source.next() {
                Some(Ok(e)) if is_setup(&e.op) => Some(e),
                Some(Ok(e)) => {
                    first_rest = Some(e);
                    None
                }
                Some(Err(e)) => return Err(other(format!("setup: {e}"))),
                None => None,
            };
            let done = event.is_none();
            if let Some(e) = event {
                batch.push(e);
            }
            if batch.len() == BATCH_EVENTS_MAX || (done && !batch.is_empty()) {
                self.submit(next_ticket, &batch)?;
                report.events += batch.len() as u64;
                report.batches += 1;
                next_ticket -= 1;
                open += 1;
                batch.clear();
            }
            if done {
                break;
            }
        }
        let deadline = Instant::now() + wait_max;
        let mut completions = Vec::new();
        while open > 0 {
            if Instant::now() >= deadline {
                return Err(other(format!("setup: {open} batches unfinished")));
            }
            completions.clear();
            self.poll(&mut completions, Duration::from_millis(20))?;
            for c in completions.drain(..) {
                open = open.saturating_sub(1);
                match c.outcome {
                    Outcome::Executed {
                        events_committed,
                        rejections,
                    } => {
                        report.events_committed += u64::from(events_committed);
                        for r in rejections {
                            *report.rejections.entry(r.code).or_default() += u64::from(r.events);
                        }
                    }
                    Outcome::Failed { reason } => {
                        report.batches_failed += 1;
                        report.first_failure.get_or_insert(reason);
                    }
                }
            }
        }
        report.elapsed = start.elapsed();
        let rest: EventSource<'a> = Box::new(first_rest.map(Ok).into_iter().chain(source));
        Ok((report, rest))
    }
}

impl Target for TcpTarget {
    fn name(&self) -> &str {
        "tcp"
    }

    fn in_flight_max(&self) -> usize {
        self.in_flight_max
    }

    fn submit(&mut self, ticket: Ticket, batch: &[TraceEvent]) -> Result<(), TargetError> {
        self.sched.enqueue(ticket, batch)?;
        // Replies already waiting may unblock the new requests; never waits here.
        self.pump(Duration::ZERO)
    }

    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<(), TargetError> {
        if !self.sched.has_ready() {
            self.pump(timeout)?;
        }
        self.sched.drain_ready(out);
        Ok(())
    }

    fn report(&self) -> Option<String> {
        let mut s = self.sched.stats().render_text();
        if self.presigned_unsent() > 0 {
            s += &format!(
                "  presigned requests the run did not reach: {}\n",
                self.presigned_unsent()
            );
        }
        Some(s)
    }

    fn stats_json(&self) -> Option<serde_json::Value> {
        let mut json = serde_json::to_value(self.sched.stats()).ok()?;
        if let Some(obj) = json.as_object_mut() {
            obj.insert("presigned_unsent".into(), self.presigned_unsent().into());
        }
        Some(json)
    }
}

impl Drop for TcpTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.writers.iter().flatten() {
            w.close();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}
