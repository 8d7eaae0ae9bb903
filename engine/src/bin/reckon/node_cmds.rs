//! `reckon init`, `reckon node`, `reckon status`.

use std::net::SocketAddr;
use std::path::PathBuf;

use engine::client::{Client, ClientTls};
use engine::node::config::{LogFormat, NodeConfig};
use engine::node::init::{init, InitOptions};

#[derive(clap::Args)]
pub struct InitArgs {
    /// Number of validator nodes.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Member banks, comma separated (ids 1..; id 0 is the consortium operator). The first is the lead bank.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "webank,huarui,luoyang,changsha"
    )]
    pub institutions: Vec<String>,
    /// Output directory (must not exist or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Node i listens for peers on P+i, clients on P+100+i, metrics on P+200+i (127.0.0.1).
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
    /// The chain id requests are signed for.
    #[arg(long, default_value_t = 1)]
    pub chain_id: u64,
}

#[derive(clap::Args)]
pub struct NodeArgs {
    /// The node's config file (node-<i>.toml written by `reckon init`).
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The node's client address (host:port).
    #[arg(long)]
    pub node: SocketAddr,
    /// Take the CA and certificate from this node config (its node certificate is accepted).
    #[arg(long, conflicts_with_all = ["ca", "cert", "key"])]
    pub config: Option<PathBuf>,
    #[arg(long, requires_all = ["cert", "key"])]
    pub ca: Option<PathBuf>,
    #[arg(long)]
    pub cert: Option<PathBuf>,
    #[arg(long)]
    pub key: Option<PathBuf>,
}

pub fn run_init(args: InitArgs) -> Result<(), String> {
    let options = InitOptions {
        nodes: args.nodes,
        institutions: args.institutions,
        out: args.out.clone(),
        base_port: args.base_port,
        chain_id: args.chain_id,
    };
    let written = init(&options).map_err(|e| e.to_string())?;
    println!(
        "wrote a {}-node consortium to {}:",
        args.nodes,
        args.out.display()
    );
    for file in written {
        println!("  {file}");
    }
    println!("\nnext: start every node, e.g.");
    for i in 0..args.nodes {
        println!(
            "  reckon node --config {}/node-{i}.toml &",
            args.out.display()
        );
    }
    println!(
        "then: reckon status --node 127.0.0.1:{} --config {}/node-0.toml",
        args.base_port as usize + 100,
        args.out.display()
    );
    Ok(())
}

fn init_tracing(config: &NodeConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

pub fn run_node(args: NodeArgs) -> Result<(), String> {
    let config = NodeConfig::load(&args.config).map_err(|e| e.to_string())?;
    init_tracing(&config);
    engine::node::run::run(&args.config).map_err(|e| {
        tracing::error!(error = %e, "node failed");
        e.to_string()
    })
}

pub fn run_status(args: StatusArgs) -> Result<(), String> {
    let tls = match (&args.config, &args.ca, &args.cert, &args.key) {
        (Some(path), _, _, _) => {
            let config = NodeConfig::load(path).map_err(|e| e.to_string())?;
            ClientTls::load(
                &config.files.tls_ca,
                &config.files.tls_cert,
                &config.files.tls_key,
            )
        }
        (None, Some(ca), Some(cert), Some(key)) => ClientTls::load(ca, cert, key),
        _ => return Err("give --config FILE or --ca/--cert/--key".into()),
    }
    .map_err(|e| e.to_string())?;
    let mut client = Client::connect(args.node, &tls).map_err(|e| format!("{}: {e}", args.node))?;
    client.timeout = std::time::Duration::from_secs(5);
    let status = client.status().map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&status).unwrap_or_else(|_| status.to_string())
    );
    Ok(())
}
