//! CSV trace: one header line, then one event per line; unused cells are empty.
//!
//! Blank lines and lines starting with `#` are ignored. Every cell an operation uses is
//! required, every other cell must be empty, so one event has exactly one CSV form.

use std::fmt::Write as _;
use std::io::{self, BufRead, Write};

use super::TraceError;
use crate::op::{AccountKind, Op, OpKind, TraceEvent, SHARE_BPS_FULL};

pub const HEADER: &str = "timestamp_ns,institution,op,account,reserve,partner_reserve,loan,\
debit,credit,amount,interest,period_start_ns,period_end_ns,account_kind,partner_share_bps";

/// Column positions after the three fixed columns (timestamp_ns, institution, op).
#[derive(Clone, Copy)]
enum Col {
    Account = 0,
    Reserve,
    PartnerReserve,
    Loan,
    Debit,
    Credit,
    Amount,
    Interest,
    PeriodStart,
    PeriodEnd,
    AccountKind,
    PartnerShareBps,
}
const OP_COLS: usize = 12;
const COLS: usize = 3 + OP_COLS;
const COL_NAMES: [&str; OP_COLS] = [
    "account",
    "reserve",
    "partner_reserve",
    "loan",
    "debit",
    "credit",
    "amount",
    "interest",
    "period_start_ns",
    "period_end_ns",
    "account_kind",
    "partner_share_bps",
];

/// The numeric cells an op fills (account_kind is written separately, as a name).
fn op_cells(op: &Op) -> Vec<(Col, u64)> {
    use Col::*;
    match *op {
        Op::CreateAccount { account, .. } => vec![(Account, account)],
        Op::CreateLoan {
            loan,
            borrower,
            lead_reserve,
            partner_reserve,
            limit,
            partner_share_bps,
        } => {
            vec![
                (Account, borrower),
                (Reserve, lead_reserve),
                (PartnerReserve, partner_reserve),
                (Loan, loan),
                (Amount, limit),
                (PartnerShareBps, u64::from(partner_share_bps)),
            ]
        }
        Op::TopUp {
            reserve_account,
            amount,
        } => vec![(Reserve, reserve_account), (Amount, amount)],
        Op::Disburse { loan, amount } => vec![(Loan, loan), (Amount, amount)],
        Op::Repay {
            loan,
            principal,
            interest,
        } => {
            vec![(Loan, loan), (Amount, principal), (Interest, interest)]
        }
        Op::Statement {
            account,
            period_start_ns,
            period_end_ns,
        } => {
            vec![
                (Account, account),
                (PeriodStart, period_start_ns),
                (PeriodEnd, period_end_ns),
            ]
        }
        Op::Transfer {
            debit,
            credit,
            amount,
        } => {
            vec![(Debit, debit), (Credit, credit), (Amount, amount)]
        }
    }
}

/// Formats one event as a CSV line (with newline) into `line`, which is cleared first.
pub fn format_line(event: &TraceEvent, line: &mut String) {
    let mut cells: [Option<u64>; OP_COLS] = [None; OP_COLS];
    for (col, v) in op_cells(&event.op) {
        cells[col as usize] = Some(v);
    }
    line.clear();
    let _ = write!(
        line,
        "{},{},{}",
        event.timestamp_ns,
        event.institution,
        event.op.kind()
    );
    for (i, cell) in cells.iter().enumerate() {
        line.push(',');
        if let Some(v) = cell {
            let _ = write!(line, "{v}");
        } else if i == Col::AccountKind as usize {
            if let Op::CreateAccount { kind, .. } = event.op {
                line.push_str(kind.name());
            }
        }
    }
    line.push('\n');
}

/// Writes a CSV trace: header first, then one line per event.
pub struct CsvWriter<W: Write> {
    out: W,
    line: String,
    count: u64,
}

impl<W: Write> CsvWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        writeln!(out, "{HEADER}")?;
        Ok(Self {
            out,
            line: String::with_capacity(128),
            count: 0,
        })
    }

    pub fn write(&mut self, event: &TraceEvent) -> io::Result<()> {
        format_line(event, &mut self.line);
        self.count += 1;
        self.out.write_all(self.line.as_bytes())
    }

    pub fn finish(mut self) -> io::Result<u64> {
        self.out.flush()?;
        Ok(self.count)
    }
}

fn parse_u64(name: &str, cell: &str) -> Result<u64, String> {
    cell.parse::<u64>()
        .map_err(|_| format!("{name}: '{cell}' is not an unsigned integer"))
}

