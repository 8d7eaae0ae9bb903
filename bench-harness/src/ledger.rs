//! `bench-harness ledger`: applies N transfers to an in-memory ledger on one core.
//!
//! Workload: Zipf-distributed accounts, batches of `BATCH_EVENTS_MAX`, with linked chains and
//! two-phase pairs (pending in one batch, post or void in the next). Batches are generated before
//! timing. The same-run limit is the unavoidable work per transfer: one id-index insert into a
//! pre-sized `U128Map` and one 128-byte record append.

use std::time::Instant;

use engine::ledger::{Batch, Events, Ledger, LedgerConfig, U128Map};
use engine::types::{transfer_flags, Account, Operation, Transfer, BATCH_EVENTS_MAX};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The one institution that owns every account and requests every batch.
const INSTITUTION: u32 = 2;
const OPERATOR: u32 = 1;
const LEDGER_ID: u32 = 1;
/// Out of 100 transfers: how many start a linked chain and how many start a two-phase pair.
const CHAIN_PERCENT: u32 = 4;
const PENDING_PERCENT: u32 = 4;
const CHAIN_EVENTS_MAX: usize = 4;
const BATCH_GAP_NS: u64 = 1_000_000;

#[derive(clap::Args)]
pub struct Args {
    /// Transfers to apply (posts and voids of two-phase pairs count as transfers).
    #[arg(long, default_value_t = 10_000_000)]
    pub transfers: usize,
    /// Accounts the transfers are spread over.
    #[arg(long, default_value_t = 100_000)]
    pub accounts: usize,
    /// Zipf exponent of account popularity.
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Transfer ids: `sequential` (a counter, like time-ordered ids) or `random` (uniform u128).
    #[arg(long, value_enum, default_value_t = Ids::Sequential)]
    pub ids: Ids,
    /// Feed the ledger encoded request bodies through `apply_request` (includes decoding).
    #[arg(long)]
    pub wire: bool,
    /// Transfers the ledger is sized and faulted in for before timing (default: `--transfers`
    /// plus an eighth). Smaller makes the tables and the id index grow during the run; the
    /// slowest batch then shows what growth costs the execute thread.
    #[arg(long)]
    pub capacity: Option<usize>,
    /// Print the result as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Ids {
    Sequential,
    Random,
}

/// Samples account ranks 0..n with P(k) ∝ 1/(k+1)^s by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 0..n {
            sum += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(sum);
        }
        cdf.iter_mut().for_each(|value| *value /= sum);
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        let u: f64 = rng.gen();
        self.cdf
            .partition_point(|value| *value < u)
            .min(self.cdf.len() - 1)
    }
}

struct Workload {
    batches: Vec<Vec<Transfer>>,
    transfers: usize,
    chained: usize,
    pairs: usize,
}

/// Account ids are shuffled ranks so that popular accounts are spread over the index.
fn account_id(rank: usize) -> u128 {
    (rank as u128 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) | 1
}

fn plain(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        institution: INSTITUTION,
        ledger: LEDGER_ID,
        code: 1,
        ..Transfer::default()
    }
}

