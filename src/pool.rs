//! Pool XML reader and validation (upstream LNST pool format, reference §1.2–1.4).
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
//!   (billion laughs, external entities) fail immediately. Files above 1 MiB are refused, and
//!   so are elements nested deeper than [`MAX_XML_DEPTH`] levels, before roxmltree (which
//!   parses elements recursively) sees them.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Default agent port (upstream config `rpcport`).
pub const DEFAULT_RPC_PORT: u16 = 9999;
/// Largest pool XML file we read.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;
/// Name of the single pool loaded from a directory.
pub const DEFAULT_POOL_NAME: &str = "default";
/// Deepest element nesting accepted. A valid machine nests at most six levels
/// (`agentmachine/params/define/alias`, `agentmachine/interfaces/eth/params/param`), but
/// roxmltree recurses once per level, so a file of a few tens of KiB nesting thousands of
/// elements would overflow the stack.
pub const MAX_XML_DEPTH: usize = 64;

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
        _ => Err(format!("rpc_port '{v}' is not a TCP port (1-65535)")),
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

/// True if `name` ends in `.xml`, case-insensitively.
fn is_xml_name(name: &str) -> bool {
    name.len() > 4
        && name
            .get(name.len() - 4..)
            .is_some_and(|s| s.eq_ignore_ascii_case(".xml"))
}

/// Pool XML files of `dir` (regular files, following symlinks), sorted by name.
fn xml_files(dir: &Path) -> Result<Vec<PathBuf>, PoolError> {
    let rd = std::fs::read_dir(dir).map_err(|source| PoolError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| PoolError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_xml_name(name) {
            continue;
        }
        let path = entry.path();
        if std::fs::metadata(&path)
            .map(|m| m.is_file())
            .unwrap_or(false)
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Whether `dir` holds at least one pool XML (`*.xml`, case-insensitive) file.
pub fn has_pool_xml(dir: &Path) -> bool {
    xml_files(dir).map(|f| !f.is_empty()).unwrap_or(false)
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
                    "hostname '{}' is already used by machine '{other}': the same machine is listed twice",
                    m.hostname()
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

/// Parse the text of one pool machine XML, as [`load_machine`] does after reading `file`.
///
/// `file` is never opened: its stem is the machine id, it is recorded as the source, a
/// relative `<auth_password_file>` is resolved against its directory, and errors name it.
/// Texts larger than [`MAX_FILE_SIZE`] bytes are refused, as files are.
pub fn parse_machine_xml(text: &str, file: &Path) -> Result<PoolMachine, PoolError> {
    parse_machine_text(text, file).map(|l| l.machine)
}

fn read_limited(file: &Path) -> Result<String, PoolError> {
    let io_err = |source| PoolError::Io {
        path: file.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(file).map_err(io_err)?;
    let mut buf = Vec::new();
    f.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    if buf.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large(file));
    }
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
    fn pos(&self, node: roxmltree::Node) -> (u32, u32) {
        let p = self.doc.text_pos_at(node.range().start);
        (p.row, p.col)
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
                    format!("unexpected text inside <{}>", node.tag_name().name()),
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
                node.tag_name().name()
            ),
        )
    }
}

fn load_machine_file(file: &Path) -> Result<Loaded, PoolError> {
    let text = read_limited(file)?;
    parse_machine_text(&text, file)
}

fn too_large(file: &Path) -> PoolError {
    PoolError::Xml {
        file: file.to_path_buf(),
        line: 1,
        col: 1,
        message: format!("file is larger than {MAX_FILE_SIZE} bytes"),
    }
}

