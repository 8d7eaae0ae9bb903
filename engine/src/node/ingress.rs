//! Ingress: frames from the client port. Decodes, checks the TLS identity against the request's
//! institution, answers replays and status at once, and hands the rest to verify (never blocking:
//! a full verify queue answers `busy`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::crypto::{DecodeError, DigestedRef, EncodedRequest, SignedRequestRef};
use crate::mempool::RequestKey;
use crate::net::{FrameWriter, Inbound, PeerIdentity};
use crate::types::Operation;

use super::genesis::hex_encode;
use super::peers::Peers;
use super::protocol::{
    request_key_prefix, RejectCode, Rejected, KIND_QUERY, KIND_REJECTED, KIND_STATUS,
    KIND_STATUS_REPLY, KIND_SUBMIT,
};
use super::state::{KeyState, Shared};

/// A decoded request on its way to verification: its wire bytes, kept once (the mempool and the
/// batch keep the same `Arc`), with the digest ingress computed for a create (a query's is
/// computed by the verifier), read through `request()`.
pub struct VerifyJob {
    encoded: EncodedRequest,
    pub query: bool,
    pub writer: FrameWriter,
    /// When its connection thread read the frame.
    pub received_at: Instant,
}

impl VerifyJob {
    /// The request view over the bytes, with its digest; ingress decoded them before making the
    /// job, so this cannot fail.
    pub fn digested(&self) -> DigestedRef<'_> {
        self.encoded
            .digested()
            .expect("ingress decoded these bytes")
    }

    /// The request view over the bytes.
    pub fn request(&self) -> SignedRequestRef<'_> {
        self.digested().view()
    }

    /// The encoded signed request and its digest.
    pub fn encoded(&self) -> &EncodedRequest {
        &self.encoded
    }
}

pub struct Ingress {
    pub input: Receiver<Inbound>,
    pub verify: Sender<VerifyJob>,
    pub shared: Arc<Shared>,
    pub peers: Arc<Peers>,
    pub chain_id: u64,
    pub node_name: String,
    pub genesis_hash: [u8; 32],
    pub stop: Arc<AtomicBool>,
}

pub fn reject(shared: &Shared, writer: &FrameWriter, rejected: Rejected) {
    shared
        .metrics
        .requests_rejected
        .with_label_values(&[rejected.code.name()])
        .inc();
    if let Err(error) = writer.send(KIND_REJECTED, &rejected.encode()) {
        tracing::debug!(%error, "reply to a gone client dropped");
    }
}

fn decode_code(error: &DecodeError) -> RejectCode {
    match error {
        DecodeError::BodyLength { .. } | DecodeError::EventCount { .. } => RejectCode::BodyLength,
        _ => RejectCode::MalformedRequest,
    }
}

impl Ingress {
    pub fn run(self) {
        while !self.stop.load(Ordering::Acquire) {
            match self.input.recv_timeout(Duration::from_millis(100)) {
                Ok(inbound) => self.handle(inbound),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn handle(&self, inbound: Inbound) {
        let kind = inbound.frame.kind;
        let payload = &inbound.frame.payload;
        match kind {
            KIND_STATUS => {
                let json = self.status_json().to_string();
                let _ = inbound.reply.send(KIND_STATUS_REPLY, json.as_bytes());
            }
            KIND_SUBMIT | KIND_QUERY => {
                if let Err(rejected) = self.admit(&inbound, kind == KIND_QUERY) {
                    reject(&self.shared, &inbound.reply, rejected);
                }
            }
            other => {
                let rejected = Rejected::new(
                    (0, 0),
                    RejectCode::MalformedFrame,
                    format!("unknown frame kind {other:#x} (submit 1, query 2, status 3)"),
                );
                reject(&self.shared, &inbound.reply, rejected);
            }
        }
        let _ = payload;
    }

    fn admit(&self, inbound: &Inbound, query: bool) -> Result<(), Rejected> {
        let payload = &inbound.frame.payload;
        let prefix = request_key_prefix(payload);
        let request = SignedRequestRef::decode(payload)
            .map_err(|e| Rejected::new(prefix, decode_code(&e), e.to_string()))?;
        let key = (request.institution(), request.request_id());
        let fail = |code, message: String| Rejected::new(key, code, message);
        match inbound.peer {
            PeerIdentity::Institution { institution } if institution == key.0 => {}
            other => {
                return Err(fail(
                    RejectCode::IdentityMismatch,
                    format!(
                        "TLS identity {} may not sign for institution {}",
                        other.common_name(),
                        key.0
                    ),
                ))
            }
        }
        let operation = Operation::from_u8(request.operation());
        match operation {
            Some(op) if op.is_query() == query => {}
            _ => {
                let expected = if query { "a query" } else { "a create" };
                return Err(fail(
                    RejectCode::WrongOperation,
                    format!(
                        "operation {} is not {expected} operation",
                        request.operation()
                    ),
                ));
            }
        }
        // The bytes the job, the mempool and the batch share; the replay check below computes
        // the digest into it, the one signing-digest hash of this body on this node.
        let encoded = EncodedRequest::new(Arc::from(payload.as_slice()));
        if !query {
            let digested = encoded
                .digested()
                .map_err(|e| fail(decode_code(&e), e.to_string()))?;
            self.check_key(&digested)?;
        }
        let job = VerifyJob {
            encoded,
            query,
            writer: inbound.reply.clone(),
            received_at: inbound.received_at,
        };
        match self.verify.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                Err(fail(RejectCode::Busy, "verify queue full; retry".into()))
            }
            Err(TrySendError::Disconnected(_)) => {
                Err(fail(RejectCode::ShuttingDown, "node is stopping".into()))
            }
        }
    }

    /// Replays, id reuse and duplicates are answered here, before any signature work.
    fn check_key(&self, request: &DigestedRef<'_>) -> Result<(), Rejected> {
        let key = (request.view().institution(), request.view().request_id());
        if self.shared.draining.load(Ordering::Acquire) {
            return Err(Rejected::new(
                key,
                RejectCode::ShuttingDown,
                "node is draining for shutdown",
            ));
        }
        let digest = request.digest();
        let state = self.shared.key_state(RequestKey {
            institution: key.0,
            request_id: key.1,
        });
        match state {
            KeyState::New => Ok(()),
            KeyState::Committed { height, digest: d } if d == digest => Err(Rejected {
                height,
                ..Rejected::new(
                    key,
                    RejectCode::RequestReplayed,
                    format!("already committed at height {height}"),
                )
            }),
            KeyState::Pending { digest: d } if d == digest => Err(Rejected::new(
                key,
                RejectCode::DuplicatePending,
                "the same request is already waiting to commit",
            )),
            KeyState::Committed { .. } | KeyState::Pending { .. } => Err(Rejected::new(
                key,
                RejectCode::RequestIdReused,
                "this request id was used for a different request",
            )),
        }
    }

    fn status_json(&self) -> serde_json::Value {
        let (height, digest) = self.shared.executed();
        let figures = &self.shared.figures;
        serde_json::json!({
            "node": self.node_name,
            "chain_id": self.chain_id,
            "genesis_hash": hex_encode(&self.genesis_hash),
            "height": height,
            "round": figures.round.load(Ordering::Relaxed),
            "ledger_digest": format!("{digest:032x}"),
            "peers_up": self.peers.up(),
            "peers_unreachable": self.peers.unreachable_now(),
            "mempool_depth": self.shared.mempool.len(),
            "pending_replies": self.shared.pending_len(),
            "executed_requests": figures.executed_requests.load(Ordering::Relaxed),
            "draining": self.shared.draining.load(Ordering::Relaxed),
        })
    }
}
