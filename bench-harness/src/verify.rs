//! `bench-harness verify`: batched BLS request verification against the same-run pairing limit.
//!
//! The limit is blst `aggregate_verify` over the same digests and keys on one core (hash to G1
//! plus one Miller loop per signature, one final exponentiation), times the thread count.

use blst::min_sig::{PublicKey, Signature};
use blst::{blst_fp12, blst_p1_affine, Pairing};
use engine::crypto::{
    aggregate, sign_vote, vote_message, BatchVerifier, KeyPair, Registry, Request, SignedRequest,
    Strategy, ValidatorSet, VerifyCode, REQUEST_DST,
};
use engine::types::EVENT_BYTES;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::sync::Arc;
use std::time::Instant;

const CHAIN_ID: u64 = 1;
const QC_SIGNERS: [usize; 4] = [4, 16, 64, 128];
const QC_REPS: usize = 20;

#[derive(clap::Args)]
pub struct Args {
    /// Signed requests per batch.
    #[arg(long, default_value_t = 2048)]
    pub sigs: usize,
    /// Verification threads (default: all cores). blst's own pool always uses all cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Institutions signing; institution 0 signs about half of the requests.
    #[arg(long, default_value_t = 4)]
    pub signers: usize,
    /// Events (128 bytes each) per request body.
    #[arg(long, default_value_t = 1)]
    pub events: usize,
    /// Timed repetitions of each batched measurement; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Print the result as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
}

/// Single-core pairing limit: signatures/s of blst `aggregate_verify` run on the calling thread.
/// This is blst's own per-worker loop (`Pairing::aggregate` per key and message, one final
/// exponentiation), without blst's thread pool, so it measures exactly one core.
pub fn pairing_limit_sigs_per_s(
    messages: &[&[u8]],
    keys: &[&PublicKey],
    aggregate_signature: &Signature,
) -> Result<f64, String> {
    if messages.is_empty() || messages.len() != keys.len() {
        return Err("pairing limit probe needs one key per message".to_string());
    }
    let start = Instant::now();
    let mut pairing = Pairing::new(true, REQUEST_DST);
    let no_signature: Option<&blst_p1_affine> = None;
    for (key, message) in keys.iter().zip(messages) {
        let key: &blst::blst_p2_affine = (*key).into();
        let outcome = pairing.aggregate(key, false, &no_signature, false, message, &[]);
        if outcome != blst::BLST_ERROR::BLST_SUCCESS {
            return Err(format!(
                "pairing limit probe: aggregate failed: {outcome:?}"
            ));
        }
    }
    let mut signature_gt = blst_fp12::default();
    Pairing::aggregated(
        &mut signature_gt,
        <&blst_p1_affine>::from(aggregate_signature),
    );
    pairing.commit();
    if !pairing.finalverify(Some(&signature_gt)) {
        return Err("pairing limit probe: the aggregate signature does not verify".to_string());
    }
    Ok(messages.len() as f64 / start.elapsed().as_secs_f64())
}

/// Called by `bench-harness limits` (another issue owns it), hence the allow until then.
#[allow(dead_code)]
/// A self-contained probe for `bench-harness limits`: `sigs` distinct requests, one signer.
pub fn pairing_limit_probe(sigs: usize) -> Result<f64, String> {
    let workload = Workload::new(sigs.max(1), 1, 1, 7);
    workload.limit_single_core()
}

/// Signed requests with a skewed signer mix: institution 0 signs about half of them.
struct Workload {
    registry: Arc<Registry>,
    keys: Vec<KeyPair>,
    requests: Vec<SignedRequest>,
}

