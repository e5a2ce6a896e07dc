//! The catalog: the configured servers and what the gateway knows of their
//! lists (tools, prompts, resources, templates), by [`ServerId`].
//!
//! The rest of the gateway names a server only by its id and asks the
//! catalog; the catalog is the one place that turns an id into a position,
//! so hot reload can change how servers are held without touching callers.

use crate::defence::Hold;
use serde_json::Value;
use sluice_mcp::names;
use sluice_pipeline::ServerId;
use sluice_upstream::Upstream;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// The four aggregated lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tools = 0,
    Prompts = 1,
    Resources = 2,
    Templates = 3,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] =
        [Kind::Tools, Kind::Prompts, Kind::Resources, Kind::Templates];
    pub(crate) fn method(self) -> &'static str {
        match self {
            Kind::Tools => "tools/list",
            Kind::Prompts => "prompts/list",
            Kind::Resources => "resources/list",
            Kind::Templates => "resources/templates/list",
        }
    }
    pub(crate) fn key(self) -> &'static str {
        match self {
            Kind::Tools => "tools",
            Kind::Prompts => "prompts",
            Kind::Resources => "resources",
            Kind::Templates => "resourceTemplates",
        }
    }
    pub(crate) fn capability(self) -> &'static str {
        match self {
            Kind::Tools => "tools",
            Kind::Prompts => "prompts",
            Kind::Resources | Kind::Templates => "resources",
        }
    }
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Kind::Tools => "tool",
            Kind::Prompts => "prompt",
            Kind::Resources | Kind::Templates => "resource",
        }
    }
}

/// What the gateway knows of one upstream's lists.
#[derive(Default)]
struct Cache {
    lists: [Option<Arc<Vec<Value>>>; 4],
    /// Exposed name → upstream name, for tools and prompts.
    names: [HashMap<String, String>; 2],
    uris: HashSet<String>,
    /// Literal prefixes of resource templates (text before the first `{`).
    template_prefixes: Vec<String>,
    /// Tools held back (poisoned, or changed since approved), by the server's own name.
    held: HashMap<String, Hold>,
    /// The server's instructions may be given to clients (checked by the defence).
    instructions_allowed: bool,
}

/// The configured servers and their cached lists.
pub(crate) struct Catalog {
    servers: Vec<Arc<Upstream>>,
    caches: Vec<Mutex<Cache>>,
}

impl Catalog {
    /// A catalog of `servers`, each with the id the catalog issued it
    /// (`ServerId::new(position)`), nothing listed yet.
    pub(crate) fn new(servers: Vec<Arc<Upstream>>) -> Catalog {
        debug_assert!(
            servers
                .iter()
                .enumerate()
                .all(|(i, s)| s.id == ServerId::new(i as u32))
        );
        Catalog {
            caches: servers
                .iter()
                .map(|_| Mutex::new(Cache::default()))
                .collect(),
            servers,
        }
    }

    /// The id the next server added gets.
    pub(crate) fn id_at(position: usize) -> ServerId {
        ServerId::new(position as u32)
    }

    /// Every configured server, in configuration order.
    pub(crate) fn servers(&self) -> &[Arc<Upstream>] {
        &self.servers
    }

    /// The server with id `id`.
    pub(crate) fn server(&self, id: ServerId) -> &Arc<Upstream> {
        &self.servers[id.get() as usize]
    }

    /// The server configured under `name`.
    pub(crate) fn named(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.servers.iter().find(|u| u.name() == name)
    }

