//! The auditor on logs built in-process the way a node writes them: `reckon init` material (real
//! Ed25519 validator and BLS institution keys, a real genesis), blocks with real QCs, signed
//! requests, records appended to a real `BlockLog`, snapshots from the real ledger. Then one fault
//! at a time, each of which must be found and named.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::client::Signer;
use crate::consensus::{vote_message, Block, QuorumCert, SignerBitmap};
use crate::crypto::{load_validator_key, SignedRequest, ValidatorKey};
use crate::node::batches::Batch;
use crate::node::execute::encode_record;
use crate::node::init::{
    init, lead_funding_account, reserve_account, settlement_account, InitOptions, GENESIS_LEDGER,
};
use crate::storage::{BlockLog, Cipher, EncryptionConfig, LogConfig, WriteBackend};
use crate::types::Transfer;

const BLOCKS: u64 = 24;
const SNAPSHOT_EVERY: u64 = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tamper {
    None,
    /// The QC of this height carries signatures over another message.
    ForgeQc(u64),
    /// One request of this height carries a signature that does not verify.
    RequestSignature(u64),
}

struct Fixture {
    _dir: tempfile::TempDir,
    genesis: PathBuf,
    data: PathBuf,
    /// The log's key file when the log is encrypted (the node's `files.storage_key`).
    storage_key: Option<PathBuf>,
}

impl Fixture {
    fn options(&self) -> AuditOptions {
        AuditOptions {
            data_dir: self.data.clone(),
            genesis: self.genesis.clone(),
            storage_key: self.storage_key.clone(),
            verify_requests: true,
        }
    }
    fn log_dir(&self) -> PathBuf {
        self.data.join("log")
    }
    fn audit(&self) -> AuditOutcome {
        audit(&self.options()).expect("the audit runs")
    }
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128, institution: u32) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        institution,
        ledger: GENESIS_LEDGER,
        code: 1,
        ..Transfer::default()
    }
}

/// The requests of block `height` (some blocks are empty, one request is refused by the ledger).
fn requests(height: u64, signers: &[Signer]) -> Vec<SignedRequest> {
    let id = height as u128;
    let (bank1, bank2) = (&signers[1], &signers[2]);
    let sign = |r: Result<SignedRequest, _>| r.expect("sign");
    match height % 4 {
        0 => Vec::new(),
        1 => vec![sign(bank1.top_up(
            id,
            &[transfer(
                id,
                settlement_account(1),
                reserve_account(1),
                1_000,
                1,
            )],
        ))],
        2 => vec![
            sign(bank2.create_transfers(
                id,
                &[transfer(
                    id,
                    settlement_account(2),
                    lead_funding_account(1),
                    70,
                    2,
                )],
            )),
            // Not bank 2's account to debit: committed, rejected by the ledger (code 71).
            sign(bank2.create_transfers(
                id + 1_000,
                &[transfer(
                    id + 1_000,
                    settlement_account(1),
                    reserve_account(2),
                    5,
                    2,
                )],
            )),
        ],
        _ => vec![sign(bank1.create_transfers(
            id,
            &[transfer(
                id,
                lead_funding_account(1),
                settlement_account(2),
                3,
                1,
            )],
        ))],
    }
}

fn qc_for(block: &Block, chain: u64, validators: &[ValidatorKey], forge: bool) -> QuorumCert {
    let hash = block.hash();
    let height = if forge {
        block.height + 1
    } else {
        block.height
    };
    let msg = vote_message(chain, &hash, block.round, height);
    let mut signers = SignerBitmap::default();
    let sigs: Vec<_> = validators
        .iter()
        .enumerate()
        .take(3)
        .map(|(i, key)| {
            signers.insert(i as u16);
            key.sign(&msg)
        })
        .collect();
    QuorumCert {
        block_hash: hash,
        round: block.round,
        height: block.height,
        signers,
        signatures: sigs,
    }
}

/// A consortium from `reckon init` and a data directory with `BLOCKS` committed blocks.
fn fixture(tamper: Tamper) -> Fixture {
    fixture_with(&[tamper])
}

/// `fixture` with several tamperings at once.
fn fixture_with(tampers: &[Tamper]) -> Fixture {
    build(tampers, false)
}

/// A clean log whose payloads are encrypted at rest (XChaCha20-Poly1305), with its key file.
fn fixture_encrypted() -> Fixture {
    build(&[Tamper::None], true)
}

