//! Every protocol message and certificate, with its canonical byte encoding.
//!
//! Encoding: little-endian fixed-size integers, u32 length prefixes bounded by named maxima, one tag
//! byte per `Message` variant, no trailing bytes. `decode` never panics on arbitrary input.

use super::crypto_iface::{Sig, SignerBitmap, SIG_BYTES};
use super::wire::{DecodeError, Reader, Writer};
use super::{
    Digest, Hash, Round, ValidatorIndex, BLOCK_DIGESTS_MAX, SYNC_BLOCKS_MAX, VALIDATORS_MAX,
};

/// A quorum certificate: 2f+1 votes on (block hash, round, height); `signatures[k]` is the k-th
/// signer's (ascending index order), so there are exactly `signers.count()` of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumCert {
    pub block_hash: Hash,
    pub round: Round,
    pub height: u64,
    pub signers: SignerBitmap,
    pub signatures: Vec<Sig>,
}

/// A timeout certificate: 2f+1 timeouts for `round`; `high_qc_rounds[k]` and `signatures[k]` belong
/// to the k-th signer in ascending index order, and each signer signed its own (round,
/// high_qc_round, index) message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutCert {
    pub round: Round,
    pub signers: SignerBitmap,
    pub high_qc_rounds: Vec<Round>,
    pub signatures: Vec<Sig>,
}

/// Bytes of the largest QC on the wire: hash, round, height, bitmap, one signature per validator.
pub const QC_BYTES_MAX: usize = 32 + 8 + 8 + SignerBitmap::BYTES + VALIDATORS_MAX * SIG_BYTES;
/// Bytes of the largest TC: round, bitmap, a length, one high-QC round and one signature each.
pub const TC_BYTES_MAX: usize = 8 + SignerBitmap::BYTES + 4 + VALIDATORS_MAX * (8 + SIG_BYTES);
/// Bytes of the largest block: author, round, height, timestamp, its QC, a length, the digests.
pub const BLOCK_BYTES_MAX: usize = 2 + 8 + 8 + 8 + QC_BYTES_MAX + 4 + BLOCK_DIGESTS_MAX * 32;
/// Bytes of the largest message: a full sync response (every other kind is smaller). QCs and
/// TCs grow with the signers, so this bounds what a peer frame must carry.
pub const MESSAGE_BYTES_MAX: usize = 1 + 4 + SYNC_BLOCKS_MAX * BLOCK_BYTES_MAX + 1 + QC_BYTES_MAX;
const _: () = assert!(1 + BLOCK_BYTES_MAX + 1 + TC_BYTES_MAX < MESSAGE_BYTES_MAX);
const _: () = assert!(1 + 8 + 2 + QC_BYTES_MAX + SIG_BYTES + 1 + TC_BYTES_MAX < MESSAGE_BYTES_MAX);

/// One signature per signer, in signer order; the count is the bitmap's, so it is not written.
fn encode_signatures(signers: &SignerBitmap, signatures: &[Sig], w: &mut Writer) {
    assert_eq!(
        signatures.len(),
        signers.count(),
        "one signature per signer"
    );
    signatures.iter().for_each(|sig| w.raw(sig));
}

fn decode_signatures(signers: &SignerBitmap, r: &mut Reader) -> Result<Vec<Sig>, DecodeError> {
    let count = signers.count();
    assert!(count <= VALIDATORS_MAX, "a bitmap has VALIDATORS_MAX bits");
    (0..count).map(|_| r.array()).collect()
}