fn workload(args: &Args) -> Workload {
    let zipf = Zipf::new(args.accounts, args.zipf);
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let pair_account = |rng: &mut ChaCha8Rng| loop {
        let (debit, credit) = (zipf.sample(rng), zipf.sample(rng));
        if debit != credit {
            return (account_id(debit), account_id(credit));
        }
    };
    let mut workload = Workload {
        batches: Vec::new(),
        transfers: 0,
        chained: 0,
        pairs: 0,
    };
    let mut next_id: u128 = 1;
    let mut pending_open: Vec<u128> = Vec::new();
    while workload.transfers < args.transfers {
        let room = BATCH_EVENTS_MAX.min(args.transfers - workload.transfers);
        let mut batch = Vec::with_capacity(room);
        for pending_id in std::mem::take(&mut pending_open) {
            let flags = if pending_id % 8 == 0 {
                transfer_flags::VOID_PENDING
            } else {
                transfer_flags::POST_PENDING
            };
            batch.push(Transfer {
                pending_id,
                flags,
                ledger: 0,
                code: 0,
                ..plain(next_id, 0, 0, 0)
            });
            next_id += 1;
        }
        while batch.len() < room {
            let roll = rng.gen_range(0..100);
            let (debit, credit) = pair_account(&mut rng);
            let amount = rng.gen_range(1..1_000u128);
            if roll < CHAIN_PERCENT && room - batch.len() >= CHAIN_EVENTS_MAX {
                let length = rng.gen_range(2..=CHAIN_EVENTS_MAX);
                for link in 0..length {
                    let (debit, credit) = pair_account(&mut rng);
                    let flags = if link + 1 < length {
                        transfer_flags::LINKED
                    } else {
                        0
                    };
                    batch.push(Transfer {
                        flags,
                        ..plain(next_id, debit, credit, amount)
                    });
                    next_id += 1;
                }
                workload.chained += length;
            } else if roll < CHAIN_PERCENT + PENDING_PERCENT {
                let pending = Transfer {
                    flags: transfer_flags::PENDING,
                    timeout_s: 3_600,
                    ..plain(next_id, debit, credit, amount)
                };
                batch.push(pending);
                pending_open.push(next_id);
                next_id += 1;
                workload.pairs += 1;
            } else {
                batch.push(plain(next_id, debit, credit, amount));
                next_id += 1;
            }
        }
        // Pairs opened in the last batch are posted in one more (small) batch.
        workload.transfers += batch.len();
        workload.batches.push(batch);
        if workload.transfers >= args.transfers && !pending_open.is_empty() {
            let mut tail = Vec::with_capacity(pending_open.len());
            for pending_id in pending_open.drain(..) {
                let finish = plain(next_id, 0, 0, 0);
                tail.push(Transfer {
                    pending_id,
                    flags: transfer_flags::POST_PENDING,
                    ledger: 0,
                    code: 0,
                    ..finish
                });
                next_id += 1;
            }
            workload.transfers += tail.len();
            workload.batches.push(tail);
        }
    }
    if args.ids == Ids::Random {
        for transfer in workload.batches.iter_mut().flatten() {
            transfer.id = id_scrambled(transfer.id);
            if transfer.pending_id != 0 {
                transfer.pending_id = id_scrambled(transfer.pending_id);
            }
        }
    }
    workload
}

/// A bijection of u128 (odd multiply, then xorshift) that turns a counter into random-looking ids.
fn id_scrambled(id: u128) -> u128 {
    let product = id.wrapping_mul(0x2545_F491_4F6C_DD1D_9E37_79B9_7F4A_7C15);
    product ^ (product >> 64)
}

fn ledger_with_accounts(args: &Args) -> Result<Ledger, String> {
    let config = LedgerConfig {
        operator: OPERATOR,
        accounts_capacity: args.accounts,
        transfers_capacity: args.capacity.unwrap_or(args.transfers + args.transfers / 8),
        loans_capacity: 16,
    };
    let mut ledger = Ledger::new(config);
    let accounts: Vec<Account> = (0..args.accounts)
        .map(|rank| Account {
            id: account_id(rank),
            institution: INSTITUTION,
            ledger: LEDGER_ID,
            code: 1,
            ..Account::default()
        })
        .collect();
    for (index, chunk) in accounts.chunks(BATCH_EVENTS_MAX).enumerate() {
        let batch = Batch {
            requester: INSTITUTION,
            timestamp_ns: 1 + index as u64 * BATCH_GAP_NS,
            events: Events::CreateAccounts(chunk.to_vec()),
        };
        let reply = ledger.apply(&batch).map_err(|error| error.to_string())?;
        if !reply.results().is_empty() {
            return Err(format!(
                "account creation failed: {:?}",
                &reply.results()[..1]
            ));
        }
    }
    Ok(ledger)
}

