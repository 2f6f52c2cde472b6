//! Pool XML reader and validation (upstream LNST pool format: `lnst/schema-am.rng`,
//! `lnst/Controller/AgentMachineParser.py`, `AgentPoolManager._process_machine_xml_data`).
//!
//! A pool is a directory of `*.xml` files (case-insensitive extension), one per agent machine;
//! the machine id is the file stem. Each file is an `<agentmachine>` with machine `<params>`
//! (`hostname` mandatory, `rpc_port` optional, default 9999), `<interfaces>` of
//! `<eth id= label=>` with their own `<params>` (`hwaddr` mandatory) and an optional
//! `<security>` block.
//!
//! Differences from upstream, on purpose:
//! * MAC addresses are validated and stored **lower-case** (`aa:bb:cc:dd:ee:ff`); upstream
//!   upper-cases them. Every comparison of `hwaddr` in this crate is case-insensitive.
//! * The text form `<param name="x">v</param>` is accepted (upstream crashes on it).
//! * All `<params>`/`<interfaces>` blocks are read (upstream reads only the first); a
//!   parameter or interface defined twice is an error instead of a silent overwrite.
//! * Unknown elements are an error (upstream's RelaxNG schema rejects them too).
//! * Security: `none` and `password` (a shared secret, `<auth_password>` or
//!   `<auth_password_file>` relative to the XML's directory). `pubkey`/`ssh` are rejected.
//! * DTDs are refused outright (roxmltree's default), so entity expansion attacks
//!   (billion laughs, external entities) fail immediately. Files above 1 MiB, nesting deeper
//!   than [`MAX_XML_DEPTH`], processing instructions, namespaced elements and attributes the
//!   upstream schema does not have are refused too.
//! * A `*.xml` entry that cannot be a machine file (a FIFO, a device, a dangling symlink, a
//!   symlink loop, a name that is not UTF-8) is an error naming it, not silently skipped.
//! * `hostname` must be an IP address or a DNS name ([`check_hostname`]: not `host:port`, not
//!   a URL, no whitespace); `hwaddr` must be a unicast MAC (not all-zero, broadcast or
//!   multicast); a declared encoding other than UTF-8 and character references to
//!   non-characters (`&#xD800;`, `&#x110000;`, which roxmltree turns into U+FFFD) are refused.
//! * An `<auth_password_file>` is read when the pool is loaded (a regular file of at most
//!   64 KiB, not empty once stripped): a bad one is found before any agent is contacted.
//! * Limits: [`MAX_POOL_MACHINES`] files, [`MAX_INTERFACES`] interfaces per machine,
//!   [`MAX_PARAMS`] params per machine and per interface. Line and column are computed only
//!   for an error message (once per message), so loading is linear in the file's size.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Default agent port (upstream config `rpcport`).
pub const DEFAULT_RPC_PORT: u16 = 9999;
/// Largest pool XML file we read.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;
/// Deepest element nesting accepted (a valid pool file nests 5 levels). Checked before the
/// XML parser runs, because roxmltree's tokenizer recurses once per level and a deeply nested
/// file would overflow the stack.
pub const MAX_XML_DEPTH: usize = 32;
/// Name of the single pool loaded from a directory.
pub const DEFAULT_POOL_NAME: &str = "default";
/// Most machine files (`*.xml`) in a pool directory.
pub const MAX_POOL_MACHINES: usize = 4096;
/// Most `<eth>` interfaces of one machine.
pub const MAX_INTERFACES: usize = 1024;
/// Most `<param>`s of one machine, or of one interface (all its `<params>` blocks together).
pub const MAX_PARAMS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("pool XML {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A problem located in a file: `pool XML <file>:<line>:<col>: <message>`.
    #[error("pool XML {}:{line}:{col}: {message}", file.display())]
    Xml {
        file: PathBuf,
        line: u32,
        col: u32,
        message: String,
    },
    /// A problem with a machine's parameter found after loading.
    #[error("pool machine {machine}: {message}")]
    Param { machine: String, message: String },
    /// A `*.xml` entry that is neither a regular file nor a directory (FIFO, socket, device).
    #[error("pool XML {}: not a regular file ({kind})", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    /// A `*.xml` entry whose name is not UTF-8 (the machine id would be unusable).
    #[error("pool XML {}: file name is not valid UTF-8", path.display())]
    BadFileName { path: PathBuf },
    /// A machine file that cannot be read (not a regular file, an I/O error).
    #[error("pool XML {0}")]
    Read(#[source] crate::fsread::FsReadError),
    /// The `<auth_password_file>` of machine file `file` cannot be read.
    #[error("pool XML {}: auth_password_file {source}", file.display())]
    SecretFile {
        file: PathBuf,
        #[source]
        source: crate::fsread::FsReadError,
    },
    /// The secret of machine file `file` is empty or blank once surrounding whitespace is stripped.
    #[error("pool XML {}: {what} is empty or only whitespace", file.display())]
    EmptySecret { file: PathBuf, what: String },
    /// More `*.xml` files than [`MAX_POOL_MACHINES`].
    #[error("pool {}: more than {limit} machine files (*.xml); the limit is {limit}", dir.display())]
    TooManyMachines { dir: PathBuf, limit: usize },
}

/// `s` as a short, single-line Python-style quoted string for messages: control characters
/// escaped, at most 64 characters (pool files may hold huge or multi-line values).
fn quote(s: &str) -> String {
    crate::text::quote(s, 64)
}

/// `s` shortened to 64 characters with control characters escaped, unquoted (for ids).
fn clip(s: &str) -> String {
    let mut t: String = s
        .chars()
        .take(64)
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect();
    if s.chars().nth(64).is_some() {
        t.push('…');
    }
    t
}

/// One `<eth>` of a pool machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInterface {
    /// The `id` attribute (unique within the machine).
    pub id: String,
    /// The `label` attribute: name of the L2 segment the NIC is cabled to.
    pub label: String,
    /// All params, including `hwaddr` (normalised to lower-case `aa:bb:cc:dd:ee:ff`).
    pub params: BTreeMap<String, String>,
}

impl PoolInterface {
    /// The normalised (lower-case) MAC address.
    pub fn hwaddr(&self) -> &str {
        self.params.get("hwaddr").map(String::as_str).unwrap_or("")
    }
}

/// How the controller authenticates to the agent.
#[derive(Clone, PartialEq, Eq)]
pub enum Security {
    None,
    /// Shared secret given inline in the XML.
    Password {
        secret: Vec<u8>,
    },
    /// Shared secret read from a file (path already resolved against the XML's directory).
    PasswordFile {
        path: PathBuf,
    },
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Security::None => f.write_str("None"),
            Security::Password { .. } => f.write_str("Password { secret: <redacted> }"),
            Security::PasswordFile { path } => {
                f.debug_struct("PasswordFile").field("path", path).finish()
            }
        }
    }
}

impl Security {
    /// Short name for reports: `none`, `password`, `password-file <path>`.
    pub fn kind(&self) -> String {
        match self {
            Security::None => "none".to_string(),
            Security::Password { .. } => "password".to_string(),
            Security::PasswordFile { path } => format!("password (file {})", path.display()),
        }
    }
}

