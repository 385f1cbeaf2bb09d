//! repos.conf parsing with the semantics of Python's `configparser`, which
//! Portage uses: sections merged key by key across files, duplicates within
//! one file are errors, keys lowercased, full-line `#`/`;` comments only,
//! indented continuation lines, and `%(name)s` interpolation (BasicInterpolation)
//! with DEFAULT and injected defaults. No crate matches these semantics, so
//! this module follows CPython 3.11's `RawConfigParser._read` and
//! `BasicInterpolation` line by line, and is tested differentially against
//! python3 on a corpus of good and broken files (`tests/ini.rs`).

use std::fmt;

/// The `configparser` exception a document raises, by its Python class name.
#[allow(clippy::enum_variant_names)] // the names are Python's, for the differential test
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A section appears twice in one file.
    DuplicateSectionError,
    /// An option appears twice in one section of one file.
    DuplicateOptionError,
    /// A non-blank line before the first section header.
    MissingSectionHeaderError,
    /// A line that is neither header, option, comment nor continuation.
    ParsingError,
    /// A `%` not followed by `%` or `(name)s`.
    InterpolationSyntaxError,
    /// `%(name)s` names an option that does not exist.
    InterpolationMissingOptionError,
    /// References nested more than 10 deep (a cycle).
    InterpolationDepthError,
}

/// Why a repos.conf document was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Which exception Python would raise.
    pub kind: ErrorKind,
    /// The file (or "PORTAGE_REPOSITORIES") and what is wrong.
    pub detail: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.detail)
    }
}

/// Options of one section in insertion order, as Python's dict keeps them.
type Options = Vec<(String, String)>;

/// The name of the defaults section.
const DEFAULT: &str = "DEFAULT";
/// Python's `MAX_INTERPOLATION_DEPTH`.
const MAX_DEPTH: usize = 10;
/// The longest value interpolation may make.
const MAX_VALUE: usize = 1 << 20;

/// A `configparser.ConfigParser` that files are read into one by one.
#[derive(Debug, Clone, Default)]
pub struct Parser {
    defaults: Options,
    sections: Vec<(String, Options)>,
}

/// Which section a line is in while reading.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Current {
    Defaults,
    Section(usize),
}

impl Parser {
    /// A parser with injected defaults (their keys are lowercased).
    pub fn new(defaults: &[(&str, &str)]) -> Self {
        let mut parser = Parser::default();
        for (key, value) in defaults {
            set(&mut parser.defaults, &key.to_lowercase(), value.to_string());
        }
        parser
    }

    /// Reads one document; `source` names it in errors.
    pub fn read(&mut self, text: &str, source: &str) -> Result<(), Error> {
        let mut added_sections: Vec<String> = Vec::new();
        let mut added_options: Vec<(String, String)> = Vec::new();
        let mut current: Option<(Current, String)> = None; // section and its name
        let mut option: Option<String> = None;
        let mut indent_level = 0usize;
        let mut parse_error: Option<usize> = None;
        for (index, line) in text.split_inclusive('\n').enumerate() {
            let lineno = index + 1;
            let stripped = line.trim();
            let comment = stripped.starts_with('#') || stripped.starts_with(';');
            let value = if comment { "" } else { stripped };
            if value.is_empty() {
                if let (false, Some((section, _)), Some(name)) = (comment, &current, &option)
                    && !name.is_empty()
                {
                    self.append(*section, name, "");
                }
                continue;
            }
            let indent = line.chars().position(|c| !c.is_whitespace()).unwrap_or(0);
            if let (Some((section, _)), Some(name)) = (&current, &option)
                && !name.is_empty()
                && indent > indent_level
            {
                self.append(*section, name, value);
                continue;
            }
            indent_level = indent;
            if let Some(header) = section_header(value) {
                if let Some(index) = self.sections.iter().position(|(name, _)| name == header) {
                    if added_sections.iter().any(|name| name == header) {
                        return Err(error(
                            ErrorKind::DuplicateSectionError,
                            format!("{source}: line {lineno}: section [{header}] appears twice"),
                        ));
                    }
                    current = Some((Current::Section(index), header.to_string()));
                } else if header == DEFAULT {
                    current = Some((Current::Defaults, header.to_string()));
                } else {
                    self.sections.push((header.to_string(), Vec::new()));
                    current = Some((Current::Section(self.sections.len() - 1), header.to_string()));
                }
                if header != DEFAULT {
                    added_sections.push(header.to_string());
                }
                option = None;
                continue;
            }
            let Some((section, section_name)) = &current else {
                return Err(error(
                    ErrorKind::MissingSectionHeaderError,
                    format!("{source}: line {lineno}: text before the first [section]"),
                ));
            };
            let Some(delimiter) = value.find(['=', ':']) else {
                parse_error.get_or_insert(lineno);
                continue;
            };
            let name = value[..delimiter].trim_end();
            if name.is_empty() {
                parse_error.get_or_insert(lineno);
            }
            let key = name.to_lowercase();
            let element = (section_name.clone(), key.clone());
            if added_options.contains(&element) {
                return Err(error(
                    ErrorKind::DuplicateOptionError,
                    format!(
                        "{source}: line {lineno}: option {key} appears twice in [{section_name}]"
                    ),
                ));
            }
            added_options.push(element);
            let text = value[delimiter + 1..].trim().to_string();
            set(self.options_mut(*section), &key, text);
            option = Some(key);
        }
        for (_, value) in
            self.defaults.iter_mut().chain(self.sections.iter_mut().flat_map(|(_, o)| o.iter_mut()))
        {
            value.truncate(value.trim_end().len());
        }
        match parse_error {
            Some(lineno) => Err(error(
                ErrorKind::ParsingError,
                format!("{source}: line {lineno}: not a [section], key = value or comment"),
            )),
            None => Ok(()),
        }
    }

