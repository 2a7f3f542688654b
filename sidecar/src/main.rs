//! The sidecar binary: parse the configuration, set up logging, run until told to stop.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use zenko_memcached_sidecar::config::Config;
use zenko_memcached_sidecar::{probe, server};

/// Blob chunks (512 KiB by default) and the memcached client's copies of them are allocated
/// and freed at a high rate on every thread. After the first such free, glibc raises its mmap
/// threshold and serves them from per-thread arenas that keep the freed memory: 16 concurrent
/// uploads then grow the process to about 160 MiB while using about 70 MiB at once. A fixed
/// threshold maps and unmaps these buffers directly, so the process stays near what it uses.
#[allow(unsafe_code)]
fn return_large_buffers_to_the_system() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only changes glibc's allocation parameters. It runs first in main, before
    // the runtime starts any thread, and its result (0 on failure) only means the default stays.
    let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) };
}

fn main() -> ExitCode {
    return_large_buffers_to_the_system();
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