/// A block: ordering only. The payload is batch digests; batch contents travel separately.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub author: ValidatorIndex,
    pub round: Round,
    pub height: u64,
    pub timestamp_ms: u64,
    /// The QC of the parent block; `justify.block_hash` is the parent hash.
    pub justify: QuorumCert,
    pub payload: Vec<Digest>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    pub block_hash: Hash,
    pub round: Round,
    pub height: u64,
    pub voter: ValidatorIndex,
    pub signature: Sig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeout {
    pub round: Round,
    pub author: ValidatorIndex,
    /// The sender's highest QC: the next leader must extend at least the highest of 2f+1 of these.
    pub high_qc: QuorumCert,
    pub signature: Sig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub block: Block,
    /// Present when `block.round != block.justify.round + 1`: proves round `block.round - 1` timed out.
    pub tc: Option<TimeoutCert>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutMsg {
    pub timeout: Timeout,
    /// The sender's latest TC, so a peer that missed timeouts can still advance.
    pub last_tc: Option<TimeoutCert>,
}

/// "Send me the chain from height `from_height` up to your highest certified block."
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    pub from_height: u64,
}

/// Consecutive blocks (heights `from_height..`) and the QC that certifies the last one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    pub blocks: Vec<Block>,
    pub last_qc: Option<QuorumCert>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Proposal(Proposal),
    Vote(Vote),
    Timeout(TimeoutMsg),
    SyncRequest(SyncRequest),
    SyncResponse(SyncResponse),
}

impl QuorumCert {
    pub fn encode(&self, w: &mut Writer) {
        w.raw(&self.block_hash);
        w.u64(self.round);
        w.u64(self.height);
        self.signers.encode(w);
        encode_signatures(&self.signers, &self.signatures, w);
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let block_hash = r.array()?;
        let round = r.u64()?;
        let height = r.u64()?;
        let signers = SignerBitmap::decode(r)?;
        let signatures = decode_signatures(&signers, r)?;
        Ok(QuorumCert {
            block_hash,
            round,
            height,
            signers,
            signatures,
        })
    }
    /// Identity of this exact certificate (for verification caches).
    pub fn digest(&self) -> Hash {
        let mut w = Writer::default();
        self.encode(&mut w);
        *blake3::hash(&w.bytes).as_bytes()
    }
}

impl TimeoutCert {
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.round);
        self.signers.encode(w);
        w.len(self.high_qc_rounds.len(), VALIDATORS_MAX);
        for round in &self.high_qc_rounds {
            w.u64(*round);
        }
        encode_signatures(&self.signers, &self.signatures, w);
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let round = r.u64()?;
        let signers = SignerBitmap::decode(r)?;
        let count = r.len(VALIDATORS_MAX)?;
        let mut high_qc_rounds = Vec::with_capacity(count);
        for _ in 0..count {
            high_qc_rounds.push(r.u64()?);
        }
        let signatures = decode_signatures(&signers, r)?;
        Ok(TimeoutCert {
            round,
            signers,
            high_qc_rounds,
            signatures,
        })
    }
    pub fn max_high_qc_round(&self) -> Round {
        self.high_qc_rounds.iter().copied().max().unwrap_or(0)
    }
    pub fn digest(&self) -> Hash {
        let mut w = Writer::default();
        self.encode(&mut w);
        *blake3::hash(&w.bytes).as_bytes()
    }
}

impl Block {
    pub fn encode(&self, w: &mut Writer) {
        w.u16(self.author);
        w.u64(self.round);
        w.u64(self.height);
        w.u64(self.timestamp_ms);
        self.justify.encode(w);
        w.len(self.payload.len(), BLOCK_DIGESTS_MAX);
        for digest in &self.payload {
            w.raw(digest);
        }
    }
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let author = r.u16()?;
        let round = r.u64()?;
        let height = r.u64()?;
        let timestamp_ms = r.u64()?;
        let justify = QuorumCert::decode(r)?;
        let count = r.len(BLOCK_DIGESTS_MAX)?;
        let mut payload = Vec::with_capacity(count);
        for _ in 0..count {
            payload.push(r.array()?);
        }
        Ok(Block {
            author,
            round,
            height,
            timestamp_ms,
            justify,
            payload,
        })
    }
    /// The block's identity: BLAKE3 of its canonical encoding.
    pub fn hash(&self) -> Hash {
        let mut w = Writer::default();
        self.encode(&mut w);
        *blake3::hash(&w.bytes).as_bytes()
    }
    pub fn parent_hash(&self) -> Hash {
        self.justify.block_hash
    }
}