    fn options_mut(&mut self, section: Current) -> &mut Options {
        match section {
            Current::Defaults => &mut self.defaults,
            Current::Section(index) => &mut self.sections[index].1,
        }
    }

    fn append(&mut self, section: Current, name: &str, line: &str) {
        if let Some((_, value)) = self.options_mut(section).iter_mut().find(|(k, _)| k == name) {
            value.push('\n');
            value.push_str(line);
        }
    }

    /// Every section (DEFAULT aside) with every option, DEFAULT's included,
    /// interpolated, in Python's order: what Portage reads with `get()`.
    pub fn resolved(&self) -> Result<Vec<(String, Options)>, Error> {
        self.sections
            .iter()
            .map(|(name, own)| {
                let names = own.iter().map(|(k, _)| k).chain(
                    self.defaults
                        .iter()
                        .map(|(k, _)| k)
                        .filter(|k| !own.iter().any(|(o, _)| o == *k)),
                );
                let options = names
                    .map(|key| Ok((key.clone(), self.get(name, own, key)?)))
                    .collect::<Result<Options, Error>>()?;
                Ok((name.clone(), options))
            })
            .collect()
    }

    /// DEFAULT's `key`, interpolated, if set.
    pub fn default_value(&self, key: &str) -> Result<Option<String>, Error> {
        let none = Options::new();
        match self.lookup(&none, key) {
            Some(_) => self.get(DEFAULT, &none, key).map(Some),
            None => Ok(None),
        }
    }

    fn lookup<'a>(&'a self, own: &'a Options, key: &str) -> Option<&'a str> {
        own.iter().chain(self.defaults.iter()).find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn get(&self, section: &str, own: &Options, key: &str) -> Result<String, Error> {
        let raw = self.lookup(own, key).unwrap_or_default();
        let mut out = String::new();
        self.interpolate(section, own, key, raw, &mut out, 1)?;
        Ok(out)
    }

    /// `BasicInterpolation._interpolate_some`.
    fn interpolate(
        &self,
        section: &str,
        own: &Options,
        key: &str,
        mut rest: &str,
        out: &mut String,
        depth: usize,
    ) -> Result<(), Error> {
        let at = |kind, what: String| error(kind, format!("[{section}] {key}: {what}"));
        if depth > MAX_DEPTH {
            return Err(at(
                ErrorKind::InterpolationDepthError,
                "references nest too deep (a cycle?)".into(),
            ));
        }
        // References repeated at every depth grow a value exponentially.
        if out.len() > MAX_VALUE {
            return Err(at(
                ErrorKind::InterpolationDepthError,
                format!("references expand beyond {MAX_VALUE} bytes"),
            ));
        }
        while !rest.is_empty() {
            let Some(p) = rest.find('%') else {
                out.push_str(rest);
                return Ok(());
            };
            out.push_str(&rest[..p]);
            rest = &rest[p..];
            match rest[1..].chars().next() {
                Some('%') => {
                    out.push('%');
                    rest = &rest[2..];
                }
                Some('(') => {
                    let end =
                        rest.find(')').filter(|end| *end > 2 && rest[*end + 1..].starts_with('s'));
                    let Some(end) = end else {
                        return Err(at(
                            ErrorKind::InterpolationSyntaxError,
                            format!(
                                "bad interpolation reference {rest:?}; write %% for a literal %"
                            ),
                        ));
                    };
                    let var = rest[2..end].to_lowercase();
                    rest = &rest[end + 2..];
                    let Some(value) = self.lookup(own, &var) else {
                        return Err(at(
                            ErrorKind::InterpolationMissingOptionError,
                            format!("%({var})s names no option"),
                        ));
                    };
                    if value.contains('%') {
                        self.interpolate(section, own, key, value, out, depth + 1)?;
                    } else {
                        out.push_str(value);
                    }
                }
                _ => {
                    return Err(at(
                        ErrorKind::InterpolationSyntaxError,
                        format!("'%' must be followed by '%' or '(' in {rest:?}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn set(options: &mut Options, key: &str, value: String) {
    match options.iter_mut().find(|(k, _)| k == key) {
        Some((_, old)) => *old = value,
        None => options.push((key.to_string(), value)),
    }
}

/// `\[(?P<header>.+)\]` matched at the start: up to the last `]`.
fn section_header(value: &str) -> Option<&str> {
    let rest = value.strip_prefix('[')?;
    let end = rest.rfind(']')?;
    (end > 0).then(|| &rest[..end])
}

fn error(kind: ErrorKind, detail: String) -> Error {
    Error { kind, detail }
}
