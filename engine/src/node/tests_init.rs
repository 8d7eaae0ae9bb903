//! `reckon init` and genesis: what is written, that it loads, and the specific refusals.

use std::os::unix::fs::PermissionsExt;

use super::config::NodeConfig;
use super::genesis::{Genesis, GenesisError};
use super::init::{init, reserve_account, InitError, InitOptions};

fn options(out: std::path::PathBuf) -> InitOptions {
    InitOptions {
        nodes: 4,
        institutions: vec!["webank".into(), "huarui".into()],
        out,
        base_port: 31_000,
        chain_id: 7,
    }
}

#[test]
fn init_writes_a_consortium_that_loads_and_refuses_a_non_empty_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("c");
    let written = init(&options(out.clone())).expect("init");
    assert!(written.iter().any(|f| f == "genesis.toml"));
    for private in [
        "tls/ca.key",
        "tls/node-0.key",
        "keys/node-3.ed25519",
        "keys/institution-2.bls",
    ] {
        let mode = std::fs::metadata(out.join(private))
            .expect(private)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{private}");
    }
    let loaded = Genesis::load(&out.join("genesis.toml")).expect("genesis loads");
    let g = &loaded.genesis;
    assert_eq!(
        (
            g.chain_id,
            g.operator,
            g.validators.len(),
            g.institutions.len()
        ),
        (7, 0, 4, 3)
    );
    assert_eq!(g.registry().expect("registry").len(), 3);
    assert_eq!(g.validator_keys().expect("keys").len(), 4);
    let (a, b) = (g.ledger().expect("ledger"), g.ledger().expect("ledger"));
    assert_eq!(
        a.digest(),
        b.digest(),
        "the genesis ledger is deterministic"
    );
    assert_eq!(a.totals().accounts_count, 6, "three accounts per bank");
    assert!(g
        .reserves
        .iter()
        .any(|r| r.account_id as u128 == reserve_account(2)));
    let config = NodeConfig::load(&out.join("node-2.toml")).expect("node config loads");
    assert_eq!(config.node.index, 2);
    assert_eq!(config.network.peers.len(), 3);
    assert_eq!(config.network.client_listen.port(), 31_102);
    assert!(matches!(init(&options(out.clone())), Err(InitError::NotEmpty(p)) if p == out));
    let mut bad = options(dir.path().join("d"));
    bad.nodes = 0;
    assert!(matches!(init(&bad), Err(InitError::Usage(_))));
}

#[test]
fn genesis_refusals_are_specific() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("c");
    init(&options(out.clone())).expect("init");
    let text = std::fs::read_to_string(out.join("genesis.toml")).expect("read");
    let g: Genesis = toml::from_str(&text).expect("parse");
    let mut sparse = g.clone();
    sparse.validators[1].index = 5;
    assert!(matches!(sparse.validate(), Err(GenesisError::Invalid(m)) if m.contains("index 5")));
    let mut operator = g.clone();
    operator.operator = 9;
    assert!(
        matches!(operator.validate(), Err(GenesisError::Invalid(m)) if m.contains("operator 9"))
    );
    let mut hex = g.clone();
    hex.institutions[1].bls_pop = "zz".into();
    assert!(matches!(hex.registry(), Err(GenesisError::Invalid(m)) if m.contains("bls_pop")));
    let mut swapped = g.clone();
    swapped.institutions[1].bls_pop = g.institutions[2].bls_pop.clone();
    assert!(matches!(swapped.registry(), Err(GenesisError::Invalid(m)) if m.contains("refused")));
    let mut validator_hex = g.clone();
    validator_hex.validators[2].consensus_public_key = "zz".into();
    assert!(
        matches!(validator_hex.validator_keys(), Err(GenesisError::Invalid(m)) if m.contains("validator 2: consensus_public_key is not hex"))
    );
    let mut weak = g.clone();
    weak.validators[0].consensus_public_key = format!("01{}", "00".repeat(31));
    assert!(
        matches!(weak.validator_keys(), Err(GenesisError::Invalid(m)) if m.contains("validator 0") && m.contains("weak"))
    );
    let mut short = g.clone();
    short.validators[3].consensus_public_key = "abcd".into();
    assert!(
        matches!(short.validator_keys(), Err(GenesisError::Invalid(m)) if m.contains("validator 3") && m.contains("32 bytes"))
    );
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, text.replace("chain_id", "chain_idd")).expect("write");
    assert!(matches!(
        Genesis::load(&path),
        Err(GenesisError::Parse { .. })
    ));
}
