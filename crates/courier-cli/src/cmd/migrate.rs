//! `courier migrate`: create or upgrade Courier's schema without serving, so a deploy can run
//! migrations once before starting several nodes (each node also migrates when it opens).
//! With `--outbox`, the outbox and inbox tables in an application's database instead.

use anyhow::bail;

use crate::engine::DatabaseArgs;
use crate::outbox::OutboxArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Migrate the outbox and inbox tables (in --database, an application's postgres:// or
    /// sqlite:// database, and --schema) rather than the queue's.
    #[arg(long)]
    outbox: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if !args.outbox {
        let line = args.database.target()?.migrate().await?;
        println!("{line}");
        return Ok(());
    }
    if let Some(flag) = args.database.postgres.first_given() {
        bail!("{flag} applies to the queue's database, not to --outbox");
    }
    let Some(database) = args.database.database else {
        bail!("--outbox needs --database naming the application's database (postgres://… or sqlite://path)");
    };
    let outbox = OutboxArgs {
        database,
        schema: args.database.schema,
    };
    let (opened, described) = outbox.open().await?;
    let version = opened.migrate().await?;
    println!("outbox tables in {described} are at schema version {version}");
    Ok(())
}
