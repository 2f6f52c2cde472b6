//! Agents in Podman containers: the [`PodmanProvisioner`] per test through `PODMAN_URI` (or
//! the rootful default socket when `LNST_AGENTS=podman` names no URI).

use super::{ProvisionerKind, SourceError};
use crate::config::Config;
use crate::provision::podman::{PodmanOptions, PodmanProvisioner};
use crate::provision::Provisioner;
use futures::future::BoxFuture;

/// Podman's rootful API socket.
pub const DEFAULT_SOCKET: &str = "/run/podman/podman.sock";

pub struct Podman {
    /// The engine, and whether the user named it (PODMAN_URI) or it is the default socket.
    uri: Option<(String, bool)>,
    opts: Option<PodmanOptions>,
    image: String,
    oci_runtime: Option<String>,
    run_id: String,
}

/// The rootful default socket, when it exists.
fn default_socket() -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(DEFAULT_SOCKET)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|_| format!("unix://{DEFAULT_SOCKET}"))
}

impl Podman {
    pub fn new(config: &Config, run_id: &str) -> Self {
        let uri = match &config.podman_uri {
            Some(u) => Some((u.to_uri(), true)),
            None => default_socket().map(|u| (u, false)),
        };
        Podman {
            uri,
            opts: None,
            image: config.image_name.clone(),
            oci_runtime: config.oci_runtime.clone(),
            run_id: run_id.to_string(),
        }
    }
}

impl ProvisionerKind for Podman {
    const NAME: &'static str = "podman";

    fn preflight(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move {
            let uri = self.uri.as_ref().map(|(u, _)| u.clone()).ok_or_else(|| {
                SourceError::Unusable(format!(
                    "Podman agents need PODMAN_URI (or the API socket at {DEFAULT_SOCKET})"
                ))
            })?;
            let mut opts = PodmanOptions::new(uri, self.image.clone(), self.run_id.clone());
            opts.oci_runtime = self.oci_runtime.clone();
            PodmanProvisioner::connect(opts.clone())?
                .preflight()
                .await?;
            self.opts = Some(opts);
            Ok(())
        })
    }

    fn provisioner(&self, secret: &str) -> Result<Box<dyn Provisioner>, SourceError> {
        let opts = self
            .opts
            .clone()
            .ok_or_else(|| SourceError::Unusable("the engine was not checked".into()))?;
        Ok(Box::new(PodmanProvisioner::connect(PodmanOptions {
            agent_secret: Some(secret.to_string()),
            ..opts
        })?))
    }

    /// Without PODMAN_URI, the rootful default socket is looked at too when it exists: a
    /// killed Podman run's leftovers should not need the URI repeated. An engine that does
    /// not answer there is only reported.
    fn cleanup(&self) -> BoxFuture<'_, Result<Vec<String>, SourceError>> {
        Box::pin(async move {
            let Some((uri, explicit)) = &self.uri else {
                return Ok(Vec::new());
            };
            match crate::provision::podman::cleanup_leftovers(uri).await {
                Ok(r) => Ok(r),
                Err(e) if *explicit => Err(e.into()),
                Err(e) => {
                    crate::say!("lnst-runner: cleanup: skipped the engine at {uri}: {e}");
                    Ok(Vec::new())
                }
            }
        })
    }
}
