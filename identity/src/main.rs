use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse_identity::{config, password, server};

/// gatehouse-identity: the token issuer (OpenID Connect provider) behind Gatehouse.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The identity configuration file.
    #[arg(long, short, global = true, default_value = "conf/identity.yaml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Check the configuration file and print every problem; exit 1 if any.
    Validate,
    /// Read a password or client secret from standard input (one line) and print its argon2id
    /// hash for identity.yaml. `--generate` makes a random client secret and prints both.
    Hash {
        #[arg(long)]
        generate: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None | Some(Command::Serve) => server::run(&cli.config),
        Some(Command::Validate) => return validate(&cli.config),
        Some(Command::Hash { generate }) => hash(generate),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse-identity: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(s) => {
            println!(
                "{}: OK ({} users, {} clients)",
                path.display(),
                s.users.len(),
                s.clients.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            println!("{} problem(s) found", errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn hash(generate: bool) -> anyhow::Result<()> {
    let secret = if generate {
        let s = gatehouse_identity::grants::random_value();
        println!("secret: {s}");
        s
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        anyhow::ensure!(!line.is_empty(), "nothing on standard input to hash");
        line
    };
    let phc = password::hash(&secret).map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    if generate {
        println!("hash:   {phc}");
    } else {
        println!("{phc}");
    }
    Ok(())
}
