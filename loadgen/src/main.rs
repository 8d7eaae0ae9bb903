//! `loadgen`: generate or replay Reckon load and record HDR latency. Exit codes: 0 ok,
//! 1 failure, 2 usage.

mod args;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use loadgen::commands::{self, CommandError};
use loadgen::driver::{EventSource, RunConfig, Schedule};
use loadgen::engine_map::MapConfig;
use loadgen::inproc::{InprocConfig, InprocTarget};
use loadgen::progress::Progress;
use loadgen::target::{NullTarget, StallTarget, Target};
use loadgen::tcp::{PresignConfig, TcpConfig, TcpTarget};
use loadgen::trace::{self, TraceFormat, TraceReader};
use loadgen::{output, report};

use args::{Cli, Command, OutputArgs, TargetArgs, TargetKind, WorkloadKind};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Why a command failed: bad usage exits 2, anything else 1.
enum CliError {
    Usage(String),
    Failure(String),
}

impl From<CommandError> for CliError {
    fn from(e: CommandError) -> Self {
        CliError::Failure(e.to_string())
    }
}

impl From<trace::TraceError> for CliError {
    fn from(e: trace::TraceError) -> Self {
        CliError::Failure(e.to_string())
    }
}

fn main() -> ExitCode {
    engine::allocator::keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(m)) => {
            eprintln!("loadgen: usage: {m}");
            ExitCode::from(2)
        }
        Err(CliError::Failure(m)) => {
            eprintln!("loadgen: error: {m}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(command: Command) -> Result<(), CliError> {
    match command {
        Command::Record(a) => cmd_record(a),
        Command::Run(a) => cmd_run(a),
        Command::Replay(a) => cmd_replay(a),
        Command::Convert(a) => cmd_convert(a),
        Command::Digest(a) => cmd_digest(a),
        Command::Report(a) => cmd_report(a),
    }
}

fn cmd_record(a: args::RecordArgs) -> Result<(), CliError> {
    if a.workload.workload == WorkloadKind::Trace {
        return Err(CliError::Usage(
            "record generates a synthetic workload; use `convert` for traces".into(),
        ));
    }
    let workload = a.workload.build().map_err(CliError::Usage)?;
    let format = a
        .format
        .map(Into::into)
        .unwrap_or_else(|| TraceFormat::from_path(&a.out));
    let r = commands::record(workload, a.events, &a.out, format)?;
    println!(
        "recorded {} events to {} in {:.2} s ({:.0} events/s); digest {}",
        r.events,
        a.out.display(),
        r.elapsed_s,
        r.events as f64 / r.elapsed_s.max(1e-9),
        r.digest
    );
    Ok(())
}

/// The mapping's reserve parameters and id base from the flags.
fn map_config(a: &TargetArgs, floor_default: u64, base: MapConfig) -> MapConfig {
    let floor = a.map_reserve_floor.unwrap_or(floor_default);
    let warning = a.map_reserve_warning.unwrap_or(floor);
    MapConfig {
        reserve_floor: u128::from(floor),
        reserve_warning: u128::from(warning),
        id_base: a.map_id_base.map_or(base.id_base, u128::from),
        ..base
    }
}

fn inproc_target(a: &TargetArgs, floor_default: u64) -> Result<Box<dyn Target>, CliError> {
    let config = InprocConfig {
        map: map_config(a, floor_default, MapConfig::default()),
        sign: !a.no_sign,
        verify: a.verify,
        chain_id: a.chain_id,
        key_seed: a.key_seed,
        in_flight_max: a.target_in_flight,
        accounts_capacity: 1 << 16,
        transfers_capacity: a.inproc_transfers_capacity,
    };
    let target = InprocTarget::new(config).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(Box::new(target))
}

/// `floor_default`: the reserve floor the workload was generated with (inproc mapping).
fn build_target(a: &TargetArgs, floor_default: u64) -> Result<Box<dyn Target>, CliError> {
    if a.target_in_flight == 0 {
        return Err(CliError::Usage("--target-in-flight must be >= 1".into()));
    }
    Ok(match a.target {
        TargetKind::Inproc => return inproc_target(a, floor_default),
        TargetKind::Null => Box::new(
            NullTarget::new(a.target_in_flight).with_rejections(a.reject_every, a.reject_code),
        ),
        TargetKind::Stall => Box::new(StallTarget::new(
            a.target_in_flight,
            a.stall_at_request,
            Duration::from_millis(a.stall_ms),
        )),
        TargetKind::Tcp => Box::new(tcp_target(a, floor_default)?),
    })
}

fn tcp_target(a: &TargetArgs, floor_default: u64) -> Result<TcpTarget, CliError> {
    let cluster = a
        .cluster
        .clone()
        .ok_or(CliError::Usage("--target tcp needs --cluster DIR".into()))?;
    let config = TcpConfig {
        cluster,
        connections: a.connections,
        pipeline: a.pipeline,
        reply_timeout: Duration::from_secs_f64(a.reply_timeout_s.clamp(0.1, 3600.0)),
        map: map_config(a, floor_default, TcpConfig::map_default()),
        order: a.tcp_order,
    };
    TcpTarget::connect(&config).map_err(|e| CliError::Failure(e.to_string()))
}

/// The target, and the source left to drive: the TCP target first runs the stream's setup
/// prefix (accounts, reserves, loans, opening top-ups), untimed, unless `--tcp-timed-setup`,
/// then presigns the first `presign` requests (`run --presign`), untimed too.
fn prepared<'a>(
    a: &TargetArgs,
    floor_default: u64,
    source: EventSource<'a>,
    run: &RunConfig,
    presign: usize,
) -> Result<(Box<dyn Target>, EventSource<'a>), CliError> {
    let tcp = matches!(a.target, TargetKind::Tcp);
    if !tcp || (a.tcp_timed_setup && presign == 0) {
        return Ok((build_target(a, floor_default)?, source));
    }
    if a.target_in_flight == 0 {
        return Err(CliError::Usage("--target-in-flight must be >= 1".into()));
    }
    let mut tcp = tcp_target(a, floor_default)?;
    let failure = |e: loadgen::target::TargetError| CliError::Failure(e.to_string());
    let mut rest = source;
    if !a.tcp_timed_setup {
        let wait_max = Duration::from_secs_f64(a.reply_timeout_s.clamp(0.1, 3600.0) * 10.0);
        let (report, after_setup) = tcp.setup(rest, wait_max).map_err(failure)?;
        eprint!("{}", report.render_text());
        rest = after_setup;
    }
    if presign > 0 {
        let config = PresignConfig {
            requests: presign,
            batch_events: run.batch_events,
            events_max: run.events_max,
        };
        let (report, presigned) = tcp.presign(rest, &config).map_err(failure)?;
        eprint!("{}", report.render_text());
        rest = presigned;
    }
    Ok((Box::new(tcp), rest))
}

