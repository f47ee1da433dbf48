use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse::config::{self, LoadMode};
use gatehouse::server::{self, Launch};

// glibc malloc/free showed up near 8% of a proxy profile; mimalloc removes most of it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gatehouse: an edge gateway on Pingora.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The gateway configuration file.
    #[arg(long, short, global = true, default_value = "conf/gatehouse.yaml")]
    config: PathBuf,
    /// Take over the listening sockets of a running instance (graceful upgrade; see README).
    #[arg(long, short)]
    upgrade: bool,
    /// Run in the background.
    #[arg(long, short)]
    daemon: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check every file the configuration names and print each problem; exit 1 if any.
    Validate,
    /// Run the gateway plus the demo echo upstreams that the shipped conf/ routes to.
    Demo,
    /// Run a stand-alone echo upstream.
    Echo {
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: String,
        #[arg(long, default_value = "echo")]
        name: String,
    },
}

fn main() -> ExitCode {
    gatehouse_service::tracing_setup::init("gatehouse");
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Validate) => return validate(&cli.config),
        Some(Command::Echo { listen, name }) => server::run_echo(&listen, &name),
        Some(Command::Demo) => server::run(
            &cli.config,
            Launch {
                upgrade: cli.upgrade,
                daemon: cli.daemon,
                echo_upstreams: vec![
                    ("127.0.0.1:9001".into(), "echo-a".into()),
                    ("127.0.0.1:9002".into(), "echo-b".into()),
                ],
            },
        ),
        None => server::run(
            &cli.config,
            Launch {
                upgrade: cli.upgrade,
                daemon: cli.daemon,
                echo_upstreams: Vec::new(),
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    gatehouse_service::print_validation(config::load(path, None, LoadMode::CheckOnly).map(
        |snapshot| {
            format!(
                "{}: OK ({} routes, {} upstreams, hash {})",
                path.display(),
                snapshot.routes.len(),
                snapshot.pools.len(),
                &snapshot.hash[..12]
            )
        },
    ))
}
