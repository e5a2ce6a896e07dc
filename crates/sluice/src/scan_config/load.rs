//! Reading the config to scan: a Sluice config, or an MCP client's config
//! (Claude Code, Claude Desktop, Cursor, VS Code), detected from the content.
//!
//! Each server becomes a [`sluice_config::Server`], built on the defaults of a
//! minimal Sluice config, or a clear reason why it cannot be scanned.

use serde_json::{Map, Value};
use sluice_config::{Config, HttpMode, Secret, Server, Transport};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which kind of file was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Sluice,
    /// `.mcp.json` (project scope) or any other `mcpServers` file.
    ClaudeCode,
    /// `~/.claude.json`: top-level `mcpServers` plus `projects.<path>.mcpServers`.
    ClaudeCodeUser,
    ClaudeDesktop,
    Cursor,
    /// `.vscode/mcp.json` (`servers`, `inputs`).
    VsCode,
    /// A VS Code `settings.json` with an `mcp.servers` object.
    VsCodeSettings,
}

impl Format {
    /// Stable identifier (JSON output).
    pub(super) fn id(self) -> &'static str {
        match self {
            Format::Sluice => "sluice",
            Format::ClaudeCode => "claude-code",
            Format::ClaudeCodeUser => "claude-code-user",
            Format::ClaudeDesktop => "claude-desktop",
            Format::Cursor => "cursor",
            Format::VsCode => "vscode",
            Format::VsCodeSettings => "vscode-settings",
        }
    }

    /// For people.
    pub(super) fn label(self) -> &'static str {
        match self {
            Format::Sluice => "Sluice config",
            Format::ClaudeCode => "Claude Code MCP config",
            Format::ClaudeCodeUser => "Claude Code user config",
            Format::ClaudeDesktop => "Claude Desktop config",
            Format::Cursor => "Cursor MCP config",
            Format::VsCode => "VS Code MCP config",
            Format::VsCodeSettings => "VS Code settings",
        }
    }

    /// Whether the client expands `${...}` references in server fields.
    fn expands(self) -> bool {
        !matches!(self, Format::Sluice | Format::ClaudeDesktop)
    }
}

/// One server of the config.
#[derive(Debug)]
pub(super) struct Entry {
    /// Unique display name (the config's key; qualified when a key repeats).
    pub name: String,
    /// Where it is in the file, e.g. `mcpServers.github`.
    pub origin: String,
    /// The key as written (for locating it in the file).
    pub key: String,
    pub server: Result<Server, String>,
    /// Set when the config disables the server: it is listed, not started.
    pub skipped: Option<String>,
}

/// The servers of one config file.
#[derive(Debug)]
pub(super) struct Loaded {
    pub format: Format,
    pub entries: Vec<Entry>,
}

/// Servers of one scope of a JSON config: origin prefix, the servers object, the
/// working directory of stdio servers, and a label for names that repeat.
type Group<'a> = (
    String,
    &'a Map<String, Value>,
    Option<PathBuf>,
    Option<String>,
);

/// Reads `path`. An error here means nothing could be scanned.
pub(super) fn load(path: &Path, timeout: Duration) -> Result<Loaded, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    if text.trim_start().starts_with('{') {
        load_json(path, text, timeout)
    } else {
        load_sluice(path, timeout)
    }
}

fn load_sluice(path: &Path, timeout: Duration) -> Result<Loaded, Vec<String>> {
    let config = Config::load(path).map_err(|e| {
        let mut v: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
        v.push(format!(
            "{} is neither a valid Sluice config (TOML) nor an MCP client config (JSON)",
            path.display()
        ));
        v
    })?;
    let entries = config
        .servers
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            s.timeout = s.timeout.min(timeout);
            Entry {
                name: s.name.clone(),
                origin: format!("servers[{i}]"),
                key: s.name.clone(),
                server: Ok(s),
                skipped: None,
            }
        })
        .collect();
    Ok(Loaded {
        format: Format::Sluice,
        entries,
    })
}

