//! `bench-harness verify`: batched BLS request verification against the same-run pairing limit.
//!
//! The limit is blst `aggregate_verify` over the same digests and keys on one core (hash to G1
//! plus one Miller loop per signature, one final exponentiation), times the thread count.

use blst::min_sig::{PublicKey, Signature};
use blst::{blst_fp12, blst_p1_affine, Pairing};
use engine::consensus::vote_message;
use engine::crypto::{
    BatchVerifier, KeyPair, Registry, Request, SignedRequest, Strategy, ValidatorKey, ValidatorSet,
    VerifyCode, REQUEST_DST,
};
use engine::types::EVENT_BYTES;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::sync::Arc;
use std::time::Instant;

const CHAIN_ID: u64 = 1;
/// Validator-set sizes whose QC check is timed (a QC carries n - f signatures).
const QC_VALIDATORS: [usize; 4] = [4, 16, 64, 128];
const QC_REPS: usize = 20;
/// One-by-one verification is slow: time at most this many requests per repetition.
const ONE_BY_ONE_SIGS_MAX: usize = 512;

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

/// Single-core pairing limit: blst `aggregate_verify` run on the calling thread. This is blst's
/// own per-worker loop (`Pairing::aggregate` per key and message, one final exponentiation)
/// without blst's thread pool, so it measures exactly one core.
fn pairing_limit_rate(
    messages: &[&[u8]],
    keys: &[&PublicKey],
    aggregate_signature: &Signature,
) -> Result<Rate, String> {
    if messages.is_empty() || messages.len() != keys.len() {
        return Err("pairing limit probe needs one key per message".to_string());
    }
    let (start, cpu_start) = (Instant::now(), cpu_seconds(libc::RUSAGE_THREAD));
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
    let cpu = (cpu_seconds(libc::RUSAGE_THREAD) - cpu_start).max(1e-9);
    Ok(Rate {
        wall: messages.len() as f64 / start.elapsed().as_secs_f64(),
        per_cpu_second: messages.len() as f64 / cpu,
    })
}

