//! The sidecar binary: parse the configuration, set up logging, run until told to stop.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use zenko_memcached_sidecar::config::Config;
use zenko_memcached_sidecar::{probe, server};

fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(url) = &config.probe {
        return match probe::probe(url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("zenko-memcached-sidecar: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("zenko-memcached-sidecar: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("zenko-memcached-sidecar: {error}");
            ExitCode::FAILURE
        }
    }
}
