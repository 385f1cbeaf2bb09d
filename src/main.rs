//! The synclock binary; see the library's `main` for everything it does.

fn main() -> std::process::ExitCode {
    synclock::main()
}
