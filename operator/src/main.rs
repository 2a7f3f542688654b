//! Entry point of `zenko-memcached-operator`: parses the command line and runs one command.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use zenko_memcached_operator::cli::{Cli, Command, LogFormat, ManifestsArgs};
use zenko_memcached_operator::{Error, Result, manifests, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => manifests::crd_yaml().and_then(|y| print(&y)),
        Command::Manifests(args) => manifests_command(&args),
        Command::Run(args) => run_command(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zenko-memcached-operator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn manifests_command(args: &ManifestsArgs) -> Result<()> {
    let path = args.file.display().to_string();
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let text = if path == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(io)?;
        text
    } else {
        std::fs::read_to_string(&args.file).map_err(io)?
    };
    print(&manifests::manifests_yaml(&text, &args.namespace)?)
}

fn run_command(args: zenko_memcached_operator::cli::RunArgs) -> Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|source| Error::Io {
        path: "tokio runtime".to_owned(),
        source,
    })?;
    runtime.block_on(run::run(args))
}

fn print(text: &str) -> Result<()> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|source| Error::Io {
            path: "stdout".to_owned(),
            source,
        })
}
