//! `--target tcp`: drives a real cluster made by `reckon init` over mutual-TLS client connections.
//!
//! Design (see docs/modules/e2e.md):
//! - each institution's client file (`clients/institution-<id>.toml`: TLS files, BLS key, node
//!   addresses) is loaded; the node binds a connection to the institution of its certificate, so
//!   every connection belongs to one institution; connection j serves institution
//!   `1 + j mod banks` and goes to node `(j / banks) mod nodes` (round-robin over all nodes);
//! - one loadgen request (ticket) becomes one signed request per homogeneous group
//!   (operation, institution); all of a ticket's groups are in flight together;
//! - ordering: transfers only need their accounts to exist, so account creations pipeline
//!   freely, and a transfer group is sent only when no account creation is in flight (waited
//!   for, bounded). Transfer groups pipeline freely across connections and nodes;
//! - one reader thread per connection decodes frames into a channel; replies are correlated by
//!   (institution, request_id). Node-level rejections (`busy`, ...) become `Failed` with the code's
//!   name; ledger rejections are counted by result code. A bad frame never panics.
//!
//! Workload mapping: workload institution i signs as bank i + 1 (0 is the operator); workload
//! account a is ledger account `ACCOUNT_ID_BASE + a` on the genesis ledger. Only the `transfers`
//! workload's ops (create_account, transfer) are mapped today.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::client::{ClientFile, Signer};
use engine::net::frame::FRAME_KIND_NET_ERROR;
use engine::net::{ConnectOptions, Connection, FrameWriter};
use engine::node::protocol::{NodeFrame, KIND_SUBMIT};
use engine::types::Operation;
use rustls::pki_types::ServerName;

use crate::op::TraceEvent;

mod map;
use crate::target::{Completion, Outcome, Rejection, Target, TargetError, Ticket};
pub use map::ACCOUNT_ID_BASE;
use map::{rejected_by_code, run_salt, split, Group};

/// How long a reader waits per read before checking the stop flag.
const READER_POLL: Duration = Duration::from_millis(50);

pub struct TcpConfig {
    /// A `reckon init` output directory.
    pub cluster: PathBuf,
    /// Connections in all (None: 4 x nodes, at least one per bank).
    pub connections: Option<usize>,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// A request with no reply after this long fails with `timeout`.
    pub reply_timeout: Duration,
}

enum ReaderMsg {
    Frame(NodeFrame),
    Lost { conn: usize, reason: String },
}

struct Bank {
    signer: Signer,
    conns: Vec<usize>,
    next_conn: usize,
}

struct TicketState {
    groups_left: u32,
    committed: u32,
    rejections: BTreeMap<u32, u32>,
    failure: Option<String>,
    deadline: Instant,
}

pub struct TcpTarget {
    banks: BTreeMap<u32, Bank>,
    writers: Vec<Option<FrameWriter>>,
    rx: Receiver<ReaderMsg>,
    stop: Arc<AtomicBool>,
    readers: Vec<JoinHandle<()>>,
    /// (institution, request_id) -> (ticket, connection, events, creates accounts).
    requests: HashMap<(u32, u128), (Ticket, usize, u32, bool)>,
    tickets: HashMap<Ticket, TicketState>,
    ready: VecDeque<Completion>,
    in_flight_max: usize,
    next_request_id: u128,
    next_transfer_id: u128,
    reply_timeout: Duration,
}

fn other(message: impl Into<String>) -> TargetError {
    TargetError::Other(message.into())
}

