//! Batch formation: deficit round robin by bytes across institution lanes.
//!
//! One consumer at a time (a mutex around `Consumer`); producers never touch this state.

use std::sync::atomic::Ordering;

use super::{Item, Mempool};

pub(super) struct Consumer<T> {
    pub(super) cursor: usize,
    pub(super) deficit: Vec<u64>,
    pub(super) carry: Vec<Option<Item<T>>>,
}

enum Visit {
    Empty,
    Continue,
    BatchFull,
}

impl<T: Send> Mempool<T> {
    /// Forms a batch of at most `requests_max` requests and (unless its first request alone is
    /// larger) `bytes_max` bytes, by deficit round robin across institutions. Each request id is
    /// handed out at most once (until `requeue`d).
    pub fn take_batch(&self, requests_max: u32, bytes_max: u64) -> Vec<Item<T>> {
        assert!(
            requests_max > 0,
            "take_batch needs room for at least one request"
        );
        let mut consumer = self
            .consumer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let pending = self.len().min(requests_max) as usize;
        let mut batch = Batch {
            items: Vec::with_capacity(pending),
            bytes: 0,
            requests_max,
            bytes_max,
        };
        let lane_count = self.lanes.len();
        // Each pass takes at least one item, or fast-forwards deficits so the next one does, or
        // finds every lane empty: the bound below is never reached.
        let passes_max = 2 * requests_max as usize + 2;
        for _ in 0..passes_max {
            let taken_before = batch.items.len();
            let mut lanes_busy = false;
            let start = consumer.cursor;
            for step in 0..lane_count {
                let lane = (start + step) % lane_count;
                consumer.cursor = (lane + 1) % lane_count;
                match self.visit_lane(&mut consumer, lane, &mut batch) {
                    Visit::Empty => {}
                    Visit::Continue => lanes_busy = true,
                    Visit::BatchFull => return self.finish(batch),
                }
            }
            if !lanes_busy {
                return self.finish(batch);
            }
            if batch.items.len() == taken_before {
                self.fast_forward(&mut consumer);
            }
        }
        unreachable!("take_batch exceeded {passes_max} passes");
    }

    fn finish(&self, batch: Batch<T>) -> Vec<Item<T>> {
        assert!(batch.items.len() <= batch.requests_max as usize);
        assert!(batch.items.len() <= 1 || batch.bytes <= batch.bytes_max);
        self.stats
            .taken
            .fetch_add(batch.items.len() as u64, Ordering::Relaxed);
        batch.items
    }

    fn visit_lane(&self, consumer: &mut Consumer<T>, lane: usize, batch: &mut Batch<T>) -> Visit {
        let quantum = u64::from(self.config.fairness_quantum_bytes);
        let Some(first) = consumer.carry[lane]
            .take()
            .or_else(|| self.lanes[lane].pop())
        else {
            consumer.deficit[lane] = 0;
            return Visit::Empty;
        };
        consumer.deficit[lane] += quantum;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            let item_bytes = u64::from(item.bytes);
            if item_bytes > consumer.deficit[lane] {
                consumer.carry[lane] = Some(item);
                return Visit::Continue;
            }
            if !batch.items.is_empty() && batch.bytes + item_bytes > batch.bytes_max {
                consumer.carry[lane] = Some(item);
                return Visit::BatchFull;
            }
            consumer.deficit[lane] -= item_bytes;
            self.release(item.bytes);
            if self.dedup.take(item.key()) {
                batch.bytes += item_bytes;
                batch.items.push(item);
            } else {
                self.stats
                    .discarded_committed
                    .fetch_add(1, Ordering::Relaxed);
            }
            if batch.items.len() == batch.requests_max as usize {
                return Visit::BatchFull;
            }
            next = self.lanes[lane].pop();
        }
        consumer.deficit[lane] = 0;
        Visit::Continue
    }

    /// A pass took nothing: every busy lane carries an item larger than its deficit. Grant the
    /// whole rounds of quantum that the closest lane needs, as DRR would over idle passes.
    fn fast_forward(&self, consumer: &mut Consumer<T>) {
        let quantum = u64::from(self.config.fairness_quantum_bytes);
        let rounds = consumer
            .carry
            .iter()
            .zip(&consumer.deficit)
            .filter_map(|(carry, &deficit)| carry.as_ref().map(|item| (item, deficit)))
            .map(|(item, deficit)| {
                u64::from(item.bytes)
                    .saturating_sub(deficit)
                    .div_ceil(quantum)
                    .max(1)
            })
            .min();
        let Some(rounds) = rounds else { return };
        assert!(rounds >= 1);
        for lane in 0..consumer.carry.len() {
            if consumer.carry[lane].is_some() {
                // The next pass adds one more quantum itself.
                consumer.deficit[lane] += (rounds - 1) * quantum;
            }
        }
    }
}

struct Batch<T> {
    items: Vec<Item<T>>,
    bytes: u64,
    requests_max: u32,
    bytes_max: u64,
}
