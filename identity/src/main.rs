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
    /// Act on a user through the running issuer's admin listener (`admin:` in the config):
    /// `logout` revokes every token and session of the user (or client id) everywhere,
    /// `disable` also refuses new logins until `enable`.
    Users {
        #[arg(value_enum)]
        action: UserAction,
        /// The username (for `logout`, a client id works too).
        name: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum UserAction {
    Logout,
    Disable,
    Enable,
}

fn main() -> ExitCode {
    gatehouse_service::tracing_setup::init("gatehouse_identity");
    let cli = Cli::parse();
    let result = match cli.command {
        None | Some(Command::Serve) => server::run(&cli.config),
        Some(Command::Validate) => return validate(&cli.config),
        Some(Command::Hash { generate }) => hash(generate),
        Some(Command::Users { action, name }) => users(&cli.config, action, &name),
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

/// One `POST /users/<name>/<action>` to the admin listener of the issuer `config` describes.
fn users(config: &std::path::Path, action: UserAction, name: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let settings = config::load(config)
        .map_err(|e| anyhow::anyhow!("invalid identity configuration:\n{e}"))?;
    let admin = &settings.process.admin;
    let action = match action {
        UserAction::Logout => "logout",
        UserAction::Disable => "disable",
        UserAction::Enable => "enable",
    };
    let path = format!(
        "/users/{}/{action}",
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
    );
    let timeout = Some(std::time::Duration::from_secs(10));
    let mut stream = std::net::TcpStream::connect(admin)
        .map_err(|e| anyhow::anyhow!("cannot reach the issuer's admin listener {admin}: {e}"))?;
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let ok = head.starts_with("HTTP/1.1 200");
    println!("{}", body.trim());
    anyhow::ensure!(ok, "{}", head.lines().next().unwrap_or("no answer"));
    Ok(())
}