/// CPU time this thread has used, in seconds (excludes time other processes held the core).
fn thread_cpu_s() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for clock_gettime to write.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// Seconds of wall clock and of this thread's CPU time.
#[derive(Clone)]
struct Elapsed {
    wall_s: f64,
    cpu_s: f64,
    /// Minor page faults the thread took (should be ~0: the ledger pre-faults its capacity).
    page_faults: i64,
    /// Wall time of each batch, in milliseconds (empty for the limit run).
    batch_ms: Vec<f64>,
}

fn thread_page_faults() -> i64 {
    // SAFETY: an all-zero rusage is valid; getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage for getrusage to write.
    let status = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(status, 0, "getrusage(RUSAGE_THREAD)");
    usage.ru_minflt
}

/// Applies every batch; returns (elapsed, rejected events).
fn apply_all(
    ledger: &mut Ledger,
    workload: &Workload,
    wire: bool,
) -> Result<(Elapsed, usize), String> {
    let timestamp_base = ledger.timestamp_last() + BATCH_GAP_NS;
    let bodies: Vec<Vec<u8>> = if wire {
        workload
            .batches
            .iter()
            .map(|b| engine::codec::encode_body(b))
            .collect()
    } else {
        Vec::new()
    };
    let batches: Vec<Batch> = if wire {
        Vec::new()
    } else {
        workload
            .batches
            .iter()
            .enumerate()
            .map(|(index, transfers)| Batch {
                requester: INSTITUTION,
                timestamp_ns: timestamp_base + index as u64 * BATCH_GAP_NS,
                events: Events::CreateTransfers(transfers.clone()),
            })
            .collect()
    };
    let mut rejected = 0;
    let faults_start = thread_page_faults();
    let cpu_start = thread_cpu_s();
    let start = Instant::now();
    let mut batch_ms = Vec::with_capacity(workload.batches.len());
    let mut batch_start = start;
    let mut batch_done = |batch_ms: &mut Vec<f64>| {
        let now = Instant::now();
        batch_ms.push((now - batch_start).as_secs_f64() * 1e3);
        batch_start = now;
    };
    if wire {
        for (index, body) in bodies.iter().enumerate() {
            let timestamp = timestamp_base + index as u64 * BATCH_GAP_NS;
            let reply = ledger
                .apply_request(
                    INSTITUTION,
                    timestamp,
                    Operation::CreateTransfers as u8,
                    body,
                )
                .map_err(|error| error.to_string())?;
            rejected += reply.results().len();
            batch_done(&mut batch_ms);
        }
    } else {
        for batch in &batches {
            rejected += ledger
                .apply(batch)
                .map_err(|error| error.to_string())?
                .results()
                .len();
            batch_done(&mut batch_ms);
        }
    }
    let wall_s = start.elapsed().as_secs_f64();
    Ok((
        Elapsed {
            wall_s,
            cpu_s: thread_cpu_s() - cpu_start,
            page_faults: thread_page_faults() - faults_start,
            batch_ms,
        },
        rejected,
    ))
}