fn build(tampers: &[Tamper], encrypted: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("consortium");
    init(&InitOptions {
        nodes: 4,
        institutions: vec!["webank".into(), "huarui".into()],
        out: out.clone(),
        base_port: 7100,
        chain_id: 1,
    })
    .expect("init");
    let genesis_path = out.join("genesis.toml");
    let genesis = Genesis::load(&genesis_path).expect("genesis");
    let validators: Vec<ValidatorKey> = (0..4)
        .map(|i| {
            load_validator_key(&out.join(format!("keys/node-{i}.ed25519"))).expect("validator key")
        })
        .collect();
    let signers: Vec<Signer> = (0..3u32)
        .map(|id| {
            Signer::load(id, 1, &out.join(format!("keys/institution-{id}.bls"))).expect("signer")
        })
        .collect();
    let data = out.join("data/node-0");
    let log_dir = data.join("log");
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let mut config = LogConfig::for_tests(64 << 10);
    config.write_backend = WriteBackend::Pwrite;
    config.direct_io = false;
    config.snapshot_every_blocks = SNAPSHOT_EVERY;
    let storage_key = encrypted.then(|| write_key(&out.join("keys/log.key"), 0x5a));
    config.encryption = storage_key.as_ref().map(|key_file| EncryptionConfig {
        key_file: key_file.clone(),
        cipher: Cipher::XChaCha20Poly1305,
    });
    let mut log = BlockLog::open(&log_dir, config).expect("open log");
    let mut ledger = genesis.genesis.ledger().expect("genesis ledger");
    let chain = genesis.consensus_chain_id();
    let start_ms = genesis.genesis.genesis_time_ns / 1_000_000;
    let mut justify = genesis_qc();
    let mut parent = [0u8; 32];
    for height in 1..=BLOCKS {
        let mut requests = requests(height, &signers);
        if tampers.contains(&Tamper::RequestSignature(height)) {
            // Signed with another institution's key.
            let forged = requests[0]
                .request
                .clone()
                .sign(&signers[0].key)
                .expect("sign");
            requests[0].signature = forged.signature;
        }
        let batches: Vec<Arc<Batch>> = if requests.is_empty() {
            Vec::new()
        } else {
            vec![Arc::new(Batch {
                requests: requests.iter().map(|r| r.encode().into()).collect(),
            })]
        };
        let block = Block {
            author: (height % 4) as u16,
            round: height,
            height,
            timestamp_ms: start_ms + height * 10,
            justify: justify.clone(),
            payload: batches.iter().map(|b| b.digest()).collect(),
        };
        let qc = qc_for(
            &block,
            chain,
            &validators,
            tampers.contains(&Tamper::ForgeQc(height)),
        );
        let committed = CommittedBlock {
            height,
            block,
            qc: qc.clone(),
        };
        apply_block(&mut ledger, &committed, &batches);
        let record = encode_record(&committed, &batches);
        let ticket = log.append(height, &parent, &record).expect("append");
        parent = ticket.hash();
        ticket.wait().expect("durable");
        if log.snapshot_due(height) {
            let mut digest = [0u8; 32];
            digest[..16].copy_from_slice(&ledger.digest().to_le_bytes());
            log.write_snapshot(height, digest, &ledger.snapshot_bytes())
                .expect("snapshot");
        }
        justify = qc;
    }
    drop(log);
    Fixture {
        _dir: dir,
        genesis: genesis_path,
        data,
        storage_key,
    }
}

/// A 32-byte key of `fill` bytes, as hex, readable by its owner only.
fn write_key(path: &Path, fill: u8) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let hex: String = std::iter::repeat_n(format!("{fill:02x}"), 32).collect();
    std::fs::write(path, hex).expect("key file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.to_path_buf()
}

/// The (segment, offset) of the frame at `height`.
fn place_of(fixture: &Fixture, height: u64) -> (u64, u64) {
    let reader = LogReader::open(&fixture.log_dir(), None).expect("reader");
    let mut found = None;
    let _ = reader.walk::<()>(|r| {
        if r.height == height {
            found = Some((r.segment, r.offset));
        }
        Ok(())
    });
    found.expect("height in the log")
}

fn segment_path(fixture: &Fixture, segment: u64) -> PathBuf {
    fixture.log_dir().join(format!("{segment:010}.seg"))
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at as usize] ^= 0x01;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn a_clean_data_directory_audits_ok_with_every_check_counted() {
    let fixture = fixture(Tamper::None);
    let outcome = fixture.audit();
    assert!(outcome.clean(), "{:?}", outcome.fault);
    let r = &outcome.report;
    assert_eq!(
        (r.blocks, r.first_height, r.last_height),
        (BLOCKS, Some(1), BLOCKS)
    );
    assert_eq!(r.qcs_verified, BLOCKS);
    assert_eq!(r.validators, 4);
    // Per 4 blocks: 1 + 2 + 1 requests, one of which has a rejected event.
    assert_eq!(r.requests, BLOCKS / 4 * 4);
    assert_eq!(r.request_signatures_verified, r.requests);
    assert_eq!(r.events_not_ok, BLOCKS / 4);
    // Snapshots at 8, 16, 24; the store keeps the newest two.
    assert_eq!(r.snapshots_matched, vec![16, 24]);
    assert_ne!(r.ledger_digest, r.genesis_digest);
    assert!(r.segments >= 1 && r.frame_bytes > 0);
    // The audit wrote nothing and a node can still open the log afterwards.
    let again = fixture.audit();
    assert_eq!(again.report.ledger_digest, r.ledger_digest);
}