fn load_banks(dir: &Path) -> Result<Vec<ClientFile>, TargetError> {
    let clients = dir.join("clients");
    let mut files = Vec::new();
    for institution in 1..=u16::MAX as u32 {
        let path = clients.join(format!("institution-{institution}.toml"));
        if !path.exists() {
            break;
        }
        files.push(ClientFile::load(&path).map_err(|e| other(e.to_string()))?);
    }
    if files.is_empty() {
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

impl TcpTarget {
    pub fn connect(config: &TcpConfig) -> Result<TcpTarget, TargetError> {
        let files = load_banks(&config.cluster)?;
        let nodes = files[0].nodes.len();
        let k = config.connections.unwrap_or(4 * nodes).max(files.len());
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut banks = BTreeMap::new();
        for f in &files {
            let signer = f.signer().map_err(|e| other(e.to_string()))?;
            let bank = Bank {
                signer,
                conns: Vec::new(),
                next_conn: 0,
            };
            banks.insert(f.institution, bank);
        }
        let mut target = TcpTarget {
            banks,
            writers: Vec::with_capacity(k),
            rx,
            stop: stop.clone(),
            readers: Vec::with_capacity(k),
            requests: HashMap::new(),
            tickets: HashMap::new(),
            ready: VecDeque::new(),
            in_flight_max: k * config.pipeline.max(1),
            next_request_id: run_salt(),
            next_transfer_id: run_salt(),
            reply_timeout: config.reply_timeout,
        };
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
            target.writers.push(Some(conn.writer()));
            target
                .readers
                .push(spawn_reader(conn, j, tx.clone(), stop.clone()));
            if let Some(bank) = target.banks.get_mut(&file.institution) {
                bank.conns.push(j);
            }
        }
        Ok(target)
    }
}

impl TcpTarget {
    /// Signs and writes one group for `ticket`; a write failure fails the group at once.
    fn send_group(&mut self, ticket: Ticket, group: Group) -> Result<(), TargetError> {
        let (institution, operation, body, events) = group;
        let is_accounts = operation == Operation::CreateAccounts;
        let bank = self
            .banks
            .get_mut(&institution)
            .ok_or_else(|| other(format!("no client file for institution {institution}")))?;
        self.next_request_id += 1;
        let request_id = self.next_request_id;
        let signed = bank
            .signer
            .sign(request_id, operation, body)
            .map_err(|e| other(format!("sign: {e}")))?;
        let conn = bank.conns[bank.next_conn % bank.conns.len()];
        bank.next_conn = bank.next_conn.wrapping_add(1);
        let sent = match &self.writers[conn] {
            Some(w) => w
                .send(KIND_SUBMIT, &signed.encode())
                .map_err(|e| e.to_string()),
            None => Err("connection lost".to_string()),
        };
        match sent {
            Ok(()) => {
                self.requests.insert(
                    (institution, request_id),
                    (ticket, conn, events, is_accounts),
                );
            }
            Err(reason) => {
                self.writers[conn] = None;
                self.settle_group(ticket, |s| s.failure = Some(reason.clone()));
            }
        }
        Ok(())
    }

    /// Applies `f` to the ticket and counts one group done; a finished ticket becomes ready.
    fn settle_group(&mut self, ticket: Ticket, f: impl FnOnce(&mut TicketState)) {
        let Some(state) = self.tickets.get_mut(&ticket) else {
            return;
        };
        f(state);
        state.groups_left = state.groups_left.saturating_sub(1);
        if state.groups_left > 0 {
            return;
        }
        if let Some(state) = self.tickets.remove(&ticket) {
            let outcome = match state.failure {
                Some(reason) => Outcome::Failed { reason },
                None => Outcome::Executed {
                    events_committed: state.committed,
                    rejections: state
                        .rejections
                        .into_iter()
                        .map(|(code, events)| Rejection { code, events })
                        .collect(),
                },
            };
            self.ready.push_back(Completion { ticket, outcome });
        }
    }

    fn on_message(&mut self, message: ReaderMsg) {
        match message {
            ReaderMsg::Frame(NodeFrame::Committed(o)) => {
                let Some((ticket, _, events, _)) =
                    self.requests.remove(&(o.institution, o.request_id))
                else {
                    return;
                };
                let rejected = rejected_by_code(&o.reply, events);
                self.settle_group(ticket, |s| match rejected {
                    Ok(rejected) => {
                        let total: u32 = rejected.values().sum();
                        s.committed += events.saturating_sub(total);
                        for (code, n) in rejected {
                            *s.rejections.entry(code).or_default() += n;
                        }
                    }
                    Err(reason) => s.failure = Some(reason),
                });
            }
            ReaderMsg::Frame(NodeFrame::Rejected(r)) => {
                if let Some((ticket, _, _, _)) =
                    self.requests.remove(&(r.institution, r.request_id))
                {
                    let reason = format!("rejected: {}", r.code.name());
                    self.settle_group(ticket, |s| s.failure = Some(reason));
                }
            }
            ReaderMsg::Frame(_) => {}
            ReaderMsg::Lost { conn, reason } => {
                self.writers[conn] = None;
                let lost: Vec<((u32, u128), Ticket)> = self
                    .requests
                    .iter()
                    .filter(|(_, (_, c, _, _))| *c == conn)
                    .map(|(k, (t, _, _, _))| (*k, *t))
                    .collect();
                for (key, ticket) in lost {
                    self.requests.remove(&key);
                    let reason = reason.clone();
                    self.settle_group(ticket, |s| s.failure = Some(reason));
                }
            }
        }
    }
}

impl TcpTarget {
    /// Handles at most one reader message, waiting up to `timeout`; then expires late tickets.
    fn pump(&mut self, timeout: Duration) -> Result<(), TargetError> {
        match self.rx.recv_timeout(timeout) {
            Ok(message) => self.on_message(message),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if !self.tickets.is_empty() {
                    return Err(TargetError::Disconnected("all connections lost".into()));
                }
            }
        }
        while let Ok(message) = self.rx.try_recv() {
            self.on_message(message);
        }
        self.expire();
        Ok(())
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<Ticket> = self
            .tickets
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        if late.is_empty() {
            return;
        }
        self.requests.retain(|_, (t, _, _, _)| !late.contains(t));
        for ticket in late {
            if let Some(state) = self.tickets.get_mut(&ticket) {
                state.groups_left = 1;
            }
            self.settle_group(ticket, |s| s.failure = Some("timeout".into()));
        }
    }

    /// Pumps until `done` holds or the reply timeout passes (bounded).
    fn pump_until(&mut self, done: impl Fn(&TcpTarget) -> bool) -> Result<(), TargetError> {
        let deadline = Instant::now() + self.reply_timeout + Duration::from_secs(1);
        while !done(self) {
            if Instant::now() >= deadline {
                return Err(other("barrier wait timed out"));
            }
            self.pump(Duration::from_millis(10))?;
        }
        Ok(())
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
        if batch.is_empty() || batch.len() > crate::target::BATCH_EVENTS_MAX {
            return Err(other(format!("batch of {} events", batch.len())));
        }
        let groups = split(batch, &mut self.next_transfer_id)?;
        let state = TicketState {
            groups_left: groups.len() as u32,
            committed: 0,
            rejections: BTreeMap::new(),
            failure: None,
            deadline: Instant::now() + self.reply_timeout,
        };
        self.tickets.insert(ticket, state);
        // Account creations pipeline freely; transfers wait until no account creation is in
        // flight (they may name those accounts). Groups come accounts first.
        for group in groups {
            if group.1 != Operation::CreateAccounts {
                self.pump_until(|t| !t.requests.values().any(|r| r.3))?;
            }
            if self.tickets.contains_key(&ticket) {
                self.send_group(ticket, group)?;
            }
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<(), TargetError> {
        if self.ready.is_empty() {
            self.pump(timeout)?;
        }
        out.extend(self.ready.drain(..));
        Ok(())
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