/// Byte offset of `needle` in `hay` at or after `from`.
fn find_from(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Byte offset of the first start tag nested deeper than `limit` elements.
///
/// A single linear scan: comments, CDATA sections, processing instructions and `<!...>`
/// declarations are skipped, quoted attribute values may hold `>`, `<x/>` does not nest and
/// `</x>` closes one level. It never counts fewer open elements than a parser that accepts
/// the markup so far would; on malformed markup it may count more, and roxmltree rejects that
/// markup anyway.
fn deep_start_tag(text: &str, limit: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    while let Some(start) = b.get(i..)?.iter().position(|&c| c == b'<').map(|p| p + i) {
        let rest = b.get(start..).unwrap_or_default();
        let skip_past =
            |from: usize, end: &[u8]| find_from(b, from, end).map_or(b.len(), |e| e + end.len());
        if rest.starts_with(b"<!--") {
            i = skip_past(start + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = skip_past(start + 9, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = skip_past(start + 2, b"?>");
        } else if rest.starts_with(b"<!") {
            i = skip_past(start + 2, b">");
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = skip_past(start + 2, b">");
        } else {
            // A start tag: its end is the first `>` outside quotes.
            let mut quote: Option<u8> = None;
            let mut end = None;
            for (j, &c) in rest.iter().enumerate().skip(1) {
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None if c == b'"' || c == b'\'' => quote = Some(c),
                    None if c == b'>' => {
                        end = Some(start + j);
                        break;
                    }
                    None => {}
                }
            }
            let end = end?;
            if b.get(end - 1) != Some(&b'/') {
                depth += 1;
                if depth > limit {
                    return Some(start);
                }
            }
            i = end + 1;
        }
    }
    None
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let col = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(col).unwrap_or(u32::MAX),
    )
}

fn parse_machine_text(text: &str, file: &Path) -> Result<Loaded, PoolError> {
    if text.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large(file));
    }
    if let Some(offset) = deep_start_tag(text, MAX_XML_DEPTH) {
        let (line, col) = line_col(text, offset);
        return Err(PoolError::Xml {
            file: file.to_path_buf(),
            line,
            col,
            message: format!("elements nested deeper than {MAX_XML_DEPTH} levels"),
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
    let root = doc.root_element();
    if root.tag_name().name() != "agentmachine" {
        return Err(ctx.err(
            root,
            format!(
                "root element must be <agentmachine>, found <{}>",
                root.tag_name().name()
            ),
        ));
    }
    let id = machine_id(file);
    let mut params = BTreeMap::new();
    let mut param_pos: HashMap<String, (u32, u32)> = HashMap::new();
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
                            let iface = read_eth(&ctx, eth)?;
                            if interfaces.contains_key(&iface.id) {
                                return Err(
                                    ctx.err(eth, format!("duplicate interface id '{}'", iface.id))
                                );
                            }
                            let mac = iface.hwaddr().to_string();
                            if let Some(other) = hwaddrs.get(&mac) {
                                return Err(ctx.err(
                                    eth,
                                    format!(
                                        "duplicate hwaddr {mac}: interfaces '{other}' and '{}'",
                                        iface.id
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

    let Some(hostname_pos) = param_pos.get("hostname").copied() else {
        return Err(ctx.err(
            root,
            format!("mandatory parameter 'hostname' missing for machine {id}"),
        ));
    };
    if params.get("hostname").is_none_or(|h| h.is_empty()) {
        return Err(PoolError::Xml {
            file: file.to_path_buf(),
            line: hostname_pos.0,
            col: hostname_pos.1,
            message: format!("parameter 'hostname' of machine {id} is empty"),
        });
    }
    if let (Some(port), Some(pos)) = (params.get("rpc_port"), param_pos.get("rpc_port")) {
        if let Err(message) = parse_port(port) {
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
    mut positions: Option<&mut HashMap<String, (u32, u32)>>,
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
                    return Err(ctx.err(p, format!("param '{name}' must not contain elements")));
                }
                let value = match p.attribute("value") {
                    Some(v) if text.trim().is_empty() => v.trim().to_string(),
                    Some(_) => {
                        return Err(ctx.err(
                            p,
                            format!("param '{name}' has both a value attribute and text"),
                        ))
                    }
                    None => text.trim().to_string(),
                };
                if out.contains_key(name) {
                    return Err(ctx.err(p, format!("duplicate parameter '{name}'")));
                }
                if let Some(pos) = positions.as_deref_mut() {
                    pos.insert(name.to_string(), ctx.pos(p));
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
        return Err(ctx.err(eth, format!("<eth id=\"{id}\"> without a label attribute")));
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
            format!("mandatory parameter 'hwaddr' missing for interface {id}"),
        ));
    };
    let Some(mac) = normalize_hwaddr(raw) else {
        let (line, col) = positions
            .get("hwaddr")
            .copied()
            .unwrap_or_else(|| ctx.pos(eth));
        return Err(PoolError::Xml {
            file: ctx.file.to_path_buf(),
            line,
            col,
            message: format!("hwaddr '{raw}' of interface {id} is not a MAC address"),
        });
    };
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
            return Err(ctx.err(c, format!("duplicate <{}>", c.tag_name().name())));
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
            format!("auth_type '{kind}' is not supported (upstream's secure modes are broken); use auth_type password"),
        )),
        other => Err(ctx.err(
            kind_node,
            format!("unknown auth_type '{other}' (expected none or password)"),
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

    #[test]
    fn parse_from_text_matches_file_rules() {
        let xml = r#"<agentmachine>
            <params><param name="hostname" value=" h1 "/></params>
            <interfaces><eth id="e" label="n"><params>
                <param name="hwaddr">52:54:00:AA:bb:0c</param>
            </params></eth></interfaces>
            <security><auth_type>password</auth_type>
                <auth_password_file>k/s.key</auth_password_file></security>
        </agentmachine>"#;
        let file = Path::new("/nowhere/lab7.XML");
        let m = match parse_machine_xml(xml, file) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(m.id, "lab7");
        assert_eq!(m.hostname(), "h1");
        assert_eq!(m.source, file);
        assert_eq!(m.interfaces["e"].hwaddr(), "52:54:00:aa:bb:0c");
        assert_eq!(
            m.security,
            Security::PasswordFile {
                path: PathBuf::from("/nowhere/k/s.key")
            }
        );
        let e = parse_machine_xml("<agentmachine/>", file)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("pool XML /nowhere/lab7.XML:1:1: mandatory parameter 'hostname' missing for machine lab7")
        );
        let big = format!("<agentmachine>{}</agentmachine>", " ".repeat(1024 * 1024));
        let e = parse_machine_xml(&big, file).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("pool XML /nowhere/lab7.XML:1:1: file is larger than 1048576 bytes")
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        // Regression (found by fuzzing): roxmltree recurses per element, and 20 000 nested
        // elements (60 KiB) overflowed an 8 MiB stack; this test thread has 2 MiB.
        let file = Path::new("/p/m.xml");
        let deep = format!("<agentmachine>{}", "<a>".repeat(100_000));
        let e = parse_machine_xml(&deep, file).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("pool XML /p/m.xml:1:204: elements nested deeper than 64 levels")
        );
        let deep = format!("<agentmachine>\n{}", "<a x='>'>\n".repeat(100));
        let e = parse_machine_xml(&deep, file).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("pool XML /p/m.xml:65:1: elements nested deeper than 64 levels")
        );

        // Exactly 64 levels parse (<define> content is never processed), 65 do not.
        let nested = |n: usize| {
            format!(
                "<agentmachine><define>{}{}</define><params><param name='hostname' value='h'/></params></agentmachine>",
                "<x>".repeat(n),
                "</x>".repeat(n)
            )
        };
        assert!(parse_machine_xml(&nested(62), file).is_ok());
        let e = parse_machine_xml(&nested(63), file)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("nested deeper than 64")));

        // Markup that does not nest is not counted.
        let many = "<a>".repeat(200);
        let xml = format!(
            "<?xml version='1.0'?><!-- {many} --><agentmachine><?pi {many}?>\
             <params><param name='hostname' value='a>b&lt;'/></params>\
             <define><![CDATA[{many}]]>{}</define></agentmachine>",
            "<y/>".repeat(200)
        );
        match parse_machine_xml(&xml, file) {
            Ok(m) => assert_eq!(m.hostname(), "a>b<"),
            Err(e) => panic!("{e}"),
        }
        assert_eq!(deep_start_tag("<a><b/></a><c><d>", 1), Some(14));
        assert_eq!(deep_start_tag("<a x='", 0), None);
        assert_eq!(line_col("ab\ncé<", 6), (2, 3));
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("9999"), Ok(9999));
        assert!(parse_port("0").is_err());
        assert!(parse_port("70000").is_err());
        assert!(parse_port("abc").is_err());
    }
}
