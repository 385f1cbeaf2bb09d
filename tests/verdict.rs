//! The verdict on one process (`src/scan/verdict.rs`, compiled in here
//! from its source: it depends on nothing else of synclock).

#[path = "../src/scan/verdict.rs"]
#[allow(dead_code)]
mod judged;
use judged::*;

#[test]
fn recognises_sync_command_lines() {
    let cases = [
        ("emerge --sync", "Sync(Auto)"),
        (
            "/usr/bin/python3.12 /usr/lib/python-exec/python3.12/emerge -q --sync gentoo",
            "Repos([\"gentoo\"])",
        ),
        ("emaint -a sync", "Sync(Auto)"),
        ("emaint --auto sync", "Sync(Auto)"),
        ("/usr/bin/python3 /usr/bin/emaint sync --auto", "Sync(Auto)"),
        ("emaint sync -A", "Sync(All)"),
        ("emaint sync --allrepos -r guru", "Sync(All)"),
        ("/bin/bash /usr/bin/emerge-webrsync", "Sync(Main)"),
        ("emerge-delta-webrsync --revert=20260101", "Sync(Main)"),
        ("sh /usr/bin/eix-sync", "Sync(Auto)"),
        // Options that change what eix-sync syncs (-w, -c CMD): it says not which.
        ("eix-sync -w", "Sync(Unknown)"),
        ("emaint sync", "Sync(Unknown)"),
        ("pmaint sync", "Sync(Unknown)"),
        ("python3 -u -B /usr/bin/emerge --sync", "Sync(Auto)"),
        ("emerge --sync gentoo guru", "Repos([\"gentoo\", \"guru\"])"),
        ("emaint sync -r guru", "Repos([\"guru\"])"),
        ("emaint sync --repo=guru", "Repos([\"guru\"])"),
        ("emaint sync -a", "Sync(Auto)"),
        ("pmaint sync gentoo", "Repos([\"gentoo\"])"),
        // rsync and git also depend on where they work.
        ("rsync -a a b", "Tool(0)"),
        ("/bin/sh -e /usr/bin/git pull", "Tool(2)"),
        ("emerge -uDN @world", "NotSync"),
        ("emaint binhost", "NotSync"),
        ("synclock --wait 1h -- emerge --sync", "NotSync"),
        ("/usr/local/bin/synclock -- emaint sync -a", "NotSync"),
        ("vim emerge --sync", "NotSync"),
        ("", "NotSync"),
    ];
    for (line, want) in cases {
        let words: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
        assert_eq!(format!("{:?}", judge(&words)), want, "{line}");
    }
}

#[test]
fn executables_that_may_be_a_sync() {
    let may = ["python3.12", "python-exec2c", "pypy3", "bash", "sh", "busybox", "rsync", "git"];
    assert!(may.iter().chain(&["emerge", "eix-sync", "emerge-webrsync"]).all(|n| could_be_sync(n)));
    assert!(!["sleep", "synclock", "sshd", "systemd", ""].iter().any(|n| could_be_sync(n)));
}
