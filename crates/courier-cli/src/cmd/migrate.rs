//! `courier migrate`: create or upgrade Courier's schema without serving, so a deploy can run
//! migrations once before starting several nodes (each node also migrates when it opens).

use crate::engine::DatabaseArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    database: DatabaseArgs,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let line = args.database.target()?.migrate().await?;
    println!("{line}");
    Ok(())
}