/// One pool machine (one XML file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMachine {
    /// File stem of the XML.
    pub id: String,
    /// Machine params (`hostname`, `rpc_port`, free-form), values stripped.
    pub params: BTreeMap<String, String>,
    /// Interfaces by `id`.
    pub interfaces: BTreeMap<String, PoolInterface>,
    pub security: Security,
    /// The XML file it came from.
    pub source: PathBuf,
}

impl PoolMachine {
    /// The mandatory `hostname` param (checked at load time).
    pub fn hostname(&self) -> &str {
        self.params
            .get("hostname")
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The shared secret the controller proves to this machine's agent: None for
    /// `auth_type none`; the inline `<auth_password>`, or the content of
    /// `<auth_password_file>` (a regular file of at most
    /// [`SECRET_FILE_LIMIT`](crate::fsread::SECRET_FILE_LIMIT) bytes, read now), surrounding
    /// whitespace stripped (as the agent strips its own copy). Empty is an error.
    pub fn secret(&self) -> Result<Option<Vec<u8>>, PoolError> {
        let (raw, what) = match &self.security {
            Security::None => return Ok(None),
            Security::Password { secret } => (secret.clone(), "<auth_password>".to_string()),
            Security::PasswordFile { path } => (
                crate::fsread::read_regular_file(path, crate::fsread::SECRET_FILE_LIMIT).map_err(
                    |source| PoolError::SecretFile {
                        file: self.source.clone(),
                        source,
                    },
                )?,
                format!("auth_password_file {}", path.display()),
            ),
        };
        crate::protocol::normalize_secret(&raw)
            .map(Some)
            .ok_or_else(|| PoolError::EmptySecret {
                file: self.source.clone(),
                what,
            })
    }

    /// The `rpc_port` param, or 9999.
    pub fn rpc_port(&self) -> Result<u16, PoolError> {
        match self.params.get("rpc_port") {
            None => Ok(DEFAULT_RPC_PORT),
            Some(v) => parse_port(v).map_err(|message| PoolError::Param {
                machine: self.id.clone(),
                message,
            }),
        }
    }
}

/// All machines of a pool directory, by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pool {
    pub name: String,
    pub machines: BTreeMap<String, PoolMachine>,
}

fn parse_port(v: &str) -> Result<u16, String> {
    match v.trim().parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("rpc_port {} is not a TCP port (1-65535)", quote(v))),
    }
}

/// Validate a MAC (six `:`-separated hex octets, one or two digits each, or `-` separated)
/// and return it lower-case with two digits per octet.
pub fn normalize_hwaddr(v: &str) -> Option<String> {
    let v = v.trim();
    let sep = if v.contains('-') { '-' } else { ':' };
    let parts: Vec<&str> = v.split(sep).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut out = String::with_capacity(17);
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 2 || !p.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let b = u8::from_str_radix(p, 16).ok()?;
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02x}");
    }
    Some(out)
}

/// Why normalised MAC `mac` cannot be a NIC's own address; None for a unicast address. (The
/// agent finds the NIC by this address: the all-zero, broadcast and multicast addresses are
/// never a device's own.)
pub fn not_unicast(mac: &str) -> Option<&'static str> {
    let first = u8::from_str_radix(mac.get(..2)?, 16).ok()?;
    if mac == "00:00:00:00:00:00" {
        Some("the all-zero address")
    } else if mac.eq_ignore_ascii_case("ff:ff:ff:ff:ff:ff") {
        Some("the broadcast address")
    } else if first & 1 == 1 {
        Some("a multicast address")
    } else {
        None
    }
}