/// Batch wall times: the mean is the same run's yardstick for the slowest batch.
struct BatchTimes {
    mean_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl BatchTimes {
    fn of(batch_ms: &[f64]) -> BatchTimes {
        let mut sorted = batch_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        BatchTimes {
            mean_ms: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// The same-run limit: index insert + record append per transfer, nothing else.
fn limit_seconds(workload: &Workload) -> Elapsed {
    let mut index = U128Map::with_capacity(workload.transfers + workload.transfers / 8);
    let mut records: Vec<Transfer> = Vec::with_capacity(workload.transfers);
    records.resize(workload.transfers, Transfer::default()); // Fault the pages in, as the ledger does.
    records.clear();
    let cpu_start = thread_cpu_s();
    let start = Instant::now();
    for batch in &workload.batches {
        for transfer in batch {
            index.insert_new(transfer.id, records.len() as u32);
            records.push(*transfer);
        }
    }
    let elapsed = Elapsed {
        wall_s: start.elapsed().as_secs_f64(),
        cpu_s: thread_cpu_s() - cpu_start,
        page_faults: 0,
        batch_ms: Vec::new(),
    };
    assert_eq!(index.len(), records.len());
    std::hint::black_box(&records);
    elapsed
}

pub fn run(args: Args) -> Result<(), String> {
    if args.transfers == 0 || args.accounts < 2 {
        return Err("need --transfers > 0 and --accounts >= 2".to_string());
    }
    let generated = Instant::now();
    let workload = workload(&args);
    let generate_s = generated.elapsed().as_secs_f64();
    let mut ledger = ledger_with_accounts(&args)?;
    let (elapsed, rejected) = apply_all(&mut ledger, &workload, args.wire)?;
    let totals = ledger.totals();
    if totals.debits_posted != totals.credits_posted
        || totals.debits_pending != totals.credits_pending
    {
        return Err("money was not conserved".to_string());
    }
    let limit = limit_seconds(&workload);
    let n = workload.transfers as f64;
    // Throughput is per core: CPU time of the applying thread (the wall clock is also shown; on a
    // shared machine it includes time other processes held the core).
    let transfers_per_s = n / elapsed.cpu_s;
    let ns_per_transfer = elapsed.cpu_s * 1e9 / n;
    let limit_ns = limit.cpu_s * 1e9 / n;
    let cpu_share = elapsed.cpu_s / elapsed.wall_s;
    let capacity = ledger.config().transfers_capacity;
    let batch = BatchTimes::of(&elapsed.batch_ms);
    println!("SUMMARY ledger apply (one core, in memory)");
    println!(" + CONFIG:");
    println!(
        "   transfers: {} in {} batches of up to {}",
        workload.transfers,
        workload.batches.len(),
        BATCH_EVENTS_MAX
    );
    println!(
        "   accounts: {} (zipf s = {}), seed {}, transfer ids {:?}",
        args.accounts, args.zipf, args.seed, args.ids
    );
    println!(
        "   mix: {} in linked chains, {} two-phase pairs",
        workload.chained, workload.pairs
    );
    println!(
        "   path: {}",
        if args.wire {
            "apply_request (decode + apply)"
        } else {
            "apply (typed batches)"
        }
    );
    println!("   ledger sized for {capacity} transfers before timing");
    println!("   workload generated in {generate_s:.2} s (not timed)");
    println!(" + RESULTS:");
    println!("   apply: {transfers_per_s:.0} transfers/s, {ns_per_transfer:.1} ns/transfer (thread CPU time {:.3} s)", elapsed.cpu_s);
    println!(
        "   wall clock: {:.3} s = {:.0} transfers/s (the thread had {:.0}% of a core)",
        elapsed.wall_s,
        n / elapsed.wall_s,
        cpu_share * 100.0
    );
    println!(
        "   limit (index insert + record append): {limit_ns:.1} ns/transfer; apply / limit = {:.2}",
        ns_per_transfer / limit_ns
    );
    println!(
        "   batch wall time: mean {:.2} ms, p99 {:.2} ms, max {:.2} ms (max / mean = {:.1})",
        batch.mean_ms,
        batch.p99_ms,
        batch.max_ms,
        batch.max_ms / batch.mean_ms
    );
    println!(
        "   rejected events: {rejected}; page faults during apply: {}; digest {:032x}",
        elapsed.page_faults,
        ledger.digest()
    );
    if args.json {
        let json = serde_json::json!({
            "bench": "ledger",
            "transfers": workload.transfers,
            "transfers_per_s": transfers_per_s,
            "ns_per_transfer": ns_per_transfer,
            "limit_ns_per_transfer": limit_ns,
            "ratio_to_limit": ns_per_transfer / limit_ns,
            "wall_s": elapsed.wall_s,
            "cpu_s": elapsed.cpu_s,
            "accounts": args.accounts,
            "zipf": args.zipf,
            "wire": args.wire,
            "ids": format!("{:?}", args.ids).to_lowercase(),
            "rejected": rejected,
            "capacity": capacity,
            "page_faults": elapsed.page_faults,
            "batch_mean_ms": batch.mean_ms,
            "batch_p99_ms": batch.p99_ms,
            "batch_max_ms": batch.max_ms,
        });
        println!("{json}");
    }
    Ok(())
}