fn encode_tc_opt(tc: &Option<TimeoutCert>, w: &mut Writer) {
    match tc {
        None => w.u8(0),
        Some(tc) => {
            w.u8(1);
            tc.encode(w);
        }
    }
}

fn decode_tc_opt(r: &mut Reader) -> Result<Option<TimeoutCert>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(TimeoutCert::decode(r)?)),
        tag => Err(DecodeError::UnknownTag(tag)),
    }
}

impl Message {
    /// Whether everything persisted before this message must be durable before it is sent. Votes,
    /// timeouts and sync traffic: yes (a restarted node must never sign twice in a round or vote
    /// against its lock). Proposals: no. Safety rests on the voters' rules, not on the leader, and
    /// a restarted leader skips proposing in its recovery round and the next (`Core::new`), so a
    /// proposal need not wait for the fsync of its `proposed_round` record: that fsync overlaps
    /// with the replicas' work instead of adding to every round. The shell still holds a proposal
    /// back while a vote or timeout this node signed is not durable
    /// (`node::consensus_stage::ConsensusJournal::must_sync_before`): its QC may count that vote.
    pub fn needs_durable_state(&self) -> bool {
        !matches!(self, Message::Proposal(_))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Message::Proposal(p) => {
                w.u8(1);
                p.block.encode(&mut w);
                encode_tc_opt(&p.tc, &mut w);
            }
            Message::Vote(v) => {
                w.u8(2);
                w.raw(&v.block_hash);
                w.u64(v.round);
                w.u64(v.height);
                w.u16(v.voter);
                w.raw(&v.signature);
            }
            Message::Timeout(t) => {
                w.u8(3);
                w.u64(t.timeout.round);
                w.u16(t.timeout.author);
                t.timeout.high_qc.encode(&mut w);
                w.raw(&t.timeout.signature);
                encode_tc_opt(&t.last_tc, &mut w);
            }
            Message::SyncRequest(s) => {
                w.u8(4);
                w.u64(s.from_height);
            }
            Message::SyncResponse(s) => {
                w.u8(5);
                w.len(s.blocks.len(), SYNC_BLOCKS_MAX);
                s.blocks.iter().for_each(|b| b.encode(&mut w));
                match &s.last_qc {
                    None => w.u8(0),
                    Some(qc) => {
                        w.u8(1);
                        qc.encode(&mut w);
                    }
                }
            }
        }
        w.bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader::new(bytes);
        let message = match r.u8()? {
            1 => Message::Proposal(Proposal {
                block: Block::decode(&mut r)?,
                tc: decode_tc_opt(&mut r)?,
            }),
            2 => Message::Vote(Vote {
                block_hash: r.array()?,
                round: r.u64()?,
                height: r.u64()?,
                voter: r.u16()?,
                signature: r.array()?,
            }),
            3 => Message::Timeout(TimeoutMsg {
                timeout: Timeout {
                    round: r.u64()?,
                    author: r.u16()?,
                    high_qc: QuorumCert::decode(&mut r)?,
                    signature: r.array()?,
                },
                last_tc: decode_tc_opt(&mut r)?,
            }),
            4 => Message::SyncRequest(SyncRequest {
                from_height: r.u64()?,
            }),
            5 => Message::SyncResponse(decode_sync_response(&mut r)?),
            tag => return Err(DecodeError::UnknownTag(tag)),
        };
        r.finish()?;
        Ok(message)
    }
}

