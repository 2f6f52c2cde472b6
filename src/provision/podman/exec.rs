//! Short commands run to completion inside a container (diagnostics and tests).

use super::PodmanError;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use futures::StreamExt;

/// Output of a short command run to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `cmd` in `container` to completion (no stdin) and collect its output.
pub(crate) async fn run(
    docker: &Docker,
    container: &str,
    cmd: &[&str],
) -> Result<ExecOutput, PodmanError> {
    let op = format!("exec {cmd:?} in {container}");
    let created = docker
        .create_exec(
            &super::path_segment(container),
            CreateExecOptions::<String> {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| PodmanError::api(&op, e))?;
    let started = docker
        .start_exec(&created.id, None)
        .await
        .map_err(|e| PodmanError::api(&op, e))?;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let StartExecResults::Attached { mut output, .. } = started {
        while let Some(item) = output.next().await {
            match item.map_err(|e| PodmanError::api(&op, e))? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    stdout.extend_from_slice(&message)
                }
                LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                LogOutput::StdIn { .. } => {}
            }
        }
    }
    let inspect = docker
        .inspect_exec(&created.id)
        .await
        .map_err(|e| PodmanError::api(&op, e))?;
    Ok(ExecOutput {
        exit_code: inspect.exit_code,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}
