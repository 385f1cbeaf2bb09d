//! The committed completions and man pages are what the clap definition
//! renders now, and they mention every option.

use clap::CommandFactory;
use synclock::cli::Cli;

#[allow(dead_code)]
#[path = "../examples/generate.rs"]
mod generate;

#[test]
fn committed_files_are_current() {
    for (path, expected) in generate::files() {
        let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
        let committed = std::fs::read(&full).unwrap_or_default();
        assert!(
            committed == expected,
            "{path} is stale: run `cargo run --example generate` and commit it"
        );
    }
}

#[test]
fn every_option_is_documented_and_completed() {
    let command = Cli::command();
    let files = generate::files();
    let text_of = |suffix: &str| -> String {
        files
            .iter()
            .filter(|(path, _)| path.ends_with(suffix))
            .map(|(_, text)| String::from_utf8_lossy(text).into_owned())
            .collect()
    };
    let man = text_of(".1");
    let subs = command.get_subcommands().map(|s| (s.get_name().to_string(), s.clone()));
    let all = std::iter::once((String::new(), command.clone())).chain(subs);
    for (sub, cmd) in all {
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            // roff escapes '-' as '\-'.
            let flag = format!("\\-\\-{}", long.replace('-', "\\-"));
            assert!(man.contains(&flag), "man page lacks --{long} ({sub})");
            for completion in ["synclock.bash", "_synclock", "synclock.fish"] {
                let text = text_of(completion);
                assert!(text.contains(long), "{completion} lacks --{long} ({sub})");
            }
        }
    }
    for sub in ["status", "clean"] {
        assert!(man.contains(sub), "man page lacks the {sub} subcommand");
    }
}
