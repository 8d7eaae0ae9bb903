//! Compact binary trace: a 32-byte header, then fixed 64-byte little-endian records.
//!
//! Header: `0..8` magic `RKNTRACE`, `8..10` version u16 (1), `10..12` record size u16 (64),
//! `12..16` reserved (0), `16..24` event count u64, `24..32` reserved (0).
//! Record: `0` timestamp_ns u64, `8` a, `16` b, `24` c, `32` d, `40` e (u64 slots, meaning per
//! op in `Slots`), `48` institution u16, `50` op code u8, `51` account kind u8,
//! `52` partner_share_bps u16, `54..64` reserved (0).

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::TraceError;
use crate::op::{AccountKind, Op, OpKind, TraceEvent, SHARE_BPS_FULL};

pub const MAGIC: [u8; 8] = *b"RKNTRACE";
pub const VERSION: u16 = 1;
pub const HEADER_BYTES: usize = 32;
pub const RECORD_BYTES: usize = 64;
const COUNT_OFFSET: u64 = 16;

/// The five u64 slots and two small fields of a record, before the op gives them meaning.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Slots {
    a: u64,
    b: u64,
    c: u64,
    d: u64,
    e: u64,
    kind: u8,
    share_bps: u16,
}

fn op_to_slots(op: &Op) -> Slots {
    let z = Slots::default();
    match *op {
        Op::CreateAccount { account, kind } => Slots {
            a: account,
            kind: kind as u8,
            ..z
        },
        Op::CreateLoan {
            loan,
            borrower,
            lead_reserve,
            partner_reserve,
            limit,
            partner_share_bps,
        } => Slots {
            a: loan,
            b: borrower,
            c: lead_reserve,
            d: partner_reserve,
            e: limit,
            share_bps: partner_share_bps,
            ..z
        },
        Op::TopUp {
            reserve_account,
            amount,
        } => Slots {
            a: reserve_account,
            e: amount,
            ..z
        },
        Op::Disburse { loan, amount } => Slots {
            a: loan,
            e: amount,
            ..z
        },
        Op::Repay {
            loan,
            principal,
            interest,
        } => Slots {
            a: loan,
            d: interest,
            e: principal,
            ..z
        },
        Op::Statement {
            account,
            period_start_ns,
            period_end_ns,
        } => Slots {
            a: account,
            b: period_start_ns,
            c: period_end_ns,
            ..z
        },
        Op::Transfer {
            debit,
            credit,
            amount,
        } => Slots {
            a: debit,
            b: credit,
            e: amount,
            ..z
        },
    }
}

fn slots_to_op(kind: OpKind, s: Slots) -> Result<Op, String> {
    let op = match kind {
        OpKind::CreateAccount => {
            let k = AccountKind::from_code(s.kind).ok_or(format!("bad account kind {}", s.kind))?;
            Op::CreateAccount {
                account: s.a,
                kind: k,
            }
        }
        OpKind::CreateLoan => {
            if s.share_bps > SHARE_BPS_FULL {
                return Err(format!(
                    "partner_share_bps {} > {SHARE_BPS_FULL}",
                    s.share_bps
                ));
            }
            Op::CreateLoan {
                loan: s.a,
                borrower: s.b,
                lead_reserve: s.c,
                partner_reserve: s.d,
                limit: s.e,
                partner_share_bps: s.share_bps,
            }
        }
        OpKind::TopUp => Op::TopUp {
            reserve_account: s.a,
            amount: s.e,
        },
        OpKind::Disburse => Op::Disburse {
            loan: s.a,
            amount: s.e,
        },
        OpKind::Repay => Op::Repay {
            loan: s.a,
            principal: s.e,
            interest: s.d,
        },
        OpKind::Statement => Op::Statement {
            account: s.a,
            period_start_ns: s.b,
            period_end_ns: s.c,
        },
        OpKind::Transfer => Op::Transfer {
            debit: s.a,
            credit: s.b,
            amount: s.e,
        },
    };
    // Canonical form: a slot the op does not use must be zero, so one event has one encoding.
    if op_to_slots(&op) != s {
        return Err(format!(
            "{kind}: a field the operation does not use is non-zero"
        ));
    }
    Ok(op)
}

