//! The `tdx-vmm` command line: `launch`, `measure`, `inspect`.
//!
//! Every command returns a [`CliError`]; the binary prints it as `tdx-vmm: <message>` with its
//! source chain and exits nonzero ([`CliError::exit_code`]).
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::config::BackendKind;
use crate::config::{Boot, ConfigError, TdConfig, ATTR_DEBUG, ATTR_SEPT_VE_DISABLE};
use crate::image::{self, ImageError};
use crate::measure::{self, PlanMeasureError};
use crate::plan::{LaunchPlan, ReportSink};
use crate::tdvf::{self, TdvfError, TdvfMetadata};
use crate::vmm::{self, LaunchOptions, VmmError};
use tdx_host::backend::emulated::{EmulatedBackend, EmulatedBackendConfig, EngineChoice};
use tdx_host::driver::RetryPolicy;
use tdx_host::emulated::PlatformConfig;

/// `tdx-vmm`: the reference VMM for Intel TDX Trust Domains.
#[derive(Debug, Parser)]
#[command(name = "tdx-vmm", version, about, long_about = None)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// A `tdx-vmm` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Launch the TD described by a td.toml and run it to completion.
    Launch {
        /// The td.toml.
        config: PathBuf,
        /// Print the final report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the MRTD the TD of a td.toml will have, without running anything.
    Measure {
        /// The td.toml.
        config: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The same guest work as a TD (emulated backend, KVM engine) and as a plain KVM VM in one
    /// run; prints the ratios (see `tdx_vmm::bench`).
    Bench {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// TDVMCALL / port-I/O exits per round-trip run.
        #[arg(long, default_value_t = 2000)]
        exits: u32,
        /// Pages per lazy-accept / first-touch run (at most 8192).
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=8192))]
        pages: u32,
        /// Runs per figure (the best is kept).
        #[arg(long, default_value_t = 3)]
        repeats: u32,
    },
    /// Print the TDVF section table of a firmware image.
    Inspect {
        /// The firmware image (e.g. /usr/share/ovmf/OVMF.fd).
        firmware: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The td.toml was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The payload or firmware was refused.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The plan could not be measured.
    #[error(transparent)]
    Measure(#[from] PlanMeasureError),
    /// `inspect`: the firmware's metadata was refused.
    #[error("firmware {path}")]
    Inspect {
        /// The firmware file.
        path: PathBuf,
        /// Why.
        #[source]
        source: TdvfError,
    },
    /// Writing the output failed.
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
    /// The launch failed before or while running the TD.
    #[error("launch of {path}")]
    Launch {
        /// The td.toml.
        path: PathBuf,
        /// Why.
        #[source]
        source: VmmError,
    },
    /// `bench` could not run.
    #[error("bench")]
    Bench(#[source] crate::bench::BenchError),
    /// The chosen backend cannot run here.
    #[error("backend {backend}")]
    Backend {
        /// The backend's name.
        backend: String,
        /// Why.
        #[source]
        source: tdx_host::backend::BackendError,
    },
}

impl CliError {
    /// The process exit status for this error (1; a TD that ran and ended badly is not an
    /// error but a status, see [`crate::vmm::ExitStatus::exit_code`]).
    pub fn exit_code(&self) -> u8 {
        1
    }
}

/// The message of `err` followed by its sources, `: `-separated.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    // Bounded: error chains are short, but never trust a cycle.
    for _ in 0..16 {
        let Some(e) = source else { break };
        let _ = write!(out, ": {e}");
        source = e.source();
    }
    out
}

/// Runs `cli`, writing results to `out`; returns the process exit code (for `launch`, the
/// TD's: [`crate::vmm::ExitStatus::exit_code`]).
pub fn run(cli: Cli, out: &mut dyn std::io::Write) -> Result<u8, CliError> {
    match cli.command {
        Command::Launch { config, json } => launch(&config, json, out),
        Command::Measure { config, json } => {
            let text = measure_cmd(&config, json)?;
            out.write_all(text.as_bytes()).map_err(CliError::Output)?;
            Ok(0)
        }
        Command::Bench {
            json,
            exits,
            pages,
            repeats,
        } => {
            let opts = crate::bench::BenchOptions {
                exits,
                pages,
                repeats,
            };
            let report = crate::bench::run(&opts).map_err(CliError::Bench)?;
            let text = if json {
                serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
            } else {
                report.to_table()
            };
            out.write_all(text.as_bytes()).map_err(CliError::Output)?;
            Ok(0)
        }
        Command::Inspect { firmware, json } => {
            let text = inspect_cmd(&firmware, json)?;
            out.write_all(text.as_bytes()).map_err(CliError::Output)?;
            Ok(0)
        }
    }
}

/// Loads a td.toml and builds its plan.
pub fn load(config_path: &Path) -> Result<(TdConfig, LaunchPlan), CliError> {
    let config = TdConfig::from_file(config_path)?;
    tracing::info!(
        config = %config_path.display(),
        backend = %config.backend,
        memory = config.memory,
        vcpus = config.vcpus,
        "td.toml loaded"
    );
    let plan = image::build_plan(&config)?;
    for r in &plan.initial {
        tracing::debug!(
            gpa = format_args!("{:#x}", r.gpa),
            size = format_args!("{:#x}", r.data.len()),
            measure = r.measure,
            name = %r.name,
            "initial region"
        );
    }
    Ok((config, plan))
}

fn launch(config_path: &Path, json: bool, out: &mut dyn std::io::Write) -> Result<u8, CliError> {
    let (config, plan) = load(config_path)?;
    tracing::info!(backend = %config.backend, regions = plan.initial.len(), json, "plan built");
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = vmm::install_ctrlc(&stop) {
        tracing::warn!(error = %e, "no Ctrl-C handler");
    }
    let launch_err = |source| CliError::Launch {
        path: config_path.to_path_buf(),
        source,
    };
    let outcome = match config.backend {
        BackendKind::Emulated => {
            // The emulated platform holds the TD's private pages, its metadata and the PAMT:
            // guest RAM plus an eighth plus 64 MiB, rounded up to 2 MiB.
            let platform_size =
                (plan.memory_size + plan.memory_size / 8 + (64 << 20)).next_multiple_of(2 << 20);
            let backend = EmulatedBackend::new(EmulatedBackendConfig {
                platform: PlatformConfig {
                    memory_size: platform_size,
                    ..PlatformConfig::default()
                },
                engine: EngineChoice::Kvm,
                retry: RetryPolicy::default(),
            })
            .map_err(|source| CliError::Backend {
                backend: "emulated".into(),
                source,
            })?;
            // Quotes signed with the emulated platform's key (not Intel quotes).
            let quote = vmm::EmulatedQuoteProvider::new(backend.module().quote_signing_key());
            let opts = LaunchOptions {
                quiet: false,
                stop,
                quote: Some(Arc::new(quote)),
            };
            vmm::launch(&backend, &plan, &opts).map_err(launch_err)?
        }
        BackendKind::Kvm => {
            let backend = tdx_host::backend::kvm::KvmTdxBackend::open().map_err(|source| {
                CliError::Backend {
                    backend: "kvm".into(),
                    source,
                }
            })?;
            // GetQuote goes to a quote-generation service when TDX_VMM_QGS_SOCKET names one.
            let quote = std::env::var_os("TDX_VMM_QGS_SOCKET").map(|p| {
                Arc::new(vmm::UnixSocketQuoteProvider::new(PathBuf::from(p)))
                    as Arc<dyn vmm::QuoteProvider>
            });
            let opts = LaunchOptions {
                quiet: false,
                stop,
                quote,
            };
            vmm::launch(&backend, &plan, &opts).map_err(launch_err)?
        }
    };
    let text = match (&plan.report, json) {
        (ReportSink::JsonFile(path), _) => {
            let v = vmm::report::to_json(
                &outcome.status,
                outcome.mrtd.as_ref(),
                outcome.report.as_ref(),
            );
            std::fs::write(
                path,
                serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
            )
            .map_err(CliError::Output)?;
            vmm::report::to_table(
                &outcome.status,
                outcome.mrtd.as_ref(),
                outcome.report.as_ref(),
            )
        }
        (ReportSink::Stdout, true) => {
            let v = vmm::report::to_json(
                &outcome.status,
                outcome.mrtd.as_ref(),
                outcome.report.as_ref(),
            );
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
        }
        (ReportSink::Stdout, false) => vmm::report::to_table(
            &outcome.status,
            outcome.mrtd.as_ref(),
            outcome.report.as_ref(),
        ),
    };
    out.write_all(text.as_bytes()).map_err(CliError::Output)?;
    Ok(outcome.status.exit_code())
}

/// Names of the TD ATTRIBUTES bits td.toml sets.
pub fn attribute_names(attributes: u64) -> String {
    let mut names = Vec::new();
    if attributes & ATTR_DEBUG != 0 {
        names.push("DEBUG");
    }
    if attributes & ATTR_SEPT_VE_DISABLE != 0 {
        names.push("SEPT_VE_DISABLE");
    }
    let rest = attributes & !(ATTR_DEBUG | ATTR_SEPT_VE_DISABLE);
    let mut s = names.join("|");
    if rest != 0 {
        if !s.is_empty() {
            s.push('|');
        }
        let _ = write!(s, "{rest:#x}");
    }
    if s.is_empty() {
        s.push_str("none");
    }
    s
}

/// `tdx-vmm measure`: the MRTD of the td.toml's plan, as text or JSON.
pub fn measure_cmd(config_path: &Path, json: bool) -> Result<String, CliError> {
    let (config, plan) = load(config_path)?;
    let summary = measure::mrtd(&plan)?;
    let (boot_kind, boot_path) = match &config.boot {
        Boot::Payload(p) => ("payload", p),
        Boot::Firmware(p) => ("firmware", p),
    };
    if json {
        let regions: Vec<_> = plan
            .initial
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "gpa": r.gpa,
                    "size": r.data.len(),
                    "measured": r.measure,
                })
            })
            .collect();
        let v = json!({
            "config": config_path.display().to_string(),
            "backend": config.backend.name(),
            boot_kind: boot_path.display().to_string(),
            "mrtd": summary.mrtd.to_string(),
            "attributes": format!("{:#018x}", plan.vm.attributes),
            "xfam": format!("{:#018x}", plan.vm.xfam),
            "vcpus": plan.vcpus,
            "memory": plan.memory_size,
            "vcpu_rcx": plan.vcpu_rcx,
            "pages_added": summary.pages_added,
            "pages_measured": summary.pages_measured,
            "initial": regions,
        });
        let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
        s.push('\n');
        return Ok(s);
    }
    let mut s = String::new();
    let _ = writeln!(s, "config      {}", config_path.display());
    let _ = writeln!(s, "backend     {}", config.backend);
    let _ = writeln!(s, "{boot_kind:<11} {}", boot_path.display());
    let _ = writeln!(s, "MRTD        {}", summary.mrtd);
    let _ = writeln!(
        s,
        "attributes  {:#018x} ({})",
        plan.vm.attributes,
        attribute_names(plan.vm.attributes)
    );
    let _ = writeln!(s, "xfam        {:#018x}", plan.vm.xfam);
    let _ = writeln!(s, "vcpus       {}", plan.vcpus);
    let _ = writeln!(
        s,
        "memory      {:#x} ({} MiB)",
        plan.memory_size,
        plan.memory_size >> 20
    );
    let _ = writeln!(
        s,
        "pages       {} added, {} measured",
        summary.pages_added, summary.pages_measured
    );
    let _ = writeln!(s, "initial image (in the order it is added):");
    let _ = writeln!(
        s,
        "  {:<18}  {:>10}  {:<8}  NAME",
        "GPA", "SIZE", "MEASURED"
    );
    for r in &plan.initial {
        let _ = writeln!(
            s,
            "  {:#018x}  {:>#10x}  {:<8}  {}",
            r.gpa,
            r.data.len(),
            if r.measure { "yes" } else { "no" },
            r.name
        );
    }
    Ok(s)
}

