//! `reckon init`: a consortium CA, node and client certificates, validators' Ed25519 consensus
//! keys, institutions' BLS keys with proofs of possession, a genesis with the members' accounts,
//! and one config file per node.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::crypto::{save_institution_key, save_validator_key, KeyPair, ValidatorKey};
use crate::net::tls;

use super::config::{
    ConsensusSection, FilesSection, LedgerSection, LogSection, MempoolSection, NetworkSection,
    NodeConfig, NodeSection, PeerEntry, StorageSection, VerifySection,
};
use super::genesis::{
    hex_encode, Genesis, GenesisAccount, GenesisInstitution, GenesisReserve, GenesisValidator,
};
use super::layout::LayoutOverride;

/// The ledger code of every genesis account (ISO 4217 numeric for CNY; amounts in fen).
pub const GENESIS_LEDGER: u32 = 156;
/// Most nodes `init` writes.
pub const INIT_NODES_MAX: usize = 64;
/// Default reserve floor and warning threshold (fen): 100,000 and 200,000 CNY.
pub const RESERVE_FLOOR_DEFAULT: u64 = 10_000_000;
pub const RESERVE_WARNING_DEFAULT: u64 = 20_000_000;
/// Account codes.
pub const CODE_RESERVE: u16 = 30;
pub const CODE_LEAD_FUNDING: u16 = 10;
pub const CODE_SETTLEMENT: u16 = 31;

/// Account ids of member bank `institution` (1..): reserve, lead funding, settlement.
pub fn reserve_account(institution: u32) -> u128 {
    institution as u128 * 1000 + 1
}
pub fn lead_funding_account(institution: u32) -> u128 {
    institution as u128 * 1000 + 2
}
pub fn settlement_account(institution: u32) -> u128 {
    institution as u128 * 1000 + 3
}

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub nodes: usize,
    /// Member banks, in order; they get institution ids 1..=n (0 is the consortium operator).
    pub institutions: Vec<String>,
    pub out: PathBuf,
    pub base_port: u16,
    pub chain_id: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} exists and is not empty; choose a new directory")]
    NotEmpty(PathBuf),
    #[error("invalid option: {0}")]
    Usage(String),
    #[error("writing {path}: {message}")]
    Write { path: PathBuf, message: String },
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), InitError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |message: String| InitError::Write {
        path: path.to_path_buf(),
        message,
    };
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| err(e.to_string()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| err(e.to_string()))?;
    file.sync_all().map_err(|e| err(e.to_string()))
}

fn check_options(o: &InitOptions) -> Result<(), InitError> {
    if o.nodes == 0 || o.nodes > INIT_NODES_MAX {
        return Err(InitError::Usage(format!(
            "--nodes must be 1 to {INIT_NODES_MAX}"
        )));
    }
    if o.institutions.is_empty() || o.institutions.iter().any(|n| n.trim().is_empty()) {
        return Err(InitError::Usage(
            "--institutions needs at least one non-empty name".into(),
        ));
    }
    let top = o.base_port as usize + 200 + o.nodes;
    if top > u16::MAX as usize {
        return Err(InitError::Usage(format!(
            "--base-port {} leaves no room for {} nodes",
            o.base_port, o.nodes
        )));
    }
    if o.out.exists() {
        let empty = std::fs::read_dir(&o.out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(InitError::NotEmpty(o.out.clone()));
        }
    }
    Ok(())
}

fn addr(port: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port as u16)
}

/// Writes everything; returns the list of files written (relative to `out`).
pub fn init(o: &InitOptions) -> Result<Vec<String>, InitError> {
    check_options(o)?;
    let dir = &o.out;
    let mkdir = |p: &Path| {
        std::fs::create_dir_all(p).map_err(|e| InitError::Write {
            path: p.to_path_buf(),
            message: e.to_string(),
        })
    };
    for sub in ["", "keys", "tls", "clients", "data"] {
        mkdir(&dir.join(sub))?;
    }
    let mut written = Vec::new();
    let tls_err = |e: crate::net::TlsError| InitError::Usage(format!("TLS: {e}"));
    let ca = tls::generate_ca("Reckon Consortium CA").map_err(tls_err)?;
    write(&dir.join("tls/ca.pem"), ca.cert_pem(), false)?;
    write(&dir.join("tls/ca.key"), &ca.key_pem(), true)?;
    written.extend([
        "tls/ca.pem".to_string(),
        "tls/ca.key (keep offline)".to_string(),
    ]);
    let key_err = |rel: &str| {
        let path = dir.join(rel);
        move |e: crate::crypto::KeyFileError| InitError::Write {
            path,
            message: e.to_string(),
        }
    };
    let mut validators = Vec::new();
    for i in 0..o.nodes {
        let key = ValidatorKey::generate();
        let rel = format!("keys/node-{i}.ed25519");
        save_validator_key(&dir.join(&rel), &key).map_err(key_err(&rel))?;
        let cert = tls::issue_node_cert(
            &ca,
            i as u32,
            &["127.0.0.1".to_string(), "localhost".to_string()],
        )
        .map_err(tls_err)?;
        write(
            &dir.join(format!("tls/node-{i}.pem")),
            &cert.cert_pem,
            false,
        )?;
        write(&dir.join(format!("tls/node-{i}.key")), &cert.key_pem, true)?;
        written.push(format!(
            "keys/node-{i}.ed25519, tls/node-{i}.pem, tls/node-{i}.key"
        ));
        validators.push(GenesisValidator {
            index: i as u32,
            name: format!("node-{i}"),
            consensus_public_key: hex_encode(&key.public().to_bytes()),
        });
    }
    let names: Vec<String> = std::iter::once("consortium-operator".to_string())
        .chain(o.institutions.iter().cloned())
        .collect();
    let mut institutions = Vec::new();
    for (id, name) in names.iter().enumerate() {
        let pair = KeyPair::generate();
        let rel = format!("keys/institution-{id}.bls");
        save_institution_key(&dir.join(&rel), &pair).map_err(key_err(&rel))?;
        let cert = tls::issue_client_cert(&ca, id as u32).map_err(tls_err)?;
        write(
            &dir.join(format!("tls/institution-{id}.pem")),
            &cert.cert_pem,
            false,
        )?;
        write(
            &dir.join(format!("tls/institution-{id}.key")),
            &cert.key_pem,
            true,
        )?;
        written.push(format!("keys/institution-{id}.bls, tls/institution-{id}.pem, tls/institution-{id}.key ({name})"));
        let role = match id {
            0 => "operator",
            1 => "lead",
            _ => "partner",
        };
        institutions.push(GenesisInstitution {
            id: id as u32,
            name: name.clone(),
            role: role.into(),
            bls_public_key: hex_encode(&pair.public().to_bytes()),
            bls_pop: hex_encode(pair.pop()),
        });
    }
    let genesis = genesis_for(o, validators, institutions);
    genesis
        .validate()
        .map_err(|e| InitError::Usage(e.to_string()))?;
    genesis
        .ledger()
        .map_err(|e| InitError::Usage(e.to_string()))?;
    write(&dir.join("genesis.toml"), &genesis.to_toml(), false)?;
    written.push("genesis.toml".into());
    for i in 0..o.nodes {
        let config = node_config(o, i);
        write(
            &dir.join(format!("node-{i}.toml")),
            &config.to_toml(),
            false,
        )?;
        written.push(format!("node-{i}.toml"));
    }
    for (id, name) in names.iter().enumerate() {
        let text = client_file(o, id as u32, name);
        write(
            &dir.join(format!("clients/institution-{id}.toml")),
            &text,
            false,
        )?;
        written.push(format!("clients/institution-{id}.toml"));
    }
    Ok(written)
}

