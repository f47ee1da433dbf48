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
    gatehouse_service::tracing_setup::init();
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
    gatehouse_service::print_validation(config::load(path).map(|s| {
        format!(
            "{}: OK ({} users, {} clients)",
            path.display(),
            s.users.len(),
            s.clients.len()
        )
    }))
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