impl Workload {
    fn new(sigs: usize, signers: usize, events: usize, seed: u64) -> Self {
        let keys: Vec<KeyPair> = (0..signers).map(|_| KeyPair::generate()).collect();
        let mut registry = Registry::new();
        for (institution, pair) in keys.iter().enumerate() {
            registry
                .insert_validated(institution as u32, *pair.public())
                .expect("fresh registry");
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let plan: Vec<(usize, Vec<u8>)> = (0..sigs)
            .map(|_| {
                let signer = if rng.gen_bool(0.5) {
                    0
                } else {
                    rng.gen_range(0..signers)
                };
                let body: Vec<u8> = (0..events * EVENT_BYTES).map(|_| rng.gen()).collect();
                (signer, body)
            })
            .collect();
        let requests = plan
            .into_par_iter()
            .enumerate()
            .map(|(id, (signer, body))| {
                let request = Request {
                    institution: signer as u32,
                    chain_id: CHAIN_ID,
                    request_id: id as u128,
                    operation: 1,
                    body,
                };
                request
                    .sign(&keys[signer])
                    .expect("bench bodies are within bounds")
            })
            .collect();
        Self {
            registry: Arc::new(registry),
            keys,
            requests,
        }
    }

    fn limit_single_core(&self) -> Result<f64, String> {
        let digests: Vec<[u8; 32]> = self
            .requests
            .par_iter()
            .map(|signed| signed.request.digest())
            .collect();
        let messages: Vec<&[u8]> = digests.iter().map(|digest| &digest[..]).collect();
        let keys: Vec<&PublicKey> = self
            .requests
            .iter()
            .map(|signed| self.key_of(signed))
            .collect();
        let signatures: Result<Vec<Signature>, _> = self
            .requests
            .iter()
            .map(|s| Signature::from_bytes(&s.signature))
            .collect();
        let signatures = signatures.map_err(|e| format!("bench signature: {e:?}"))?;
        let refs: Vec<&Signature> = signatures.iter().collect();
        let aggregate = blst::min_sig::AggregateSignature::aggregate(&refs, false)
            .map_err(|e| format!("{e:?}"))?;
        pairing_limit_sigs_per_s(&messages, &keys, &aggregate.to_signature())
    }

    fn key_of(&self, signed: &SignedRequest) -> &PublicKey {
        self.keys[signed.request.institution as usize]
            .public()
            .blst()
    }
}

fn pool(threads: usize) -> Result<rayon::ThreadPool, String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| format!("rayon pool: {e}"))
}

/// Best-of-`reps` signatures/s of a batched verifier on a pool of `threads`; checks all pass.
fn batched_rate(
    workload: &Workload,
    strategy: Strategy,
    threads: usize,
    reps: usize,
) -> Result<f64, String> {
    let verifier = BatchVerifier::with_strategy(workload.registry.clone(), CHAIN_ID, strategy);
    let pool = pool(threads)?;
    let mut best = 0.0f64;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        let codes = pool.install(|| verifier.verify(&workload.requests));
        let rate = codes.len() as f64 / start.elapsed().as_secs_f64();
        if codes.iter().any(|code| *code != VerifyCode::Ok) {
            return Err(format!("{strategy:?}: a valid request was rejected"));
        }
        best = best.max(rate);
    }
    Ok(best)
}

/// Signatures/s verifying each request alone (two pairings each) on one thread.
fn one_by_one_rate(workload: &Workload) -> Result<f64, String> {
    let verifier = BatchVerifier::new(workload.registry.clone(), CHAIN_ID);
    let start = Instant::now();
    for signed in &workload.requests {
        if verifier.verify_one(signed) != VerifyCode::Ok {
            return Err("one by one: a valid request was rejected".to_string());
        }
    }
    Ok(workload.requests.len() as f64 / start.elapsed().as_secs_f64())
}

/// Seconds to classify the batch with 1% of the signatures invalid (bisection included).
fn bisection_seconds(workload: &Workload, threads: usize) -> Result<(f64, usize), String> {
    let mut requests = workload.requests.clone();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let bad = (requests.len() / 100).max(1);
    for _ in 0..bad {
        let position = rng.gen_range(0..requests.len());
        requests[position].request.operation = 2; // no longer what was signed
    }
    let verifier = BatchVerifier::new(workload.registry.clone(), CHAIN_ID);
    let start = Instant::now();
    let codes = pool(threads)?.install(|| verifier.verify(&requests));
    let seconds = start.elapsed().as_secs_f64();
    let rejected = codes
        .iter()
        .filter(|code| **code == VerifyCode::InvalidSignature)
        .count();
    let expected = requests
        .iter()
        .filter(|signed| signed.request.operation == 2)
        .count();
    if rejected != expected {
        return Err(format!(
            "bisection rejected {rejected}, expected {expected}"
        ));
    }
    Ok((seconds, rejected))
}