fn load_json(path: &Path, text: &str, timeout: Duration) -> Result<Loaded, Vec<String>> {
    let doc: Value = serde_json::from_str(&strip_jsonc(text)).map_err(|e| {
        vec![format!(
            "{} is not valid JSON (comments and trailing commas allowed): {e}",
            path.display()
        )]
    })?;
    let Value::Object(root) = doc else {
        return Err(vec![format!("{}: not a JSON object", path.display())]);
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let parent_dir = path
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy());
    let in_dir = |d: &str| parent_dir.as_deref() == Some(d);
    let file_dir = absolute_dir(path);
    // The folder a project-level config belongs to: the parent of `.vscode`/`.cursor`,
    // else the file's own folder.
    let workspace = if in_dir(".vscode") || in_dir(".cursor") {
        file_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or(file_dir.clone())
    } else {
        file_dir.clone()
    };

    // (origin prefix, servers object, cwd, scope label for repeated names)
    let mut groups: Vec<Group<'_>> = Vec::new();
    let format;
    if let Some(servers) = root.get("mcpServers") {
        let Value::Object(servers) = servers else {
            return Err(vec!["`mcpServers` must be an object".into()]);
        };
        format = if file_name == "claude_desktop_config.json" {
            Format::ClaudeDesktop
        } else if in_dir(".cursor") {
            Format::Cursor
        } else if file_name == ".claude.json" || root.contains_key("projects") {
            Format::ClaudeCodeUser
        } else {
            Format::ClaudeCode
        };
        let cwd = match format {
            Format::ClaudeCode | Format::Cursor => Some(workspace.clone()),
            _ => None,
        };
        groups.push(("mcpServers".into(), servers, cwd, None));
    } else if root.contains_key("projects") {
        format = Format::ClaudeCodeUser;
    } else if let Some(servers) = root.get("servers") {
        let Value::Object(servers) = servers else {
            return Err(vec!["`servers` must be an object".into()]);
        };
        format = Format::VsCode;
        groups.push(("servers".into(), servers, Some(workspace.clone()), None));
    } else if let Some(Value::Object(servers)) = root.get("mcp").and_then(|m| m.get("servers")) {
        format = Format::VsCodeSettings;
        groups.push(("mcp.servers".into(), servers, Some(workspace.clone()), None));
    } else {
        return Err(vec![format!(
            "{}: no `mcpServers` (Claude Code, Claude Desktop, Cursor), `servers` (VS Code) \
             or `[[servers]]` (Sluice): not an MCP config",
            path.display()
        )]);
    }
    if format == Format::ClaudeCodeUser
        && let Some(Value::Object(projects)) = root.get("projects")
    {
        for (dir, project) in projects {
            if let Some(Value::Object(servers)) = project.get("mcpServers")
                && !servers.is_empty()
            {
                let cwd = Path::new(dir);
                groups.push((
                    format!("projects[{}].mcpServers", json_str(dir)),
                    servers,
                    cwd.is_dir().then(|| cwd.to_path_buf()),
                    cwd.file_name().map(|n| n.to_string_lossy().into_owned()),
                ));
            }
        }
    }

    let template = template_server();
    let vars = Vars {
        workspace: workspace.clone(),
        home: std::env::var("HOME").ok(),
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut seen: BTreeMap<String, (usize, String)> = BTreeMap::new(); // name -> (entry, identity)
    for (prefix, servers, cwd, scope) in groups {
        for (key, spec) in servers {
            let origin = format!("{prefix}.{}", key_path(key));
            let (server, skipped) =
                match convert(key, spec, format, &vars, cwd.as_deref(), timeout, &template) {
                    Ok((s, skipped)) => (Ok(s), skipped),
                    Err(e) => (Err(e), None),
                };
            let identity = match &server {
                Ok(s) => identity(s),
                Err(e) => format!("error:{e}"),
            };
            let mut name = key.clone();
            if let Some((i, id)) = seen.get(&name) {
                if *id == identity {
                    // The same server in another scope: scan it once.
                    entries[*i].origin.push_str(&format!(", {origin}"));
                    continue;
                }
                let base = match &scope {
                    Some(s) => format!("{key}@{s}"),
                    None => format!("{key}#2"),
                };
                name = base.clone();
                let mut n = 2;
                while seen.contains_key(&name) {
                    n += 1;
                    name = format!("{base}#{n}");
                }
            }
            seen.insert(name.clone(), (entries.len(), identity));
            let server = server.map(|mut s| {
                s.name = name.clone();
                s
            });
            entries.push(Entry {
                name,
                origin,
                key: key.clone(),
                server,
                skipped,
            });
        }
    }
    Ok(Loaded { format, entries })
}

/// A server with every default of a minimal Sluice config.
fn template_server() -> Server {
    let config = Config::parse("[[servers]]\nname = \"t\"\ncommand = \"t\"\n", &|_| None)
        .expect("a minimal config parses");
    config.servers.into_iter().next().expect("one server")
}

/// The default health settings (the probe is pushed out of the scan's way).
pub(super) fn quiet_health() -> sluice_config::Health {
    let config = Config::parse("", &|_| None).expect("an empty config parses");
    sluice_config::Health {
        interval: Duration::from_secs(3600),
        ..config.health
    }
}

fn identity(s: &Server) -> String {
    match &s.transport {
        Transport::Stdio {
            command,
            args,
            env,
            cwd,
        } => {
            let env: Vec<String> = env
                .iter()
                .map(|(k, v)| format!("{k}={}", v.expose()))
                .collect();
            format!(
                "stdio\0{command}\0{}\0{}\0{cwd:?}",
                args.join("\0"),
                env.join("\0")
            )
        }
        Transport::Http { url, headers, mode } => {
            let h: Vec<String> = headers
                .iter()
                .map(|(k, v)| format!("{k}={}", v.expose()))
                .collect();
            format!("http\0{url}\0{}\0{mode:?}", h.join("\0"))
        }
    }
}

/// A short description of how a server is reached (no secrets).
pub(super) fn describe(s: &Server) -> String {
    match &s.transport {
        Transport::Stdio { command, args, .. } => {
            let mut d = format!("stdio: {command}");
            for a in args.iter().take(6) {
                d.push(' ');
                d.push_str(a);
            }
            if args.len() > 6 {
                d.push_str(" …");
            }
            d
        }
        Transport::Http { url, mode, .. } => {
            let kind = match mode {
                HttpMode::Sse => "sse",
                _ => "http",
            };
            // Drop any query string: it may hold a token.
            let shown = url.split(['?', '#']).next().unwrap_or(url);
            format!("{kind}: {shown}")
        }
    }
}

fn json_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// `name`, or `["odd name"]` when it is not a plain identifier.
fn key_path(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        format!("[{}]", json_str(k))
    }
}