#[test]
fn a_flipped_byte_in_a_record_is_a_checksum_fault_with_segment_offset_and_height() {
    let fixture = fixture(Tamper::None);
    let (segment, offset) = place_of(&fixture, 10);
    flip(&segment_path(&fixture, segment), offset + 100);
    let outcome = fixture.audit();
    let fault = outcome.fault.expect("a fault");
    assert_eq!(fault.kind(), "storage");
    assert_eq!(fault.height(), Some(10));
    assert_eq!(fault.place(), Some((segment, offset)));
    let text = fault.to_string();
    assert!(text.contains("checksum mismatch"), "{text}");
    assert!(text.contains(&format!("offset {offset}")), "{text}");
    // Everything before the fault was checked.
    assert_eq!(outcome.report.last_height, 9);
}

#[test]
fn a_forged_qc_signature_is_a_qc_fault() {
    let fixture = fixture(Tamper::ForgeQc(7));
    let fault = fixture.audit().fault.expect("a fault");
    assert_eq!(fault.kind(), "qc_signature");
    assert_eq!(fault.height(), Some(7));
    assert!(
        fault.to_string().contains("QC signature invalid"),
        "{fault}"
    );
    assert_eq!(fault.place(), Some(place_of(&fixture, 7)));
}

#[test]
fn of_several_faults_the_lowest_height_is_named() {
    // Checks run on a window of blocks in parallel; the fault named is still the first.
    let fixture = fixture_with(&[Tamper::ForgeQc(9), Tamper::RequestSignature(6)]);
    let (segment, offset) = place_of(&fixture, 12);
    flip(&segment_path(&fixture, segment), offset + 100);
    let fault = fixture.audit().fault.expect("a fault");
    assert_eq!(
        (fault.kind(), fault.height()),
        ("request_signature", Some(6)),
        "{fault}"
    );
    let fixture = fixture_with(&[Tamper::ForgeQc(9)]);
    let (segment, offset) = place_of(&fixture, 12);
    flip(&segment_path(&fixture, segment), offset + 100);
    let fault = fixture.audit().fault.expect("a fault");
    assert_eq!(
        (fault.kind(), fault.height()),
        ("qc_signature", Some(9)),
        "{fault}"
    );
}

#[test]
fn a_bad_request_signature_is_named() {
    let fixture = fixture(Tamper::RequestSignature(5));
    let fault = fixture.audit().fault.expect("a fault");
    assert_eq!(fault.kind(), "request_signature");
    assert_eq!(fault.height(), Some(5));
    assert!(fault.to_string().contains("InvalidSignature"), "{fault}");
}

#[test]
fn a_tampered_ledger_digest_is_a_re_execution_mismatch() {
    let fixture = fixture(Tamper::None);
    let store = SnapshotStore::open(&fixture.log_dir()).expect("store");
    let snapshot = store.load(16).expect("snapshot at 16");
    let mut digest = snapshot.digest;
    digest[0] ^= 0xff;
    store.write(16, digest, &snapshot.bytes).expect("rewrite");
    let fault = fixture.audit().fault.expect("a fault");
    assert_eq!(fault.kind(), "ledger_digest");
    assert_eq!(fault.height(), Some(16));
    assert!(
        fault.to_string().contains("ledger digest mismatch"),
        "{fault}"
    );

    // A snapshot whose digest is right but whose state was altered (checksums redone).
    let fixture = self::fixture(Tamper::None);
    let store = SnapshotStore::open(&fixture.log_dir()).expect("store");
    let snapshot = store.load(24).expect("snapshot at 24");
    let mut ledger = Ledger::from_snapshot_bytes(&snapshot.bytes).expect("loads");
    let body = crate::codec::encode_body(&[transfer(
        999_999,
        settlement_account(1),
        reserve_account(1),
        1,
        1,
    )]);
    let timestamp = ledger.timestamp_last() + 1;
    ledger
        .apply_request(1, timestamp, Operation::TopUp as u8, &body)
        .expect("applies");
    store
        .write(24, snapshot.digest, &ledger.snapshot_bytes())
        .expect("rewrite");
    let fault = fixture.audit().fault.expect("a fault");
    assert_eq!(fault.kind(), "ledger_state", "{fault}");
    assert_eq!(fault.height(), Some(24));
}

