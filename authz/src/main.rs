use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "{}: not implemented yet (tracked in issue #4)",
        gatehouse_authz::SERVICE
    );
    ExitCode::from(2)
}
