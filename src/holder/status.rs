//! `synclock status [--json]`: is the lock free, who holds it, who waits.
//!
//! Works without permission to open the lockfile (it reads /proc/locks by
//! device and inode); when it can open the lockfile it also probes with a
//! non-blocking flock, which sees holders that /proc/locks filters out (a
//! holder in another PID namespace). Exit 0 free, 1 held, 125 on error.

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use crate::error::Error;
use crate::history::{self, Run};
use crate::holder::{self, Holder, Inspection};
use crate::lock;
use crate::msg;
use crate::proc::{Proc, Process};

/// Exit code of `status` for a free lock.
pub const FREE: u8 = 0;
/// Exit code of `status` for a held lock.
pub const HELD: u8 = 1;

/// Prints the state of the lock at `path` and returns the exit code.
pub fn run(proc: &Proc, path: &Path, json: bool) -> Result<u8, Error> {
    // A lockfile that a run would refuse is an error here too.
    lock::check(path)?;
    let inspection = holder::inspect(proc, path)?;
    let runs = match lock::look_up(path)? {
        Some((_, owner)) => history::read(path, owner),
        None => Vec::new(),
    };
    let text =
        if json { to_json(path, &inspection, &runs) } else { to_text(path, &inspection, &runs) };
    print!("{}", text.lines().map(|line| msg::visible(line) + "\n").collect::<String>());
    Ok(if inspection.held { HELD } else { FREE })
}

fn to_text(path: &Path, inspection: &Inspection, runs: &[Run]) -> String {
    let mut out = format!("lockfile: {}\n", path.display());
    match &inspection.holder {
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
        }
    }
    for waiter in &inspection.waiters {
        let _ =
            writeln!(out, "waiting: PID {} ({})", waiter.pid, msg::command_line(&waiter.command));
    }
    for run in runs {
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
    out
}

/// The stable JSON form documented in README.md.
fn to_json(path: &Path, inspection: &Inspection, runs: &[Run]) -> String {
    let holder = inspection.holder.as_ref().map_or_else(|| "null".to_string(), holder_json);
    let waiters: Vec<String> = inspection.waiters.iter().map(waiter_json).collect();
    let history: Vec<String> = runs.iter().map(run_json).collect();
    format!(
        "{{\"lockfile\":{},\"held\":{},\"holder\":{holder},\"waiters\":[{}],\"history\":[{}]}}\n",
        string(&path.to_string_lossy()),
        inspection.held,
        waiters.join(","),
        history.join(",")
    )
}

fn holder_json(holder: &Holder) -> String {
    let age = holder
        .since
        .and_then(|since| SystemTime::now().duration_since(since).ok())
        .map(|age| age.as_secs());
    format!(
        "{{\"pid\":{},\"host\":{},\"command\":{},\"since\":{},\"age_secs\":{},\
         \"command_pid\":{},\"acquired_by\":{},\"namespace_pid\":{},\"source\":{}}}",
        number(holder.pid),
        holder.host.as_deref().map_or_else(|| "null".into(), string),
        strings(&holder.command),
        holder.since.map_or_else(
            || "null".into(),
            |s| string(&humantime::format_rfc3339_seconds(s).to_string())
        ),
        number(age),
        number(holder.command_pid),
        number(holder.acquired_by),
        number(holder.namespace_pid),
        string(holder.source),
    )
}

fn run_json(run: &Run) -> String {
    let time = |t| string(&humantime::format_rfc3339_seconds(t).to_string());
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
