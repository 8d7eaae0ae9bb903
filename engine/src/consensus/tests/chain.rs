//! The commit rule on hand-built chains (no signatures needed by the block tree).

use super::*;

/// The two-chain rule commits only on consecutive rounds (a mutation dropping the round check was
/// not caught by random simulation as a fork; this pins it directly).
#[test]
fn commit_requires_a_direct_two_chain_in_consecutive_rounds() {
    use super::super::block_tree::BlockTree;
    let qc_for = |block: &Block| QuorumCert {
        block_hash: block.hash(),
        round: block.round,
        height: block.height,
        signers: SignerBitmap::default(),
        signatures: Vec::new(),
    };
    let child = |parent: &Block, round: Round| Block {
        author: 0,
        round,
        height: parent.height + 1,
        timestamp_ms: parent.timestamp_ms + 1,
        justify: qc_for(parent),
        payload: Vec::new(),
    };
    let mut tree = BlockTree::genesis();
    let b0 = child(&genesis_block(), 1);
    let b1 = child(&b0, 3); // round 2 timed out: not consecutive
    let b2 = child(&b1, 4);
    for b in [&b0, &b1, &b2] {
        tree.insert(b.clone()).expect("insert");
    }
    assert_eq!(
        tree.try_commit(&qc_for(&b1)),
        Ok(Vec::new()),
        "QC(b1) must not commit b0 (rounds 1, 3)"
    );
    assert_eq!(tree.committed_height(), 0);
    let committed = tree.try_commit(&qc_for(&b2)).expect("ancestors held");
    let heights: Vec<u64> = committed.iter().map(|c| c.height).collect();
    assert_eq!(
        heights,
        vec![1, 2],
        "QC(b2) commits b1 (rounds 3, 4) and its ancestor b0"
    );
    assert_eq!(committed[0].qc, b1.justify);
    assert_eq!(tree.committed_height(), 2);
}
