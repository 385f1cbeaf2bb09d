//! User names and IDs, from /etc/passwd.
//!
//! The release binary links glibc statically (see `.cargo/config.toml`).
//! glibc's getpwnam would then load NSS modules built for the shared libc,
//! which crashes (seen: libnss_systemd with `passwd: files systemd`). The
//! accounts synclock asks about, `portage` and the owners of files it
//! refuses, are local system accounts, so /etc/passwd answers them.

/// The UID of the account `name`.
pub fn uid_of(name: &str) -> Option<u32> {
    entries()?
        .iter()
        .find(|(entry, _)| entry == name)
        .map(|(_, uid)| *uid)
}

/// The name of the account with `uid`.
pub fn name_of(uid: u32) -> Option<String> {
    entries()?
        .into_iter()
        .find(|(_, entry)| *entry == uid)
        .map(|(name, _)| name)
}

fn entries() -> Option<Vec<(String, u32)>> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    Some(parse(&text))
}

/// `(name, uid)` of each well-formed line of a passwd file; NIS `+`/`-`
/// lines and comments are skipped.
fn parse(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter(|line| !line.starts_with(['+', '-', '#']))
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next().filter(|n| !n.is_empty())?;
            let uid = fields.nth(1)?.parse().ok()?;
            Some((name.to_string(), uid))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_and_uids() {
        let text = "root:x:0:0:root:/root:/bin/bash\n\
                    # comment\n\
                    +nisuser::::::\n\
                    broken\n\
                    portage:x:250:250:portage:/var/lib/portage/home:/sbin/nologin\n";
        assert_eq!(
            parse(text),
            vec![("root".to_string(), 0), ("portage".to_string(), 250)]
        );
    }

    #[test]
    fn root_is_in_this_machines_passwd() {
        assert_eq!(uid_of("root"), Some(0));
        assert_eq!(name_of(0).as_deref(), Some("root"));
    }
}
