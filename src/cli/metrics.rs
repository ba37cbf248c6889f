//! `pgsnapfs metrics`

use crate::error::Result;
use crate::metrics::{exposition, http, Metrics};
use crate::session::lifecycle::Signals;
use crate::store::Repository;

#[derive(clap::Args)]
pub struct Args {
    /// Serve the metrics over HTTP at this address (e.g. 127.0.0.1:9187, or :0 for any free
    /// port, printed on stdout) instead of printing them once; SIGTERM or ^C stop it.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

/// `signals`: SIGINT and SIGTERM, blocked before the repository was opened when serving.
pub fn run(repo: &Repository, signals: Option<Signals>, a: Args) -> Result<()> {
    let page = || Ok(exposition::render(&Metrics::gather(repo)?));
    match (a.listen, signals) {
        (Some(addr), Some(signals)) => {
            let addr = match addr.strip_prefix(':') {
                Some(port) => format!("0.0.0.0:{port}"),
                None => addr,
            };
            http::serve(
                &addr,
                signals,
                &|bound| outln!("pgsnapfs: serving metrics on http://{bound}/metrics"),
                &page,
            )
        }
        _ => {
            out!("{}", page()?);
            Ok(())
        }
    }
}
