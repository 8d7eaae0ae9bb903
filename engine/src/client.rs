//! The Rust client library: mutual-TLS connection to a node's client port, request building and
//! signing, synchronous `submit`/`query`/`status`, and a pipelined `send` + `recv` API for many
//! requests in flight (replies are correlated by (institution, request_id)).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::codec::{encode_body, Record};
use crate::crypto::{load_institution_key, DecodeError, KeyPair, Request, SignedRequest};
use crate::net::frame::FRAME_KIND_NET_ERROR;
use crate::net::{tls, ConnectOptions, Connection, IssuedCert, NetError, NetErrorFrame};
use crate::node::protocol::{
    NodeFrame, Outcome, ProtocolError, Rejected, KIND_QUERY, KIND_STATUS, KIND_SUBMIT,
};
use crate::types::{
    Account, Disbursement, Loan, Operation, Query, Repayment, Reserve, Statement, Transfer,
};

/// Default wait for a reply in the synchronous calls.
pub const REPLY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Most replies a client buffers while waiting for another one (pipelined use drains them).
pub const CLIENT_BUFFERED_REPLIES_MAX: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("network: {0}")]
    Net(#[from] NetError),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("rejected: {} ({}): {}", .0.code.name(), .0.code as u32, .0.message)]
    Rejected(Rejected),
    #[error("node reported a transport error {:?}: {}", .0.code, .0.reason)]
    NetErrorFrame(NetErrorFrame),
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("request does not encode: {0}")]
    Request(#[from] DecodeError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("too many unclaimed replies buffered ({CLIENT_BUFFERED_REPLIES_MAX})")]
    BufferFull,
}

/// The CA and the institution's client certificate.
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<ClientTls, ClientError> {
        let own = IssuedCert {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        };
        let config =
            tls::client_config(ca_pem, &own).map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(ClientTls { config })
    }

    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<ClientTls, ClientError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| ClientError::File {
                path: p.to_path_buf(),
                message: e.to_string(),
            })
        };
        ClientTls::from_pem(&read(ca)?, &read(cert)?, &read(key)?)
    }
}

/// Builds and signs requests for one institution.
pub struct Signer {
    pub institution: u32,
    pub chain_id: u64,
    pub key: KeyPair,
}

