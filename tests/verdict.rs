//! The verdict on one process (`src/scan/verdict.rs`, compiled in here
//! from its source: it depends on nothing else of synclock).

#[path = "../src/scan/verdict.rs"]
#[allow(dead_code)]
mod judged;
use judged::*;

#[test]
fn recognises_sync_command_lines() {
    let cases = [
        ("emerge --sync", "Sync"),
        (
            "/usr/bin/python3.12 /usr/lib/python-exec/python3.12/emerge -q --sync gentoo",
            "Repos([\"gentoo\"])",
        ),
        ("emaint -a sync", "Sync"),
        ("/usr/bin/python3 /usr/bin/emaint sync --auto", "Sync"),
        ("/bin/bash /usr/bin/emerge-webrsync", "Sync"),
        ("sh /usr/bin/eix-sync", "Sync"),
        ("python3 -u -B /usr/bin/emerge --sync", "Sync"),
        ("emerge --sync gentoo guru", "Repos([\"gentoo\", \"guru\"])"),
        ("emaint sync -r guru", "Repos([\"guru\"])"),
        ("emaint sync --repo=guru", "Repos([\"guru\"])"),
        ("emaint sync -a", "Sync"),
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