#[test]
fn a_corrupt_snapshot_file_and_a_missing_data_dir_are_reported() {
    let fixture = fixture(Tamper::None);
    let path = SnapshotStore::open(&fixture.log_dir())
        .expect("store")
        .path(24);
    flip(&path, 200);
    let fault = fixture.audit().fault.expect("a fault");
    assert_eq!(fault.kind(), "snapshot");
    assert!(fault.to_string().contains("checksum"), "{fault}");

    let mut options = fixture.options();
    options.data_dir = fixture.data.join("nope");
    assert!(matches!(audit(&options), Err(AuditError::Log { .. })));

    // A node holding the log: refused with the reason, nothing read.
    let mut config = LogConfig::for_tests(64 << 10);
    config.direct_io = false;
    let _node = BlockLog::open(&fixture.log_dir(), config).expect("open");
    let refused = audit(&fixture.options()).map(|_| ()).expect_err("locked");
    assert!(matches!(refused, AuditError::Locked { .. }), "{refused}");
    assert!(refused.to_string().contains("running node"), "{refused}");
}

#[test]
fn mutated_records_with_valid_checksums_never_panic() {
    // Real records with a few bytes changed, re-appended to a fresh log (so checksums and the
    // storage hash chain are valid and every decoder and check behind them sees the damage):
    // each audit must end in a fault or clean, never a panic.
    let fixture = fixture(Tamper::None);
    let mut records = Vec::new();
    let reader = LogReader::open(&fixture.log_dir(), None).expect("reader");
    let _ = reader.walk::<()>(|r| {
        records.push(r.payload.into_owned());
        Ok(())
    });
    drop(reader);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut kinds = std::collections::BTreeSet::new();
    for round in 0..12 {
        let data = fixture
            .data
            .parent()
            .expect("data parent")
            .join(format!("mutant-{round}"));
        let log_dir = data.join("log");
        std::fs::create_dir_all(&log_dir).expect("dir");
        let mut config = LogConfig::for_tests(64 << 10);
        config.write_backend = WriteBackend::Pwrite;
        config.direct_io = false;
        let mut log = BlockLog::open(&log_dir, config).expect("open");
        let mut parent = [0u8; 32];
        let victim = (next() % records.len() as u64) as usize;
        for (i, record) in records.iter().enumerate() {
            let mut bytes = record.clone();
            if i == victim {
                for _ in 0..1 + next() % 4 {
                    let at = (next() % bytes.len() as u64) as usize;
                    bytes[at] ^= (next() as u8) | 1;
                }
                if round % 3 == 0 {
                    bytes.truncate((next() % bytes.len() as u64) as usize);
                }
            }
            let ticket = log.append(i as u64 + 1, &parent, &bytes).expect("append");
            parent = ticket.hash();
        }
        log.wait_durable().expect("durable");
        drop(log);
        let mut options = fixture.options();
        options.data_dir = data;
        let outcome = audit(&options).expect("runs");
        let fault = outcome.fault.expect("every mutation is caught");
        assert_eq!(fault.height(), Some(victim as u64 + 1), "{fault}");
        kinds.insert(fault.kind());
    }
    // The mutations reach past the checksums into the decoders and the checks behind them.
    assert!(kinds.len() >= 2, "{kinds:?}");
}

#[test]
fn an_encrypted_log_audits_ok_with_its_key() {
    let f = fixture_encrypted();
    let outcome = f.audit();
    assert!(outcome.clean(), "{:?}", outcome.fault);
    assert_eq!(outcome.report.blocks, BLOCKS);
    assert_eq!(outcome.report.qcs_verified, BLOCKS);
    let r = &outcome.report;
    assert_eq!(r.requests, BLOCKS / 4 * 4);
    assert_eq!(r.request_signatures_verified, r.requests);
    // Snapshots at 8, 16, 24; the store keeps the newest two.
    assert_eq!(r.snapshots_matched, vec![16, 24]);
}

#[test]
fn an_encrypted_log_without_its_key_or_with_another_key_is_refused_by_name() {
    let f = fixture_encrypted();
    let mut options = f.options();
    // What an operator reads: the audit's error, or the fault it reports.
    let said = |options: &AuditOptions| match audit(options) {
        Ok(outcome) => format!("{:?}", outcome.fault),
        Err(error) => error.to_string(),
    };
    options.storage_key = None;
    let without = said(&options);
    assert!(
        without.contains("is encrypted (encrypted with XChaCha20-Poly1305) but no storage key"),
        "no key: {without}"
    );
    options.storage_key = Some(write_key(&f.genesis.with_file_name("other.key"), 0x33));
    let wrong = said(&options);
    assert!(
        wrong.contains("wrong key for this log"),
        "wrong key: {wrong}"
    );
}