fn out_dir(o: &OutputArgs) -> PathBuf {
    o.out
        .clone()
        .unwrap_or_else(|| output::default_out_dir(SystemTime::now()))
}

fn run_config(
    schedule: Schedule,
    o: &OutputArgs,
    duration_s: Option<f64>,
    events: Option<u64>,
) -> Result<RunConfig, CliError> {
    let duration = match duration_s {
        Some(s) if !(s > 0.0 && s.is_finite()) => {
            return Err(CliError::Usage("--duration must be > 0".into()))
        }
        Some(s) => Some(Duration::from_secs_f64(s)),
        None => None,
    };
    let config = RunConfig {
        schedule,
        batch_events: o.batch,
        duration,
        events_max: events,
        interval: Duration::from_millis(o.interval_ms),
        drain_timeout: Duration::from_secs_f64(o.drain_timeout_s.max(0.0)),
    };
    config
        .validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(config)
}

/// What `execute` runs besides the stream: flags, the run's config and summary.json's config.
struct Execution<'a> {
    target: &'a TargetArgs,
    output: &'a OutputArgs,
    run: RunConfig,
    config_json: serde_json::Value,
    floor_default: u64,
    /// `run --presign` (0 = off).
    presign: usize,
}

/// Runs, prints the summary, and reports skipped trace lines.
fn execute(source: EventSource<'_>, x: Execution<'_>) -> Result<(), CliError> {
    let Execution {
        target: target_args,
        output: o,
        run: run_config,
        mut config_json,
        floor_default,
        presign,
    } = x;
    let (mut target, source) = prepared(target_args, floor_default, source, &run_config, presign)?;
    let dir = out_dir(o);
    if let Some(obj) = config_json.as_object_mut() {
        obj.insert(
            "run".into(),
            serde_json::to_value(&run_config).unwrap_or_default(),
        );
    }
    let progress = Progress::new(!o.no_progress);
    let summary = commands::run_to_dir(
        source,
        target.as_mut(),
        run_config,
        config_json,
        &dir,
        &progress,
    )?;
    print!("{}", summary.render_text());
    if let Some(report) = target.report() {
        print!("{report}");
    }
    eprintln!("results in {}", dir.display());
    Ok(())
}