fn decode_sync_response(r: &mut Reader) -> Result<SyncResponse, DecodeError> {
    let count = r.len(SYNC_BLOCKS_MAX)?;
    let mut blocks = Vec::with_capacity(count);
    for _ in 0..count {
        blocks.push(Block::decode(r)?);
    }
    let last_qc = match r.u8()? {
        0 => None,
        1 => Some(QuorumCert::decode(r)?),
        tag => return Err(DecodeError::UnknownTag(tag)),
    };
    Ok(SyncResponse { blocks, last_qc })
}

/// A committed block as the core outputs it and the log stores it: the block plus a QC certifying it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedBlock {
    pub height: u64,
    pub block: Block,
    pub qc: QuorumCert,
}

impl CommittedBlock {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.height);
        self.block.encode(&mut w);
        self.qc.encode(&mut w);
        w.bytes
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let committed = CommittedBlock {
            height: r.u64()?,
            block: Block::decode(&mut r)?,
            qc: QuorumCert::decode(&mut r)?,
        };
        r.finish()?;
        if committed.block.height != committed.height {
            return Err(DecodeError::OutOfRange("committed height"));
        }
        Ok(committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_qc(round: Round) -> QuorumCert {
        let mut signers = SignerBitmap::default();
        (0..VALIDATORS_MAX).for_each(|i| signers.insert(i as ValidatorIndex));
        QuorumCert {
            block_hash: [7; 32],
            round,
            height: round,
            signers,
            signatures: vec![[9; SIG_BYTES]; VALIDATORS_MAX],
        }
    }

    /// The size bounds are the sizes of the largest messages, not estimates.
    #[test]
    fn the_largest_sync_response_is_exactly_message_bytes_max_and_round_trips() {
        let block = |round| Block {
            author: 3,
            round,
            height: round,
            timestamp_ms: 1,
            justify: full_qc(round - 1),
            payload: vec![[1; 32]; BLOCK_DIGESTS_MAX],
        };
        let mut w = Writer::default();
        full_qc(1).encode(&mut w);
        assert_eq!(w.bytes.len(), QC_BYTES_MAX);
        let mut w = Writer::default();
        block(2).encode(&mut w);
        assert_eq!(w.bytes.len(), BLOCK_BYTES_MAX);
        let response = Message::SyncResponse(SyncResponse {
            blocks: (2..2 + SYNC_BLOCKS_MAX as u64).map(block).collect(),
            last_qc: Some(full_qc(40)),
        });
        let bytes = response.encode();
        assert_eq!(bytes.len(), MESSAGE_BYTES_MAX);
        assert_eq!(Message::decode(&bytes), Ok(response));
        let tc = TimeoutCert {
            round: 9,
            signers: full_qc(1).signers,
            high_qc_rounds: vec![1; VALIDATORS_MAX],
            signatures: vec![[2; SIG_BYTES]; VALIDATORS_MAX],
        };
        let mut w = Writer::default();
        tc.encode(&mut w);
        assert_eq!(w.bytes.len(), TC_BYTES_MAX);
    }

    /// A QC's signature count is its bitmap's: bytes cut inside the signatures do not decode, and
    /// there is no length field to disagree with the bitmap.
    #[test]
    fn qc_signatures_follow_the_bitmap_and_cut_bytes_are_refused() {
        let mut signers = SignerBitmap::default();
        [0, 2, 3].iter().for_each(|i| signers.insert(*i));
        let qc = QuorumCert {
            block_hash: [1; 32],
            round: 4,
            height: 3,
            signers,
            signatures: vec![[5; SIG_BYTES], [6; SIG_BYTES], [7; SIG_BYTES]],
        };
        let mut w = Writer::default();
        qc.encode(&mut w);
        assert_eq!(
            w.bytes.len(),
            32 + 8 + 8 + SignerBitmap::BYTES + 3 * SIG_BYTES
        );
        assert_eq!(QuorumCert::decode(&mut Reader::new(&w.bytes)), Ok(qc));
        let cut = &w.bytes[..w.bytes.len() - 1];
        assert!(QuorumCert::decode(&mut Reader::new(cut)).is_err());
    }
}
