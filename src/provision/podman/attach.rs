//! Agent transport over the container's own stdio: the agent is the container's command, the
//! controller attaches to its stdin/stdout/stderr (no TTY) *before* starting it, so the agent's
//! first frame (Hello) cannot be missed. stdout frames become an `AsyncRead`, the attach input is
//! the `AsyncWrite`, stderr is forwarded to tracing line by line.
//!
//! Compared with an exec of the agent into a `sleep infinity` container this saves a runtime
//! exec and a conmon per container (Podman keeps an exec session's conmon for 300 s), and the
//! agent's life is the container's: when the controller goes away, stdin closes, the agent
//! restores its interfaces and exits, and the container stops.

use super::PodmanError;
use crate::provision::Transport;
use bollard::container::LogOutput;
use bollard::query_parameters::AttachContainerOptions;
use bollard::Docker;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

/// Buffer between the attach output pump and the reader.
const PIPE_CAPACITY: usize = 256 * 1024;

/// Attach to the stdio of `container` (created, not yet started) as a [`Transport`].
pub(crate) async fn stdio_transport(
    docker: &Docker,
    container: &str,
) -> Result<Transport, PodmanError> {
    let op = format!("attach to {container}");
    let attached = docker
        .attach_container(
            &super::path_segment(container),
            Some(AttachContainerOptions {
                stream: true,
                stdin: true,
                stdout: true,
                stderr: true,
                logs: false,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| PodmanError::api(&op, e))?;
    Ok(pump(attached.output, attached.input, container))
}

/// Feed the engine's multiplexed output into a pipe (stdout) and tracing (stderr).
fn pump(
    mut output: impl Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send + Unpin + 'static,
    input: impl tokio::io::AsyncWrite + Send + Unpin + 'static,
    container: &str,
) -> Transport {
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
                        log_stderr(&tag, &line);
                    }
                }
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => {
                    tracing::warn!(container = %tag, "agent stdio stream failed: {e}");
                    break;
                }
            }
        }
        if !stderr_line.is_empty() {
            log_stderr(&tag, &stderr_line);
        }
        tracing::debug!(container = %tag, "agent stdio output ended");
        let _ = pipe.shutdown().await;
    });
    Transport {
        reader: Box::new(reader),
        writer: Box::new(input),
    }
}

fn log_stderr(container: &str, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    tracing::info!(target: "lnst_runner::agent_stderr", container = %container, "{}", text.trim_end());
}