fn attr_text(attributes: u32) -> String {
    let mut names = Vec::new();
    if attributes & tdvf::ATTR_MR_EXTEND != 0 {
        names.push("MR.EXTEND");
    }
    if attributes & tdvf::ATTR_PAGE_AUG != 0 {
        names.push("PAGE.AUG");
    }
    if names.is_empty() {
        "-".to_string()
    } else {
        names.join("|")
    }
}

/// The section table of `meta` (parsed from `path`), as text or JSON.
pub fn format_sections(path: &Path, meta: &TdvfMetadata, json: bool) -> String {
    if json {
        let sections: Vec<_> = meta
            .sections
            .iter()
            .map(|s| {
                json!({
                    "index": s.index,
                    "type": s.section_type.name(),
                    "data_offset": s.data_offset,
                    "raw_data_size": s.raw_data_size,
                    "memory_address": s.memory_address,
                    "memory_data_size": s.memory_data_size,
                    "attributes": s.attributes,
                    "mr_extend": s.mr_extend(),
                    "page_aug": s.page_aug(),
                })
            })
            .collect();
        let v = json!({
            "firmware": path.display().to_string(),
            "descriptor_offset": meta.descriptor_offset,
            "version": meta.version,
            "sections": sections,
        });
        let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
        s.push('\n');
        return s;
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "TDVF metadata of {}: descriptor at {:#x}, version {}, {} sections",
        path.display(),
        meta.descriptor_offset,
        meta.version,
        meta.sections.len()
    );
    let _ = writeln!(
        s,
        "  {:>2}  {:<12}  {:>10}  {:>10}  {:>18}  {:>10}  ATTRIBUTES",
        "#", "TYPE", "DATAOFFSET", "RAWSIZE", "GPA", "MEMSIZE"
    );
    for sec in &meta.sections {
        let _ = writeln!(
            s,
            "  {:>2}  {:<12}  {:>#10x}  {:>#10x}  {:>#18x}  {:>#10x}  {}",
            sec.index,
            sec.section_type.name(),
            sec.data_offset,
            sec.raw_data_size,
            sec.memory_address,
            sec.memory_data_size,
            attr_text(sec.attributes)
        );
    }
    s
}

/// `tdx-vmm inspect`: the firmware's TDVF section table, as text or JSON.
pub fn inspect_cmd(path: &Path, json: bool) -> Result<String, CliError> {
    let image = image::read_firmware(path)?;
    let meta = tdvf::parse(&image).map_err(|source| CliError::Inspect {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(format_sections(path, &meta, json))
}
