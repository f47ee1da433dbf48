use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse_authz::{config, policy, policy_test, server};

// The gateway's allocator: glibc malloc/free were about a tenth of a decision with the decision
// log on; benches/authz_eval.rs uses the same, so it measures what this binary runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// gatehouse-authz: the policy decision service behind Gatehouse.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The service configuration file.
    #[arg(long, short, global = true, default_value = "conf/authz.yaml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Check the configuration file and its policy directory; print every problem, exit 1 if any.
    Validate,
    /// Run the policy tests (`*_test.yaml`) found in a policy directory against its policies.
    Test {
        /// The policy directory, e.g. conf/policies/.
        dir: PathBuf,
        /// Only run tests whose name (or suite name) matches this regular expression.
        #[arg(long)]
        run: Option<String>,
        /// Print every check, not only failures.
        #[arg(long, short)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    gatehouse_service::tracing_setup::init("gatehouse_authz");
    let cli = Cli::parse();
    let result = match cli.command {
        None | Some(Command::Serve) => server::run(&cli.config),
        Some(Command::Validate) => return validate(&cli.config),
        Some(Command::Test { dir, run, verbose }) => {
            return policy_test::run_cli(&dir, run.as_deref(), verbose)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse-authz: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    gatehouse_service::print_validation(config::load(path).and_then(|settings| {
        let set = policy::load(&settings.policies)?;
        Ok(format!(
            "{}: OK ({} policies in {}, set {})",
            path.display(),
            set.policies.len(),
            settings.policies.display(),
            set.version()
        ))
    }))
}
