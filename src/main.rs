//! The synclock binary; see the library's `main` for everything it does.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(synclock::main(std::env::args_os()))
}
