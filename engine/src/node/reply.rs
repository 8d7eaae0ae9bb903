//! Reply: waits for each block's durability (in order), then records its request ids as
//! committed, tells the mempool, and answers the clients that submitted here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Receiver;

use crate::mempool::RequestKey;

use super::execute::ExecutedBlock;
use super::ingress::reject;
use super::protocol::{RejectCode, Rejected, KIND_COMMITTED};
use super::state::Shared;

pub struct Reply {
    pub input: Receiver<ExecutedBlock>,
    pub shared: Arc<Shared>,
    /// Requests answered later than this after admission are logged with their phases.
    pub slow_request: Option<Duration>,
}

impl Reply {
    pub fn run(self) {
        let latency = &self.shared.metrics.request_latency_s;
        let [admission, ordering, inclusion, commit, after_commit, total] = [
            "admission",
            "ordering",
            "inclusion",
            "commit",
            "after_commit",
            "total",
        ]
        .map(|phase| latency.with_label_values(&[phase]));
        while let Ok(block) = self.input.recv() {
            let started = Instant::now();
            let durable = match &block.ticket {
                Some(ticket) => ticket.wait().map_err(|e| e.to_string()),
                None => Err("block log append failed".to_string()),
            };
            let durable_at = Instant::now();
            self.shared
                .metrics
                .fsync_latency_s
                .observe(durable_at.saturating_duration_since(started).as_secs_f64());
            if let Err(error) = &durable {
                tracing::error!(height = block.height, %error, "block not durable; clients get `internal`");
            }
            let keys: Vec<RequestKey> = block.items.iter().map(|i| i.key).collect();
            // Requests of this block answered later than `slow_request`, and the slowest one.
            let mut slow = 0usize;
            let mut slowest: Option<(RequestKey, Duration, Instant, Instant, Instant)> = None;
            for item in block.items {
                if durable.is_ok() {
                    self.shared
                        .record_committed(item.key, block.height, item.digest);
                }
                let Some(waiter) = self.shared.take_waiter(&item.key) else {
                    continue;
                };
                if waiter.digest != item.digest {
                    // Another request with this id committed (submitted elsewhere): say so.
                    let rejected = Rejected {
                        height: block.height,
                        ..Rejected::new(
                            (item.key.institution, item.key.request_id),
                            RejectCode::RequestIdReused,
                            "a different request with this id committed",
                        )
                    };
                    reject(&self.shared, &waiter.writer, rejected);
                    continue;
                }
                let (now, admitted) = (Instant::now(), waiter.admitted);
                let seconds =
                    |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64();
                admission.observe(seconds(waiter.received, admitted));
                ordering.observe(seconds(admitted, block.committed_at));
                if let Some(voted_at) = block.voted_at {
                    inclusion.observe(seconds(admitted, voted_at));
                    commit.observe(seconds(voted_at, block.committed_at));
                }
                after_commit.observe(seconds(block.committed_at, now));
                total.observe(seconds(admitted, now));
                let waited = now.saturating_duration_since(admitted);
                if self.slow_request.is_some_and(|limit| waited > limit) {
                    slow += 1;
                    if slowest.as_ref().is_none_or(|s| waited > s.1) {
                        slowest = Some((item.key, waited, waiter.received, admitted, now));
                    }
                }
                match (&durable, item.result) {
                    (Err(error), _) => reject(
                        &self.shared,
                        &waiter.writer,
                        Rejected::new(
                            (item.key.institution, item.key.request_id),
                            RejectCode::Internal,
                            error.clone(),
                        ),
                    ),
                    (Ok(()), Ok(outcome)) => {
                        let _ = waiter.writer.send(KIND_COMMITTED, &outcome.encode());
                    }
                    (Ok(()), Err(rejected)) => reject(&self.shared, &waiter.writer, rejected),
                }
            }
            if let Some((key, _, received, admitted, answered)) = slowest {
                // One line per block, however many of its requests were slow: a stall that holds
                // thousands of requests logs once per block, not once per request.
                let ms = |from: Instant, to: Instant| {
                    to.saturating_duration_since(from).as_secs_f64() * 1e3
                };
                tracing::warn!(
                    height = block.height,
                    slow_requests = slow,
                    block_requests = keys.len(),
                    institution = key.institution,
                    request_id = key.request_id,
                    admission_ms = ms(received, admitted),
                    inclusion_ms = block.voted_at.map(|v| ms(admitted, v)),
                    commit_ms = block.voted_at.map(|v| ms(v, block.committed_at)),
                    ordering_ms = ms(admitted, block.committed_at),
                    execute_ms = ms(block.committed_at, started),
                    durable_ms = ms(started, durable_at),
                    reply_ms = ms(durable_at, answered),
                    total_ms = ms(admitted, answered),
                    "slow request"
                );
            }
            self.shared.mempool.mark_committed(&keys);
            self.shared
                .metrics
                .stage_latency_s
                .with_label_values(&["reply"])
                .observe(started.elapsed().as_secs_f64());
        }
    }
}
