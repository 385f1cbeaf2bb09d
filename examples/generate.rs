//! Writes the shell completions and man pages under `contrib/` from the clap
//! definition: run `cargo run --example generate` after changing an option.
//! A test fails when the committed files differ from what this renders.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;
use synclock::cli::Cli;

/// Every generated file: (path relative to the repository, contents).
pub fn files() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for (shell, name) in
        [(Shell::Bash, "synclock.bash"), (Shell::Zsh, "_synclock"), (Shell::Fish, "synclock.fish")]
    {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "synclock", &mut text);
        files.push((format!("contrib/completions/{name}"), text));
    }
    let command = Cli::command();
    files.push(("contrib/man/synclock.1".into(), man(command.clone())));
    for sub in command.get_subcommands() {
        // clap takes 'static names here; this short-lived program can leak.
        let name: &'static str = Box::leak(format!("synclock-{}", sub.get_name()).into_boxed_str());
        let page = sub.clone().name(name).version(env!("CARGO_PKG_VERSION"));
        files.push((format!("contrib/man/{name}.1"), man(page)));
    }
    files
}

fn man(command: clap::Command) -> Vec<u8> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page).expect("render to memory");
    page
}

#[allow(dead_code)] // unused where a test includes this file
fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, text) in files() {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        println!("wrote {}", path.display());
    }
}