/// Parses one data line (without newline). The error is the reason; the caller adds the line.
pub fn parse_line(line: &str) -> Result<TraceEvent, String> {
    let cells: Vec<&str> = line.trim_end_matches('\r').split(',').collect();
    if cells.len() != COLS {
        return Err(format!("expected {COLS} fields, found {}", cells.len()));
    }
    let timestamp_ns = parse_u64("timestamp_ns", cells[0])?;
    let institution = cells[1]
        .parse::<u16>()
        .map_err(|_| format!("institution: '{}' is not an integer 0..=65535", cells[1]))?;
    let kind = OpKind::from_name(cells[2]).ok_or(format!("unknown op '{}'", cells[2]))?;
    let op_cells = &cells[3..];
    let mut used = [false; OP_COLS];
    let mut get = |col: Col| -> Result<u64, String> {
        used[col as usize] = true;
        let name = COL_NAMES[col as usize];
        match op_cells[col as usize] {
            "" => Err(format!("{kind}: {name} is required")),
            cell => parse_u64(name, cell),
        }
    };
    let op = build_op(kind, &mut get, op_cells)?;
    if let Op::CreateAccount { .. } = op {
        used[Col::AccountKind as usize] = true;
    }
    for (i, cell) in op_cells.iter().enumerate() {
        if !used[i] && !cell.is_empty() {
            return Err(format!(
                "{kind}: {} must be empty, found '{cell}'",
                COL_NAMES[i]
            ));
        }
    }
    Ok(TraceEvent {
        timestamp_ns,
        institution,
        op,
    })
}

fn build_op(
    kind: OpKind,
    get: &mut impl FnMut(Col) -> Result<u64, String>,
    op_cells: &[&str],
) -> Result<Op, String> {
    use Col::*;
    Ok(match kind {
        OpKind::CreateAccount => {
            let name = op_cells[AccountKind as usize];
            let kind = crate::op::AccountKind::from_name(name).ok_or(format!(
                "account_kind: '{name}' is not reserve|borrower|operating"
            ))?;
            Op::CreateAccount {
                account: get(Account)?,
                kind,
            }
        }
        OpKind::CreateLoan => {
            let bps = get(PartnerShareBps)?;
            if bps > u64::from(SHARE_BPS_FULL) {
                return Err(format!("partner_share_bps: {bps} > {SHARE_BPS_FULL}"));
            }
            Op::CreateLoan {
                loan: get(Loan)?,
                borrower: get(Account)?,
                lead_reserve: get(Reserve)?,
                partner_reserve: get(PartnerReserve)?,
                limit: get(Amount)?,
                partner_share_bps: bps as u16,
            }
        }
        OpKind::TopUp => Op::TopUp {
            reserve_account: get(Reserve)?,
            amount: get(Amount)?,
        },
        OpKind::Disburse => Op::Disburse {
            loan: get(Loan)?,
            amount: get(Amount)?,
        },
        OpKind::Repay => Op::Repay {
            loan: get(Loan)?,
            principal: get(Amount)?,
            interest: get(Interest)?,
        },
        OpKind::Statement => Op::Statement {
            account: get(Account)?,
            period_start_ns: get(PeriodStart)?,
            period_end_ns: get(PeriodEnd)?,
        },
        OpKind::Transfer => Op::Transfer {
            debit: get(Debit)?,
            credit: get(Credit)?,
            amount: get(Amount)?,
        },
    })
}

/// Reads a CSV trace line by line; errors carry 1-based line numbers.
pub struct CsvReader<R: BufRead> {
    input: R,
    line: String,
    line_number: u64,
    header_seen: bool,
    skip_bad: bool,
    skipped: u64,
}

impl<R: BufRead> CsvReader<R> {
    pub fn new(input: R, skip_bad: bool) -> Self {
        Self {
            input,
            line: String::new(),
            line_number: 0,
            header_seen: false,
            skip_bad,
            skipped: 0,
        }
    }

    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn bad(&self, reason: String) -> TraceError {
        TraceError::BadLine {
            line: self.line_number,
            reason,
        }
    }
}

impl<R: BufRead> Iterator for CsvReader<R> {
    type Item = Result<TraceEvent, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.line.clear();
            match self.input.read_line(&mut self.line) {
                Ok(0) => return None,
                Ok(_) => self.line_number += 1,
                Err(e) => return Some(Err(self.bad(format!("cannot read: {e}")))),
            }
            let text = self.line.trim_end_matches(['\n', '\r']);
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            if !self.header_seen {
                if text != HEADER {
                    return Some(Err(self.bad(format!("expected the header line '{HEADER}'"))));
                }
                self.header_seen = true;
                continue;
            }
            match parse_line(text) {
                Ok(event) => return Some(Ok(event)),
                Err(_) if self.skip_bad => self.skipped += 1,
                Err(reason) => return Some(Err(self.bad(reason))),
            }
        }
    }
}

/// Helper for tests and docs: the account kind names in CSV.
pub fn account_kind_names() -> Vec<&'static str> {
    AccountKind::ALL.iter().map(|k| k.name()).collect()
}