    fn cache(&self, id: ServerId) -> MutexGuard<'_, Cache> {
        self.caches[id.get() as usize].lock().unwrap()
    }

    /// Server `id`'s cached list of `kind`, if fetched.
    pub(crate) fn list(&self, id: ServerId, kind: Kind) -> Option<Arc<Vec<Value>>> {
        self.cache(id).lists[kind as usize].clone()
    }

    /// Whether server `id`'s list of `kind` has been fetched.
    pub(crate) fn has_list(&self, id: ServerId, kind: Kind) -> bool {
        self.cache(id).lists[kind as usize].is_some()
    }

    /// Records a freshly fetched list and the names and URIs it routes.
    pub(crate) fn store_list(&self, id: ServerId, kind: Kind, list: Arc<Vec<Value>>) {
        let prefix = &self.server(id).config.prefix;
        let mut c = self.cache(id);
        match kind {
            Kind::Tools | Kind::Prompts => {
                let map = &mut c.names[kind as usize];
                map.clear();
                for item in list.iter() {
                    if let Some(n) = item.get("name").and_then(Value::as_str) {
                        map.insert(names::expose(prefix, n), n.to_string());
                    }
                }
            }
            Kind::Resources => {
                c.uris = list
                    .iter()
                    .filter_map(|r| r.get("uri").and_then(Value::as_str).map(str::to_string))
                    .collect();
            }
            Kind::Templates => {
                c.template_prefixes = list
                    .iter()
                    .filter_map(|t| t.get("uriTemplate").and_then(Value::as_str))
                    .map(|t| t.split('{').next().unwrap_or_default().to_string())
                    .filter(|p| !p.is_empty())
                    .collect();
            }
        }
        c.lists[kind as usize] = Some(list);
    }

    /// Forgets server `id`'s lists of `kinds` (they are fetched again on next use).
    pub(crate) fn invalidate(&self, id: ServerId, kinds: &[Kind]) {
        let mut c = self.cache(id);
        for k in kinds {
            c.lists[*k as usize] = None;
        }
    }

    /// The one "find a tool by name" lookup: server `id`'s definition of
    /// tool `name` (its own name), as it listed it.
    pub(crate) fn tool(&self, id: ServerId, name: &str) -> Option<Value> {
        let list = self.list(id, Kind::Tools)?;
        find_tool(&list, name).cloned()
    }

    /// Exposed tool or prompt name → (server, the server's own name), from the cached lists.
    pub(crate) fn lookup_name(&self, kind: Kind, exposed: &str) -> Option<(ServerId, String)> {
        self.servers.iter().find_map(|u| {
            self.cache(u.id).names[kind as usize]
                .get(exposed)
                .map(|n| (u.id, n.clone()))
        })
    }

    /// A resource URI's server: a listed URI, else the longest template prefix.
    pub(crate) fn lookup_uri(&self, uri: &str) -> Option<ServerId> {
        let mut best: Option<(ServerId, usize)> = None;
        for u in &self.servers {
            let c = self.cache(u.id);
            if c.uris.contains(uri) {
                return Some(u.id);
            }
            for p in &c.template_prefixes {
                if uri.starts_with(p.as_str()) && best.is_none_or(|(_, len)| p.len() > len) {
                    best = Some((u.id, p.len()));
                }
            }
        }
        best.map(|(u, _)| u)
    }

    /// Whether server `id` lists a resource or template under `scheme` (`file://`).
    pub(crate) fn uses_scheme(&self, id: ServerId, scheme: &str) -> bool {
        let c = self.cache(id);
        c.uris.iter().any(|x| x.starts_with(scheme))
            || c.template_prefixes.iter().any(|x| x.starts_with(scheme))
    }

    /// Why tool `name` of server `id` is held back, if it is.
    pub(crate) fn hold(&self, id: ServerId, name: &str) -> Option<Hold> {
        self.cache(id).held.get(name).cloned()
    }

    /// The names of server `id`'s held-back tools.
    pub(crate) fn held_names(&self, id: ServerId) -> Vec<String> {
        self.cache(id).held.keys().cloned().collect()
    }

    /// Replaces the holds of server `id`'s tools.
    pub(crate) fn set_held(&self, id: ServerId, held: HashMap<String, Hold>) {
        self.cache(id).held = held;
    }

    /// Holds (or re-holds, with a new reason) one tool.
    pub(crate) fn set_hold(&self, id: ServerId, name: &str, hold: Hold) {
        self.cache(id).held.insert(name.to_string(), hold);
    }

    /// Releases one tool.
    pub(crate) fn release(&self, id: ServerId, name: &str) {
        self.cache(id).held.remove(name);
    }

    /// Whether server `id`'s instructions may be given to clients.
    pub(crate) fn instructions_allowed(&self, id: ServerId) -> bool {
        self.cache(id).instructions_allowed
    }

    /// Records the defence's verdict on server `id`'s instructions.
    pub(crate) fn set_instructions_allowed(&self, id: ServerId, ok: bool) {
        self.cache(id).instructions_allowed = ok;
    }
}

/// Tool `name` in a server's list.
pub(crate) fn find_tool<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter()
        .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
}