/// Whether `name` is a DNS name: dot-separated labels of 1–63 letters, digits, `-` or `_`
/// (not starting or ending with `-`), at most 253 characters, an optional final dot. A name
/// made only of numbers (`198.18.0.256`, `0x7f000001`, `12345`) is refused: the resolver would
/// read it as an address in some legacy notation, not look it up.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let numeric = |l: &str| {
        let hex = l
            .strip_prefix("0x")
            .or_else(|| l.strip_prefix("0X"))
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        hex || l.bytes().all(|b| b.is_ascii_digit())
    };
    name.split('.').all(label_ok)
        && !name.split('.').all(numeric)
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// An IPv6 address, with a zone (`fe80::1%eth0`) allowed.
fn is_v6(s: &str) -> bool {
    let (addr, zone) = match s.split_once('%') {
        Some((a, z)) => (a, Some(z)),
        None => (s, None),
    };
    addr.parse::<std::net::Ipv6Addr>().is_ok()
        && zone.is_none_or(|z| {
            !z.is_empty()
                && z.len() <= 15
                && z.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// Check a machine's `hostname`: an IP address (IPv6 bare or in brackets, with an optional
/// zone) or a DNS name (see [`is_dns_name`]). Not `host:port` (the port is `rpc_port`), not a
/// URL, no whitespace.
pub fn check_hostname(h: &str) -> Result<(), String> {
    let bracketed_v6 = |s: &str| {
        s.strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .is_some_and(is_v6)
    };
    if h.parse::<std::net::Ipv4Addr>().is_ok() || is_v6(h) || bracketed_v6(h) || is_dns_name(h) {
        return Ok(());
    }
    let with_port = h.rsplit_once(':').is_some_and(|(host, port)| {
        !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && (host.parse::<std::net::Ipv4Addr>().is_ok()
                || bracketed_v6(host)
                || is_dns_name(host))
    });
    let hint = if h.contains("://") {
        " (a URL: give the bare address or name)"
    } else if with_port {
        " (give the port in the rpc_port param)"
    } else if h.chars().any(char::is_whitespace) {
        " (it contains whitespace)"
    } else {
        ""
    };
    Err(format!(
        "hostname {} is not an IP address or a DNS name{hint}",
        quote(h)
    ))
}

/// True if `name` ends in `.xml`, case-insensitively.
fn is_xml_name(name: &str) -> bool {
    name.len() > 4
        && name
            .get(name.len() - 4..)
            .is_some_and(|s| s.eq_ignore_ascii_case(".xml"))
}

/// True if the raw file name ends in `.xml`, case-insensitively (for names that are not UTF-8).
fn is_xml_bytes(name: &std::ffi::OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let b = name.as_bytes();
    b.len() > 4 && b[b.len() - 4..].eq_ignore_ascii_case(b".xml")
}

/// Pool XML files of `dir`, sorted by name: every `*.xml` entry (symlinks followed) that is not
/// a directory. An entry that cannot be a machine file (a FIFO, a device, a dangling symlink or
/// a symlink loop, a name that is not UTF-8) is an error naming it, never silently skipped, and
/// nothing is opened here (a FIFO would block).
fn xml_files(dir: &Path) -> Result<Vec<PathBuf>, PoolError> {
    let rd = std::fs::read_dir(dir).map_err(|source| PoolError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut entries = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| PoolError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        entries.push((entry.file_name(), entry.path()));
    }
    // Sorted first, so that the error reported is the same on every run.
    entries.sort();
    let mut files = Vec::new();
    for (name, path) in entries {
        let Some(name) = name.to_str() else {
            if is_xml_bytes(&name) {
                return Err(PoolError::BadFileName { path });
            }
            continue;
        };
        if !is_xml_name(name) {
            continue;
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {
                if files.len() >= MAX_POOL_MACHINES {
                    return Err(PoolError::TooManyMachines {
                        dir: dir.to_path_buf(),
                        limit: MAX_POOL_MACHINES,
                    });
                }
                files.push(path)
            }
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                return Err(PoolError::NotRegular {
                    path,
                    kind: crate::fsread::file_kind(m.file_type()),
                })
            }
            Err(source) => return Err(PoolError::Io { path, source }),
        }
    }
    Ok(files)
}

/// Whether `dir` holds at least one pool XML (`*.xml`, case-insensitive) entry. An entry that
/// cannot be read counts (loading the pool then reports it); an unreadable dir does not.
pub fn has_pool_xml(dir: &Path) -> bool {
    match xml_files(dir) {
        Ok(f) => !f.is_empty(),
        Err(PoolError::Io { path, .. }) if path == dir => false,
        Err(_) => true,
    }
}

/// Where each machine's hostname param was defined, for cross-file errors.
struct Loaded {
    machine: PoolMachine,
    hostname_pos: (u32, u32),
}

/// Load every pool XML of `dir` into a [`Pool`] named `default`.
pub fn load_pool_dir(dir: &Path) -> Result<Pool, PoolError> {
    let mut pool = Pool {
        name: DEFAULT_POOL_NAME.to_string(),
        machines: BTreeMap::new(),
    };
    let mut hostnames: HashMap<String, String> = HashMap::new();
    for file in xml_files(dir)? {
        let loaded = load_machine_file(&file)?;
        let m = loaded.machine;
        let host_key = m.hostname().to_ascii_lowercase();
        if let Some(other) = hostnames.get(&host_key) {
            return Err(PoolError::Xml {
                file: file.clone(),
                line: loaded.hostname_pos.0,
                col: loaded.hostname_pos.1,
                message: format!(
                    "hostname {} is already used by machine '{other}': the same machine is listed twice",
                    quote(m.hostname())
                ),
            });
        }
        if pool.machines.contains_key(&m.id) {
            // Two files whose stems differ only by the extension's case (a.xml, a.XML).
            return Err(PoolError::Xml {
                file: file.clone(),
                line: 1,
                col: 1,
                message: format!("machine id '{}' is defined by two files", m.id),
            });
        }
        hostnames.insert(host_key, m.id.clone());
        tracing::debug!(machine = %m.id, hostname = %m.hostname(), "pool machine loaded");
        pool.machines.insert(m.id.clone(), m);
    }
    Ok(pool)
}

/// Parse one pool machine file (machine id = file stem).
pub fn load_machine(file: &Path) -> Result<PoolMachine, PoolError> {
    load_machine_file(file).map(|l| l.machine)
}

fn read_limited(file: &Path) -> Result<String, PoolError> {
    use crate::fsread::FsReadError;
    let buf = crate::fsread::read_regular_file(file, MAX_FILE_SIZE).map_err(|e| match e {
        FsReadError::TooLarge { limit, .. } => PoolError::Xml {
            file: file.to_path_buf(),
            line: 1,
            col: 1,
            message: format!("file is larger than {limit} bytes"),
        },
        other => PoolError::Read(other),
    })?;
    String::from_utf8(buf).map_err(|e| PoolError::Xml {
        file: file.to_path_buf(),
        line: 1,
        col: 1,
        message: format!(
            "not valid UTF-8 (byte offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}

fn machine_id(file: &Path) -> String {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if is_xml_name(name) {
        name.get(..name.len() - 4).unwrap_or(name).to_string()
    } else {
        file.file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string()
    }
}

struct Ctx<'a, 'input> {
    file: &'a Path,
    doc: &'a roxmltree::Document<'input>,
}

impl Ctx<'_, '_> {
    /// Line and column of `node`. Each call scans the text up to the node: for error
    /// messages only (positions kept for later are byte offsets, see [`Ctx::at`]).
    fn pos(&self, node: roxmltree::Node) -> (u32, u32) {
        self.at(node.range().start)
    }
    /// Line and column of byte offset `offset` of the text.
    fn at(&self, offset: usize) -> (u32, u32) {
        text_pos(self.doc.input_text(), offset)
    }
    fn err(&self, node: roxmltree::Node, message: impl Into<String>) -> PoolError {
        let (line, col) = self.pos(node);
        PoolError::Xml {
            file: self.file.to_path_buf(),
            line,
            col,
            message: message.into(),
        }
    }
    /// Child elements, rejecting non-whitespace text directly inside a container element.
    fn children<'b>(
        &self,
        node: roxmltree::Node<'b, 'b>,
    ) -> Result<Vec<roxmltree::Node<'b, 'b>>, PoolError> {
        let mut out = Vec::new();
        for c in node.children() {
            if c.is_element() {
                out.push(c);
            } else if c.is_text() && c.text().is_some_and(|t| !t.trim().is_empty()) {
                return Err(self.err(
                    c,
                    format!("unexpected text inside <{}>", clip(node.tag_name().name())),
                ));
            }
        }
        Ok(out)
    }
    fn unknown(&self, node: roxmltree::Node, parent: &str, allowed: &str) -> PoolError {
        self.err(
            node,
            format!(
                "unexpected element <{}> inside <{parent}> (allowed: {allowed})",
                clip(node.tag_name().name())
            ),
        )
    }
}

/// 1-based line and column (in characters) of byte offset `at` of `text`.
fn text_pos(text: &str, at: usize) -> (u32, u32) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(col).unwrap_or(u32::MAX),
    )
}

/// Whether the character reference starting at `b[0] == b'&'` (`&#N;` or `&#xH;`) names a
/// character XML allows. Returns the reference's length and its verdict; None when it is not a
/// complete numeric reference (the parser reports those).
fn char_ref(b: &[u8]) -> Option<(usize, bool)> {
    let rest = b.strip_prefix(b"&#")?;
    let (digits_at, radix) = if rest.first() == Some(&b'x') {
        (3, 16)
    } else {
        (2, 10)
    };
    let digits = b.get(digits_at..)?;
    let n = digits
        .iter()
        .take_while(|c| (*c).is_ascii_digit() || (radix == 16 && (*c).is_ascii_hexdigit()))
        .count();
    if n == 0 || digits.get(n) != Some(&b';') {
        return None;
    }
    // Leading zeros do not count; anything longer than 8 significant digits is out of range.
    let sig: &[u8] = {
        let d = &digits[..n];
        let z = d.iter().take_while(|c| **c == b'0').count();
        &d[z..]
    };
    let value = if sig.len() > 8 {
        None
    } else {
        std::str::from_utf8(sig)
            .ok()
            .map(|t| if t.is_empty() { "0" } else { t })
            .and_then(|t| u32::from_str_radix(t, radix).ok())
    };
    let ok = value.is_some_and(
        |v| matches!(v, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x1_0000..=0x10_FFFF),
    );
    Some((digits_at + n + 1, ok))
}

/// The problem a light, non-recursive scan finds before the XML parser runs, with the byte
/// offset where it is:
/// * element nesting deeper than [`MAX_XML_DEPTH`] (roxmltree's tokenizer recurses once per
///   level, so a deeply nested file would overflow the stack);
/// * a character reference to something that is not an XML character (`&#xD800;`,
///   `&#x110000;`, `&#0;`): roxmltree turns the first two into U+FFFD instead of refusing
///   them.
///
/// The scan skips comments, CDATA sections, processing instructions and quoted attribute
/// values (where it still checks character references). It stops at a DOCTYPE (the parser
/// refuses DTDs before reaching any element) and leaves every other malformation to the
/// parser. Linear in the size of the text.
fn prescan(text: &str) -> Option<(usize, String)> {
    let b = text.as_bytes();
    let find = |from: usize, pat: &[u8]| -> usize {
        b.get(from..)
            .and_then(|rest| rest.windows(pat.len()).position(|w| w == pat))
            .map_or(b.len(), |p| from + p + pat.len())
    };
    let bad_ref = |at: usize| -> Option<(usize, String)> {
        match char_ref(b.get(at..)?) {
            Some((len, false)) => {
                let shown = String::from_utf8_lossy(&b[at..at + len.min(24)]).into_owned();
                Some((
                    at,
                    format!(
                        "character reference {} is not a character XML allows",
                        quote(&shown)
                    ),
                ))
            }
            _ => None,
        }
    };
    let mut depth = 0usize;
    let mut i = 0usize;
    while i < b.len() {
        if b[i] == b'&' {
            if let Some(e) = bad_ref(i) {
                return Some(e);
            }
            i += 1;
            continue;
        }
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &b[i..];
        if rest.starts_with(b"<!--") {
            i = find(i + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = find(i + 9, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = find(i + 2, b"?>");
        } else if rest.starts_with(b"<!") {
            return None;
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = find(i + 2, b">");
        } else {
            // A start tag: find its end outside quoted attribute values.
            let start = i;
            let mut j = i + 1;
            let mut quote: Option<u8> = None;
            let mut self_closing = false;
            while j < b.len() {
                let c = b[j];
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) if c == b'&' => {
                        if let Some(e) = bad_ref(j) {
                            return Some(e);
                        }
                    }
                    Some(_) => {}
                    None if c == b'"' || c == b'\'' => quote = Some(c),
                    None if c == b'>' => {
                        self_closing = j > i && b[j - 1] == b'/';
                        break;
                    }
                    None => {}
                }
                j += 1;
            }
            if !self_closing {
                depth += 1;
                if depth > MAX_XML_DEPTH {
                    return Some((
                        start,
                        format!("elements nested deeper than {MAX_XML_DEPTH} levels"),
                    ));
                }
            }
            i = j + 1;
        }
    }
    None
}

/// Check the encoding named by the XML declaration (`<?xml version="1.0" encoding="..."?>`):
/// the file is read as UTF-8, so only `UTF-8` (or `utf8`) is accepted, and `US-ASCII`/`ASCII`
/// when every byte is ASCII. A file declaring `UTF-16` or `ISO-8859-1` would otherwise be
/// read as something it says it is not. Returns the offset of the value and the message.
fn check_declared_encoding(text: &str) -> Option<(usize, String)> {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let decl = body.strip_prefix("<?xml")?;
    let decl_start = text.len() - decl.len();
    if !decl.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let end = decl.find("?>")?;
    let decl = &decl[..end];
    let at = decl.find("encoding")?;
    let after = decl[at + "encoding".len()..].trim_start();
    let after = after.strip_prefix('=')?.trim_start();
    let q = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = after[1..].split(q).next()?;
    // `after` ends where `decl` does: the value starts one past its opening quote.
    let offset = decl_start + (decl.len() - after.len()) + 1;
    let v = value.to_ascii_lowercase();
    let ok = match v.as_str() {
        "utf-8" | "utf8" => true,
        "us-ascii" | "ascii" => text.is_ascii(),
        _ => false,
    };
    if ok {
        return None;
    }
    Some((
        offset,
        format!(
            "encoding {} is not supported: pool XML is read as UTF-8 (declare encoding=\"UTF-8\" or none)",
            quote(value)
        ),
    ))
}

/// Document-wide rules the element handlers do not see: no processing instructions, no
/// namespaces, and only the attributes of the upstream schema (`<param name value>`,
/// `<eth id label>`; `<define>` content is legacy and ignored, as upstream).
fn check_document(ctx: &Ctx) -> Result<(), PoolError> {
    for node in ctx.doc.descendants() {
        if node.is_pi() {
            return Err(ctx.err(node, "processing instructions are not allowed in pool XML"));
        }
        if !node.is_element() {
            continue;
        }
        let tag = node.tag_name();
        if tag.namespace().is_some() {
            return Err(ctx.err(
                node,
                format!(
                    "element <{}> is in a namespace; pool XML elements have none",
                    clip(tag.name())
                ),
            ));
        }
        if node
            .ancestors()
            .any(|a| a.is_element() && a.tag_name().name() == "define")
        {
            continue;
        }
        let allowed: &[&str] = match tag.name() {
            "param" => &["name", "value"],
            "eth" => &["id", "label"],
            "define" => continue,
            _ => &[],
        };
        for a in node.attributes() {
            if a.namespace().is_some() || !allowed.contains(&a.name()) {
                let allowed = if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                };
                return Err(ctx.err(
                    node,
                    format!(
                        "unknown attribute {} on <{}> (allowed: {allowed})",
                        quote(a.name()),
                        clip(tag.name())
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Read and parse machine file `file`, and read its secret file if it names one (a pool that
/// names a missing or unreadable secret is refused when it is loaded, not when its agent is
/// contacted).
fn load_machine_file(file: &Path) -> Result<Loaded, PoolError> {
    let text = read_limited(file)?;
    let loaded = parse_machine_text(&text, file)?;
    loaded.machine.secret()?;
    Ok(loaded)
}

/// Parse the text of machine file `file` (pure: nothing is opened; a relative
/// `<auth_password_file>` is resolved against `file`'s directory, not read).
pub fn parse_machine_xml(text: &str, file: &Path) -> Result<PoolMachine, PoolError> {
    parse_machine_text(text, file).map(|l| l.machine)
}

fn parse_machine_text(text: &str, file: &Path) -> Result<Loaded, PoolError> {
    if let Some((at, message)) = check_declared_encoding(text).or_else(|| prescan(text)) {
        let (line, col) = text_pos(text, at);
        return Err(PoolError::Xml {
            file: file.to_path_buf(),
            line,
            col,
            message,
        });
    }
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: 100_000,
    };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| {
        let p = e.pos();
        let message = match e {
            roxmltree::Error::DtdDetected => {
                "DTDs and entity declarations are not allowed in pool XML".to_string()
            }
            other => {
                let m = other.to_string();
                let suffix = format!(" at {}:{}", p.row, p.col);
                m.strip_suffix(&suffix).map(str::to_string).unwrap_or(m)
            }
        };
        PoolError::Xml {
            file: file.to_path_buf(),
            line: p.row,
            col: p.col,
            message,
        }
    })?;
    let ctx = Ctx { file, doc: &doc };
    check_document(&ctx)?;
    let root = doc.root_element();
    if root.tag_name().name() != "agentmachine" {
        return Err(ctx.err(
            root,
            format!(
                "root element must be <agentmachine>, found <{}>",
                clip(root.tag_name().name())
            ),
        ));
    }
    let id = machine_id(file);
    let mut params = BTreeMap::new();
    // Byte offsets, turned into line:column only for a message (one scan of the text each).
    let mut param_pos: HashMap<String, usize> = HashMap::new();
    let mut interfaces: BTreeMap<String, PoolInterface> = BTreeMap::new();
    let mut hwaddrs: HashMap<String, String> = HashMap::new();
    let mut security: Option<Security> = None;

    for child in ctx.children(root)? {
        match child.tag_name().name() {
            "define" => {} // legacy aliases: accepted, never processed (as upstream)
            "params" => read_params(&ctx, child, &mut params, Some(&mut param_pos))?,
            "interfaces" => {
                for eth in ctx.children(child)? {
                    match eth.tag_name().name() {
                        "define" => {}
                        "eth" => {
                            if interfaces.len() >= MAX_INTERFACES {
                                return Err(ctx.err(
                                    eth,
                                    format!(
                                        "more than {MAX_INTERFACES} interfaces in one machine; the limit is {MAX_INTERFACES}"
                                    ),
                                ));
                            }
                            let iface = read_eth(&ctx, eth)?;
                            if interfaces.contains_key(&iface.id) {
                                return Err(ctx.err(
                                    eth,
                                    format!("duplicate interface id {}", quote(&iface.id)),
                                ));
                            }
                            let mac = iface.hwaddr().to_string();
                            if let Some(other) = hwaddrs.get(&mac) {
                                return Err(ctx.err(
                                    eth,
                                    format!(
                                        "duplicate hwaddr {mac}: interfaces {} and {}",
                                        quote(other),
                                        quote(&iface.id)
                                    ),
                                ));
                            }
                            hwaddrs.insert(mac, iface.id.clone());
                            interfaces.insert(iface.id.clone(), iface);
                        }
                        _ => return Err(ctx.unknown(eth, "interfaces", "eth, define")),
                    }
                }
            }
            "security" => {
                if security.is_some() {
                    return Err(ctx.err(child, "more than one <security> block"));
                }
                security = Some(read_security(&ctx, child)?);
            }
            _ => {
                return Err(ctx.unknown(
                    child,
                    "agentmachine",
                    "params, interfaces, security, define",
                ))
            }
        }
    }

    let Some(hostname_pos) = param_pos.get("hostname").map(|&o| ctx.at(o)) else {
        return Err(ctx.err(
            root,
            format!(
                "mandatory parameter 'hostname' missing for machine {}",
                clip(&id)
            ),
        ));
    };
    let hostname = params.get("hostname").map(String::as_str).unwrap_or("");
    if hostname.is_empty() {
        return Err(PoolError::Xml {
            file: file.to_path_buf(),
            line: hostname_pos.0,
            col: hostname_pos.1,
            message: format!("parameter 'hostname' of machine {} is empty", clip(&id)),
        });
    }
    if let Err(message) = check_hostname(hostname) {
        return Err(PoolError::Xml {
            file: file.to_path_buf(),
            line: hostname_pos.0,
            col: hostname_pos.1,
            message,
        });
    }
    if let (Some(port), Some(&at)) = (params.get("rpc_port"), param_pos.get("rpc_port")) {
        if let Err(message) = parse_port(port) {
            let pos = ctx.at(at);
            return Err(PoolError::Xml {
                file: file.to_path_buf(),
                line: pos.0,
                col: pos.1,
                message,
            });
        }
    }
    Ok(Loaded {
        machine: PoolMachine {
            id,
            params,
            interfaces,
            security: security.unwrap_or(Security::None),
            source: file.to_path_buf(),
        },
        hostname_pos,
    })
}

fn read_params(
    ctx: &Ctx,
    node: roxmltree::Node,
    out: &mut BTreeMap<String, String>,
    mut positions: Option<&mut HashMap<String, usize>>,
) -> Result<(), PoolError> {
    for p in ctx.children(node)? {
        match p.tag_name().name() {
            "define" => {}
            "param" => {
                let Some(name) = p.attribute("name").map(str::trim) else {
                    return Err(ctx.err(p, "<param> without a name attribute"));
                };
                if name.is_empty() {
                    return Err(ctx.err(p, "<param> with an empty name"));
                }
                let text: String = p
                    .children()
                    .filter(|c| c.is_text())
                    .filter_map(|c| c.text())
                    .collect();
                if p.children().any(|c| c.is_element()) {
                    return Err(ctx.err(
                        p,
                        format!("param {} must not contain elements", quote(name)),
                    ));
                }
                let value = match p.attribute("value") {
                    Some(v) if text.trim().is_empty() => v.trim().to_string(),
                    Some(_) => {
                        return Err(ctx.err(
                            p,
                            format!("param {} has both a value attribute and text", quote(name)),
                        ))
                    }
                    None => text.trim().to_string(),
                };
                if out.contains_key(name) {
                    return Err(ctx.err(p, format!("duplicate parameter {}", quote(name))));
                }
                if out.len() >= MAX_PARAMS {
                    return Err(ctx.err(
                        p,
                        format!("more than {MAX_PARAMS} parameters; the limit is {MAX_PARAMS}"),
                    ));
                }
                if let Some(pos) = positions.as_deref_mut() {
                    pos.insert(name.to_string(), p.range().start);
                }
                out.insert(name.to_string(), value);
            }
            _ => return Err(ctx.unknown(p, "params", "param, define")),
        }
    }
    Ok(())
}

fn read_eth(ctx: &Ctx, eth: roxmltree::Node) -> Result<PoolInterface, PoolError> {
    let id = eth.attribute("id").map(str::trim).unwrap_or_default();
    if id.is_empty() {
        return Err(ctx.err(eth, "<eth> without an id attribute"));
    }
    let label = eth.attribute("label").map(str::trim).unwrap_or_default();
    if label.is_empty() {
        return Err(ctx.err(
            eth,
            format!("<eth id=\"{}\"> without a label attribute", clip(id)),
        ));
    }
    let mut params = BTreeMap::new();
    let mut positions = HashMap::new();
    for c in ctx.children(eth)? {
        match c.tag_name().name() {
            "define" => {}
            "params" => read_params(ctx, c, &mut params, Some(&mut positions))?,
            _ => return Err(ctx.unknown(c, "eth", "params, define")),
        }
    }
    let Some(raw) = params.get("hwaddr") else {
        return Err(ctx.err(
            eth,
            format!(
                "mandatory parameter 'hwaddr' missing for interface {}",
                clip(id)
            ),
        ));
    };
    let hwaddr_err = |message: String| {
        let (line, col) = positions
            .get("hwaddr")
            .map(|&o| ctx.at(o))
            .unwrap_or_else(|| ctx.pos(eth));
        PoolError::Xml {
            file: ctx.file.to_path_buf(),
            line,
            col,
            message,
        }
    };
    let Some(mac) = normalize_hwaddr(raw) else {
        return Err(hwaddr_err(format!(
            "hwaddr {} of interface {} is not a MAC address",
            quote(raw),
            clip(id)
        )));
    };
    if let Some(why) = not_unicast(&mac) {
        return Err(hwaddr_err(format!(
            "hwaddr {mac} of interface {} is {why}, not the address of a NIC",
            clip(id)
        )));
    }
    params.insert("hwaddr".to_string(), mac);
    Ok(PoolInterface {
        id: id.to_string(),
        label: label.to_string(),
        params,
    })
}

fn element_text(node: roxmltree::Node) -> String {
    node.children()
        .filter(|c| c.is_text())
        .filter_map(|c| c.text())
        .collect::<String>()
        .trim()
        .to_string()
}

fn read_security(ctx: &Ctx, node: roxmltree::Node) -> Result<Security, PoolError> {
    let mut auth_type: Option<(String, roxmltree::Node)> = None;
    let mut password: Option<(String, roxmltree::Node)> = None;
    let mut password_file: Option<(String, roxmltree::Node)> = None;
    for c in ctx.children(node)? {
        let slot = match c.tag_name().name() {
            "auth_type" => &mut auth_type,
            "auth_password" => &mut password,
            "auth_password_file" => &mut password_file,
            "pubkey_path" => return Err(ctx.err(
                c,
                "<pubkey_path>: public-key authentication is not supported, use auth_type password",
            )),
            _ => {
                return Err(ctx.unknown(
                    c,
                    "security",
                    "auth_type, auth_password, auth_password_file",
                ))
            }
        };
        if slot.is_some() {
            return Err(ctx.err(c, format!("duplicate <{}>", clip(c.tag_name().name()))));
        }
        *slot = Some((element_text(c), c));
    }
    let Some((kind, kind_node)) = auth_type else {
        return Err(ctx.err(node, "<security> without <auth_type>"));
    };
    match kind.as_str() {
        "none" => {
            if let Some((_, n)) = password.as_ref().or(password_file.as_ref()) {
                return Err(ctx.err(*n, "a password is given but auth_type is none"));
            }
            Ok(Security::None)
        }
        "password" => match (password, password_file) {
            (Some(_), Some((_, n))) => Err(ctx.err(
                n,
                "give either <auth_password> or <auth_password_file>, not both",
            )),
            (Some((secret, n)), None) => {
                if secret.is_empty() {
                    Err(ctx.err(n, "empty <auth_password>"))
                } else {
                    Ok(Security::Password {
                        secret: secret.into_bytes(),
                    })
                }
            }
            (None, Some((path, n))) => {
                if path.is_empty() {
                    return Err(ctx.err(n, "empty <auth_password_file>"));
                }
                let p = PathBuf::from(&path);
                let path = if p.is_absolute() {
                    p
                } else {
                    ctx.file.parent().unwrap_or(Path::new(".")).join(p)
                };
                Ok(Security::PasswordFile { path })
            }
            (None, None) => Err(ctx.err(
                kind_node,
                "auth_type password needs <auth_password> or <auth_password_file>",
            )),
        },
        "pubkey" | "ssh" => Err(ctx.err(
            kind_node,
            format!("auth_type {} is not supported (upstream's secure modes are broken); use auth_type password", quote(&kind)),
        )),
        other => Err(ctx.err(
            kind_node,
            format!("unknown auth_type {} (expected none or password)", quote(other)),
        )),
    }
}

fn fmt_params<'a>(it: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    it.map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report printed by `lnst-runner pool check`: every machine with its address,
/// security kind and interfaces.
pub fn check_report(dir: &Path) -> Result<String, PoolError> {
    let pool = load_pool_dir(dir)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pool {} ({}): {} machine(s)",
        pool.name,
        dir.display(),
        pool.machines.len()
    );
    for m in pool.machines.values() {
        let port = m.rpc_port()?;
        let _ = writeln!(out, "machine {} ({})", m.id, m.source.display());
        let _ = writeln!(out, "  address: {}:{port}", m.hostname());
        let _ = writeln!(out, "  security: {}", m.security.kind());
        let others = fmt_params(
            m.params
                .iter()
                .filter(|(k, _)| k.as_str() != "hostname" && k.as_str() != "rpc_port"),
        );
        if !others.is_empty() {
            let _ = writeln!(out, "  params: {others}");
        }
        if m.interfaces.is_empty() {
            let _ = writeln!(out, "  (no interfaces)");
        }
        for i in m.interfaces.values() {
            let others = fmt_params(i.params.iter().filter(|(k, _)| k.as_str() != "hwaddr"));
            let _ = write!(
                out,
                "  interface {}: label {}, hwaddr {}",
                i.id,
                i.label,
                i.hwaddr()
            );
            if !others.is_empty() {
                let _ = write!(out, ", {others}");
            }
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_normalisation() {
        assert_eq!(
            normalize_hwaddr("52:54:00:AA:bb:0C").as_deref(),
            Some("52:54:00:aa:bb:0c")
        );
        assert_eq!(
            normalize_hwaddr(" 2:4:0:a:b:c ").as_deref(),
            Some("02:04:00:0a:0b:0c")
        );
        assert_eq!(
            normalize_hwaddr("52-54-00-aa-bb-cc").as_deref(),
            Some("52:54:00:aa:bb:cc")
        );
        assert_eq!(normalize_hwaddr("52:54:00:aa:bb"), None);
        assert_eq!(normalize_hwaddr("52:54:00:aa:bb:cc:dd"), None);
        assert_eq!(normalize_hwaddr("52:54:00:aa:bb:zz"), None);
        assert_eq!(normalize_hwaddr("52:54:00:aa:bb:123"), None);
        assert_eq!(normalize_hwaddr(""), None);
        assert_eq!(normalize_hwaddr("+1:54:00:aa:bb:cc"), None);
    }

    #[test]
    fn xml_names() {
        assert!(is_xml_name("a.xml"));
        assert!(is_xml_name("a.XmL"));
        assert!(!is_xml_name(".xml"));
        assert!(!is_xml_name("a.xmlx"));
        assert!(!is_xml_name("é"));
        assert_eq!(machine_id(Path::new("/x/lab1.XML")), "lab1");
    }

    fn load_text(text: &[u8]) -> Result<Pool, PoolError> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("m.xml"), text).unwrap_or_else(|e| panic!("{e}"));
        load_pool_dir(dir.path())
    }

    fn load_err(text: &[u8]) -> String {
        match load_text(text) {
            Ok(p) => panic!("expected an error, got {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    const HOST: &str = r#"<params><param name="hostname" value="198.18.0.1"/></params>"#;

    #[test]
    fn deep_nesting_is_rejected_before_parsing() {
        // 100 000 levels overflowed roxmltree's recursive tokenizer (the process aborted).
        let deep = format!("<agentmachine>{}", "<params>".repeat(100_000));
        let e = load_err(deep.as_bytes());
        assert!(e.contains("m.xml:1:"), "{e}");
        assert!(e.contains("nested deeper than 32"), "{e}");
        let closed = format!(
            "<agentmachine>{}{}</agentmachine>",
            "<a>".repeat(40),
            "</a>".repeat(40)
        );
        assert!(load_err(closed.as_bytes()).contains("nested deeper"));
        // Self-closing tags, comments, CDATA and quoted '>' do not count as levels.
        let flat = format!(
            "<agentmachine>{HOST}{}<!-- <a><a><a> --><params><param name=\"n\"><![CDATA[<b>]]></param></params></agentmachine>",
            r#"<define><alias name="x>" value="y/>"/></define>"#.repeat(50)
        );
        assert!(prescan(&flat).is_none());
        if let Err(e) = load_text(flat.as_bytes()) {
            panic!("{e}");
        }
        assert_eq!(prescan("<a><b>\n<c>"), None);
        let (line, col) = text_pos("ab\ncd<x>", 5);
        assert_eq!((line, col), (2, 3));
    }

    #[test]
    fn special_files_are_errors_not_skipped_or_hangs() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path();
        // A FIFO named *.xml: an error naming it, and no open() that waits for a writer.
        nix::unistd::mkfifo(&d.join("f.xml"), nix::sys::stat::Mode::S_IRWXU)
            .unwrap_or_else(|e| panic!("mkfifo: {e}"));
        let e = load_pool_dir(d).map(|_| ()).err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("f.xml: not a regular file (a FIFO)")),
            "{e:?}"
        );
        assert!(has_pool_xml(d));
        std::fs::remove_file(d.join("f.xml")).unwrap_or_else(|e| panic!("{e}"));
        // A symlink loop.
        std::os::unix::fs::symlink("b.xml", d.join("a.xml")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("a.xml", d.join("b.xml")).unwrap_or_else(|e| panic!("{e}"));
        let e = load_pool_dir(d).map(|_| ()).err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("a.xml: ") && e.contains("symbolic links")),
            "{e:?}"
        );
        assert!(has_pool_xml(d));
        // A directory named *.xml is still ignored.
        let d2 = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(d2.path().join("x.xml")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!has_pool_xml(d2.path()));
        assert!(load_pool_dir(d2.path()).is_ok_and(|p| p.machines.is_empty()));
        // A file name that is not UTF-8.
        use std::os::unix::ffi::OsStrExt;
        let bad = d2.path().join(std::ffi::OsStr::from_bytes(b"m\xff.xml"));
        std::fs::write(&bad, "<agentmachine/>").unwrap_or_else(|e| panic!("{e}"));
        let e = load_pool_dir(d2.path())
            .map(|_| ())
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("file name is not valid UTF-8")),
            "{e:?}"
        );
        // read_limited itself refuses a non-regular file without blocking.
        let fifo = d2.path().join("g");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU)
            .unwrap_or_else(|e| panic!("mkfifo: {e}"));
        assert!(matches!(
            read_limited(&fifo),
            Err(PoolError::Read(
                crate::fsread::FsReadError::NotRegular { .. }
            ))
        ));
    }

    #[test]
    fn pis_namespaces_and_unknown_attributes_are_rejected() {
        let e = load_err(
            format!("<agentmachine>{HOST}<?php system('id') ?></agentmachine>").as_bytes(),
        );
        assert!(e.contains("processing instructions are not allowed"), "{e}");
        let e = load_err(format!("<?evil x?><agentmachine>{HOST}</agentmachine>").as_bytes());
        assert!(e.contains("m.xml:1:1: processing instructions"), "{e}");
        // The XML declaration is not a processing instruction.
        assert!(load_text(
            format!("<?xml version=\"1.0\"?><agentmachine>{HOST}</agentmachine>").as_bytes()
        )
        .is_ok());
        let e = load_err(br#"<x:agentmachine xmlns:x="urn:x"><x:params><x:param name="hostname" value="198.18.0.1"/></x:params></x:agentmachine>"#);
        assert!(
            e.contains("element <agentmachine> is in a namespace"),
            "{e}"
        );
        let e = load_err(format!("<agentmachine xmlns=\"urn:x\">{HOST}</agentmachine>").as_bytes());
        assert!(e.contains("namespace"), "{e}");
        let e = load_err(br#"<agentmachine><params><param name="hostname" value="198.18.0.1" valeu="x"/></params></agentmachine>"#);
        assert!(
            e.contains("unknown attribute 'valeu' on <param> (allowed: name, value)"),
            "{e}"
        );
        let e = load_err(format!("<agentmachine id=\"a\">{HOST}</agentmachine>").as_bytes());
        assert!(
            e.contains("unknown attribute 'id' on <agentmachine> (allowed: none)"),
            "{e}"
        );
        let e = load_err(format!("<agentmachine>{HOST}<interfaces><eth id=\"e\" label=\"n\" xml:lang=\"en\"/></interfaces></agentmachine>").as_bytes());
        assert!(e.contains("unknown attribute 'lang' on <eth>"), "{e}");
        // <define> content is legacy and not checked.
        assert!(load_text(format!("<agentmachine><define><alias name=\"a\" value=\"b\" x=\"y\"/></define>{HOST}</agentmachine>").as_bytes()).is_ok());
    }

    #[test]
    fn messages_quote_and_clip_file_values() {
        let huge = "A".repeat(900_000);
        let xml = format!(
            "<agentmachine>{HOST}<interfaces><eth id=\"e\" label=\"n\"><params><param name=\"hwaddr\" value=\"{huge}\"/></params></eth></interfaces></agentmachine>"
        );
        let e = load_err(xml.as_bytes());
        assert!(
            e.contains("is not a MAC address"),
            "{}",
            &e[..200.min(e.len())]
        );
        assert!(e.len() < 400, "{} bytes", e.len());
        let e = load_err(
            b"<agentmachine><params><param name=\"hostname\" value=\"h\"/><param name=\"rpc_port\">1\n2</param></params></agentmachine>",
        );
        assert!(e.contains("rpc_port '1\\n2' is not a TCP port"), "{e}");
        assert!(!e.contains('\n'), "{e:?}");
        let long_tag = format!(
            "<agentmachine>{HOST}<{}/></agentmachine>",
            "t".repeat(10_000)
        );
        assert!(load_err(long_tag.as_bytes()).len() < 400);
        assert_eq!(clip("a\u{1b}b"), "a\\u{1b}b");
        assert_eq!(quote("it's"), "\"it's\"");
    }

    #[test]
    fn character_references_must_name_xml_characters() {
        for bad in [
            "&#xD800;",
            "&#x110000;",
            "&#0;",
            "&#xFFFE;",
            "&#55296;",
            "&#x000000000110000;",
            "&#99999999999999999999;",
        ] {
            let e = load_err(
                format!("<agentmachine>\n<params><param name=\"hostname\" value=\"198.18.0.1\"/><param name=\"x\">a{bad}</param></params></agentmachine>").as_bytes(),
            );
            assert!(e.contains("m.xml:2:"), "{bad}: {e}");
            assert!(e.contains("is not a character XML allows"), "{bad}: {e}");
            // In an attribute value too.
            let e = load_err(
                format!("<agentmachine><params><param name=\"hostname\" value=\"198.18.0.1\"/><param name=\"x\" value=\"{bad}\"/></params></agentmachine>").as_bytes(),
            );
            assert!(e.contains("is not a character XML allows"), "{bad}: {e}");
        }
        // Valid references, with leading zeros, and references in comments and CDATA (text).
        let p = load_text(
            b"<agentmachine><params><param name=\"hostname\" value=\"198.18.0.&#x0000000031;\"/><param name=\"x\">&#65;&#x10FFFF;&#xE000;<![CDATA[&#xD800;]]><!-- &#0; --></param></params></agentmachine>",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let m = &p.machines["m"];
        assert_eq!(m.hostname(), "198.18.0.1");
        assert_eq!(m.params["x"], "A\u{10FFFF}\u{E000}&#xD800;");
        assert_eq!(char_ref(b"&#x41;"), Some((6, true)));
        assert_eq!(char_ref(b"&#x;"), None);
        assert_eq!(char_ref(b"&#12"), None);
    }

    #[test]
    fn only_utf8_may_be_declared() {
        for (decl, ok) in [
            ("<?xml version=\"1.0\"?>", true),
            ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", true),
            (
                "<?xml version='1.0' encoding='utf8' standalone='yes'?>",
                true,
            ),
            ("<?xml version=\"1.0\" encoding=\"US-ASCII\"?>", true),
            ("\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?>", true),
            ("<?xml version=\"1.0\" encoding=\"UTF-16\"?>", false),
            ("<?xml version=\"1.0\" encoding = 'ISO-8859-1'?>", false),
            ("<?xml version=\"1.0\" encoding=\"\"?>", false),
        ] {
            let text = format!("{decl}<agentmachine>{HOST}</agentmachine>");
            match load_text(text.as_bytes()) {
                Ok(_) => assert!(ok, "{decl} accepted"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(!ok, "{decl}: {e}");
                    assert!(
                        e.contains("m.xml:1:")
                            && e.contains("is not supported: pool XML is read as UTF-8"),
                        "{e}"
                    );
                }
            }
        }
        // Declared ASCII with non-ASCII content.
        let e = load_err("<?xml version=\"1.0\" encoding=\"ascii\"?><agentmachine><params><param name=\"hostname\" value=\"198.18.0.1\"/><param name=\"x\" value=\"é\"/></params></agentmachine>".as_bytes());
        assert!(e.contains("encoding 'ascii' is not supported"), "{e}");
    }

    #[test]
    fn hwaddrs_must_be_unicast() {
        for (mac, why) in [
            ("00:00:00:00:00:00", "the all-zero address"),
            ("FF:FF:FF:FF:FF:FF", "the broadcast address"),
            ("01:00:5e:00:00:01", "a multicast address"),
            ("33:33:00:00:00:01", "a multicast address"),
        ] {
            let e = load_err(format!("<agentmachine>{HOST}<interfaces><eth id=\"e\" label=\"n\"><params><param name=\"hwaddr\" value=\"{mac}\"/></params></eth></interfaces></agentmachine>").as_bytes());
            assert!(
                e.contains(&format!("is {why}, not the address of a NIC")),
                "{mac}: {e}"
            );
            assert!(e.contains("m.xml:1:"), "{e}");
        }
        assert_eq!(not_unicast("52:54:00:00:00:01"), None);
        assert_eq!(not_unicast("02:00:00:00:00:00"), None);
    }

    #[test]
    fn hostnames_are_addresses_or_dns_names() {
        for ok in [
            "198.18.0.1",
            "fd00::1",
            "[fd00::1]",
            "lab1",
            "lab-1.example.org",
            "lab_1.example.org.",
            "a1.b2",
            "fe80::1%eth0",
            "[fe80::1%2]",
        ] {
            assert_eq!(check_hostname(ok), Ok(()), "{ok}");
        }
        for (bad, hint) in [
            ("198.18.0.1:22", "give the port in the rpc_port param"),
            ("lab1:9999", "give the port in the rpc_port param"),
            ("[fd00::1]:22", "give the port in the rpc_port param"),
            ("198.18.0.1 evil", "it contains whitespace"),
            ("http://198.18.0.1/", "a URL"),
            ("198.18.0.256", ""),
            ("0x7f000001", ""),
            ("12345", ""),
            ("-lab", ""),
            ("lab..x", ""),
            ("lab/x", ""),
            ("a;b", ""),
            ("fd00::1%", ""),
            ("fd00::1%eth0 x", "it contains whitespace"),
            ("fd00::1%a/b", ""),
        ] {
            let e = check_hostname(bad).err().unwrap_or_default();
            assert!(
                e.contains("is not an IP address or a DNS name") && e.contains(hint),
                "{bad}: {e}"
            );
        }
        assert!(check_hostname(&format!("{}.x", "a".repeat(64))).is_err());
        assert!(check_hostname(&["abc"; 80].join(".")).is_err());
        let e = load_err(
            br#"<agentmachine><params><param name="rpc_port" value="22"/><param name="hostname" value="198.18.0.1:22"/></params></agentmachine>"#,
        );
        assert!(
            e.contains("m.xml:1:58: hostname '198.18.0.1:22' is not an IP address or a DNS name"),
            "{e}"
        );
    }

    #[test]
    fn element_counts_are_capped() {
        let params: String = (0..=MAX_PARAMS)
            .map(|i| format!("<param name=\"p{i}\" value=\"v\"/>"))
            .collect();
        let e = load_err(
            format!("<agentmachine>{HOST}<params>{params}</params></agentmachine>").as_bytes(),
        );
        assert!(
            e.contains(&format!("more than {MAX_PARAMS} parameters")),
            "{e}"
        );
        let e = load_err(format!("<agentmachine>{HOST}<interfaces><eth id=\"e\" label=\"n\"><params><param name=\"hwaddr\" value=\"52:54:00:00:00:01\"/>{params}</params></eth></interfaces></agentmachine>").as_bytes());
        assert!(
            e.contains(&format!("more than {MAX_PARAMS} parameters")),
            "{e}"
        );
        let eths: String = (0..=MAX_INTERFACES)
            .map(|i| format!("<eth id=\"e{i}\" label=\"n\"><params><param name=\"hwaddr\" value=\"52:54:00:00:{:02x}:{:02x}\"/></params></eth>", i / 256, i % 256))
            .collect();
        let e = load_err(
            format!("<agentmachine>{HOST}<interfaces>{eths}</interfaces></agentmachine>")
                .as_bytes(),
        );
        assert!(
            e.contains(&format!("more than {MAX_INTERFACES} interfaces")),
            "{e}"
        );
    }

    #[test]
    fn secret_files_are_read_when_the_pool_is_loaded() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path();
        let xml = |path: &str| {
            format!("<agentmachine>{HOST}<security><auth_type>password</auth_type><auth_password_file>{path}</auth_password_file></security></agentmachine>")
        };
        std::fs::write(d.join("m.xml"), xml("missing.key")).unwrap_or_else(|e| panic!("{e}"));
        let e = load_pool_dir(d)
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("m.xml: auth_password_file ") && e.contains("missing.key: No such file"),
            "{e}"
        );
        std::fs::write(d.join("blank.key"), " \n\t").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(d.join("m.xml"), xml("blank.key")).unwrap_or_else(|e| panic!("{e}"));
        let e = load_pool_dir(d)
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("blank.key is empty or only whitespace"), "{e}");
        nix::unistd::mkfifo(&d.join("fifo.key"), nix::sys::stat::Mode::S_IRWXU)
            .unwrap_or_else(|e| panic!("mkfifo: {e}"));
        std::fs::write(d.join("m.xml"), xml("fifo.key")).unwrap_or_else(|e| panic!("{e}"));
        let e = load_pool_dir(d)
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("fifo.key: not a regular file (a FIFO)"), "{e}");
        std::fs::write(d.join("m.xml"), xml("/dev/zero")).unwrap_or_else(|e| panic!("{e}"));
        let e = load_pool_dir(d)
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("/dev/zero: not a regular file (a character device)"),
            "{e}"
        );
        std::fs::write(d.join("good.key"), " s3cret \n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(d.join("m.xml"), xml("good.key")).unwrap_or_else(|e| panic!("{e}"));
        let p = load_pool_dir(d).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.machines["m"].secret().ok().flatten().as_deref(),
            Some(&b"s3cret"[..])
        );
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("9999"), Ok(9999));
        assert!(parse_port("0").is_err());
        assert!(parse_port("70000").is_err());
        assert!(parse_port("abc").is_err());
    }
}
