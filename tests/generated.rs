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

#[test]
fn man_pages_pass_mandoc_lint() {
    if crate::support::skipped_unless_installed("mandoc") {
        return;
    }
    let pages: Vec<String> = generate::files()
        .into_iter()
        .map(|(path, _)| path)
        .filter(|path| path.ends_with(".1"))
        .collect();
    let out = std::process::Command::new("mandoc")
        .arg("-Tlint")
        .args(&pages)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let main = String::from_utf8_lossy(&generate::files()[3].1).into_owned();
    for section in ["SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES"] {
        assert!(main.contains(&format!(".SH {section}")), "synclock(1) lacks {section}");
    }
    let status = String::from_utf8_lossy(&generate::files()[4].1).into_owned();
    assert!(!status.contains("\\-\\-version"), "synclock-status(1) offers --version");
}

/// What bash completes for the words `line` (the last one being completed).
fn bash_completes(line: &[&str]) -> Vec<String> {
    let script = format!(
        "source /usr/share/bash-completion/bash_completion\n\
         source '{}/contrib/completions/synclock.bash'\n\
         COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n\
         _synclock synclock \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        env!("CARGO_MANIFEST_DIR"),
        words = line.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
        cword = line.len() - 1,
        line = line.join(" "),
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn bash_completes_options_then_the_command_and_its_arguments() {
    if !std::path::Path::new("/usr/share/bash-completion/bash_completion").exists() {
        eprintln!("skipped: bash-completion is not installed (bash tests/need.sh installs it)");
        return;
    }
    assert_eq!(bash_completes(&["synclock", "--wa"]), ["--wait"]);
    assert!(bash_completes(&["synclock", "sta"]).contains(&"status".to_string()));
    assert!(bash_completes(&["synclock", "-n", "tru"]).contains(&"true".to_string()));
    assert!(bash_completes(&["synclock", "--", "tru"]).contains(&"true".to_string()));
    // A duration or exit code is no file name.
    assert_eq!(bash_completes(&["synclock", "--wait", ""]), Vec::<String>::new());
    assert_eq!(bash_completes(&["synclock", "-E", ""]), Vec::<String>::new());
    assert!(bash_completes(&["synclock", "--lockfile", "Car"]).contains(&"Cargo.toml".to_string()));
    // Inside the command: its own arguments (here file names), never ours.
    for line in [&["synclock", "--", "ls", "--no"][..], &["synclock", "-n", "ls", "--no"]] {
        let offered = bash_completes(line);
        assert!(
            !offered.iter().any(|w| w == "--no-clean" || w == "--no-outside-check"),
            "{line:?}"
        );
    }
    assert!(bash_completes(&["synclock", "--", "ls", "Car"]).contains(&"Cargo.toml".to_string()));
    assert!(bash_completes(&["synclock", "status", "--j"]).contains(&"--json".to_string()));
}
