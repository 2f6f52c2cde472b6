//! Requirement → pool mapper (upstream `lnst/Controller/MachineMapper.py`).
//!
//! A deterministic depth-first search with backtracking: requirement hosts in ascending id
//! order, each tried on the still-free pool machines in ascending id order; then that host's
//! requirement interfaces in ascending id order, each tried on the machine's free interfaces
//! in ascending id order. Host and interface params are compared by exact string equality
//! (an empty requirement value means "no constraint"; `hwaddr` is compared
//! case-insensitively). Requirement network labels map one-to-one onto pool labels.
//!
//! Differences from upstream, on purpose:
//! * a requirement host without interfaces is fine (upstream crashes with `IndexError`);
//! * with `multimatch`, matches come in plain DFS order over sorted ids (upstream re-tries
//!   machines freed by backtracking first, which only changes the order);
//! * a failure says which requirement could not be satisfied and why;
//! * the search is bounded ([`MAX_STEPS`]) so a huge pool cannot hang the controller, and with
//!   `multimatch` at most [`MAX_MATCHES`] matches are enumerated (1000 machines gave a million
//!   matches: 3.7 GB before any agent was contacted); more is an error, not a silent cut.

use crate::pool::{Pool, PoolInterface, PoolMachine};
use crate::requirements::{DeviceReq, HostReq, Requirements};
use crate::results::model::{InterfaceMatch, MachineMatch, MatchDescription};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Upper bound on search nodes visited.
pub const MAX_STEPS: u64 = 5_000_000;
/// Most matches enumerated with `multimatch` (each one is a full run of the recipe).
pub const MAX_MATCHES: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapperError {
    #[error("pool '{0}' has no machines: nothing to map the recipe's hosts onto")]
    EmptyPool(String),
    #[error("the recipe requires no hosts: nothing to map")]
    NoRequirements,
    /// Nothing matched; the message names the requirement that could not be satisfied.
    #[error("This setup cannot be provisioned with the current pool: {0}")]
    Unsatisfiable(String),
    #[error("mapping search gave up after {0} steps (pool or requirements too large)")]
    TooLarge(u64),
    #[error("MULTIMATCH: the pool has more than {0} matches for the recipe's hosts; the limit is {0} (narrow the pool or the requirements, or unset MULTIMATCH)")]
    TooManyMatches(usize),
}

fn value_matches(key: &str, req: &str, have: Option<&String>) -> bool {
    match have {
        None => false,
        Some(h) if key == "hwaddr" => h.trim().eq_ignore_ascii_case(req.trim()),
        Some(h) => h == req,
    }
}

fn params_match(req: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    req.iter()
        .filter(|(_, v)| !v.is_empty())
        .all(|(k, v)| value_matches(k, v, have.get(k)))
}

/// First requirement param the pool side does not satisfy, as `k=v (has w)`.
fn param_mismatch(
    req: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> Option<String> {
    req.iter()
        .filter(|(_, v)| !v.is_empty())
        .find(|(k, v)| !value_matches(k, v, have.get(*k)))
        .map(|(k, v)| match have.get(k) {
            Some(h) => format!("{k}={h}, not {v}"),
            None => format!("no {k} (needs {v})"),
        })
}

fn fmt_req_params(p: &BTreeMap<String, String>) -> String {
    let v: Vec<String> = p
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if v.is_empty() {
        "no params".to_string()
    } else {
        v.join(", ")
    }
}

struct LabelEntry<'a> {
    pool_label: &'a str,
    count: usize,
    owner: (&'a str, &'a str),
}

/// Context saved at the deepest search point reached, for the failure diagnosis.
struct Deepest {
    position: usize,
    message: String,
}

enum Flow {
    Continue,
    Stop,
}

