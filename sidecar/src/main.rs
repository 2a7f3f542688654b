//! The sidecar binary: parse the configuration, set up logging, run until told to stop (or run
//! one of its tools).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use zenko_memcached_sidecar::commands;
use zenko_memcached_sidecar::config::{Command, Config, LogFormat};
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
    if let Some(Command::Check(args)) = &config.command {
        // 0: everything holds; 1: problems found (printed); 2: the check could not run;
        // 3: some databases changed under every walk and could not be checked.
        return match runtime.block_on(commands::check(args, &mut std::io::stdout())) {
            Ok(commands::Verdict::Sound) => ExitCode::SUCCESS,
            Ok(commands::Verdict::Problems) => ExitCode::FAILURE,
            Ok(commands::Verdict::Busy) => ExitCode::from(3),
            Err(error) => {
                eprintln!("zenko-memcached-sidecar check: {error}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Command::Placement(args)) = &config.command {
        return match runtime.block_on(commands::placement(args, &mut std::io::stdout())) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("zenko-memcached-sidecar placement: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Export(args)) = &config.command {
        let result = runtime.block_on(commands::export(args));
        // With the export on standard output, the summary goes to standard error.
        let to_stdout = args.out.as_os_str() != "-";
        return finish("export", result, to_stdout);
    }
    if let Some(Command::Import(args)) = &config.command {
        let result = runtime.block_on(commands::import(args));
        return finish("import", result, true);
    }
    init_logging(&config);
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("zenko-memcached-sidecar: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Print a tool's one-line summary, or its error; the exit code.
fn finish(tool: &str, result: Result<String, String>, to_stdout: bool) -> ExitCode {
    match result {
        Ok(summary) if to_stdout => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Ok(summary) => {
            eprintln!("{summary}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("zenko-memcached-sidecar {tool}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to standard output; colour codes only reach a terminal, never a log collector.
fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}
