//! Block sync: responses are verified (linkage, heights, every QC) before anything is applied.

use super::*;

fn sync_response_from_warmed_node() -> SyncResponse {
    let mut r = warmed_router();
    r.run(400);
    let actions = r.cores[0].handle(
        r.now_ms,
        Event::Message {
            from: 1,
            msg: Message::SyncRequest(SyncRequest { from_height: 1 }),
        },
    );
    let response = actions
        .into_iter()
        .find_map(|a| match a {
            Action::Send {
                to: Recipient::One(1),
                msg: Message::SyncResponse(s),
            } => Some(s),
            _ => None,
        })
        .expect("a sync response");
    assert!(
        response.blocks.len() >= 4,
        "a useful response: {}",
        response.blocks.len()
    );
    response
}

#[test]
fn sync_responses_are_verified_before_anything_is_applied() {
    let good = sync_response_from_warmed_node();
    let feed = |response: SyncResponse| {
        let mut fresh = cores(4).remove(3);
        let actions = fresh.handle(
            5_000,
            Event::Message {
                from: 0,
                msg: Message::SyncResponse(response),
            },
        );
        (
            rejected(&actions),
            fresh.committed_height(),
            actions.iter().any(|a| matches!(a, Action::Commit(_))),
        )
    };
    let mut gap = good.clone();
    gap.blocks.remove(1);
    assert_eq!(
        feed(gap),
        (vec![RejectReason::SyncInvalid("hash linkage")], 0, false)
    );
    let mut forged = good.clone();
    forged.last_qc.as_mut().expect("qc").signature = cores(4)[0].crypto.sign(b"not a vote");
    assert_eq!(
        feed(forged),
        (vec![RejectReason::QcInvalidSignature], 0, false)
    );
    let mut unlinked = good.clone();
    unlinked.blocks.remove(0);
    assert!(matches!(
        feed(unlinked).0[..],
        [RejectReason::SyncInvalid(_)]
    ));
    let mut tampered = good.clone();
    tampered.blocks[2].payload.push([7; 32]);
    assert_eq!(
        feed(tampered).1,
        0,
        "a tampered block breaks the hash linkage"
    );
    let mut no_qc = good.clone();
    no_qc.last_qc = None;
    assert_eq!(
        feed(no_qc),
        (
            vec![RejectReason::SyncInvalid("no QC for last block")],
            0,
            false
        )
    );
    let (rejects, height, committed) = feed(good);
    assert!(rejects.is_empty(), "{rejects:?}");
    assert!(
        height >= 2 && committed,
        "the verified chain commits: height {height}"
    );
}

#[test]
fn audit_accepts_a_committed_chain_and_rejects_any_tampering() {
    use crate::consensus::audit::{audit_chain, AuditError};
    let mut r = warmed_router();
    r.run(400);
    let chain = r.commits[0].clone();
    assert!(chain.len() >= 5);
    let genesis = CommittedBlock {
        height: 0,
        block: genesis_block(),
        qc: genesis_qc(),
    };
    let auditor = &r.cores[1];
    let audit = |blocks: &[CommittedBlock]| {
        audit_chain(&auditor.crypto, auditor.config(), &genesis, blocks)
    };
    assert_eq!(audit(&chain), Ok(()));
    let mut gap = chain.clone();
    gap.remove(2);
    assert_eq!(
        audit(&gap),
        Err(AuditError::HeightGap {
            height: 4,
            expected: 3
        })
    );
    let mut payload = chain.clone();
    payload[3].block.payload.push([1; 32]);
    assert_eq!(audit(&payload), Err(AuditError::QcMismatch { height: 4 }));
    let mut forged = chain.clone();
    forged[1].qc.signature = auditor.crypto.sign(b"forged");
    assert_eq!(audit(&forged), Err(AuditError::QcInvalid { height: 2 }));
    let mut bytes_round_trip = Vec::new();
    for c in &chain {
        bytes_round_trip.push(CommittedBlock::decode(&c.encode()).expect("log record decodes"));
    }
    assert_eq!(audit(&bytes_round_trip), Ok(()));
}
