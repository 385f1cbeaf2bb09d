//! `synclock status [--json]`: is the lock free, who holds it, who waits,
//! how long its sync usually takes, and when each repository last synced.
//!
//! Works without permission to open the lockfile (it reads /proc/locks by
//! device and inode); when it can open the lockfile it also probes with a
//! non-blocking flock, which sees holders that /proc/locks filters out (a
//! holder in another PID namespace). Exit 0 free, 1 held, 125 on error.

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use crate::error::Error;
use crate::history::{self, Run, Typical};
use crate::holder::{self, Holder, Inspection};
use crate::lock;
use crate::msg;
use crate::proc::{Proc, Process};
use crate::repos;

/// Exit code of `status` for a free lock.
pub const FREE: u8 = 0;
/// Exit code of `status` for a held lock.
pub const HELD: u8 = 1;

/// What `status` prints.
struct Report<'a> {
    /// The lock's state.
    inspection: Inspection,
    /// How long the holder's sync usually takes.
    typical: Option<Typical>,
    /// The last run of each command line.
    runs: Vec<&'a Run>,
    /// Each repository with its last successful sync.
    repos: Vec<(String, Option<&'a Run>)>,
}

/// Prints the state of the lock at `path` and returns the exit code.
pub fn run(proc: &Proc, path: &Path, json: bool) -> Result<u8, Error> {
    // A lockfile that a run would refuse is an error here too.
    lock::check(path)?;
    let inspection = holder::inspect(proc, path)?;
    let entries = match lock::look_up(path)? {
        Some((_, owner)) => history::read(path, owner).unwrap_or_else(|why| {
            msg::info(format_args!("{why}"));
            Vec::new()
        }),
        None => Vec::new(),
    };
    let configured = repos::discover(&|| {}).unwrap_or_else(|err| {
        msg::info(format_args!(
            "cannot use repos.conf ({err}); listing the repositories in the history only"
        ));
        Vec::new()
    });
    let typical =
        inspection.holder.as_ref().and_then(|h| holder::typical(h, &entries, &configured));
    // The repositories that sync, then any others the history knows.
    let mut names: Vec<&str> =
        configured.iter().filter(|r| r.sync_type.is_some()).map(|r| r.name.as_str()).collect();
    for name in entries.iter().filter_map(|e| e.repo.as_deref()) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let report = Report {
        inspection,
        typical,
        runs: entries.iter().filter(|e| e.repo.is_none()).map(|e| &e.last).collect(),
        repos: names
            .into_iter()
            .map(|name| (name.to_string(), history::repo(&entries, name).map(|e| &e.last)))
            .collect(),
    };
    let text = if json { to_json(path, &report) } else { to_text(path, &report) };
    print!("{}", text.lines().map(|line| msg::visible(line) + "\n").collect::<String>());
    Ok(if report.inspection.held { HELD } else { FREE })
}

fn to_text(path: &Path, report: &Report) -> String {
    let mut out = format!("lockfile: {}\n", path.display());
    match &report.inspection.holder {
        None => out.push_str("state: free\n"),
        Some(holder) => {
            out.push_str("state: held\n");
            let _ = writeln!(out, "holder: {}", holder::describe(holder));
            if let Some(pid) = holder.command_pid {
                let _ = writeln!(out, "command pid: {pid}");
            }
            if let Some(host) = &holder.host {
                let _ = writeln!(out, "host: {host}");
            }
            if let Some(since) = holder.since {
                let _ = writeln!(out, "since: {}", humantime::format_rfc3339_seconds(since));
            }
            if let Some(typical) = report.typical {
                let free = holder::free_in(holder, typical)
                    .map(|left| format!("; {}", msg::free_in(left)))
                    .unwrap_or_default();
                let _ = writeln!(out, "expected: {typical}{free}");
            }
        }
    }
    for waiter in &report.inspection.waiters {
        let _ =
            writeln!(out, "waiting: PID {} ({})", waiter.pid, msg::command_line(&waiter.command));
    }
    for run in &report.runs {
        let _ = writeln!(
            out,
            "last run: {}: exit {}, {} to {} (PID {})",
            msg::command_line(&run.command),
            run.code,
            humantime::format_rfc3339_seconds(run.start),
            humantime::format_rfc3339_seconds(run.end),
            run.pid
        );
    }
    for (name, last) in &report.repos {
        let _ = match last {
            Some(run) => writeln!(
                out,
                "repository {name}: last synced at {} (took {}) by {}",
                humantime::format_rfc3339_seconds(run.end),
                msg::seconds(run.took()),
                msg::command_line(&run.command)
            ),
            None => writeln!(out, "repository {name}: never synced under synclock"),
        };
    }
    out
}