struct Search<'a> {
    hosts: Vec<(&'a str, &'a HostReq)>,
    ifaces: Vec<Vec<(&'a str, &'a DeviceReq)>>,
    /// Position (in frames) where each host starts.
    host_pos: Vec<usize>,
    machines: Vec<&'a PoolMachine>,
    machine_owner: Vec<Option<usize>>,
    host_assign: Vec<usize>,
    iface_assign: Vec<Vec<&'a PoolInterface>>,
    iface_used: HashSet<(usize, &'a str)>,
    labels: BTreeMap<&'a str, LabelEntry<'a>>,
    pool_labels: BTreeMap<&'a str, &'a str>,
    pool_name: &'a str,
    multimatch: bool,
    steps: u64,
    found: Vec<MatchDescription>,
    deepest: Option<Deepest>,
}

impl<'a> Search<'a> {
    fn step(&mut self) -> Result<(), MapperError> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(MapperError::TooLarge(MAX_STEPS));
        }
        Ok(())
    }

    fn note_deepest(&mut self, position: usize, make: impl FnOnce(&Self) -> String) {
        if self.deepest.as_ref().is_none_or(|d| position > d.position) {
            let message = make(self);
            self.deepest = Some(Deepest { position, message });
        }
    }

    fn emit(&mut self) -> Result<(), MapperError> {
        if self.found.len() >= MAX_MATCHES {
            return Err(MapperError::TooManyMatches(MAX_MATCHES));
        }
        let mut md = MatchDescription {
            pool_name: self.pool_name.to_string(),
            ..Default::default()
        };
        for (hi, (hid, _)) in self.hosts.iter().enumerate() {
            let (Some(&mi), Some(assigned)) = (self.host_assign.get(hi), self.iface_assign.get(hi))
            else {
                continue;
            };
            let Some(m) = self.machines.get(mi) else {
                continue;
            };
            let mut mm = MachineMatch {
                target: m.id.clone(),
                hostname: m.hostname().to_string(),
                interfaces: BTreeMap::new(),
            };
            let ifs = self.ifaces.get(hi).map(Vec::as_slice).unwrap_or(&[]);
            for ((rid, _), pif) in ifs.iter().zip(assigned.iter()) {
                mm.interfaces.insert(
                    rid.to_string(),
                    InterfaceMatch {
                        target: pif.id.clone(),
                        hwaddr: pif.hwaddr().to_string(),
                    },
                );
            }
            md.machines.insert(hid.to_string(), mm);
        }
        for (req, e) in &self.labels {
            md.networks
                .insert(req.to_string(), e.pool_label.to_string());
        }
        self.found.push(md);
        Ok(())
    }

    fn host_frame(&mut self, hi: usize) -> Result<Flow, MapperError> {
        self.step()?;
        let Some(&(hid, hreq)) = self.hosts.get(hi) else {
            self.emit()?;
            return Ok(if self.multimatch {
                Flow::Continue
            } else {
                Flow::Stop
            });
        };
        let pos = self.host_pos.get(hi).copied().unwrap_or(0);
        self.note_deepest(pos, |s| s.explain_host(hid, hreq));
        for mi in 0..self.machines.len() {
            let Some(&m) = self.machines.get(mi) else {
                break;
            };
            if self.machine_owner.get(mi).copied().flatten().is_some()
                || !params_match(&hreq.params, &m.params)
            {
                continue;
            }
            if let Some(o) = self.machine_owner.get_mut(mi) {
                *o = Some(hi);
            }
            self.host_assign.push(mi);
            self.iface_assign.push(Vec::new());
            let flow = self.iface_frame(hi, mi, 0);
            self.iface_assign.pop();
            self.host_assign.pop();
            if let Some(o) = self.machine_owner.get_mut(mi) {
                *o = None;
            }
            if let Flow::Stop = flow? {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    /// Whether pool interface `pif` can take a requirement interface on `req_label`.
    fn label_ok(&self, req_label: &str, pif: &PoolInterface) -> bool {
        match self.labels.get(req_label) {
            Some(e) => e.pool_label == pif.label,
            None => !self.pool_labels.contains_key(pif.label.as_str()),
        }
    }

    fn iface_frame(&mut self, hi: usize, mi: usize, ii: usize) -> Result<Flow, MapperError> {
        self.step()?;
        let Some(&(rid, dreq)) = self.ifaces.get(hi).and_then(|v| v.get(ii)) else {
            return self.host_frame(hi + 1);
        };
        let hid = self.hosts.get(hi).map(|h| h.0).unwrap_or_default();
        let Some(&m) = self.machines.get(mi) else {
            return Ok(Flow::Continue);
        };
        let pos = self.host_pos.get(hi).copied().unwrap_or(0) + 1 + ii;
        self.note_deepest(pos, |s| s.explain_iface(hid, m, mi, rid, dreq));
        for pif in m.interfaces.values() {
            if self.iface_used.contains(&(mi, pif.id.as_str()))
                || !params_match(&dreq.params, &pif.params)
                || !self.label_ok(&dreq.label, pif)
            {
                continue;
            }
            self.iface_used.insert((mi, pif.id.as_str()));
            let entry = self
                .labels
                .entry(dreq.label.as_str())
                .or_insert(LabelEntry {
                    pool_label: pif.label.as_str(),
                    count: 0,
                    owner: (hid, rid),
                });
            entry.count += 1;
            self.pool_labels
                .insert(pif.label.as_str(), dreq.label.as_str());
            if let Some(v) = self.iface_assign.last_mut() {
                v.push(pif);
            }
            let flow = self.iface_frame(hi, mi, ii + 1);
            if let Some(v) = self.iface_assign.last_mut() {
                v.pop();
            }
            let remove = match self.labels.get_mut(dreq.label.as_str()) {
                Some(e) => {
                    e.count = e.count.saturating_sub(1);
                    e.count == 0
                }
                None => false,
            };
            if remove {
                self.labels.remove(dreq.label.as_str());
                self.pool_labels.remove(pif.label.as_str());
            }
            self.iface_used.remove(&(mi, pif.id.as_str()));
            if let Flow::Stop = flow? {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    fn explain_host(&self, hid: &str, hreq: &HostReq) -> String {
        let mut taken = Vec::new();
        for (mi, m) in self.machines.iter().enumerate() {
            if !params_match(&hreq.params, &m.params) {
                continue;
            }
            if let Some(owner) = self.machine_owner.get(mi).copied().flatten() {
                let by = self.hosts.get(owner).map(|h| h.0).unwrap_or("?");
                taken.push(format!("{} is used by {by}", m.id));
            }
        }
        if taken.is_empty() {
            format!(
                "no pool machine satisfies {hid} (needs {})",
                fmt_req_params(&hreq.params)
            )
        } else {
            format!(
                "no free pool machine satisfies {hid}: every machine with matching params is taken ({})",
                taken.join("; ")
            )
        }
    }

    fn explain_iface(
        &self,
        hid: &str,
        m: &PoolMachine,
        mi: usize,
        rid: &str,
        dreq: &DeviceReq,
    ) -> String {
        let mut why = Vec::new();
        for pif in m.interfaces.values() {
            let reason = if self.iface_used.contains(&(mi, pif.id.as_str())) {
                "already used by another interface of this host".to_string()
            } else if let Some(mm) = param_mismatch(&dreq.params, &pif.params) {
                mm
            } else if let Some(e) = self.labels.get(dreq.label.as_str()) {
                format!(
                    "is on pool network {}, but {} is mapped to {} (by {}.{})",
                    pif.label, dreq.label, e.pool_label, e.owner.0, e.owner.1
                )
            } else if let Some(other) = self.pool_labels.get(pif.label.as_str()) {
                format!(
                    "is on pool network {}, which requirement network {other} already uses",
                    pif.label
                )
            } else {
                continue;
            };
            why.push(format!("{} {reason}", pif.id));
        }
        let detail = if why.is_empty() {
            format!("{} has no interface left", m.id)
        } else {
            format!("on {}: {}", m.id, why.join("; "))
        };
        format!(
            "no pool machine satisfies {hid} (needs interface {rid} on network {} with {}); deepest attempt {detail}",
            dreq.label,
            fmt_req_params(&dreq.params)
        )
    }
}

/// Cheap necessary conditions checked before the search, for a precise message.
fn precheck(reqs: &Requirements, pool: &Pool) -> Result<(), MapperError> {
    if pool.machines.is_empty() {
        return Err(MapperError::EmptyPool(pool.name.clone()));
    }
    if reqs.hosts.is_empty() {
        return Err(MapperError::NoRequirements);
    }
    if reqs.hosts.len() > pool.machines.len() {
        return Err(MapperError::Unsatisfiable(format!(
            "the recipe needs {} hosts but pool '{}' has {} machine(s)",
            reqs.hosts.len(),
            pool.name,
            pool.machines.len()
        )));
    }
    let req_labels = reqs.labels().len();
    let pool_labels: BTreeSet<&str> = pool
        .machines
        .values()
        .flat_map(|m| m.interfaces.values().map(|i| i.label.as_str()))
        .collect();
    for (hid, h) in &reqs.hosts {
        let cands: Vec<&PoolMachine> = pool
            .machines
            .values()
            .filter(|m| params_match(&h.params, &m.params))
            .collect();
        if cands.is_empty() {
            let closest = pool
                .machines
                .values()
                .filter_map(|m| {
                    param_mismatch(&h.params, &m.params).map(|w| format!("{}: {w}", m.id))
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(MapperError::Unsatisfiable(format!(
                "no pool machine satisfies {hid} (needs {}; {closest})",
                fmt_req_params(&h.params)
            )));
        }
        for (rid, d) in &h.interfaces {
            if !cands.iter().any(|m| {
                m.interfaces
                    .values()
                    .any(|i| params_match(&d.params, &i.params))
            }) {
                let names: Vec<&str> = cands.iter().map(|m| m.id.as_str()).collect();
                return Err(MapperError::Unsatisfiable(format!(
                    "no pool machine satisfies {hid}: no interface of {} matches {hid}.{rid} ({})",
                    names.join(", "),
                    fmt_req_params(&d.params)
                )));
            }
        }
        let most = cands.iter().map(|m| m.interfaces.len()).max().unwrap_or(0);
        if most < h.interfaces.len() {
            return Err(MapperError::Unsatisfiable(format!(
                "no pool machine satisfies {hid}: it needs {} interfaces, the candidate machines have at most {most}",
                h.interfaces.len()
            )));
        }
    }
    if req_labels > pool_labels.len() {
        return Err(MapperError::Unsatisfiable(format!(
            "the recipe needs {req_labels} distinct networks but pool '{}' has {} network label(s)",
            pool.name,
            pool_labels.len()
        )));
    }
    Ok(())
}

/// Map the recipe's requirements onto the pool. Returns the first match, or every match in
/// DFS order when `multimatch` is set.
pub fn map(
    reqs: &Requirements,
    pool: &Pool,
    multimatch: bool,
) -> Result<Vec<MatchDescription>, MapperError> {
    precheck(reqs, pool)?;
    let hosts: Vec<(&str, &HostReq)> = reqs.hosts.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ifaces: Vec<Vec<(&str, &DeviceReq)>> = hosts
        .iter()
        .map(|(_, h)| h.interfaces.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .collect();
    let mut host_pos = Vec::with_capacity(hosts.len());
    let mut p = 0;
    for v in &ifaces {
        host_pos.push(p);
        p += 1 + v.len();
    }
    let machines: Vec<&PoolMachine> = pool.machines.values().collect();
    let mut s = Search {
        machine_owner: vec![None; machines.len()],
        hosts,
        ifaces,
        host_pos,
        machines,
        host_assign: Vec::new(),
        iface_assign: Vec::new(),
        iface_used: HashSet::new(),
        labels: BTreeMap::new(),
        pool_labels: BTreeMap::new(),
        pool_name: &pool.name,
        multimatch,
        steps: 0,
        found: Vec::new(),
        deepest: None,
    };
    s.host_frame(0)?;
    tracing::debug!(matches = s.found.len(), steps = s.steps, "mapper finished");
    if s.found.is_empty() {
        let why = s
            .deepest
            .map(|d| d.message)
            .unwrap_or_else(|| "no match found".to_string());
        return Err(MapperError::Unsatisfiable(why));
    }
    Ok(s.found)
}

/// Upstream's `format_match_description` lines (hosts and interfaces sorted by id).
pub fn describe_match(m: &MatchDescription) -> Vec<String> {
    let mut out = vec!["Pool match description:".to_string()];
    if m.is_virtual {
        out.push("  Setup is using virtual machines.".to_string());
    }
    for (hid, mm) in &m.machines {
        out.push(format!("  host \"{hid}\" uses \"{}\"", mm.target));
        for (iid, im) in &mm.interfaces {
            out.push(format!(
                "    interface \"{iid}\" matched to \"{}\"",
                im.target
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_value_is_no_constraint_and_hwaddr_is_case_insensitive() {
        let have = p(&[("driver", "ice"), ("hwaddr", "52:54:00:aa:bb:cc")]);
        assert!(params_match(&p(&[("driver", "")]), &have));
        assert!(params_match(&p(&[("hwaddr", "52:54:00:AA:BB:CC")]), &have));
        assert!(!params_match(&p(&[("driver", "ICE")]), &have));
        assert!(!params_match(&p(&[("speed", "10G")]), &have));
        assert_eq!(
            param_mismatch(&p(&[("driver", "ixgbe")]), &have).as_deref(),
            Some("driver=ice, not ixgbe")
        );
    }

    /// A pool of `n` machines with one interface each on network `net1`, and requirements of
    /// two hosts with one interface each on one network (SimpleNetworkRecipe's shape).
    fn wide(n: usize) -> (Pool, Requirements) {
        let mut pool = Pool {
            name: "default".into(),
            machines: BTreeMap::new(),
        };
        for i in 0..n {
            let id = format!("m{i:04}");
            let iface = PoolInterface {
                id: "eth0".into(),
                label: "net1".into(),
                params: p(&[(
                    "hwaddr",
                    &format!("52:54:00:00:{:02x}:{:02x}", i / 256, i % 256),
                )]),
            };
            pool.machines.insert(
                id.clone(),
                PoolMachine {
                    id: id.clone(),
                    params: p(&[("hostname", &format!("127.0.{}.{}", i / 256, i % 256 + 1))]),
                    interfaces: BTreeMap::from([("eth0".to_string(), iface)]),
                    security: crate::pool::Security::None,
                    source: std::path::PathBuf::from(format!("/pool/{id}.xml")),
                },
            );
        }
        let mut reqs = Requirements::default();
        for h in ["host1", "host2"] {
            let mut hr = HostReq::default();
            hr.interfaces.insert(
                "eth0".into(),
                DeviceReq {
                    label: "net1".into(),
                    params: BTreeMap::new(),
                },
            );
            reqs.hosts.insert(h.into(), hr);
        }
        (pool, reqs)
    }

    #[test]
    fn multimatch_is_capped() {
        // 33 machines: 33 × 32 = 1056 ordered pairs, just above the cap.
        let (pool, reqs) = wide(33);
        assert_eq!(
            map(&reqs, &pool, true),
            Err(MapperError::TooManyMatches(MAX_MATCHES))
        );
        let e = MapperError::TooManyMatches(MAX_MATCHES).to_string();
        assert!(
            e.starts_with("MULTIMATCH: the pool has more than 1000 matches"),
            "{e}"
        );
        // 32 machines: 992 matches, all enumerated; without MULTIMATCH only the first.
        let (pool, reqs) = wide(32);
        assert_eq!(map(&reqs, &pool, true).map(|m| m.len()), Ok(992));
        assert_eq!(map(&reqs, &pool, false).map(|m| m.len()), Ok(1));
        // 1000 machines (a million matches): stopped at the cap, after few search steps.
        let (pool, reqs) = wide(1000);
        assert_eq!(
            map(&reqs, &pool, true),
            Err(MapperError::TooManyMatches(MAX_MATCHES))
        );
        assert_eq!(map(&reqs, &pool, false).map(|m| m.len()), Ok(1));
    }

    #[test]
    fn describe_virtual() {
        let m = MatchDescription {
            is_virtual: true,
            ..Default::default()
        };
        assert_eq!(
            describe_match(&m),
            vec![
                "Pool match description:".to_string(),
                "  Setup is using virtual machines.".to_string()
            ]
        );
    }
}
