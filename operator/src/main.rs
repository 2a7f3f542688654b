//! Entry point of `zenko-memcached-operator`: parses the command line and runs one command.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use clap::Parser;
use std::path::Path;
use tracing_subscriber::EnvFilter;

use zenko_memcached_operator::cli::{Cli, Command, LogFormat, ManifestsArgs, StackArgs};
use zenko_memcached_operator::{Error, Result, manifests, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => manifests::crd_yaml().and_then(|y| print(&y)),
        Command::Manifests(args) => manifests_command(&args),
        Command::Stack(args) => stack_command(&args),
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
    print(&manifests::manifests_yaml(
        &read_input(&args.file)?,
        &args.namespace,
    )?)
}

/// The whole stack is built before the output file is opened, so that an invalid module
/// leaves an existing file untouched.
fn stack_command(args: &StackArgs) -> Result<()> {
    let texts = args
        .files
        .iter()
        .map(|file| read_input(file))
        .collect::<Result<Vec<_>>>()?;
    let yaml = manifests::stack_files_yaml(&texts, &args.namespace, &args.options())?;
    match &args.output {
        None => print(&yaml),
        Some(path) => std::fs::write(path, yaml).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The text of a file, or of standard input for `-`.
fn read_input(file: &Path) -> Result<String> {
    let path = file.display().to_string();
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    if path == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(io)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).map_err(io)
    }
}

fn run_command(args: zenko_memcached_operator::cli::RunArgs) -> Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
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
