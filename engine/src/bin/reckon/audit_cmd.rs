//! `reckon audit`: the offline auditor of a node's data directory (logic in `engine::audit`).

use std::path::{Path, PathBuf};

use engine::audit::{audit, AuditFault, AuditOptions, AuditOutcome, AuditReport};
use engine::node::config::NodeConfig;
use serde_json::json;

/// Exit code when the audit ran and found a fault (1 is "could not run", 2 is usage).
pub const EXIT_FAULT: i32 = 3;

#[derive(clap::Args)]
pub struct AuditArgs {
    /// The node's data directory (`node.data_dir`; its `log/` is audited). Default: from --config.
    #[arg(long, required_unless_present = "config")]
    pub data: Option<PathBuf>,
    /// The node's config file: gives the data directory, the genesis and the storage key.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The consortium's genesis.toml (default: from --config, else the first genesis.toml found
    /// in the data directory's parent directories).
    #[arg(long)]
    pub genesis: Option<PathBuf>,
    /// The log encryption key (`files.storage_key`), when the log is encrypted.
    #[arg(long)]
    pub storage_key: Option<PathBuf>,
    /// Skip the per-request BLS signature checks (QCs are always verified).
    #[arg(long)]
    pub skip_request_signatures: bool,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
}

/// `genesis.toml` in `dir` or up to three parents (`DIR/data/node-0` → `DIR/genesis.toml`).
fn find_genesis(data: &Path) -> Option<PathBuf> {
    data.ancestors()
        .take(4)
        .map(|d| d.join("genesis.toml"))
        .find(|p| p.is_file())
}

fn options(args: &AuditArgs) -> Result<AuditOptions, String> {
    let config = match &args.config {
        Some(path) => Some(NodeConfig::load(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let data = args
        .data
        .clone()
        .or_else(|| config.as_ref().map(|c| c.node.data_dir.clone()))
        .ok_or("give --data DIR or --config FILE")?;
    let genesis = args
        .genesis
        .clone()
        .or_else(|| config.as_ref().map(|c| c.files.genesis.clone()))
        .or_else(|| find_genesis(&data))
        .ok_or_else(|| {
            format!(
                "no genesis.toml found above {}; give --genesis FILE",
                data.display()
            )
        })?;
    let storage_key = args
        .storage_key
        .clone()
        .or_else(|| config.as_ref().and_then(|c| c.files.storage_key.clone()));
    Ok(AuditOptions {
        data_dir: data,
        genesis,
        storage_key,
        verify_requests: !args.skip_request_signatures,
    })
}

fn fault_json(fault: &AuditFault) -> serde_json::Value {
    json!({
        "kind": fault.kind(),
        "height": fault.height(),
        "segment": fault.place().map(|p| p.0),
        "offset": fault.place().map(|p| p.1),
        "message": fault.to_string(),
    })
}

fn print_text(options: &AuditOptions, r: &AuditReport, fault: Option<&AuditFault>) {
    println!("audit of {}", r.log_dir.display());
    println!(
        "  genesis          {} ({} validators, ledger digest {})",
        options.genesis.display(),
        r.validators,
        r.genesis_digest
    );
    let heights = match r.first_height {
        Some(first) => format!("{first}..={}", r.last_height),
        None => "none".into(),
    };
    println!(
        "  blocks           {} (heights {heights}), {} segments, {} frame bytes",
        r.blocks, r.segments, r.frame_bytes
    );
    println!("  QCs verified     {}", r.qcs_verified);
    println!(
        "  requests         {} in {} batches; {} signatures verified{}",
        r.requests,
        r.batches,
        r.request_signatures_verified,
        if options.verify_requests {
            ""
        } else {
            " (request signatures skipped)"
        }
    );
    println!(
        "  re-executed      {} events not ok, {} requests refused by the ledger",
        r.events_not_ok, r.requests_refused
    );
    let snapshots: Vec<String> = r.snapshots_matched.iter().map(|h| h.to_string()).collect();
    println!(
        "  snapshots        {} matched re-execution{}",
        snapshots.len(),
        if snapshots.is_empty() {
            String::new()
        } else {
            format!(" (heights {})", snapshots.join(", "))
        }
    );
    for temp in &r.temp_files {
        println!("  note             leftover temp file {}", temp.display());
    }
    println!("  final height     {}", r.last_height);
    println!("  ledger digest    {}", r.ledger_digest);
    println!("  elapsed          {} ms", r.elapsed_ms);
    match fault {
        None => println!(
            "OK: every checksum, hash link, QC, request signature and snapshot digest verified"
        ),
        Some(f) => println!("FAULT [{}]: {f}", f.kind()),
    }
}

/// Runs the audit; `Ok(code)` is the exit code (0 clean, `EXIT_FAULT` on a fault).
pub fn run(args: AuditArgs) -> Result<i32, String> {
    let options = options(&args)?;
    let AuditOutcome { report, fault } = audit(&options).map_err(|e| e.to_string())?;
    if args.json {
        let value = json!({
            "ok": fault.is_none(),
            "report": report,
            "fault": fault.as_ref().map(fault_json),
        });
        println!("{value}");
    } else {
        print_text(&options, &report, fault.as_ref());
    }
    match fault {
        None => Ok(0),
        Some(f) => {
            eprintln!("reckon audit: {f}");
            Ok(EXIT_FAULT)
        }
    }
}
