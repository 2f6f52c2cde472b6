//! The run state file (`/run/lnst-runner/<runid>.json`): which process owns a run and which
//! namespaces it created (recorded *before* creating them), so a killed run can be cleaned up.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Directory holding one state file per run.
pub const STATE_DIR: &str = "/run/lnst-runner";

/// Contents of one state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    pub run_id: String,
    /// Process that owns the run.
    pub pid: u32,
    /// That process's start time (`/proc/<pid>/stat` field 22, clock ticks since boot), so a
    /// recycled pid is not mistaken for the owner.
    #[serde(default)]
    pub start_time: Option<u64>,
    /// Namespaces the run created or was about to create, in creation order.
    pub namespaces: Vec<String>,
    /// Agent process ids (informational).
    #[serde(default)]
    pub agent_pids: Vec<u32>,
}

impl RunState {
    /// State for a run owned by the calling process.
    pub fn for_this_process(run_id: &str) -> RunState {
        let pid = std::process::id();
        RunState {
            run_id: run_id.to_string(),
            pid,
            start_time: process_start_time(pid),
            namespaces: Vec::new(),
            agent_pids: Vec::new(),
        }
    }

    /// Whether the owning process is still alive (same pid *and* same start time).
    pub fn owner_alive(&self) -> bool {
        match process_start_time(self.pid) {
            None => false,
            Some(now) => self.start_time.is_none_or(|recorded| recorded == now),
        }
    }
}

/// Path of a run's state file.
pub fn state_file_path(run_id: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{run_id}.json"))
}

/// Write the state atomically (temporary file + rename).
pub fn write_state(state: &RunState) -> std::io::Result<()> {
    std::fs::create_dir_all(STATE_DIR)?;
    let path = state_file_path(&state.run_id);
    let tmp = Path::new(STATE_DIR).join(format!(".{}.json.tmp", state.run_id));
    let data = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)
}

/// Read one state file.
pub fn read_state(path: &Path) -> Result<RunState, String> {
    let data = std::fs::read(path)
        .map_err(|e| format!("cannot read state file {}: {e}", path.display()))?;
    serde_json::from_slice(&data)
        .map_err(|e| format!("cannot parse state file {}: {e}", path.display()))
}

/// Remove a state file; already gone is fine. Returns whether it existed.
pub fn remove_state(path: &Path) -> Result<bool, String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot remove state file {}: {e}", path.display())),
    }
}

/// Every `*.json` state file path in [`STATE_DIR`], sorted.
pub fn state_files() -> Result<Vec<PathBuf>, String> {
    let rd = match std::fs::read_dir(STATE_DIR) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list {STATE_DIR}: {e}")),
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Start time of a process from `/proc/<pid>/stat`, None when it does not exist.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line; the command name (field 2) may hold spaces and
/// parentheses, so counting starts after the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, after) = stat.rsplit_once(')')?;
    // after ')' come fields 3 (state), 4, ...; field 22 is the 20th of them.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_comm() {
        let line = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 12345 67 18446744073709551615";
        assert_eq!(parse_start_time(line), Some(987_654));
        assert_eq!(parse_start_time("1234 (x) S 1 2"), None);
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn own_process_is_alive_and_recycled_pid_is_not() {
        let st = RunState::for_this_process("abcd1234");
        assert!(st.start_time.is_some());
        assert!(st.owner_alive());
        let mut other = st.clone();
        other.start_time = st.start_time.map(|t| t + 1);
        assert!(!other.owner_alive());
    }

    #[test]
    fn state_json_round_trips() {
        let mut st = RunState::for_this_process("abcd1234");
        st.namespaces = vec!["lnst-abcd1234-sw".into(), "lnst-abcd1234-host1".into()];
        let s = serde_json::to_string(&st).unwrap_or_default();
        let back: RunState = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"));
        assert_eq!(back, st);
        // Older/minimal files without optional fields still parse.
        let minimal: RunState = serde_json::from_str(r#"{"run_id":"x1","pid":1,"namespaces":[]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(minimal.start_time, None);
    }
}
