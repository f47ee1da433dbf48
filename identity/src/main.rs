use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "{}: not implemented yet (tracked in issue #3)",
        gatehouse_identity::SERVICE
    );
    ExitCode::from(2)
}