fn absolute_dir(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// What `${...}` references resolve to.
struct Vars {
    workspace: PathBuf,
    home: Option<String>,
}

impl Vars {
    /// Expands `${VAR}`, `${VAR:-default}` (Claude Code), `${env:VAR}`, `${userHome}`,
    /// `${workspaceFolder}`, `${workspaceFolderBasename}`, `${pathSeparator}`, `${/}`
    /// (VS Code, Cursor). `${input:ID}` and anything else cannot be resolved here.
    fn expand(&self, field: &str, s: &str) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                return Err(format!("`{field}`: unterminated `${{`"));
            };
            let expr = &after[..end];
            let value = if let Some(var) = expr.strip_prefix("env:") {
                std::env::var(var).unwrap_or_default()
            } else if let Some(id) = expr.strip_prefix("input:") {
                return Err(format!(
                    "`{field}` uses `${{input:{id}}}`, a value the editor prompts for; \
                     sluice scan cannot prompt: put the value (or `${{env:VAR}}`) in a copy of the config"
                ));
            } else {
                match expr {
                    "userHome" => self.home.clone().ok_or_else(|| {
                        format!("`{field}` uses `${{userHome}}` but HOME is not set")
                    })?,
                    "workspaceFolder" => self.workspace.display().to_string(),
                    "workspaceFolderBasename" => self
                        .workspace
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    "pathSeparator" | "/" => "/".to_string(),
                    _ if expr.contains(':') && !expr.contains(":-") => {
                        return Err(format!(
                            "`{field}`: `${{{expr}}}` cannot be resolved outside the editor"
                        ));
                    }
                    _ => {
                        let (var, default) = match expr.split_once(":-") {
                            Some((v, d)) => (v, Some(d)),
                            None => (expr, None),
                        };
                        match (std::env::var(var), default) {
                            (Ok(v), _) => v,
                            (Err(_), Some(d)) => d.to_string(),
                            (Err(_), None) => {
                                return Err(format!(
                                    "`{field}`: environment variable {var} is not set"
                                ));
                            }
                        }
                    }
                }
            };
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A scalar config value as text (numbers and booleans are written as they read).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// One JSON server entry → a Sluice server (and whether the config disables it).
fn convert(
    key: &str,
    spec: &Value,
    format: Format,
    vars: &Vars,
    cwd: Option<&Path>,
    timeout: Duration,
    template: &Server,
) -> Result<(Server, Option<String>), String> {
    let Value::Object(o) = spec else {
        return Err("the entry is not a JSON object".into());
    };
    let ex = |field: &str, s: &str| -> Result<String, String> {
        if format.expands() {
            vars.expand(field, s)
        } else {
            Ok(s.to_string())
        }
    };
    let get_str = |field: &str| -> Result<Option<String>, String> {
        match o.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => ex(field, s).map(Some),
            Some(_) => Err(format!("`{field}` must be a string")),
        }
    };
    let get_map = |field: &str| -> Result<Vec<(String, Secret)>, String> {
        match o.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(m)) => m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let s = scalar(v).ok_or_else(|| format!("`{field}.{k}` must be a string"))?;
                    Ok((k.clone(), Secret(ex(&format!("{field}.{k}"), &s)?)))
                })
                .collect(),
            Some(_) => Err(format!("`{field}` must be an object of strings")),
        }
    };
    let skipped = match o.get("disabled") {
        Some(Value::Bool(true)) => Some("disabled in the config".to_string()),
        _ => None,
    };
    let kind = match o.get("type").or_else(|| o.get("transport")) {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.to_ascii_lowercase()),
        Some(_) => return Err("`type` must be a string".into()),
    };
    let command = get_str("command")?.filter(|c| !c.trim().is_empty());
    let url = match get_str("url")? {
        Some(u) => Some(u),
        None => get_str("serverUrl")?,
    };
    let stdio = match (kind.as_deref(), &command, &url) {
        (Some("stdio"), Some(_), _) => true,
        (Some("stdio"), None, _) => {
            return Err("`type` is \"stdio\" but `command` is missing".into());
        }
        (Some("http" | "streamable-http" | "streamablehttp" | "sse"), _, Some(_)) => false,
        (Some(t @ ("http" | "streamable-http" | "streamablehttp" | "sse")), _, None) => {
            return Err(format!("`type` is \"{t}\" but `url` is missing"));
        }
        (Some(t), _, _) => {
            return Err(format!(
                "transport type `{t}` is not supported (use \"stdio\", \"http\" or \"sse\")"
            ));
        }
        (None, Some(_), Some(_)) => {
            return Err("set either `command` (stdio) or `url` (HTTP), not both".into());
        }
        (None, Some(_), None) => true,
        (None, None, Some(_)) => false,
        (None, None, None) => {
            return Err("neither `command` (stdio) nor `url` (HTTP) is set".into());
        }
    };
    let transport = if stdio {
        let command = command.expect("checked");
        let args = match o.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let s = scalar(v).ok_or_else(|| format!("`args[{i}]` must be a string"))?;
                    ex(&format!("args[{i}]"), &s)
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("`args` must be an array of strings".into()),
        };
        let cwd = match get_str("cwd")? {
            Some(d) => {
                let d = PathBuf::from(d);
                Some(match cwd {
                    Some(base) if d.is_relative() => base.join(d),
                    _ => d,
                })
            }
            None => cwd.map(Path::to_path_buf),
        };
        let mut env = Vec::new();
        if let Some(file) = get_str("envFile")? {
            let file = match cwd.as_deref() {
                Some(base) if Path::new(&file).is_relative() => base.join(&file),
                _ => PathBuf::from(&file),
            };
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("`envFile` {}: {e}", file.display()))?;
            env.extend(parse_dotenv(&text));
        }
        for (k, v) in get_map("env")? {
            env.retain(|(ek, _): &(String, Secret)| *ek != k);
            env.push((k, v));
        }
        Transport::Stdio {
            command,
            args,
            env,
            cwd,
        }
    } else {
        let url = url.expect("checked");
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "`url` must be an http:// or https:// URL, got `{url}`"
            ));
        }
        if command.is_some() {
            return Err("an HTTP server (`url`) takes no `command`".into());
        }
        Transport::Http {
            url,
            headers: get_map("headers")?,
            mode: if kind.as_deref() == Some("sse") {
                HttpMode::Sse
            } else {
                HttpMode::Auto
            },
        }
    };
    Ok((
        Server {
            name: key.to_string(),
            prefix: String::new(),
            required: false,
            timeout,
            transport,
            ..template.clone()
        },
        skipped,
    ))
}

