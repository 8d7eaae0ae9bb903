//! Block sync for laggards: a node that meets a QC or proposal whose block it lacks asks the sender
//! for the chain from its committed height; the response is verified (hash linkage, heights, every
//! QC's signatures) before any block is applied. One request in flight, retried after `SYNC_RETRY_MS`.

use super::core::Core;
use super::crypto_iface::QuorumCrypto;
use super::messages::{Message, SyncRequest, SyncResponse};
use super::{Action, CommittedBlock, RejectReason, ValidatorIndex, SYNC_BLOCKS_MAX, SYNC_RETRY_MS};

/// The answer to a sync request from below the committed window, read from a block log:
/// the committed blocks `from_height`, `from_height + 1`, ... as long as `read` has them (at most
/// `SYNC_BLOCKS_MAX`), with the QC certifying the last one. `read(height)` gives the committed
/// block at that height with its certifying QC, or None (not in the log, unreadable). Empty when
/// the log lacks `from_height`. The shell answers `Action::ServeSyncFromLog` with it.
pub fn sync_response_from_log(
    from_height: u64,
    mut read: impl FnMut(u64) -> Option<CommittedBlock>,
) -> SyncResponse {
    let mut blocks = Vec::new();
    let mut last_qc = None;
    for height in (from_height.max(1)..).take(SYNC_BLOCKS_MAX) {
        let Some(committed) = read(height) else {
            break;
        };
        if committed.height != height || committed.block.height != height {
            break; // a log that disagrees with itself serves nothing past it
        }
        last_qc = Some(committed.qc);
        blocks.push(committed.block);
    }
    SyncResponse { blocks, last_qc }
}

impl<C: QuorumCrypto> Core<C> {
    pub(super) fn request_sync(&mut self, peer: ValidatorIndex) {
        if peer == self.cfg.me {
            return;
        }
        if let Some(at_ms) = self.sync_requested_at_ms {
            if self.now_ms < at_ms + SYNC_RETRY_MS {
                return;
            }
        }
        self.sync_requested_at_ms = Some(self.now_ms);
        let from_height = self.tree.committed_height() + 1;
        self.send(peer, Message::SyncRequest(SyncRequest { from_height }));
    }

    pub(super) fn on_sync_request(&mut self, from: ValidatorIndex, request: SyncRequest) {
        let window_start = self.tree.window_start();
        if (1..window_start).contains(&request.from_height) {
            // Below the window: the block log has them (a height 0 request asks for nothing).
            self.out.push(Action::ServeSyncFromLog {
                to: from,
                from_height: request.from_height,
                window_start,
            });
            return;
        }
        let response = self.tree.serve_sync(request.from_height);
        assert!(response.blocks.len() <= SYNC_BLOCKS_MAX);
        self.send(from, Message::SyncResponse(response));
    }

    fn check_sync_response(&self, response: &SyncResponse) -> Result<(), RejectReason> {
        let Some(first) = response.blocks.first() else {
            return Ok(());
        };
        let Some(last_qc) = &response.last_qc else {
            return Err(RejectReason::SyncInvalid("no QC for last block"));
        };
        let Some(parent) = self.tree.get(&first.parent_hash()) else {
            return Err(RejectReason::SyncInvalid(
                "first block does not link to a known block",
            ));
        };
        if first.height != parent.height + 1 {
            return Err(RejectReason::SyncInvalid("first height"));
        }
        for pair in response.blocks.windows(2) {
            let (lower, upper) = (&pair[0], &pair[1]);
            let linked = upper.justify.block_hash == lower.hash()
                && upper.justify.round == lower.round
                && upper.justify.height == lower.height
                && upper.height == lower.height + 1;
            if !linked {
                return Err(RejectReason::SyncInvalid("hash linkage"));
            }
        }
        let last = response.blocks.last().expect("nonempty");
        if last_qc.block_hash != last.hash()
            || last_qc.round != last.round
            || last_qc.height != last.height
        {
            return Err(RejectReason::SyncInvalid(
                "last QC does not certify the last block",
            ));
        }
        for block in &response.blocks {
            if block.round <= block.justify.round || block.height != block.justify.height + 1 {
                return Err(RejectReason::SyncInvalid(
                    "round/height do not follow the QC",
                ));
            }
            self.verify_qc(&block.justify)?;
        }
        self.verify_qc(last_qc)
    }

    pub(super) fn on_sync_response(&mut self, from: ValidatorIndex, mut response: SyncResponse) {
        // Blocks this node committed since it asked are dropped (their parents may be pruned); the
        // rest must link to the committed tip like any response.
        let full = response.blocks.len() == SYNC_BLOCKS_MAX;
        let committed = self.tree.committed_height();
        let stale = (response.blocks.iter())
            .take_while(|b| b.height <= committed)
            .count();
        if stale > 0 {
            response.blocks.drain(..stale);
            if response.blocks.is_empty() {
                return;
            }
        }
        // An empty or invalid response leaves the request "in flight": the next one (to whichever
        // peer shows a QC next) waits for `SYNC_RETRY_MS` instead of bouncing at network speed.
        if let Err(reason) = self.check_sync_response(&response) {
            return self.reject(Some(from), reason);
        }
        if response.blocks.is_empty() {
            return;
        }
        self.sync_requested_at_ms = None;
        for block in &response.blocks {
            if block.round > self.tree.committed_round() {
                if let Err(reason) = self.tree.insert(block.clone()) {
                    return self.reject(Some(from), reason);
                }
            }
        }
        let qcs = response
            .blocks
            .iter()
            .skip(1)
            .map(|b| b.justify.clone())
            .chain(response.last_qc.clone());
        // Catch up through every QC first; propose (if leader) only in the round we end up in.
        self.applying_sync = true;
        for qc in qcs.collect::<Vec<_>>() {
            self.process_qc(&qc, None);
        }
        self.applying_sync = false;
        self.try_propose();
        if full {
            self.request_sync(from);
        }
        if let Some((peer, proposal)) = self.proposal_parked.take() {
            if self.tree.get(&proposal.block.parent_hash()).is_some() {
                self.on_proposal(peer, proposal);
            }
        }
    }
}
