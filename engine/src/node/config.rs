//! Node configuration: one TOML file per node, written by `reckon init`.
//!
//! Every field has a default except identity, addresses and file paths. Unknown keys are an error
//! (a typo must not silently fall back to a default), and [`NodeConfig::validate`] checks every
//! bound before a node starts.

use super::layout::LayoutOverride;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Most validators a consortium may have (the signer bitmap's bound).
pub const VALIDATORS_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub network: NetworkSection,
    pub files: FilesSection,
    #[serde(default)]
    pub mempool: MempoolSection,
    #[serde(default)]
    pub verify: VerifySection,
    #[serde(default)]
    pub consensus: ConsensusSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub ledger: LedgerSection,
    #[serde(default)]
    pub layout: LayoutOverride,
    #[serde(default)]
    pub log: LogSection,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's validator index in the genesis validator list.
    pub index: u32,
    pub name: String,
    pub data_dir: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    pub index: u32,
    pub addr: SocketAddr,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Node-to-node consensus and dissemination traffic (mutual TLS).
    pub peer_listen: SocketAddr,
    /// Client requests and queries (mutual TLS).
    pub client_listen: SocketAddr,
    /// Prometheus text on plain HTTP; keep it on a management network.
    pub metrics_listen: SocketAddr,
    /// Every other validator.
    pub peers: Vec<PeerEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilesSection {
    pub genesis: PathBuf,
    /// This validator's Ed25519 consensus key (`reckon init` writes `keys/node-<i>.ed25519`, 0600).
    pub validator_key: PathBuf,
    pub tls_ca: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Optional at-rest encryption key for block payloads (0600).
    #[serde(default)]
    pub storage_key: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolSection {
    pub requests_max: usize,
    pub bytes_max: usize,
    pub per_institution_requests_max: usize,
}

impl Default for MempoolSection {
    fn default() -> Self {
        MempoolSection {
            requests_max: 65_536,
            bytes_max: 1 << 30,
            per_institution_requests_max: 16_384,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySection {
    /// A verify batch closes at this many requests ...
    pub batch_requests_max: usize,
    /// ... or this long after its first request arrived, whichever comes first.
    pub batch_deadline_us: u64,
    /// A window that holds a peer's batch closes at most this long after that batch arrived (and
    /// never past `batch_deadline_us`): long enough for the batches peers cut at about the same
    /// time to share one signature check, short against the round. 0: it takes only what is
    /// already queued.
    pub peer_batch_wait_us: u64,
    /// Bound of the ingress → verify queue; a full queue answers `busy`.
    pub queue_requests_max: usize,
}

impl Default for VerifySection {
    fn default() -> Self {
        VerifySection {
            batch_requests_max: 256,
            batch_deadline_us: 2_000,
            peer_batch_wait_us: 500,
            queue_requests_max: 8_192,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusSection {
    pub round_timeout_ms: u64,
    pub round_timeout_ms_max: u64,
    /// Most batch digests one block orders.
    pub block_batches_max: usize,
    /// Idle pacing: a leader with nothing to order waits this long before an empty block
    /// (0: no pacing). At most half of `round_timeout_ms`.
    pub min_idle_block_interval_ms: u64,
    /// The round timer while the validator a round waits on looks down from here (its
    /// connection failed and it has been silent for 200 ms): how soon a round led by a killed
    /// node ends. 0: always wait the full round timer. At most `round_timeout_ms`.
    pub unreachable_leader_timeout_ms: u64,
    /// A peer whose connection looks up but that sent nothing, not even its heartbeat (every
    /// 100 ms), for this long while another peer was heard is flagged unreachable too: hung, or
    /// cut off without a reset. 0: only a failed connection flags a peer. Otherwise at least
    /// `PEER_SILENCE_MS_MIN` (three heartbeats).
    pub peer_silence_ms: u64,
    /// A batch for dissemination closes at this many requests or this many bytes.
    pub batch_requests_max: usize,
    pub batch_bytes_max: usize,
    pub batch_deadline_ms: u64,
    /// Committed blocks kept in memory to serve peers' block sync (1..=16,384); a peer further
    /// behind is served from the block log, so this bounds memory, not how far behind a node may
    /// fall.
    pub committed_window_blocks: usize,
}

impl Default for ConsensusSection {
    fn default() -> Self {
        ConsensusSection {
            round_timeout_ms: 1_000,
            round_timeout_ms_max: 30_000,
            block_batches_max: 64,
            min_idle_block_interval_ms: crate::consensus::MIN_IDLE_BLOCK_INTERVAL_MS_DEFAULT,
            unreachable_leader_timeout_ms: crate::consensus::UNREACHABLE_LEADER_TIMEOUT_MS_DEFAULT,
            peer_silence_ms: super::peers::PEER_HUNG_MS,
            batch_requests_max: 512,
            batch_bytes_max: 4 << 20,
            batch_deadline_ms: 5,
            committed_window_blocks: crate::consensus::COMMITTED_WINDOW_MAX,
        }
    }
}

/// Lowest nonzero `consensus.peer_silence_ms`: three heartbeat intervals.
pub const PEER_SILENCE_MS_MIN: u64 = 3 * super::peers::PEER_HEARTBEAT_MS;

/// Default pace of the snapshot writer. Measured with it (docs/CAPACITY.md, session 15): a
/// 330 MiB snapshot took 11.4-12.1 s from hand-over to durable, encoding included.
pub const SNAPSHOT_WRITE_MIB_PER_S_DEFAULT: u64 = 64;
/// Default `storage.peer_log_serve_mib_per_s`.
pub const PEER_LOG_SERVE_MIB_PER_S_DEFAULT: u64 = 32;
/// Highest accepted `storage.snapshot_write_mib_per_s` and `storage.peer_log_serve_mib_per_s`.
pub const SNAPSHOT_WRITE_MIB_PER_S_MAX: u64 = 1 << 20;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub segment_bytes: u64,
    pub snapshot_every_blocks: u64,
    /// Most MiB/s the background snapshot writer writes on average (0: unpaced), so a snapshot
    /// takes a bounded share of the disk the block log and the consensus journal sync on.
    pub snapshot_write_mib_per_s: u64,
    /// Most MiB/s of block log reads this node serves each peer (sync responses and committed
    /// batches for a peer catching up; 0: unlimited). Reads past it are refused and the peer
    /// asks again, so no peer can hold the execute thread in log reads.
    pub peer_log_serve_mib_per_s: u64,
    /// `false` forces the pwrite + fdatasync path even where io_uring works.
    pub io_uring: bool,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            segment_bytes: 1 << 30,
            snapshot_every_blocks: 10_000,
            snapshot_write_mib_per_s: SNAPSHOT_WRITE_MIB_PER_S_DEFAULT,
            peer_log_serve_mib_per_s: PEER_LOG_SERVE_MIB_PER_S_DEFAULT,
            io_uring: true,
        }
    }
}

/// Table sizes the ledger allocates (and faults in) at start, so the hot path never grows a table
/// by copying it. The ledger still grows past them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSection {
    pub accounts_capacity: usize,
    pub transfers_capacity: usize,
    /// Fault the reserved record tables in at start (`MADV_POPULATE_WRITE`) instead of as they
    /// fill: the node's memory is committed before it serves, and the execute thread never pays
    /// a first-touch fault (about 3 ms per MiB on a VM whose host backs pages on first touch).
    pub prefault: bool,
}

impl Default for LedgerSection {
    fn default() -> Self {
        LedgerSection {
            accounts_capacity: 1 << 14,
            transfers_capacity: 1 << 18,
            prefault: true,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `reckon=debug,info`.
    pub filter: String,
    /// A request answered more than this many milliseconds after it was admitted is logged at
    /// `warn` with where its time went (admission, inclusion, commit, durability and reply); 0
    /// turns the log off.
    pub slow_request_ms: u64,
    /// A committed block that takes the execute stage longer than this many milliseconds
    /// (resolving its batches, appending it to the log, applying it) is logged at `warn` with the
    /// split; 0 turns the log off.
    pub slow_block_ms: u64,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Human,
            filter: "info".into(),
            slow_request_ms: 1_000,
            slow_block_ms: 250,
        }
    }
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = NodeConfig::parse(path, &text)?;
        config.resolve_relative_to(path.parent().unwrap_or(Path::new(".")));
        config.validate(path)?;
        Ok(config)
    }

    pub fn parse(path: &Path, text: &str) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Rewrites the config file at `path` with `change` applied, keeping its paths as written
    /// (relative stays relative); the result is validated before it is written.
    pub fn edit(path: &Path, change: impl FnOnce(&mut NodeConfig)) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = NodeConfig::parse(path, &text)?;
        change(&mut config);
        config.validate(path)?;
        std::fs::write(path, config.to_toml()).map_err(|source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Relative paths in the file are relative to the file's own directory, so a config directory
    /// can be moved as a whole.
    fn resolve_relative_to(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        fix(&mut self.node.data_dir);
        fix(&mut self.files.genesis);
        fix(&mut self.files.validator_key);
        fix(&mut self.files.tls_ca);
        fix(&mut self.files.tls_cert);
        fix(&mut self.files.tls_key);
        if let Some(k) = self.files.storage_key.as_mut() {
            fix(k);
        }
    }

    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        };
        if self.network.peers.len() + 1 > VALIDATORS_MAX {
            return Err(invalid(
                "network.peers",
                format!("at most {} validators", VALIDATORS_MAX),
            ));
        }
        if let Some(p) = self
            .network
            .peers
            .iter()
            .find(|p| p.index == self.node.index)
        {
            return Err(invalid(
                "network.peers",
                format!("lists this node's own index {}", p.index),
            ));
        }
        let m = &self.mempool;
        if m.requests_max == 0 || m.bytes_max == 0 || m.per_institution_requests_max == 0 {
            return Err(invalid("mempool", "every bound must be positive".into()));
        }
        if self.verify.batch_requests_max == 0 || self.verify.queue_requests_max == 0 {
            return Err(invalid(
                "verify",
                "batch_requests_max and queue_requests_max must be positive".into(),
            ));
        }
        let c = &self.consensus;
        if c.round_timeout_ms == 0 || c.round_timeout_ms_max < c.round_timeout_ms {
            return Err(invalid(
                "consensus.round_timeout_ms",
                "must be positive and ≤ round_timeout_ms_max".into(),
            ));
        }
        if c.block_batches_max == 0 || c.batch_requests_max == 0 || c.batch_bytes_max == 0 {
            return Err(invalid("consensus", "batch bounds must be positive".into()));
        }
        if c.round_timeout_ms_max > crate::consensus::ROUND_TIMEOUT_MS_MAX {
            return Err(invalid(
                "consensus.round_timeout_ms_max",
                format!("at most {}", crate::consensus::ROUND_TIMEOUT_MS_MAX),
            ));
        }
        if c.block_batches_max > crate::consensus::BLOCK_DIGESTS_MAX {
            return Err(invalid(
                "consensus.block_batches_max",
                format!(
                    "at most {} (peers refuse larger blocks)",
                    crate::consensus::BLOCK_DIGESTS_MAX
                ),
            ));
        }
        if !(1..=crate::consensus::COMMITTED_WINDOW_MAX).contains(&c.committed_window_blocks) {
            return Err(invalid(
                "consensus.committed_window_blocks",
                format!("must be in 1..={}", crate::consensus::COMMITTED_WINDOW_MAX),
            ));
        }
        if c.unreachable_leader_timeout_ms > c.round_timeout_ms {
            return Err(invalid(
                "consensus.unreachable_leader_timeout_ms",
                "at most round_timeout_ms (0 turns early timeouts off)".into(),
            ));
        }
        if c.peer_silence_ms != 0 && c.peer_silence_ms < PEER_SILENCE_MS_MIN {
            return Err(invalid(
                "consensus.peer_silence_ms",
                format!(
                    "0 (off) or at least {PEER_SILENCE_MS_MIN} (three heartbeats): a live peer \
                     is never flagged for a late heartbeat or two"
                ),
            ));
        }
        if c.min_idle_block_interval_ms.saturating_mul(2) > c.round_timeout_ms {
            return Err(invalid(
                "consensus.min_idle_block_interval_ms",
                "at most half of round_timeout_ms (replicas must not time out an idle leader)"
                    .into(),
            ));
        }
        if c.batch_requests_max > super::batches::BATCH_REQUESTS_MAX {
            return Err(invalid(
                "consensus.batch_requests_max",
                format!(
                    "at most {} (peers refuse larger batches)",
                    super::batches::BATCH_REQUESTS_MAX
                ),
            ));
        }
        if self.verify.batch_requests_max > crate::crypto::VERIFY_BATCH_REQUESTS_MAX {
            return Err(invalid(
                "verify.batch_requests_max",
                format!("at most {}", crate::crypto::VERIFY_BATCH_REQUESTS_MAX),
            ));
        }
        if self.storage.segment_bytes < (1 << 20) {
            return Err(invalid(
                "storage.segment_bytes",
                "must be at least 1 MiB".into(),
            ));
        }
        if self.ledger.accounts_capacity > crate::ledger::ACCOUNTS_MAX
            || self.ledger.transfers_capacity > crate::ledger::TRANSFERS_MAX
        {
            return Err(invalid(
                "ledger",
                format!(
                    "capacities are at most {} accounts and {} transfers",
                    crate::ledger::ACCOUNTS_MAX,
                    crate::ledger::TRANSFERS_MAX
                ),
            ));
        }
        if self.storage.snapshot_every_blocks == 0 {
            return Err(invalid(
                "storage.snapshot_every_blocks",
                "must be positive".into(),
            ));
        }
        if self.storage.snapshot_write_mib_per_s > SNAPSHOT_WRITE_MIB_PER_S_MAX {
            return Err(invalid(
                "storage.snapshot_write_mib_per_s",
                format!("must be at most {SNAPSHOT_WRITE_MIB_PER_S_MAX} (0: unpaced)"),
            ));
        }
        if self.storage.peer_log_serve_mib_per_s > SNAPSHOT_WRITE_MIB_PER_S_MAX {
            return Err(invalid(
                "storage.peer_log_serve_mib_per_s",
                format!("must be at most {SNAPSHOT_WRITE_MIB_PER_S_MAX} (0: unlimited)"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeConfig {
        NodeConfig {
            node: NodeSection {
                index: 0,
                name: "node-0".into(),
                data_dir: "data".into(),
            },
            network: NetworkSection {
                peer_listen: "127.0.0.1:7100".parse().expect("addr"),
                client_listen: "127.0.0.1:7200".parse().expect("addr"),
                metrics_listen: "127.0.0.1:7300".parse().expect("addr"),
                peers: vec![PeerEntry {
                    index: 1,
                    addr: "127.0.0.1:7101".parse().expect("addr"),
                }],
            },
            files: FilesSection {
                genesis: "genesis.toml".into(),
                validator_key: "node-0.ed25519".into(),
                tls_ca: "ca.pem".into(),
                tls_cert: "node-0.pem".into(),
                tls_key: "node-0.key".into(),
                storage_key: None,
            },
            mempool: MempoolSection::default(),
            verify: VerifySection::default(),
            consensus: ConsensusSection::default(),
            storage: StorageSection::default(),
            ledger: LedgerSection::default(),
            layout: LayoutOverride::default(),
            log: LogSection::default(),
        }
    }

    #[test]
    fn edit_rewrites_validated_changes_and_refuses_bad_ones_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node-0.toml");
        std::fs::write(&path, sample().to_toml()).expect("write");
        NodeConfig::edit(&path, |c| c.ledger.transfers_capacity = 1 << 22).expect("edit");
        let text = std::fs::read_to_string(&path).expect("read");
        let edited = NodeConfig::parse(&path, &text).expect("parse");
        assert_eq!(edited.ledger.transfers_capacity, 1 << 22);
        assert_eq!(
            edited.files.genesis,
            PathBuf::from("genesis.toml"),
            "kept relative"
        );
        let err = NodeConfig::edit(&path, |c| c.consensus.batch_requests_max = 0)
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("consensus"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
    }

    #[test]
    fn round_trips_through_toml_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node-0.toml");
        std::fs::write(&path, sample().to_toml()).expect("write");
        let loaded = NodeConfig::load(&path).expect("load");
        assert_eq!(loaded.node.data_dir, dir.path().join("data"));
        assert_eq!(loaded.files.genesis, dir.path().join("genesis.toml"));
        assert_eq!(loaded.network, sample().network);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_specific_errors() {
        let path = Path::new("x.toml");
        let typo = sample()
            .to_toml()
            .replace("[mempool]", "[mempool]\nrequest_max = 5");
        let err = NodeConfig::parse(path, &typo).unwrap_err().to_string();
        assert!(err.contains("request_max"), "{err}");
        let mut c = sample();
        c.consensus.round_timeout_ms_max = 1;
        let err = c.validate(path).unwrap_err().to_string();
        assert!(err.contains("consensus.round_timeout_ms"), "{err}");
        for (key, adjust) in [
            (
                "consensus.round_timeout_ms_max",
                (|c: &mut NodeConfig| c.consensus.round_timeout_ms_max = 120_000)
                    as fn(&mut NodeConfig),
            ),
            ("consensus.block_batches_max", |c| {
                c.consensus.block_batches_max = 65
            }),
            ("consensus.min_idle_block_interval_ms", |c| {
                c.consensus.min_idle_block_interval_ms = 501
            }),
            ("consensus.committed_window_blocks", |c| {
                c.consensus.committed_window_blocks = 0
            }),
            ("consensus.unreachable_leader_timeout_ms", |c| {
                c.consensus.unreachable_leader_timeout_ms = c.consensus.round_timeout_ms + 1
            }),
            ("consensus.peer_silence_ms", |c| {
                c.consensus.peer_silence_ms = PEER_SILENCE_MS_MIN - 1
            }),
            ("consensus.committed_window_blocks", |c| {
                c.consensus.committed_window_blocks = 16_385
            }),
            ("storage.snapshot_write_mib_per_s", |c| {
                c.storage.snapshot_write_mib_per_s = SNAPSHOT_WRITE_MIB_PER_S_MAX + 1
            }),
            ("storage.peer_log_serve_mib_per_s", |c| {
                c.storage.peer_log_serve_mib_per_s = SNAPSHOT_WRITE_MIB_PER_S_MAX + 1
            }),
        ] {
            let mut c = sample();
            adjust(&mut c);
            let err = c.validate(path).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let mut c = sample();
        c.network.peers[0].index = 0;
        assert!(c
            .validate(path)
            .unwrap_err()
            .to_string()
            .contains("own index"));
        let mut c = sample();
        c.consensus.batch_requests_max = 9_000;
        let err = c.validate(path).unwrap_err().to_string();
        assert!(err.contains("consensus.batch_requests_max"), "{err}");
        let mut c = sample();
        c.verify.batch_requests_max = 1 << 20;
        let err = c.validate(path).unwrap_err().to_string();
        assert!(err.contains("verify.batch_requests_max"), "{err}");
        let bytes = crate::node::dissemination::peer_batch_bytes_max(512);
        assert!(bytes + 44 + 4 * 512 <= crate::net::frame::FRAME_PAYLOAD_BYTES_MAX as u64);
        let missing = NodeConfig::load(Path::new("/nonexistent/reckon.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
    }
}
