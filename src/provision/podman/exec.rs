//! Agent transport over an engine exec: the agent command runs inside the container with
//! stdin/stdout attached (no TTY); stdout frames become an `AsyncRead`, the exec's input is the
//! `AsyncWrite`, stderr is forwarded to tracing line by line.

use super::PodmanError;
use crate::provision::Transport;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

/// Buffer between the exec output pump and the reader.
const PIPE_CAPACITY: usize = 256 * 1024;

/// Start `cmd` in `container` and wire its stdin/stdout as a [`Transport`].
pub(crate) async fn stdio_transport(
    docker: &Docker,
    container: &str,
    cmd: &[String],
    secret: Option<&str>,
) -> Result<Transport, PodmanError> {
    let op = format!("exec {cmd:?} in {container}");
    let created = docker
        .create_exec(
            container,
            CreateExecOptions::<String> {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                cmd: Some(cmd.to_vec()),
                // Only holders of the engine socket (root) can read an exec's environment.
                env: secret.map(|s| vec![format!("{}={s}", crate::agent::AGENT_SECRET_ENV)]),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| PodmanError::api(&op, e))?;
    let started = docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: Some(PIPE_CAPACITY),
            }),
        )
        .await
        .map_err(|e| PodmanError::api(&op, e))?;
    let (mut output, input) = match started {
        StartExecResults::Attached { output, input } => (output, input),
        StartExecResults::Detached => {
            return Err(PodmanError::api(&op, "engine started the exec detached"))
        }
    };
    let (reader, mut pipe) = tokio::io::duplex(PIPE_CAPACITY);
    let tag = container.to_string();
    tokio::spawn(async move {
        let mut stderr_line: Vec<u8> = Vec::new();
        while let Some(item) = output.next().await {
            match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    if pipe.write_all(&message).await.is_err() {
                        // The reader is gone: the controller dropped the transport.
                        break;
                    }
                }
                Ok(LogOutput::StdErr { message }) => {
                    stderr_line.extend_from_slice(&message);
                    while let Some(pos) = stderr_line.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = stderr_line.drain(..=pos).collect();
                        let text = String::from_utf8_lossy(&line);
                        tracing::info!(target: "lnst_runner::agent_stderr", container = %tag, "{}", text.trim_end());
                    }
                }
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => {
                    tracing::warn!(container = %tag, "agent exec stream failed: {e}");
                    break;
                }
            }
        }
        if !stderr_line.is_empty() {
            let text = String::from_utf8_lossy(&stderr_line);
            tracing::info!(target: "lnst_runner::agent_stderr", container = %tag, "{}", text.trim_end());
        }
        tracing::debug!(container = %tag, "agent exec output ended");
        let _ = pipe.shutdown().await;
    });
    Ok(Transport {
        reader: Box::new(reader),
        writer: Box::new(input),
    })
}

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
            container,
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
