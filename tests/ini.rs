//! Differential tests: every corpus document is parsed by this module and by
//! python3's `configparser.ConfigParser` (as Portage creates it); the
//! resolved sections, or the exception class, must be identical.

use std::io::Write;
use std::process::{Command, Stdio};

/// The parser itself, compiled into this test from its source.
#[path = "../src/repos/ini.rs"]
#[allow(dead_code)]
mod parser;
use parser::*;

/// Documents, each a list of files read in order into one parser.
const CORPUS: &[&[&str]] = &[
    // Ordinary repos.conf files.
    &[
        "[DEFAULT]\nmain-repo = gentoo\n\n[gentoo]\nlocation = /var/db/repos/gentoo\nsync-type = rsync\nsync-uri = rsync://rsync.gentoo.org/gentoo-portage\nauto-sync = yes\n",
    ],
    &["[gentoo]\nlocation=/a\n", "[gentoo]\nsync-type = git\n[overlay]\nlocation: /b\n"],
    &["[DEFAULT]\nmain-repo = gentoo\n", "[DEFAULT]\nmain-repo = other\n[x]\nlocation = /x\n"],
    &["# comment\n; other comment\n[a]\n  # indented comment\nlocation = /a\n"],
    &["[a]\nlocation = /a # not a comment\nsync-uri = x ; nor this\n"],
    &["[Gentoo]\nLOCATION = /a\nSync-Type = rsync\n"],
    &["[a]\nlocation = /a\n[A]\nlocation = /b\n"],
    &["[a]\nkey = first\n  second\n\n  third\n\nother = x\n"],
    &["[a]\nkey = first\n\n\n"],
    &["[a]\nkey =\n  continued\n"],
    &["[a]\nkey = v\n# comment between\n  cont\n"],
    &["[a]\n  indented = yes\n  also = yes\n"],
    &["[a]\nk = v\n\tcont with tab\n"],
    &["  [a]\n  k = v\n    cont\n  j = w\n"],
    &["[a]\nk = a:b=c\nj : x = y\n"],
    &["[a]\nk == v\n"],
    &["[a] trailing\nk = v\n"],
    &["[a]]\nk = v\n"],
    &["[a]\nk = v\n[b]\n[c]\n"],
    &[""],
    &["\n\n# only comments\n"],
    // Interpolation.
    &["[a]\nlocation = %(EPREFIX)s/var/db/repos/a\n"],
    &[
        "[DEFAULT]\nbase = /srv\n[a]\nlocation = %(base)s/a\n[b]\nbase = /other\nlocation = %(BASE)s/b\n",
    ],
    &["[a]\nx = 100%%\ny = %%(x)s\n"],
    &["[a]\nx = %(y)s\ny = %(z)s\nz = deep\n"],
    &["[a]\nx = %(root)s%(eroot)s|%(portage_configroot)s\n"],
    &["[a]\nlocation = 50%\n"],
    &["[a]\nlocation = %(nope)s\n"],
    &["[a]\nx = %(x)s\n"],
    &["[a]\nx = %(y)s\ny = %(x)s\n"],
    &["[a]\nx = %(\n"],
    &["[a]\nx = %()s\n"],
    &["[a]\nx = %(y)d\ny = 1\n"],
    &["[DEFAULT]\nbad = 5%\n"],
    &["[DEFAULT]\nbad = 5%\n[a]\nlocation = /a\n"],
    &["[a]\nk = v\n", "[b]\nk = %(missing)s\n"],
    // Broken documents.
    &["location = /a\n[a]\n"],
    &["[a]\nlocation = /a\n[a]\nlocation = /b\n"],
    &["[a]\nlocation = /a\nLocation = /b\n"],
    &["[DEFAULT]\nx = 1\n[DEFAULT]\ny = 2\n[a]\nk = v\n"],
    &["[DEFAULT]\nx = 1\n[DEFAULT]\nx = 2\n"],
    &["[a]\njust words\n"],
    &["[a]\n= value\n"],
    &["[a]\njust words\n  continued\nk = v\n"],
    &["[a]\nk = v\nbad line\n  cont\n"],
    &["[]\nk = v\n"],
    &["[a]\nk = 1\n", "[a]\nk = 2\n"],
    &["[a]\nk = 1\n", "[a]\nk = 2\n[a]\n"],
    &["[a]\nbad\n[a]\n"],
    &["[a]\nk = é ü\n[ß]\nk = x\n"],
];

const PYTHON: &str = r#"
import configparser, json, sys
defaults = {"EPREFIX": "/e", "EROOT": "/r/e/", "PORTAGE_CONFIGROOT": "/c/", "ROOT": "/r/", "sync-rsync-extra-opts": ""}
results = []
for files in json.load(sys.stdin):
    p = configparser.ConfigParser(defaults=defaults)
    try:
        for i, text in enumerate(files):
            p.read_string(text, "file%d" % i)
        out = [[s, [[o, p.get(s, o)] for o in p.options(s)]] for s in p.sections()]
        results.append({"ok": out})
    except configparser.Error as e:
        results.append({"error": type(e).__name__})
json.dump(results, sys.stdout)
"#;

fn ours(files: &[&str]) -> serde_json::Value {
    let mut parser = Parser::new(&[
        ("EPREFIX", "/e"),
        ("EROOT", "/r/e/"),
        ("PORTAGE_CONFIGROOT", "/c/"),
        ("ROOT", "/r/"),
        ("sync-rsync-extra-opts", ""),
    ]);
    let result = files
        .iter()
        .enumerate()
        .try_for_each(|(i, text)| parser.read(text, &format!("file{i}")))
        .and_then(|()| parser.resolved());
    match result {
        Ok(sections) => serde_json::json!({ "ok": sections
            .iter()
            .map(|(name, options)| serde_json::json!([name, options
                .iter()
                .map(|(k, v)| serde_json::json!([k, v]))
                .collect::<Vec<_>>()]))
            .collect::<Vec<_>>() }),
        Err(err) => serde_json::json!({ "error": format!("{:?}", err.kind) }),
    }
}

#[test]
fn matches_python_configparser() {
    let mut python = Command::new("python3")
        .args(["-c", PYTHON])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the differential test");
    let input = serde_json::to_vec(CORPUS).unwrap();
    python.stdin.take().unwrap().write_all(&input).unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(output.status.success(), "python3 failed");
    let theirs: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(theirs.len(), CORPUS.len());
    let mut errors = 0;
    for (files, expected) in CORPUS.iter().zip(&theirs) {
        if expected.get("error").is_some() {
            errors += 1;
        }
        assert_eq!(&ours(files), expected, "document {files:?}");
    }
    assert!(errors >= 10, "the corpus should hold broken documents too ({errors})");
}
