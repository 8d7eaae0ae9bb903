//! Genesis: the TOML file every node of one consortium starts from.
//!
//! The genesis hash is BLAKE3 of the file's exact bytes; the consensus chain id is derived from it
//! (`consensus_chain_id`), so nodes started from different genesis files never form a quorum, and
//! the request chain id (`chain_id`) is what clients sign. The accounts and reserves listed here are
//! created by the operator through the ledger at `genesis_time_ns`, so every node starts from the
//! same ledger digest.

use crate::codec::encode_body;
use crate::crypto::{Registry, ValidatedPublicKey, ValidatorPublicKey};
use crate::ledger::{Ledger, LedgerConfig};
use crate::types::{Account, InstitutionId, Operation, Reply, Reserve};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Most institutions a genesis may list (also the mempool's lane count).
pub const GENESIS_INSTITUTIONS_MAX: usize = 1024;
/// Most accounts a genesis may create (one create request).
pub const GENESIS_ACCOUNTS_MAX: usize = crate::types::BATCH_EVENTS_MAX;

#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("genesis {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("genesis {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("genesis: {0}")]
    Invalid(String),
    #[error("genesis: applying {what} to the ledger: {message}")]
    Apply { what: &'static str, message: String },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// The chain id every client request names.
    pub chain_id: u64,
    pub genesis_time_ns: u64,
    /// The consortium operator's institution id (0 by convention).
    pub operator: u32,
    pub validators: Vec<GenesisValidator>,
    pub institutions: Vec<GenesisInstitution>,
    #[serde(default)]
    pub accounts: Vec<GenesisAccount>,
    #[serde(default)]
    pub reserves: Vec<GenesisReserve>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    pub index: u32,
    pub name: String,
    /// 32-byte Ed25519 public key that signs this validator's votes and timeouts, hex.
    pub consensus_public_key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GenesisInstitution {
    pub id: u32,
    pub name: String,
    /// `operator`, `lead` or `partner` (informational; the ledger's rules key off `operator`).
    pub role: String,
    pub bls_public_key: String,
    pub bls_pop: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    pub id: u64,
    pub institution: u32,
    pub ledger: u32,
    pub code: u16,
    #[serde(default)]
    pub flags: u16,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GenesisReserve {
    pub account_id: u64,
    pub institution: u32,
    /// Minor units (fen).
    pub floor: u64,
    pub warning: u64,
}

/// A loaded genesis with its hash.
#[derive(Clone, Debug)]
pub struct LoadedGenesis {
    pub genesis: Genesis,
    pub hash: [u8; 32],
}

pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn key_from_hex(what: &str, public: &str, pop: &str) -> Result<ValidatedPublicKey, GenesisError> {
    let bad = |field: &str| GenesisError::Invalid(format!("{what}: {field} is not hex"));
    let public = hex_decode(public).ok_or_else(|| bad("bls_public_key"))?;
    let pop = hex_decode(pop).ok_or_else(|| bad("bls_pop"))?;
    ValidatedPublicKey::new(&public, &pop)
        .map_err(|e| GenesisError::Invalid(format!("{what}: BLS key refused: {e}")))
}

fn validator_key_from_hex(index: u32, public: &str) -> Result<ValidatorPublicKey, GenesisError> {
    let what = format!("validator {index}");
    let bytes = hex_decode(public)
        .ok_or_else(|| GenesisError::Invalid(format!("{what}: consensus_public_key is not hex")))?;
    ValidatorPublicKey::from_bytes(&bytes)
        .map_err(|e| GenesisError::Invalid(format!("{what}: consensus_public_key refused: {e}")))
}

impl Genesis {
    pub fn load(path: &Path) -> Result<LoadedGenesis, GenesisError> {
        let bytes = std::fs::read(path).map_err(|source| GenesisError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse = |message: String| GenesisError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let text = std::str::from_utf8(&bytes).map_err(|e| parse(e.to_string()))?;
        let genesis: Genesis = toml::from_str(text).map_err(|e| parse(e.to_string()))?;
        genesis.validate()?;
        Ok(LoadedGenesis {
            genesis,
            hash: *blake3::hash(&bytes).as_bytes(),
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render genesis: {e}\n"))
    }

    /// Dense validator indices 0..n, dense institution ids 0..n, the operator among them.
    pub fn validate(&self) -> Result<(), GenesisError> {
        let invalid = |m: String| Err(GenesisError::Invalid(m));
        if self.validators.is_empty() || self.validators.len() > crate::consensus::VALIDATORS_MAX {
            return invalid(format!("{} validators (1 to 256)", self.validators.len()));
        }
        for (i, v) in self.validators.iter().enumerate() {
            if v.index as usize != i {
                return invalid(format!("validator #{i} has index {} (dense 0..n)", v.index));
            }
        }
        let n = self.institutions.len();
        if n == 0 || n > GENESIS_INSTITUTIONS_MAX {
            return invalid(format!(
                "{n} institutions (1 to {GENESIS_INSTITUTIONS_MAX})"
            ));
        }
        for (i, inst) in self.institutions.iter().enumerate() {
            if inst.id as usize != i {
                return invalid(format!("institution #{i} has id {} (dense 0..n)", inst.id));
            }
        }
        if self.operator as usize >= n {
            return invalid(format!("operator {} is not an institution", self.operator));
        }
        if self.accounts.len() > GENESIS_ACCOUNTS_MAX || self.reserves.len() > GENESIS_ACCOUNTS_MAX
        {
            return invalid(format!(
                "at most {GENESIS_ACCOUNTS_MAX} accounts and reserves"
            ));
        }
        if let Some(a) = self.accounts.iter().find(|a| a.institution as usize >= n) {
            return invalid(format!(
                "account {} names unknown institution {}",
                a.id, a.institution
            ));
        }
        Ok(())
    }

    /// Validated validator consensus keys in index order.
    pub fn validator_keys(&self) -> Result<Vec<ValidatorPublicKey>, GenesisError> {
        self.validators
            .iter()
            .map(|v| validator_key_from_hex(v.index, &v.consensus_public_key))
            .collect()
    }

    /// The request-signing registry: institution id to validated key.
    pub fn registry(&self) -> Result<Registry, GenesisError> {
        let mut registry = Registry::new();
        for inst in &self.institutions {
            let what = format!("institution {}", inst.id);
            let key = key_from_hex(&what, &inst.bls_public_key, &inst.bls_pop)?;
            registry
                .insert_validated(inst.id, key)
                .map_err(|e| GenesisError::Invalid(format!("{what}: {e}")))?;
        }
        assert_eq!(registry.len(), self.institutions.len());
        Ok(registry)
    }

    pub fn institutions_count(&self) -> u32 {
        self.institutions.len() as u32
    }

    /// The ledger every node starts from: genesis accounts and reserves applied by the operator.
    pub fn ledger(&self) -> Result<Ledger, GenesisError> {
        let mut ledger = Ledger::new(LedgerConfig::new(self.operator as InstitutionId));
        let accounts: Vec<Account> = self
            .accounts
            .iter()
            .map(|a| Account {
                id: a.id as u128,
                institution: a.institution,
                ledger: a.ledger,
                code: a.code,
                flags: a.flags,
                ..Account::default()
            })
            .collect();
        let reserves: Vec<Reserve> = self
            .reserves
            .iter()
            .map(|r| Reserve {
                account_id: r.account_id as u128,
                institution: r.institution,
                floor: r.floor as u128,
                warning: r.warning as u128,
                ..Reserve::default()
            })
            .collect();
        let mut timestamp_ns = self.genesis_time_ns.max(1);
        if !accounts.is_empty() {
            self.apply(
                &mut ledger,
                timestamp_ns,
                Operation::CreateAccounts,
                &encode_body(&accounts),
                "accounts",
            )?;
            timestamp_ns = ledger.timestamp_last() + 1;
        }
        if !reserves.is_empty() {
            self.apply(
                &mut ledger,
                timestamp_ns,
                Operation::CreateReserves,
                &encode_body(&reserves),
                "reserves",
            )?;
        }
        Ok(ledger)
    }

    fn apply(
        &self,
        ledger: &mut Ledger,
        timestamp_ns: u64,
        operation: Operation,
        body: &[u8],
        what: &'static str,
    ) -> Result<(), GenesisError> {
        let reply = ledger
            .apply_request(self.operator, timestamp_ns, operation as u8, body)
            .map_err(|e| GenesisError::Apply {
                what,
                message: e.to_string(),
            })?;
        let Reply::Results(results) = reply else {
            return Err(GenesisError::Apply {
                what,
                message: "a create returned records".into(),
            });
        };
        if let Some(bad) = results.iter().find(|r| !r.code.is_ok()) {
            return Err(GenesisError::Apply {
                what,
                message: format!("event {} refused: {:?}", bad.index, bad.code),
            });
        }
        Ok(())
    }
}

impl LoadedGenesis {
    /// The chain id consensus signs votes under: the first 8 bytes of the genesis hash, so a node
    /// with another genesis file (even with the same `chain_id`) never contributes to a QC here.
    pub fn consensus_chain_id(&self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.hash[..8]);
        u64::from_le_bytes(bytes)
    }
}