impl Signer {
    pub fn load(institution: u32, chain_id: u64, key_file: &Path) -> Result<Signer, ClientError> {
        let key = load_institution_key(key_file).map_err(|e| ClientError::File {
            path: key_file.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Signer {
            institution,
            chain_id,
            key,
        })
    }

    pub fn sign(
        &self,
        request_id: u128,
        operation: Operation,
        body: Vec<u8>,
    ) -> Result<SignedRequest, ClientError> {
        let request = Request {
            institution: self.institution,
            chain_id: self.chain_id,
            request_id,
            operation: operation as u8,
            body,
        };
        Ok(request.sign(&self.key)?)
    }

    pub fn records<R: Record>(
        &self,
        id: u128,
        op: Operation,
        records: &[R],
    ) -> Result<SignedRequest, ClientError> {
        self.sign(id, op, encode_body(records))
    }
    pub fn create_accounts(&self, id: u128, r: &[Account]) -> Result<SignedRequest, ClientError> {
        self.records(id, Operation::CreateAccounts, r)
    }
    pub fn create_reserves(&self, id: u128, r: &[Reserve]) -> Result<SignedRequest, ClientError> {
        self.records(id, Operation::CreateReserves, r)
    }
    pub fn create_transfers(&self, id: u128, r: &[Transfer]) -> Result<SignedRequest, ClientError> {
        self.records(id, Operation::CreateTransfers, r)
    }
    pub fn top_up(&self, id: u128, r: &[Transfer]) -> Result<SignedRequest, ClientError> {
        self.records(id, Operation::TopUp, r)
    }
    pub fn create_loans(&self, id: u128, r: &[Loan]) -> Result<SignedRequest, ClientError> {
        self.records(id, Operation::CreateLoans, r)
    }
    pub fn disburse(&self, id: u128, r: &[Disbursement]) -> Result<SignedRequest, ClientError> {
        self.records(id, Operation::Disburse, r)
    }
    pub fn repay(&self, id: u128, r: &[Repayment]) -> Result<SignedRequest, ClientError> {
        self.records(id, Operation::Repay, r)
    }
    pub fn post_statements(&self, id: u128, r: &[Statement]) -> Result<SignedRequest, ClientError> {
        self.records(id, Operation::PostStatements, r)
    }
    pub fn lookup_accounts(&self, id: u128, ids: &[u128]) -> Result<SignedRequest, ClientError> {
        let queries: Vec<Query> = ids
            .iter()
            .map(|i| Query {
                id: *i,
                ..Query::default()
            })
            .collect();
        self.records(id, Operation::LookupAccounts, &queries)
    }
    pub fn lookup_transfers(&self, id: u128, ids: &[u128]) -> Result<SignedRequest, ClientError> {
        let queries: Vec<Query> = ids
            .iter()
            .map(|i| Query {
                id: *i,
                ..Query::default()
            })
            .collect();
        self.records(id, Operation::LookupTransfers, &queries)
    }
    pub fn get_account_transfers(&self, id: u128, q: Query) -> Result<SignedRequest, ClientError> {
        self.records(id, Operation::GetAccountTransfers, &[q])
    }
    pub fn reserve_positions(&self, id: u128) -> Result<SignedRequest, ClientError> {
        let q = Query {
            institution: self.institution,
            ..Query::default()
        };
        self.records(id, Operation::ReservePositions, &[q])
    }
    pub fn reconciliation_report(&self, id: u128, q: Query) -> Result<SignedRequest, ClientError> {
        self.records(id, Operation::ReconciliationReport, &[q])
    }
}

/// One connection to a node's client port.
pub struct Client {
    conn: Connection,
    /// Replies that arrived while waiting for another, keyed by (institution, request_id).
    buffered: HashMap<(u32, u128), NodeFrame>,
    pub timeout: Duration,
}

fn frame_key(frame: &NodeFrame) -> Option<(u32, u128)> {
    match frame {
        NodeFrame::Committed(o) | NodeFrame::QueryResult(o) => Some((o.institution, o.request_id)),
        NodeFrame::Rejected(r) => Some((r.institution, r.request_id)),
        NodeFrame::Status(_) => None,
    }
}

impl Client {
    pub fn connect(addr: SocketAddr, tls: &ClientTls) -> Result<Client, ClientError> {
        let conn = Connection::connect(
            addr,
            ServerName::from(addr.ip()),
            tls.config.clone(),
            &ConnectOptions::default(),
        )?;
        Ok(Client {
            conn,
            buffered: HashMap::new(),
            timeout: REPLY_TIMEOUT_DEFAULT,
        })
    }

    /// Pipelined: sends a create request without waiting.
    pub fn send(&mut self, request: &SignedRequest) -> Result<(), ClientError> {
        Ok(self.conn.send(KIND_SUBMIT, &request.encode())?)
    }

    /// Pipelined: sends a query without waiting.
    pub fn send_query(&mut self, request: &SignedRequest) -> Result<(), ClientError> {
        Ok(self.conn.send(KIND_QUERY, &request.encode())?)
    }

    /// Sends any frame kind and payload (protocol conformance tests, new frame kinds).
    pub fn send_frame(&mut self, kind: u8, payload: &[u8]) -> Result<(), ClientError> {
        Ok(self.conn.send(kind, payload)?)
    }

    /// Sends raw bytes as they are (to test the node's framing checks, e.g. an oversized header).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        Ok(self.conn.writer().send_encoded(bytes)?)
    }

