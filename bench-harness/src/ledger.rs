//! Not built yet: owned by its issue.

#[derive(clap::Args)]
pub struct Args {
    /// Print the result as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: Args) -> Result<(), String> {
    Err("this benchmark is not built yet".to_string())
}
