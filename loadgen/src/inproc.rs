//! `--target inproc`: the engine's ledger in this process, no network.
//!
//! `submit` maps the batch (`engine_map`), signs each request (`signing`, unless disabled),
//! optionally verifies the signatures with the node's `BatchVerifier`, applies each request
//! with `Ledger::apply_request` at the mapping's monotonically increasing timestamp, settles the
//! results back into the mapping, and queues a `Completion` whose rejections are counted per
//! loadgen event by the first refusing result code.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use engine::crypto::{BatchVerifier, SignedRequest, VerifyCode};
use engine::ledger::{Ledger, LedgerConfig};
use engine::types::{ChainId, EventResult, ResultCode};

use crate::engine_map::{outcome_of, record_results, EngineRequest, MapConfig, Mapper, OPERATOR};
use crate::op::TraceEvent;
use crate::signing::Keyring;
use crate::target::{Completion, Outcome, Target, TargetError, Ticket};

#[derive(Clone, Copy, Debug)]
pub struct InprocConfig {
    pub map: MapConfig,
    /// Sign every request (one BLS signature each).
    pub sign: bool,
    /// Also verify every batch's signatures with `BatchVerifier` (needs `sign`).
    pub verify: bool,
    pub chain_id: ChainId,
    pub key_seed: u64,
    pub in_flight_max: usize,
    /// Ledger capacity hints (it grows past them).
    pub accounts_capacity: usize,
    pub transfers_capacity: usize,
}

impl Default for InprocConfig {
    fn default() -> Self {
        InprocConfig {
            map: MapConfig::default(),
            sign: true,
            verify: false,
            chain_id: 1,
            key_seed: 1,
            in_flight_max: 4096,
            accounts_capacity: 1024,
            transfers_capacity: 16 * 1024,
        }
    }
}

/// Engine-level counters of an inproc run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InprocStats {
    pub requests: u64,
    /// Engine events applied (loadgen events plus derived ones: reserve registrations,
    /// settlement accounts).
    pub engine_events: u64,
    /// Every non-`ok` engine result code, warnings (`ok_reserve_below_warning`) included.
    pub codes: BTreeMap<u32, u64>,
    pub signatures: u64,
    pub verify_failures: u64,
}

pub struct InprocTarget {
    config: InprocConfig,
    mapper: Mapper,
    ledger: Ledger,
    keyring: Option<Keyring>,
    verifier: Option<(usize, BatchVerifier)>,
    request_id_next: u128,
    ready: VecDeque<Completion>,
    stats: InprocStats,
}

fn other(e: impl std::fmt::Display) -> TargetError {
    TargetError::Other(e.to_string())
}