/// `KEY=value` lines of a dotenv file (`#` comments, optional `export `, quotes).
fn parse_dotenv(text: &str) -> Vec<(String, Secret)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), Secret(v.to_string())))
        })
        .collect()
}

/// JSON with comments (`//`, `/* */`) and trailing commas → JSON. Comments become
/// spaces (newlines kept), so error positions still match the file.
pub(super) fn strip_jsonc(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c);
            if c == '\\' && i + 1 < b.len() {
                out.push(b[i + 1]);
                i += 2;
                continue;
            }
            if c == '"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
                i += 1;
            }
            '/' if b.get(i + 1) == Some(&'/') => {
                while i < b.len() && b[i] != '\n' {
                    out.push(' ');
                    i += 1;
                }
            }
            '/' if b.get(i + 1) == Some(&'*') => {
                out.push_str("  ");
                i += 2;
                while i < b.len() && !(b[i] == '*' && b.get(i + 1) == Some(&'/')) {
                    out.push(if b[i] == '\n' { '\n' } else { ' ' });
                    i += 1;
                }
                if i < b.len() {
                    out.push_str("  ");
                    i += 2;
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    // Trailing commas: a comma followed (after whitespace) by `}` or `]`.
    let b: Vec<char> = out.chars().collect();
    let mut res = String::with_capacity(out.len());
    let mut in_str = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_str {
            res.push(c);
            if c == '\\' && i + 1 < b.len() {
                res.push(b[i + 1]);
                i += 2;
                continue;
            }
            if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
            res.push(c);
        } else if c == ',' {
            let mut j = i + 1;
            while j < b.len() && b[j].is_whitespace() {
                j += 1;
            }
            res.push(if matches!(b.get(j), Some('}' | ']')) {
                ' '
            } else {
                ','
            });
        } else {
            res.push(c);
        }
        i += 1;
    }
    res
}

