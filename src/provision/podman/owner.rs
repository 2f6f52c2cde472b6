//! Who created a run's resources, so that `cleanup_leftovers` can tell a killed run from a live
//! one. Recorded in the label `lnst-runner.pid` as `<pid>:<start-time>:<pid-ns>:<boot-id>` (the
//! start time guards against pid reuse, the pid namespace says whether our `/proc` can see that
//! pid at all) and, when the creator runs inside a Podman container, `lnst-runner.container`
//! holds that container's id (then the engine says whether it still runs).

/// The creating process of a run's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerInfo {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    /// Inode of the creator's pid namespace (`/proc/self/ns/pid`).
    pub pid_ns: u64,
    /// `/proc/sys/kernel/random/boot_id` when the run was created.
    pub boot_id: String,
    /// Id of the Podman container the creator ran in, if any (`/run/.containerenv`).
    pub container: Option<String>,
}

/// What we can say about an owner from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    /// Another pid namespace and no container id: we cannot see it, so we leave it alone.
    Unknown,
}

impl OwnerInfo {
    /// The current process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start_time: proc_start_time(pid).unwrap_or(0),
            pid_ns: current_pid_ns().unwrap_or(0),
            boot_id: current_boot_id().unwrap_or_default(),
            container: current_container_id(),
        }
    }

    /// Value of the `lnst-runner.pid` label.
    pub fn label_value(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.pid, self.start_time, self.pid_ns, self.boot_id
        )
    }

    /// Parse a `lnst-runner.pid` label value (the container id comes from its own label).
    pub fn parse(value: &str, container: Option<&str>) -> Option<Self> {
        let mut it = value.splitn(4, ':');
        let pid = it.next()?.parse().ok()?;
        let start_time = it.next()?.parse().ok()?;
        let pid_ns = it.next()?.parse().ok()?;
        let boot_id = it.next()?.to_string();
        if boot_id.is_empty() {
            return None;
        }
        Some(Self {
            pid,
            start_time,
            pid_ns,
            boot_id,
            container: container.filter(|c| !c.is_empty()).map(str::to_string),
        })
    }

    /// Liveness judged from this process's view (`here`) for an owner that is not in a
    /// container (or whose container the caller already found gone/unknown).
    /// `start_time_of(pid)` reads a live process's start time.
    pub fn local_liveness(
        &self,
        here_boot_id: &str,
        here_pid_ns: u64,
        start_time_of: impl Fn(u32) -> Option<u64>,
    ) -> Liveness {
        if !here_boot_id.is_empty() && self.boot_id != here_boot_id {
            // The machine rebooted since: nothing of that run can be alive.
            return Liveness::Dead;
        }
        if self.pid_ns != here_pid_ns {
            return Liveness::Unknown;
        }
        match start_time_of(self.pid) {
            Some(t) if t == self.start_time => Liveness::Alive,
            _ => Liveness::Dead,
        }
    }
}

/// `/proc/<pid>/stat` field 22 (starttime). The command name may contain spaces and ')', so
/// fields are counted after the last ')'.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_start_time(&stat)
}

pub(crate) fn parse_stat_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')': field 3 (state) is the first; starttime is field 22 → index 19.
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub(crate) fn current_boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub(crate) fn current_pid_ns() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// The id of the Podman container we run in, from `/run/.containerenv` (`id="..."`).
fn current_container_id() -> Option<String> {
    let text = std::fs::read_to_string("/run/.containerenv").ok()?;
    parse_containerenv_id(&text)
}

pub(crate) fn parse_containerenv_id(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix("id=")?;
        let v = v.trim_matches('"');
        (!v.is_empty() && v.chars().all(|c| c.is_ascii_hexdigit())).then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnerInfo {
        OwnerInfo {
            pid: 4242,
            start_time: 987,
            pid_ns: 4026531836,
            boot_id: "0b5c1f0e-1111-2222-3333-444455556666".into(),
            container: None,
        }
    }

    #[test]
    fn label_round_trips() {
        let o = owner();
        assert_eq!(OwnerInfo::parse(&o.label_value(), None), Some(o.clone()));
        let with = OwnerInfo::parse(&o.label_value(), Some("abc")).unwrap();
        assert_eq!(with.container.as_deref(), Some("abc"));
    }

    #[test]
    fn bad_labels_are_rejected() {
        for v in ["", "12", "x:1:2:b", "1:2:3:", "1:2:y:b", "-1:2:3:b"] {
            assert_eq!(OwnerInfo::parse(v, None), None, "{v}");
        }
    }

    #[test]
    fn liveness_rules() {
        let o = owner();
        let boot = o.boot_id.clone();
        // Same boot, same pid ns, same start time: alive.
        assert_eq!(
            o.local_liveness(&boot, o.pid_ns, |_| Some(987)),
            Liveness::Alive
        );
        // Pid reused by another process: dead.
        assert_eq!(
            o.local_liveness(&boot, o.pid_ns, |_| Some(5)),
            Liveness::Dead
        );
        // No such pid: dead.
        assert_eq!(o.local_liveness(&boot, o.pid_ns, |_| None), Liveness::Dead);
        // Rebooted: dead, whatever the pid says.
        assert_eq!(
            o.local_liveness("other-boot", o.pid_ns, |_| Some(987)),
            Liveness::Dead
        );
        // Another pid namespace: unknown.
        assert_eq!(o.local_liveness(&boot, 1, |_| Some(987)), Liveness::Unknown);
    }

    #[test]
    fn stat_start_time_survives_odd_comm() {
        let stat =
            "77 (we ird) cmd)) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(parse_stat_start_time(stat), Some(123456));
        assert_eq!(parse_stat_start_time("garbage"), None);
        let own = proc_start_time(std::process::id());
        assert!(own.is_some());
    }

    #[test]
    fn containerenv_id() {
        let t = "engine=\"podman-4.3.1\"\nname=\"ctl\"\nid=\"0123abcd\"\nimage=\"x\"\n";
        assert_eq!(parse_containerenv_id(t), Some("0123abcd".into()));
        assert_eq!(parse_containerenv_id("id=\"\"\n"), None);
        assert_eq!(parse_containerenv_id("id=\"../etc\"\n"), None);
    }
}
