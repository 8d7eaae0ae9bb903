//! `bench-harness consensus`: the ordering layer's own ceiling. N consensus cores run in this one
//! thread with no network: a FIFO router hands every `Send` straight to its recipient. Votes, QCs and
//! timeouts are real validator signatures (Ed25519, `crypto::ValidatorKey`), signed and verified; each node has its own
//! verification cache, so every node really verifies every QC once. Every block carries
//! `--digests-per-block` batch digests that all nodes already hold (dissemination is not measured).
//!
//! Because all N nodes share one core here, `rounds_per_s` is the cluster's rate with N nodes' work
//! serialised; one node on its own core has roughly N times this budget.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use engine::consensus::validator_crypto::{ValidatorCrypto, VerifyCache};
use engine::consensus::{
    Action, Config, Core, Event, Message, Recipient, ValidatorIndex, BLOCK_DIGESTS_MAX,
};

#[derive(clap::Args)]
pub struct Args {
    /// Validators in the simulated committee (n = 3f + 1 recommended).
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Stop after node 0 committed this many blocks.
    #[arg(long, default_value_t = 500)]
    pub blocks: u64,
    /// Batch digests per block (at most the consensus bound).
    #[arg(long, default_value_t = 16)]
    pub digests_per_block: usize,
    /// Print the result as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
}

/// Messages in flight at once in the router (a runaway protocol fails instead of eating memory).
const ROUTER_MESSAGES_MAX: usize = 1_000_000;

struct Cluster {
    cores: Vec<Core<ValidatorCrypto>>,
    queue: VecDeque<(ValidatorIndex, ValidatorIndex, Message)>,
    committed: Vec<u64>,
    messages: u64,
    rejects: u64,
    batches_made: u64,
}

/// Local batches each node keeps queued, in blocks' worth (so every proposal is full).
const BLOCKS_QUEUED_PER_NODE: usize = 4;

impl Cluster {
    /// Keep `node`'s local batch queue full; every other node already holds each new batch.
    fn top_up(&mut self, node: usize, digests_per_block: usize) {
        let target = digests_per_block * BLOCKS_QUEUED_PER_NODE;
        while self.cores[node].pending_local_batches() < target {
            self.batches_made += 1;
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&self.batches_made.to_le_bytes());
            for other in (0..self.cores.len()).filter(|o| *o != node) {
                self.feed(other, 0, Event::BatchAvailable(digest));
            }
            self.feed(node, 0, Event::LocalBatchReady(digest));
        }
    }

    fn new(nodes: usize) -> Self {
        let (secrets, publics) = ValidatorCrypto::committee(1, nodes);
        let cores = secrets
            .into_iter()
            .enumerate()
            .map(|(i, sk)| {
                let crypto =
                    ValidatorCrypto::new(Some(sk), Rc::clone(&publics), VerifyCache::shared());
                let mut cfg = Config::new(1, nodes, i as ValidatorIndex);
                cfg.min_idle_block_interval_ms = 0; // the ceiling: no idle pacing (no clock here)
                Core::new(cfg, crypto, None)
            })
            .collect();
        Cluster {
            cores,
            queue: VecDeque::new(),
            committed: vec![0; nodes],
            messages: 0,
            rejects: 0,
            batches_made: 0,
        }
    }

    fn feed(&mut self, node: usize, now_ms: u64, event: Event) {
        let n = self.cores.len();
        for action in self.cores[node].handle(now_ms, event) {
            match action {
                Action::Send {
                    to: Recipient::One(to),
                    msg,
                } => self.queue.push_back((node as ValidatorIndex, to, msg)),
                Action::Send {
                    to: Recipient::Others,
                    msg,
                } => {
                    for to in (0..n).filter(|t| *t != node) {
                        self.queue.push_back((
                            node as ValidatorIndex,
                            to as ValidatorIndex,
                            msg.clone(),
                        ));
                    }
                }
                Action::Commit(blocks) => {
                    for block in &blocks {
                        assert_eq!(
                            block.height,
                            self.committed[node] + 1,
                            "consecutive commits"
                        );
                        self.committed[node] = block.height;
                    }
                }
                Action::Rejected { .. } => self.rejects += 1,
                _ => {}
            }
        }
        assert!(self.queue.len() <= ROUTER_MESSAGES_MAX, "router bound");
    }
}

pub fn run(args: Args) -> Result<(), String> {
    if !(1..=64).contains(&args.nodes) {
        return Err(format!("--nodes must be 1..=64, got {}", args.nodes));
    }
    if args.digests_per_block > BLOCK_DIGESTS_MAX {
        return Err(format!(
            "--digests-per-block must be at most {BLOCK_DIGESTS_MAX}"
        ));
    }
    let mut cluster = Cluster::new(args.nodes);
    let started = Instant::now();
    for node in 0..args.nodes {
        cluster.top_up(node, args.digests_per_block);
        cluster.feed(node, 1, Event::Start);
    }
    let mut now_ms = 1;
    while cluster.committed[0] < args.blocks {
        let Some((from, to, msg)) = cluster.queue.pop_front() else {
            return Err(format!(
                "stalled at height {} (no messages in flight)",
                cluster.committed[0]
            ));
        };
        cluster.messages += 1;
        now_ms += 1;
        let msg = Message::decode(&msg.encode()).map_err(|e| format!("codec: {e}"))?;
        cluster.feed(to as usize, now_ms, Event::Message { from, msg });
        cluster.top_up(to as usize, args.digests_per_block);
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let rounds = cluster.cores[0].round();
    let blocks = cluster.committed[0];
    let blocks_per_s = blocks as f64 / elapsed_s;
    let rounds_per_s = rounds as f64 / elapsed_s;
    println!("SUMMARY consensus (in-process, no network, real Ed25519 votes and QCs, one thread)");
    println!(
        "  nodes: {}  digests per block: {}",
        args.nodes, args.digests_per_block
    );
    println!(
        "  blocks committed: {blocks}  rounds: {rounds}  messages: {}  rejects: {}",
        cluster.messages, cluster.rejects
    );
    println!(
        "  elapsed: {elapsed_s:.3} s  blocks/s: {blocks_per_s:.1}  rounds/s: {rounds_per_s:.1}"
    );
    println!(
        "  per-node CPU per round: {:.3} ms",
        elapsed_s * 1e3 / rounds as f64 / args.nodes as f64
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({"bench": "consensus", "nodes": args.nodes, "blocks_per_s": blocks_per_s, "rounds_per_s": rounds_per_s, "blocks": blocks, "rounds": rounds, "digests_per_block": args.digests_per_block})
        );
    }
    Ok(())
}