/// The stable JSON form documented in README.md.
fn to_json(path: &Path, report: &Report) -> String {
    let inspection = &report.inspection;
    let holder = inspection
        .holder
        .as_ref()
        .map_or_else(|| "null".to_string(), |holder| holder_json(holder, report.typical));
    let waiters: Vec<String> = inspection.waiters.iter().map(waiter_json).collect();
    let history: Vec<String> = report.runs.iter().map(|run| run_json(run)).collect();
    let repos: Vec<String> =
        report.repos.iter().map(|(name, last)| repo_json(name, *last)).collect();
    format!(
        "{{\"lockfile\":{},\"held\":{},\"holder\":{holder},\"waiters\":[{}],\"history\":[{}],\
         \"repositories\":[{}]}}\n",
        string(&path.to_string_lossy()),
        inspection.held,
        waiters.join(","),
        history.join(","),
        repos.join(",")
    )
}

fn repo_json(name: &str, last: Option<&Run>) -> String {
    format!(
        "{{\"name\":{},\"last_success\":{},\"duration_secs\":{},\"command\":{}}}",
        string(name),
        last.map_or_else(|| "null".into(), |run| time(run.end)),
        number(last.map(|run| run.took().as_secs())),
        last.map_or_else(|| "null".into(), |run| strings(&run.command)),
    )
}

fn time(t: SystemTime) -> String {
    string(&humantime::format_rfc3339_seconds(t).to_string())
}

fn holder_json(holder: &Holder, typical: Option<Typical>) -> String {
    let age = holder
        .since
        .and_then(|since| SystemTime::now().duration_since(since).ok())
        .map(|age| age.as_secs());
    format!(
        "{{\"pid\":{},\"host\":{},\"command\":{},\"since\":{},\"age_secs\":{},\
         \"command_pid\":{},\"acquired_by\":{},\"namespace_pid\":{},\"source\":{},\
         \"typical_secs\":{}}}",
        number(holder.pid),
        holder.host.as_deref().map_or_else(|| "null".into(), string),
        strings(&holder.command),
        holder.since.map_or_else(|| "null".into(), time),
        number(age),
        number(holder.command_pid),
        number(holder.acquired_by),
        number(holder.namespace_pid),
        string(holder.source),
        number(typical.map(|typical| typical.took.as_secs())),
    )
}

fn run_json(run: &Run) -> String {
    format!(
        "{{\"command\":{},\"start\":{},\"end\":{},\"exit_code\":{},\"pid\":{}}}",
        strings(&run.command),
        time(run.start),
        time(run.end),
        run.code,
        run.pid
    )
}

fn waiter_json(waiter: &Process) -> String {
    format!("{{\"pid\":{},\"command\":{}}}", waiter.pid, strings(&waiter.command))
}

fn number<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "null".into(), |v| v.to_string())
}

fn strings(words: &[String]) -> String {
    format!("[{}]", words.iter().map(|w| string(w)).collect::<Vec<_>>().join(","))
}

/// A JSON string literal.
fn string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out + "\""
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(string("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\u000ad\\u0001é\"");
    }
}