/// (cold, warm) microseconds per QC check with `signers` of `signers` validators signing.
fn qc_micros(signers: usize) -> Result<(f64, f64), String> {
    let keys: Vec<KeyPair> = (0..signers).map(|_| KeyPair::generate()).collect();
    let set = ValidatorSet::from_validated(keys.iter().map(|pair| *pair.public()).collect())
        .map_err(|e| e.to_string())?;
    let hash = [3u8; 32];
    let votes: Vec<(u16, [u8; 48])> = keys
        .par_iter()
        .enumerate()
        .map(|(i, pair)| (i as u16, sign_vote(pair, CHAIN_ID, 9, &hash)))
        .collect();
    let quorum = aggregate(&votes).map_err(|e| e.to_string())?;
    let message = vote_message(CHAIN_ID, 9, &hash);
    let (mut cold, mut warm) = (0.0, 0.0);
    for _ in 0..QC_REPS {
        set.clear_cache();
        let start = Instant::now();
        set.verify_quorum(&message, &quorum)
            .map_err(|e| e.to_string())?;
        cold += start.elapsed().as_secs_f64();
        let start = Instant::now();
        set.verify_quorum(&message, &quorum)
            .map_err(|e| e.to_string())?;
        warm += start.elapsed().as_secs_f64();
    }
    Ok((cold * 1e6 / QC_REPS as f64, warm * 1e6 / QC_REPS as f64))
}

pub fn run(args: Args) -> Result<(), String> {
    if args.sigs == 0
        || args.signers == 0
        || !(1..=engine::types::BATCH_EVENTS_MAX).contains(&args.events)
    {
        return Err("--sigs and --signers must be positive; --events 1..=8190".to_string());
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = args.threads.unwrap_or(cores).max(1);
    let workload = Workload::new(args.sigs, args.signers, args.events, 1);

    let limit_one_core = workload.limit_single_core()?;
    let limit = limit_one_core * threads as f64;
    let one_by_one = one_by_one_rate(&workload)?;
    let batched_one = batched_rate(&workload, Strategy::Grouped, 1, args.reps)?;
    let batched = batched_rate(&workload, Strategy::Grouped, threads, args.reps)?;
    let pairing_chunks = batched_rate(&workload, Strategy::PairingChunks, threads, args.reps)?;
    let blst_pool = batched_rate(&workload, Strategy::BlstPool, threads, args.reps)?;
    let pairing_chunks_one = batched_rate(&workload, Strategy::PairingChunks, 1, args.reps)?;
    let (bisect_s, bisect_bad) = bisection_seconds(&workload, threads)?;
    let mut qc = Vec::with_capacity(QC_SIGNERS.len());
    for signers in QC_SIGNERS {
        let (cold, warm) = qc_micros(signers)?;
        qc.push(serde_json::json!({"signers": signers, "cold_us": cold, "warm_us": warm}));
    }

    println!("SUMMARY verify (machine shared and noisy: compare ratios, not absolutes)");
    println!(
        "  config: sigs {} signers {} events/request {} threads {threads} cores {cores} reps {}",
        args.sigs, args.signers, args.events, args.reps
    );
    println!("  limit: aggregate_verify 1 core {limit_one_core:.0} sigs/s x {threads} = {limit:.0} sigs/s");
    println!("  one by one (2 pairings each, 1 thread): {one_by_one:.0} sigs/s");
    println!(
        "  batched grouped, 1 thread:  {batched_one:.0} sigs/s ({:.2} of 1-core limit)",
        batched_one / limit_one_core
    );
    println!("  batched grouped, {threads} threads: {batched:.0} sigs/s ({:.2} of limit, {:.1}x one by one)", batched / limit, batched / one_by_one);
    println!("  rayon Pairing chunks: 1 thread {pairing_chunks_one:.0}, {threads} threads {pairing_chunks:.0} sigs/s");
    println!("  blst pool verify_multiple_aggregate_signatures: {blst_pool:.0} sigs/s");
    println!(
        "  1% invalid ({bisect_bad} bad): classified in {:.1} ms",
        bisect_s * 1e3
    );
    for entry in &qc {
        println!(
            "  QC {} signers: cold {:.0} us, cached key {:.0} us",
            entry["signers"],
            entry["cold_us"].as_f64().unwrap_or(0.0),
            entry["warm_us"].as_f64().unwrap_or(0.0)
        );
    }
    if args.json {
        let line = serde_json::json!({
            "bench": "verify", "sigs": args.sigs, "signers": args.signers, "events": args.events, "threads": threads,
            "sigs_per_s": batched, "limit_sigs_per_s": limit, "ratio": batched / limit,
            "one_by_one_sigs_per_s": one_by_one, "speedup_vs_one_by_one": batched / one_by_one,
            "limit_one_core_sigs_per_s": limit_one_core, "batched_one_thread_sigs_per_s": batched_one,
            "pairing_chunks_sigs_per_s": pairing_chunks, "pairing_chunks_one_thread_sigs_per_s": pairing_chunks_one,
            "blst_pool_sigs_per_s": blst_pool, "bisect_1pct_ms": bisect_s * 1e3, "qc": qc,
        });
        println!("{line}");
    }
    Ok(())
}