    /// Pipelined: the next reply of any request (buffered ones first), or None after `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<NodeFrame>, ClientError> {
        if let Some(key) = self.buffered.keys().next().copied() {
            return Ok(self.buffered.remove(&key));
        }
        self.read_frame(timeout)
    }

    fn read_frame(&mut self, timeout: Duration) -> Result<Option<NodeFrame>, ClientError> {
        let Some(frame) = self.conn.recv_timeout(timeout)? else {
            return Ok(None);
        };
        if frame.kind == FRAME_KIND_NET_ERROR {
            let error = NetErrorFrame::decode(&frame).unwrap_or(NetErrorFrame {
                code: crate::net::NetErrorCode::Unknown,
                reason: "undecodable net error frame".into(),
            });
            return Err(ClientError::NetErrorFrame(error));
        }
        Ok(Some(NodeFrame::decode(frame.kind, &frame.payload)?))
    }

    /// Waits for the reply to (institution, request_id), buffering others.
    pub fn wait_for(&mut self, key: (u32, u128)) -> Result<NodeFrame, ClientError> {
        if let Some(frame) = self.buffered.remove(&key) {
            return Ok(frame);
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout(self.timeout));
            }
            let Some(frame) = self.read_frame(left)? else {
                continue;
            };
            match frame_key(&frame) {
                Some(k) if k == key => return Ok(frame),
                Some(k) if self.buffered.len() < CLIENT_BUFFERED_REPLIES_MAX => {
                    self.buffered.insert(k, frame);
                }
                Some(_) => return Err(ClientError::BufferFull),
                None => {}
            }
        }
    }

    /// Submits a create request and waits for its commit.
    pub fn submit(&mut self, request: &SignedRequest) -> Result<Outcome, ClientError> {
        self.send(request)?;
        match self.wait_for((request.request.institution, request.request.request_id))? {
            NodeFrame::Committed(outcome) => Ok(outcome),
            NodeFrame::Rejected(rejected) => Err(ClientError::Rejected(rejected)),
            other => Err(ClientError::Tls(format!("unexpected reply {other:?}"))),
        }
    }

    /// Runs a query against the node's committed state.
    pub fn query(&mut self, request: &SignedRequest) -> Result<Outcome, ClientError> {
        self.send_query(request)?;
        match self.wait_for((request.request.institution, request.request.request_id))? {
            NodeFrame::QueryResult(outcome) => Ok(outcome),
            NodeFrame::Rejected(rejected) => Err(ClientError::Rejected(rejected)),
            other => Err(ClientError::Tls(format!("unexpected reply {other:?}"))),
        }
    }

    /// The node's status JSON.
    pub fn status(&mut self) -> Result<serde_json::Value, ClientError> {
        self.conn.send(KIND_STATUS, &[])?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout(self.timeout));
            }
            match self.read_frame(left)? {
                Some(NodeFrame::Status(json)) => return Ok(json),
                Some(frame) => {
                    if let Some(k) = frame_key(&frame) {
                        self.buffered.insert(k, frame);
                    }
                }
                None => {}
            }
        }
    }
}

/// The client file `reckon init` writes per institution (`clients/institution-<id>.toml`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    pub institution: u32,
    pub name: String,
    pub chain_id: u64,
    /// Client addresses of the nodes.
    pub nodes: Vec<SocketAddr>,
    pub tls_ca: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub bls_key: PathBuf,
}

impl ClientFile {
    /// Loads the file; relative paths are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<ClientFile, ClientError> {
        let err = |message: String| ClientError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut file: ClientFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut file.tls_ca,
            &mut file.tls_cert,
            &mut file.tls_key,
            &mut file.bls_key,
        ] {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        if file.nodes.is_empty() {
            return Err(err("lists no nodes".into()));
        }
        Ok(file)
    }

    pub fn tls(&self) -> Result<ClientTls, ClientError> {
        ClientTls::load(&self.tls_ca, &self.tls_cert, &self.tls_key)
    }

    pub fn signer(&self) -> Result<Signer, ClientError> {
        Signer::load(self.institution, self.chain_id, &self.bls_key)
    }

    /// Connects to the first node that accepts, in the file's order.
    pub fn connect_any(&self) -> Result<Client, ClientError> {
        let tls = self.tls()?;
        let mut last = None;
        for addr in &self.nodes {
            match Client::connect(*addr, &tls) {
                Ok(client) => return Ok(client),
                Err(error) => last = Some(error),
            }
        }
        Err(last.expect("at least one node was tried"))
    }
}