fn cmd_run(a: args::RunArgs) -> Result<(), CliError> {
    let schedule = match (a.mode, a.rate) {
        (args::Mode::Open, Some(rate)) => Schedule::Open { events_per_s: rate },
        (args::Mode::Open, None) => {
            return Err(CliError::Usage(
                "--mode open needs --rate EVENTS_PER_S".into(),
            ))
        }
        (args::Mode::Closed, None) => Schedule::Closed {
            in_flight: a.in_flight,
        },
        (args::Mode::Closed, Some(_)) => {
            return Err(CliError::Usage("--rate is for --mode open".into()))
        }
    };
    if a.duration.is_none() && a.events.is_none() && a.workload.workload != WorkloadKind::Trace {
        return Err(CliError::Usage(
            "a synthetic workload is endless: give --duration or --events".into(),
        ));
    }
    check_presign(&a)?;
    let config = run_config(schedule, &a.output, a.duration, a.events)?;
    let mut config_json = a.workload.to_json();
    if let Some(obj) = config_json.as_object_mut() {
        obj.insert("presign".into(), a.presign.into());
    }
    let x = Execution {
        target: &a.target,
        output: &a.output,
        run: config,
        config_json,
        floor_default: a.workload.reserve_floor,
        presign: a.presign,
    };
    if a.workload.workload == WorkloadKind::Trace {
        let path = a.workload.trace.clone().ok_or(CliError::Usage(
            "--workload trace needs --trace FILE".into(),
        ))?;
        return run_trace(&path, a.workload.skip_bad_lines, x);
    }
    let workload = a.workload.build().map_err(CliError::Usage)?;
    execute(Box::new(workload.map(Ok)), x)
}

/// `--presign` is for the TCP target and the transfers workload: a request's bytes must not
/// depend on replies, and joint-loan statements (and any trace's) take their period from them.
fn check_presign(a: &args::RunArgs) -> Result<(), CliError> {
    if a.presign == 0 {
        return Ok(());
    }
    if !matches!(a.target.target, TargetKind::Tcp) {
        return Err(CliError::Usage("--presign is for --target tcp".into()));
    }
    if a.workload.workload != WorkloadKind::Transfers {
        return Err(CliError::Usage(
            "--presign needs --workload transfers: a statement's period is fixed from replies \
             at send time, so joint-loan (and trace) streams cannot be signed ahead"
                .into(),
        ));
    }
    if a.presign > loadgen::tcp::outbox::PRESIGN_REQUESTS_MAX {
        return Err(CliError::Usage(format!(
            "--presign must be at most {}",
            loadgen::tcp::outbox::PRESIGN_REQUESTS_MAX
        )));
    }
    Ok(())
}

fn run_trace(path: &Path, skip_bad: bool, x: Execution<'_>) -> Result<(), CliError> {
    let mut reader = TraceReader::open(path, skip_bad)?;
    let source = Box::new(reader.by_ref());
    execute(source, x)?;
    if reader.skipped() > 0 {
        eprintln!(
            "skipped {} bad lines of {}",
            reader.skipped(),
            path.display()
        );
    }
    Ok(())
}

fn cmd_replay(a: args::ReplayArgs) -> Result<(), CliError> {
    let schedule = if a.max_rate {
        Schedule::Closed {
            in_flight: a.in_flight,
        }
    } else {
        Schedule::Replay { speedup: a.speedup }
    };
    let config = run_config(schedule, &a.output, a.duration, a.events)?;
    let config_json = serde_json::json!({
        "replay": a.trace.display().to_string(),
        "speedup": if a.max_rate { None } else { Some(a.speedup) },
        "max_rate": a.max_rate,
    });
    let x = Execution {
        target: &a.target,
        output: &a.output,
        run: config,
        config_json,
        floor_default: 0,
        presign: 0,
    };
    run_trace(&a.trace, a.skip_bad_lines, x)
}

fn cmd_convert(a: args::ConvertArgs) -> Result<(), CliError> {
    let format = a
        .format
        .map(Into::into)
        .unwrap_or_else(|| TraceFormat::from_path(&a.output));
    let r = trace::convert(&a.input, &a.output, format, a.skip_bad_lines)?;
    println!(
        "converted {} events to {}; digest {}",
        r.events,
        a.output.display(),
        r.digest
    );
    if r.skipped > 0 {
        println!("skipped {} bad lines", r.skipped);
    }
    Ok(())
}

fn cmd_digest(a: args::DigestArgs) -> Result<(), CliError> {
    let (events, digest, skipped) = commands::digest_file(&a.trace, a.skip_bad_lines)?;
    println!("{digest}  {events} events  {}", a.trace.display());
    if skipped > 0 {
        println!("skipped {skipped} bad lines");
    }
    Ok(())
}

fn cmd_report(a: args::ReportArgs) -> Result<(), CliError> {
    let dirs: Vec<&Path> = a.dirs.iter().map(PathBuf::as_path).collect();
    let table = report::report(&dirs, &a.out).map_err(|e| CliError::Failure(e.to_string()))?;
    print!("{table}");
    eprintln!("report in {}", a.out.display());
    Ok(())
}