/// Encodes one event as its 64-byte record. Also the input of the event-stream digest.
pub fn encode_record(event: &TraceEvent) -> [u8; RECORD_BYTES] {
    let s = op_to_slots(&event.op);
    let mut r = [0u8; RECORD_BYTES];
    r[0..8].copy_from_slice(&event.timestamp_ns.to_le_bytes());
    for (i, v) in [s.a, s.b, s.c, s.d, s.e].into_iter().enumerate() {
        r[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
    }
    r[48..50].copy_from_slice(&event.institution.to_le_bytes());
    r[50] = event.op.kind() as u8;
    r[51] = s.kind;
    r[52..54].copy_from_slice(&s.share_bps.to_le_bytes());
    r
}

fn u64_at(r: &[u8; RECORD_BYTES], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&r[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Decodes one record; the error names what is wrong, the caller adds the record index.
pub fn decode_record(r: &[u8; RECORD_BYTES]) -> Result<TraceEvent, String> {
    let kind = OpKind::from_code(r[50]).ok_or(format!("unknown op code {}", r[50]))?;
    if r[54..].iter().any(|&b| b != 0) {
        return Err("reserved bytes 54..64 are not zero".into());
    }
    let slots = Slots {
        a: u64_at(r, 8),
        b: u64_at(r, 16),
        c: u64_at(r, 24),
        d: u64_at(r, 32),
        e: u64_at(r, 40),
        kind: r[51],
        share_bps: u16::from_le_bytes([r[52], r[53]]),
    };
    Ok(TraceEvent {
        timestamp_ns: u64_at(r, 0),
        institution: u16::from_le_bytes([r[48], r[49]]),
        op: slots_to_op(kind, slots)?,
    })
}

fn encode_header(event_count: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&(RECORD_BYTES as u16).to_le_bytes());
    h[16..24].copy_from_slice(&event_count.to_le_bytes());
    h
}

/// Validates a header and returns the event count it declares.
pub fn decode_header(h: &[u8; HEADER_BYTES]) -> Result<u64, TraceError> {
    let bad = |m: String| Err(TraceError::BadHeader(m));
    if h[0..8] != MAGIC {
        return bad("magic is not RKNTRACE (not a binary loadgen trace)".into());
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != VERSION {
        return bad(format!(
            "version {version}, this loadgen reads version {VERSION}"
        ));
    }
    let record_bytes = u16::from_le_bytes([h[10], h[11]]);
    if usize::from(record_bytes) != RECORD_BYTES {
        return bad(format!(
            "record size {record_bytes}, expected {RECORD_BYTES}"
        ));
    }
    let mut c = [0u8; 8];
    c.copy_from_slice(&h[16..24]);
    Ok(u64::from_le_bytes(c))
}

/// Writes a binary trace; the event count in the header is patched in by `finish`.
pub struct BinWriter<W: Write + Seek> {
    out: W,
    count: u64,
}

impl<W: Write + Seek> BinWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&encode_header(0))?;
        Ok(Self { out, count: 0 })
    }

    pub fn write(&mut self, event: &TraceEvent) -> io::Result<()> {
        self.out.write_all(&encode_record(event))?;
        self.count += 1;
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<u64> {
        self.out.flush()?;
        self.out.seek(SeekFrom::Start(COUNT_OFFSET))?;
        self.out.write_all(&self.count.to_le_bytes())?;
        self.out.flush()?;
        Ok(self.count)
    }
}

/// Reads a binary trace record by record.
pub struct BinReader<R: Read> {
    input: R,
    declared: u64,
    index: u64,
    skip_bad: bool,
    skipped: u64,
}

impl<R: Read> BinReader<R> {
    pub fn new(mut input: R, skip_bad: bool) -> Result<Self, TraceError> {
        let mut h = [0u8; HEADER_BYTES];
        input
            .read_exact(&mut h)
            .map_err(|e| TraceError::BadHeader(format!("cannot read header: {e}")))?;
        let declared = decode_header(&h)?;
        Ok(Self {
            input,
            declared,
            index: 0,
            skip_bad,
            skipped: 0,
        })
    }

    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// `Err((skippable, error))`: a record that decodes badly is skippable, a broken file is not.
    fn next_record(&mut self) -> Option<Result<TraceEvent, (bool, TraceError)>> {
        if self.index == self.declared {
            let mut extra = [0u8; 1];
            return match self.input.read(&mut extra) {
                Ok(0) => None,
                Ok(_) => Some(Err((
                    false,
                    TraceError::BadRecord {
                        index: self.index,
                        reason: format!("data after the {} declared records", self.declared),
                    },
                ))),
                Err(e) => Some(Err((false, TraceError::Io(e)))),
            };
        }
        let mut r = [0u8; RECORD_BYTES];
        if let Err(e) = self.input.read_exact(&mut r) {
            let reason = format!("truncated: header declares {} records ({e})", self.declared);
            let index = self.index;
            self.index = self.declared;
            return Some(Err((false, TraceError::BadRecord { index, reason })));
        }
        let index = self.index;
        self.index += 1;
        Some(decode_record(&r).map_err(|reason| (true, TraceError::BadRecord { index, reason })))
    }
}

impl<R: Read> Iterator for BinReader<R> {
    type Item = Result<TraceEvent, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_record()? {
                Ok(event) => return Some(Ok(event)),
                Err((true, _)) if self.skip_bad => self.skipped += 1,
                Err((_, e)) => return Some(Err(e)),
            }
        }
    }
}