impl InprocTarget {
    pub fn new(config: InprocConfig) -> Result<InprocTarget, TargetError> {
        if config.verify && !config.sign {
            return Err(TargetError::Other("--verify needs signing".into()));
        }
        assert!(config.in_flight_max >= 1);
        let ledger = Ledger::new(LedgerConfig {
            accounts_capacity: config.accounts_capacity,
            transfers_capacity: config.transfers_capacity,
            ..LedgerConfig::new(OPERATOR)
        });
        Ok(InprocTarget {
            mapper: Mapper::new(config.map).map_err(other)?,
            ledger,
            keyring: config
                .sign
                .then(|| Keyring::derived(config.key_seed, config.chain_id)),
            verifier: None,
            request_id_next: 1,
            ready: VecDeque::new(),
            stats: InprocStats::default(),
            config,
        })
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn stats(&self) -> &InprocStats {
        &self.stats
    }

    /// Maps, signs and applies one batch request by request (each settled before the next is
    /// encoded); with `verify`, all of its requests are signed first and batch-verified.
    pub fn execute(&mut self, batch: &[TraceEvent]) -> Result<Outcome, TargetError> {
        if self.config.verify {
            return self.execute_verified(batch);
        }
        let mut planned = self.mapper.plan_batch(batch).map_err(other)?;
        let mut codes = vec![0u32; batch.len()];
        while let Some(mut request) = self.mapper.encode_next(&mut planned) {
            let results = match self.keyring.as_mut() {
                None => self.apply(&request, &request.body)?,
                Some(keyring) => {
                    let id = self.request_id_next;
                    self.request_id_next += 1;
                    let body = std::mem::take(&mut request.body);
                    let signed = keyring.sign(id, request.requester, request.operation, body);
                    let signed = signed.map_err(other)?;
                    self.stats.signatures += 1;
                    self.apply(&request, &signed.request.body)?
                }
            };
            self.settle(&request, &results, &mut codes)?;
        }
        Ok(outcome_of(&codes))
    }

    fn execute_verified(&mut self, batch: &[TraceEvent]) -> Result<Outcome, TargetError> {
        let requests = self.mapper.requests(batch).map_err(other)?;
        let keyring = self
            .keyring
            .as_mut()
            .ok_or_else(|| other("verify without keys"))?;
        let mut signed = Vec::with_capacity(requests.len());
        let mut shells = Vec::with_capacity(requests.len());
        for mut request in requests {
            let body = std::mem::take(&mut request.body);
            let id = self.request_id_next;
            self.request_id_next += 1;
            let signature = keyring.sign(id, request.requester, request.operation, body);
            signed.push(signature.map_err(other)?);
            shells.push(request);
        }
        self.stats.signatures += signed.len() as u64;
        if let Some(reason) = self.verify(&signed)? {
            for request in &shells {
                let all: Vec<EventResult> = (0..request.events() as u32)
                    .map(|index| EventResult {
                        index,
                        code: ResultCode::LinkedEventFailed,
                    })
                    .collect();
                self.mapper.settle(request, &all).map_err(other)?;
            }
            return Ok(Outcome::Failed { reason });
        }
        let mut codes = vec![0u32; batch.len()];
        for (request, signed) in shells.iter().zip(&signed) {
            let results = self.apply(request, &signed.request.body)?;
            self.settle(request, &results, &mut codes)?;
        }
        Ok(outcome_of(&codes))
    }

    /// Batch-verifies the signatures; `Some(reason)` if any failed (nothing is then applied).
    fn verify(&mut self, signed: &[SignedRequest]) -> Result<Option<String>, TargetError> {
        let keyring = self
            .keyring
            .as_ref()
            .ok_or_else(|| other("verify without keys"))?;
        if self
            .verifier
            .as_ref()
            .is_none_or(|(keys, _)| *keys != keyring.len())
        {
            let registry: Arc<_> = keyring.registry().map_err(other)?;
            let verifier = BatchVerifier::new(registry, self.config.chain_id);
            self.verifier = Some((keyring.len(), verifier));
        }
        let (_, verifier) = self.verifier.as_ref().ok_or_else(|| other("no verifier"))?;
        let codes = verifier.verify(signed);
        assert_eq!(codes.len(), signed.len());
        let bad = codes.iter().filter(|c| **c != VerifyCode::Ok).count();
        self.stats.verify_failures += bad as u64;
        Ok((bad > 0).then(|| format!("{bad} signatures failed verification")))
    }

    fn apply(
        &mut self,
        request: &EngineRequest,
        body: &[u8],
    ) -> Result<Vec<EventResult>, TargetError> {
        let reply = self
            .ledger
            .apply_request(
                request.requester,
                request.timestamp_ns,
                request.operation as u8,
                body,
            )
            .map_err(|e| other(format!("ledger refused a whole request: {e}")))?;
        self.stats.requests += 1;
        self.stats.engine_events += request.events() as u64;
        Ok(reply.results().to_vec())
    }

    fn settle(
        &mut self,
        request: &EngineRequest,
        results: &[EventResult],
        codes: &mut [u32],
    ) -> Result<(), TargetError> {
        self.mapper.settle(request, results).map_err(other)?;
        for result in results {
            *self.stats.codes.entry(result.code as u32).or_default() += 1;
        }
        record_results(request, results, codes).map_err(other)
    }

    /// A plain block for the end of a run: engine counters, digest and conservation.
    pub fn report(&self) -> String {
        let totals = self.ledger.totals();
        let mut s = format!(
            "INPROC\n  requests {} ({} signed), engine events {}, verify failures {}\n",
            self.stats.requests,
            self.stats.signatures,
            self.stats.engine_events,
            self.stats.verify_failures
        );
        for (code, count) in &self.stats.codes {
            let name = ResultCode::from_u32(*code).map_or("?".to_string(), |c| format!("{c:?}"));
            s += &format!("  engine code {code} {name}: {count}\n");
        }
        s += &format!(
            "  ledger digest {:032x}; accounts {}, transfers {}; debits_posted == credits_posted: {}\n",
            self.ledger.digest(),
            totals.accounts_count,
            totals.transfers_count,
            totals.debits_posted == totals.credits_posted
        );
        s
    }
}

impl Target for InprocTarget {
    fn name(&self) -> &str {
        "inproc"
    }

    fn in_flight_max(&self) -> usize {
        self.config.in_flight_max
    }

    fn submit(&mut self, ticket: Ticket, batch: &[TraceEvent]) -> Result<(), TargetError> {
        let outcome = self.execute(batch)?;
        self.ready.push_back(Completion { ticket, outcome });
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>, _timeout: Duration) -> Result<(), TargetError> {
        out.extend(self.ready.drain(..));
        Ok(())
    }

    fn report(&self) -> Option<String> {
        Some(InprocTarget::report(self))
    }
}
