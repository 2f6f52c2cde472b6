//! Agents in QEMU virtual machines booting the kernel under test (`LNST_AGENTS=vm`): the
//! [`VmProvisioner`] per test; root, the kernel, QEMU, the agent and init binaries and the
//! accelerator checked once (the KVM probe runs here, bounded). See docs/VM.md.

use super::{ProvisionerKind, SourceError};
use crate::config::{Config, VmConfig};
use crate::provision::netns::NetnsProvisioner;
use crate::provision::vm::{self, VmOptions, VmProvisioner};
use crate::provision::Provisioner;
use futures::future::BoxFuture;
use std::path::PathBuf;

pub struct Vm {
    run_id: String,
    config: Option<VmConfig>,
    agent_bin: Option<PathBuf>,
    path: Vec<PathBuf>,
    /// Everything but the secret, once preflight has checked it.
    opts: Option<VmOptions>,
}

impl Vm {
    pub fn new(config: &Config, run_id: &str) -> Self {
        Vm {
            run_id: run_id.to_string(),
            config: config.vm.clone(),
            agent_bin: config.agent_bin.clone(),
            path: config.path.clone(),
            opts: None,
        }
    }
}

impl ProvisionerKind for Vm {
    const NAME: &'static str = "vm";

    fn preflight(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        Box::pin(async move {
            NetnsProvisioner::check_root().map_err(|e| SourceError::Unusable(e.to_string()))?;
            let vc = self.config.clone().ok_or_else(|| {
                SourceError::Unusable("LNST_AGENTS=vm without VM settings".into())
            })?;
            let agent = super::netns::agent_binary(self.agent_bin.as_deref(), &self.path)?;
            let agent = vm::check_agent_path(&agent).map_err(SourceError::Unusable)?;
            let init = vm::find_init(&agent).map_err(SourceError::Unusable)?;
            let qemu = vm::find_qemu().map_err(SourceError::Unusable)?;
            let choice = vc.accel;
            let accel = tokio::task::spawn_blocking(move || vm::accel::choose(choice))
                .await
                .map_err(|e| SourceError::Unusable(format!("accelerator probe: {e}")))?;
            let kernel = vc.kernel.clone();
            let boot_kernel = tokio::task::spawn_blocking(move || vm::prepare_kernel(&kernel))
                .await
                .map_err(|e| SourceError::Unusable(format!("kernel: {e}")))?
                .map_err(SourceError::Unusable)?;
            self.opts = Some(VmOptions {
                run_id: self.run_id.clone(),
                kernel: vc.kernel,
                modules_dir: vc.modules,
                accel,
                cpus: vc.cpus,
                memory_mib: vc.memory_mib,
                agent,
                init,
                qemu,
                boot_timeout: vm::default_boot_timeout(accel),
                agent_secret: None,
                extra_append: vc.append,
                preload_modules: vc.preload,
                boot_kernel,
            });
            Ok(())
        })
    }

    fn provisioner(&self, secret: &str) -> Result<Box<dyn Provisioner>, SourceError> {
        let opts = self
            .opts
            .clone()
            .ok_or_else(|| SourceError::Unusable("the VM source was not checked".into()))?;
        Ok(Box::new(VmProvisioner::new(VmOptions {
            agent_secret: Some(secret.to_string()),
            ..opts
        })))
    }

    fn accelerator(&self) -> Option<&'static str> {
        self.opts.as_ref().map(|o| o.accel.name())
    }

    fn cleanup(&self) -> BoxFuture<'_, Result<Vec<String>, SourceError>> {
        Box::pin(async { Ok(vm::cleanup_leftovers()?) })
    }
}
