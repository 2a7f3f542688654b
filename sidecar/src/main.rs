//! The sidecar binary: parse the configuration, set up logging, run until told to stop.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use zenko_memcached_sidecar::config::Config;
use zenko_memcached_sidecar::{probe, server};

// glibc's allocator keeps freed chunk buffers in per-thread arenas, so the process grows
// far past what it uses at once under many concurrent uploads; mimalloc returns them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
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
    match server::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("zenko-memcached-sidecar: {error}");
            ExitCode::FAILURE
        }
    }
}