/// The 1-based line where a server's key first appears in the file, if found.
pub(super) fn key_line(text: &str, key: &str, format: Format) -> Option<usize> {
    let needles: Vec<String> = if format == Format::Sluice {
        vec![format!("\"{key}\""), format!("'{key}'")]
    } else {
        vec![json_str(key)]
    };
    text.lines().enumerate().find_map(|(i, l)| {
        let hit = needles.iter().any(|n| {
            l.find(n.as_str()).is_some_and(|p| {
                let after = l[p + n.len()..].trim_start();
                if format == Format::Sluice {
                    l[..p].trim_end().ends_with('=') && l.trim_start().starts_with("name")
                } else {
                    after.starts_with(':')
                }
            })
        });
        hit.then_some(i + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonc_comments_and_trailing_commas() {
        let t = "{\n // c\n \"a\": \"x // y\", /* z */\n \"b\": [1, 2,],\n}";
        let v: Value = serde_json::from_str(&strip_jsonc(t)).unwrap();
        assert_eq!(v["a"], "x // y");
        assert_eq!(v["b"][1], 2);
    }

    #[test]
    fn expansion() {
        let vars = Vars {
            workspace: PathBuf::from("/w/proj"),
            home: Some("/home/u".into()),
        };
        assert_eq!(
            vars.expand(
                "f",
                "${workspaceFolder}/a ${userHome} ${workspaceFolderBasename}"
            )
            .unwrap(),
            "/w/proj/a /home/u proj"
        );
        assert_eq!(
            vars.expand("f", "${SLUICE_SURELY_UNSET_X:-d}").unwrap(),
            "d"
        );
        assert_eq!(
            vars.expand("f", "${env:SLUICE_SURELY_UNSET_X}").unwrap(),
            ""
        );
        assert!(vars.expand("f", "${SLUICE_SURELY_UNSET_X}").is_err());
        assert!(
            vars.expand("f", "${input:token}")
                .unwrap_err()
                .contains("input:token")
        );
    }

    #[test]
    fn key_lines() {
        let t = "{\n  \"mcpServers\": {\n    \"gh\": {\"command\": \"gh\"}\n  }\n}";
        assert_eq!(key_line(t, "gh", Format::ClaudeCode), Some(3));
        let t = "[[servers]]\nname = \"gh\"\ncommand = \"gh\"\n";
        assert_eq!(key_line(t, "gh", Format::Sluice), Some(2));
    }
}