fn genesis_for(
    o: &InitOptions,
    validators: Vec<GenesisValidator>,
    institutions: Vec<GenesisInstitution>,
) -> Genesis {
    let mut accounts = Vec::new();
    let mut reserves = Vec::new();
    for bank in 1..=o.institutions.len() as u32 {
        for (id, code) in [
            (reserve_account(bank), CODE_RESERVE),
            (lead_funding_account(bank), CODE_LEAD_FUNDING),
            (settlement_account(bank), CODE_SETTLEMENT),
        ] {
            accounts.push(GenesisAccount {
                id: id as u64,
                institution: bank,
                ledger: GENESIS_LEDGER,
                code,
                flags: 0,
            });
        }
        reserves.push(GenesisReserve {
            account_id: reserve_account(bank) as u64,
            institution: bank,
            floor: RESERVE_FLOOR_DEFAULT,
            warning: RESERVE_WARNING_DEFAULT,
        });
    }
    Genesis {
        chain_id: o.chain_id,
        genesis_time_ns: super::peers::wall_ms().saturating_mul(1_000_000),
        operator: 0,
        validators,
        institutions,
        accounts,
        reserves,
    }
}

fn node_config(o: &InitOptions, i: usize) -> NodeConfig {
    let base = o.base_port as usize;
    NodeConfig {
        node: NodeSection {
            index: i as u32,
            name: format!("node-{i}"),
            data_dir: format!("data/node-{i}").into(),
        },
        network: NetworkSection {
            peer_listen: addr(base + i),
            client_listen: addr(base + 100 + i),
            metrics_listen: addr(base + 200 + i),
            peers: (0..o.nodes)
                .filter(|p| *p != i)
                .map(|p| PeerEntry {
                    index: p as u32,
                    addr: addr(base + p),
                })
                .collect(),
        },
        files: FilesSection {
            genesis: "genesis.toml".into(),
            validator_key: format!("keys/node-{i}.ed25519").into(),
            tls_ca: "tls/ca.pem".into(),
            tls_cert: format!("tls/node-{i}.pem").into(),
            tls_key: format!("tls/node-{i}.key").into(),
            storage_key: None,
        },
        mempool: MempoolSection::default(),
        verify: VerifySection::default(),
        consensus: ConsensusSection::default(),
        storage: StorageSection {
            segment_bytes: 64 << 20,
            ..StorageSection::default()
        },
        ledger: LedgerSection::default(),
        // Every node this writes runs on this machine (loopback addresses): each takes its own
        // rotation of the core layout, so the nodes' heavy stages do not all share one core.
        layout: LayoutOverride {
            offset: Some(i),
            ..LayoutOverride::default()
        },
        log: LogSection::default(),
    }
}

/// A small client file per institution: what a client needs to connect and sign.
fn client_file(o: &InitOptions, id: u32, name: &str) -> String {
    let nodes: Vec<String> = (0..o.nodes)
        .map(|i| format!("\"127.0.0.1:{}\"", o.base_port as usize + 100 + i))
        .collect();
    format!(
        "# Client identity of institution {id} ({name}). Paths are relative to this file.\n\
         institution = {id}\nname = \"{name}\"\nchain_id = {}\nnodes = [{}]\n\
         tls_ca = \"../tls/ca.pem\"\ntls_cert = \"../tls/institution-{id}.pem\"\ntls_key = \"../tls/institution-{id}.key\"\n\
         bls_key = \"../keys/institution-{id}.bls\"\n",
        o.chain_id,
        nodes.join(", ")
    )
}