/// A self-contained probe for `bench-harness limits`: `sigs` distinct requests, one signer.
pub fn pairing_limit_probe(sigs: usize) -> Result<f64, String> {
    let workload = Workload::new(sigs.max(1), 1, 1, 7);
    Ok(workload.limits()?.0.wall)
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

    /// (single-core limit, blst's own multi-threaded `aggregate_verify` wall rate on all cores).
    fn limits(&self) -> Result<(Rate, f64), String> {
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
        let aggregate = aggregate.to_signature();
        let one_core = pairing_limit_rate(&messages, &keys, &aggregate)?;
        // Cross-check under the same contention as the batched run: blst's pool, all cores.
        let start = Instant::now();
        let outcome = aggregate.aggregate_verify(false, &messages, REQUEST_DST, &keys, false);
        let all_cores = messages.len() as f64 / start.elapsed().as_secs_f64();
        if outcome != blst::BLST_ERROR::BLST_SUCCESS {
            return Err(format!("all-core aggregate_verify failed: {outcome:?}"));
        }
        Ok((one_core, all_cores))
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

/// A throughput measured two ways: per wall-clock second and per second of process CPU time
/// (all threads, user + system). The second is what a noisy shared machine cannot distort much.
#[derive(Clone, Copy, Default)]
struct Rate {
    wall: f64,
    per_cpu_second: f64,
}

/// CPU seconds (user + system) of `who` (`RUSAGE_SELF` or `RUSAGE_THREAD`).
fn cpu_seconds(who: libc::c_int) -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full rusage into the valid, zeroed buffer.
    let usage = unsafe {
        if libc::getrusage(who, usage.as_mut_ptr()) != 0 {
            return 0.0;
        }
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Best-of-`reps` rate of a batched verifier on a pool of `threads`; checks all pass.
fn batched_rate(
    workload: &Workload,
    strategy: Strategy,
    threads: usize,
    reps: usize,
) -> Result<Rate, String> {
    let verifier = BatchVerifier::with_strategy(workload.registry.clone(), CHAIN_ID, strategy);
    let pool = pool(threads)?;
    let mut best = Rate::default();
    for _ in 0..reps.max(1) {
        let (start, cpu_start) = (Instant::now(), cpu_seconds(libc::RUSAGE_SELF));
        let codes = pool.install(|| verifier.verify(&workload.requests));
        let wall = codes.len() as f64 / start.elapsed().as_secs_f64();
        let cpu = codes.len() as f64 / (cpu_seconds(libc::RUSAGE_SELF) - cpu_start).max(1e-9);
        if codes.iter().any(|code| *code != VerifyCode::Ok) {
            return Err(format!("{strategy:?}: a valid request was rejected"));
        }
        best.wall = best.wall.max(wall);
        best.per_cpu_second = best.per_cpu_second.max(cpu);
    }
    Ok(best)
}

/// Rate verifying each request alone (two Miller loops and a final exponentiation each).
fn one_by_one_rate(workload: &Workload) -> Result<Rate, String> {
    let verifier = BatchVerifier::new(workload.registry.clone(), CHAIN_ID);
    let (start, cpu_start) = (Instant::now(), cpu_seconds(libc::RUSAGE_SELF));
    let requests = &workload.requests[..workload.requests.len().min(ONE_BY_ONE_SIGS_MAX)];
    for signed in requests {
        if verifier.verify_one(signed) != VerifyCode::Ok {
            return Err("one by one: a valid request was rejected".to_string());
        }
    }
    let count = requests.len() as f64;
    let cpu = (cpu_seconds(libc::RUSAGE_SELF) - cpu_start).max(1e-9);
    Ok(Rate {
        wall: count / start.elapsed().as_secs_f64(),
        per_cpu_second: count / cpu,
    })
}

/// Seconds to classify the batch with 1% of the signatures invalid (bisection included),
/// spread over all institutions, or `clustered` on the last institution (one bad client).
fn bisection_seconds(
    workload: &Workload,
    threads: usize,
    clustered: bool,
) -> Result<(f64, usize), String> {
    let mut requests = workload.requests.clone();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let last = workload.keys.len() as u32 - 1;
    let candidates: Vec<usize> = (0..requests.len())
        .filter(|i| !clustered || requests[*i].request.institution == last)
        .collect();
    let bad = (requests.len() / 100).max(1).min(candidates.len());
    for _ in 0..bad {
        let position = candidates[rng.gen_range(0..candidates.len())];
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

/// Fastest of `QC_REPS` (QC check, one signature) in microseconds for a set of `validators`: the
/// check verifies the quorum's n - f strict Ed25519 signatures over one vote message.
fn qc_micros(validators: usize) -> Result<(usize, f64, f64), String> {
    let keys: Vec<ValidatorKey> = (0..validators).map(|_| ValidatorKey::generate()).collect();
    let set = ValidatorSet::new(keys.iter().map(|key| *key.public()).collect())
        .map_err(|e| e.to_string())?;
    let message = vote_message(CHAIN_ID, &[3u8; 32], 9, 4);
    let signers: Vec<usize> = (0..set.quorum_threshold()).collect();
    let signatures: Vec<_> = signers.iter().map(|i| keys[*i].sign(&message)).collect();
    let (mut check, mut sign) = (f64::MAX, f64::MAX);
    for _ in 0..QC_REPS {
        let start = Instant::now();
        set.verify_same_message(&signers, &message, &signatures)
            .map_err(|e| e.to_string())?;
        check = check.min(start.elapsed().as_secs_f64());
        let start = Instant::now();
        std::hint::black_box(keys[0].sign(&message));
        sign = sign.min(start.elapsed().as_secs_f64());
    }
    Ok((signers.len(), check * 1e6, sign * 1e6))
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

    // Best of `reps` like every other figure, so one unlucky slice of a shared core counts less.
    let mut limit_one = Rate::default();
    let mut limit_all_cores = 0.0f64;
    let mut one_by_one = Rate::default();
    for _ in 0..args.reps.max(1) {
        let (limit_rep, all_cores_rep) = workload.limits()?;
        limit_all_cores = limit_all_cores.max(all_cores_rep);
        let one_rep = one_by_one_rate(&workload)?;
        limit_one = Rate {
            wall: limit_one.wall.max(limit_rep.wall),
            per_cpu_second: limit_one.per_cpu_second.max(limit_rep.per_cpu_second),
        };
        one_by_one = Rate {
            wall: one_by_one.wall.max(one_rep.wall),
            per_cpu_second: one_by_one.per_cpu_second.max(one_rep.per_cpu_second),
        };
    }
    let limit = limit_one.wall * threads as f64;
    let grouped_one = batched_rate(&workload, Strategy::Grouped, 1, args.reps)?;
    let grouped = batched_rate(&workload, Strategy::Grouped, threads, args.reps)?;
    let chunks_one = batched_rate(&workload, Strategy::PairingChunks, 1, args.reps)?;
    let chunks = batched_rate(&workload, Strategy::PairingChunks, threads, args.reps)?;
    let blst_pool = batched_rate(&workload, Strategy::BlstPool, threads, args.reps)?;
    let (bisect_s, bisect_bad) = bisection_seconds(&workload, threads, false)?;
    let (clustered_s, clustered_bad) = bisection_seconds(&workload, threads, true)?;
    let mut qc = Vec::with_capacity(QC_VALIDATORS.len());
    for validators in QC_VALIDATORS {
        let (signers, check, sign) = qc_micros(validators)?;
        qc.push(serde_json::json!({"validators": validators, "signers": signers, "check_us": check, "sign_us": sign}));
    }
    let (load_1m, _) = load_average();
    print_summary(&args, threads, cores, load_1m);
    let line = |name: &str, rate: Rate| {
        println!(
            "  {name:<44} {:>8.0} sigs/s wall {:>8.0} sigs/CPU-s",
            rate.wall, rate.per_cpu_second
        );
    };
    line("limit: aggregate_verify, 1 core", limit_one);
    println!("  limit x {threads} threads: {limit:.0} sigs/s (blst aggregate_verify on its own all-core pool, measured: {limit_all_cores:.0})");
    line("one by one (verify each, 1 thread)", one_by_one);
    line("batched grouped (default), 1 thread", grouped_one);
    line(
        &format!("batched grouped (default), {threads} threads"),
        grouped,
    );
    line("rayon Pairing chunks, 1 thread", chunks_one);
    line(&format!("rayon Pairing chunks, {threads} threads"), chunks);
    line("blst pool verify_multiple_aggregate_signatures", blst_pool);
    println!(
        "  ratio to limit {:.2} (wall), {:.2} (per CPU-second vs 1-core limit per CPU-second)",
        grouped.wall / limit,
        grouped.per_cpu_second / limit_one.per_cpu_second
    );
    println!(
        "  vs one by one {:.1}x (wall)",
        grouped.wall / one_by_one.wall
    );
    println!(
        "  1% invalid, spread ({bisect_bad} bad): classified in {:.1} ms",
        bisect_s * 1e3
    );
    println!(
        "  1% invalid, all from one institution ({clustered_bad} bad): classified in {:.1} ms",
        clustered_s * 1e3
    );
    for entry in &qc {
        let us = |key: &str| entry[key].as_f64().unwrap_or(0.0);
        println!(
            "  QC of {:>3} validators ({:>3} signatures): {:>7.0} us to check; a vote signs in {:.0} us",
            entry["validators"],
            entry["signers"],
            us("check_us"),
            us("sign_us")
        );
    }
    if args.json {
        let json = serde_json::json!({
            "bench": "verify", "sigs": args.sigs, "signers": args.signers, "events": args.events, "threads": threads,
            "sigs_per_s": grouped.wall, "limit_sigs_per_s": limit, "limit_all_cores_measured_sigs_per_s": limit_all_cores, "ratio": grouped.wall / limit,
            "one_by_one_sigs_per_s": one_by_one.wall, "speedup_vs_one_by_one": grouped.wall / one_by_one.wall,
            "cpu_ratio": grouped.per_cpu_second / limit_one.per_cpu_second,
            "limit_one_core_sigs_per_s": limit_one.wall, "batched_one_thread_sigs_per_s": grouped_one.wall,
            "pairing_chunks_sigs_per_s": chunks.wall, "pairing_chunks_one_thread_sigs_per_s": chunks_one.wall,
            "blst_pool_sigs_per_s": blst_pool.wall, "bisect_1pct_ms": bisect_s * 1e3, "bisect_1pct_one_signer_ms": clustered_s * 1e3, "qc": qc, "load_1m": load_1m,
        });
        println!("{json}");
    }
    Ok(())
}

fn print_summary(args: &Args, threads: usize, cores: usize, load_1m: f64) {
    println!("SUMMARY verify (shared machine: 1-minute load {load_1m:.2} on {cores} cores; compare ratios)");
    println!(
        "  config: sigs {} signers {} events/request {} threads {threads} reps {} (best rep reported)",
        args.sigs, args.signers, args.events, args.reps
    );
}

/// The 1- and 5-minute load averages, so a reader can see how noisy the run was.
fn load_average() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text
        .split_whitespace()
        .map(|field| field.parse::<f64>().unwrap_or(0.0));
    (fields.next().unwrap_or(0.0), fields.next().unwrap_or(0.0))
}
