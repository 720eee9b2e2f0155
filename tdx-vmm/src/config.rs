//! `td.toml`: the description of one TD that `tdx-vmm launch` and `tdx-vmm measure` read.
//!
//! Every table refuses keys it does not know (a misspelt key is an error naming the key and
//! its line, not a silently ignored setting). Sizes are strings with a `K`/`M`/`G` suffix
//! (`"256M"`) or plain byte counts. Relative paths are resolved against the directory of the
//! toml file. See `examples/td.toml` for an annotated example.
//!
//! ```toml
//! backend = "emulated"          # or "kvm"
//! memory = "256M"
//! vcpus = 1
//! payload = "payload.elf"       # or: firmware = "/usr/share/ovmf/OVMF.fd"
//! serial = true
//!
//! [td]
//! debug = false
//! sept_ve_disable = true
//!
//! [[disk]]
//! path = "disk.img"
//! read_only = false
//! ```
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::plan::{BlkDisk, ReportSink, VIRTIO_MMIO_MAX};

/// TD ATTRIBUTES bit 0: DEBUG (the host may read and write the TD's private state).
pub const ATTR_DEBUG: u64 = 1 << 0;
/// TD ATTRIBUTES bit 28: SEPT_VE_DISABLE (no #VE on EPT violations of pending pages).
pub const ATTR_SEPT_VE_DISABLE: u64 = 1 << 28;

/// Default guest RAM size.
pub const DEFAULT_MEMORY: u64 = 256 << 20;
/// Largest guest RAM size: RAM is `[0, memory)` and stays under the 32-bit device hole
/// (virtio-mmio windows at 0xFEB0_0000, the firmware at the top of 4 GiB).
pub const MAX_MEMORY: u64 = 3 << 30;
/// Guest RAM must be a multiple of this (4 KiB pages).
pub const MEMORY_ALIGN: u64 = 4096;
/// Most vCPUs a td.toml may ask for.
pub const MAX_VCPUS: u32 = 255;
/// Largest td.toml accepted (bytes); a bigger file is certainly not a TD description.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Which backend runs the TD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The emulated TDX module (KVM-backed execution engine); runs without TDX hardware.
    #[default]
    Emulated,
    /// Linux KVM on a TDX host (`KVM_X86_TDX_VM`).
    Kvm,
}

impl BackendKind {
    /// The backend's name as written in td.toml.
    pub const fn name(self) -> &'static str {
        match self {
            BackendKind::Emulated => "emulated",
            BackendKind::Kvm => "kvm",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `payload = "builtin:td-payload"`: the example TD payload built into the VMM
/// (`examples/td-payload`, via the `tdx-payloads` crate).
pub const BUILTIN_PAYLOAD: &str = "builtin:td-payload";

/// What the TD boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// An x86-64 ELF executable started in 64-bit mode (the "ELF payload contract").
    Payload(PathBuf),
    /// A TDVF firmware image (OVMF built with TDX support) started at the reset vector.
    Firmware(PathBuf),
}

impl Boot {
    /// The file to load.
    pub fn path(&self) -> &Path {
        match self {
            Boot::Payload(p) | Boot::Firmware(p) => p,
        }
    }
}

/// The `[td]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdOptions {
    /// TD ATTRIBUTES.DEBUG.
    pub debug: bool,
    /// TD ATTRIBUTES.SEPT_VE_DISABLE.
    pub sept_ve_disable: bool,
    /// XFAM; `None` takes the backend's default.
    pub xfam: Option<u64>,
    /// MRCONFIGID.
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    pub mrowner: [u8; 48],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; 48],
}

impl Default for TdOptions {
    fn default() -> Self {
        TdOptions {
            debug: false,
            sept_ve_disable: true,
            xfam: None,
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
        }
    }
}

impl TdOptions {
    /// The TD ATTRIBUTES these options select.
    pub fn attributes(&self) -> u64 {
        let mut attributes = 0;
        if self.debug {
            attributes |= ATTR_DEBUG;
        }
        if self.sept_ve_disable {
            attributes |= ATTR_SEPT_VE_DISABLE;
        }
        attributes
    }
}

/// A parsed and checked td.toml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdConfig {
    /// The backend.
    pub backend: BackendKind,
    /// Guest RAM size in bytes (4 KiB multiple, at most [`MAX_MEMORY`]).
    pub memory: u64,
    /// Number of vCPUs (1..=[`MAX_VCPUS`]).
    pub vcpus: u32,
    /// TD options.
    pub td: TdOptions,
    /// Payload or firmware (path resolved).
    pub boot: Boot,
    /// virtio-blk disks (paths resolved).
    pub disks: Vec<BlkDisk>,
    /// vhost-user-blk sockets (paths resolved).
    pub vhost_user_blk: Vec<PathBuf>,
    /// Serial console.
    pub serial: bool,
    /// Where the report goes.
    pub report: ReportSink,
}

/// Why a td.toml was refused. Messages name the file, the key and the value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("{path} is {size} bytes, more than a td.toml may be ({MAX_CONFIG_BYTES})")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Not valid TOML, an unknown or misspelt key, or a value of the wrong form.
    #[error("{path}: line {line}, column {column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value (0 when the parser gave no position).
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message (names the key or value).
        message: String,
    },
    /// A value that parses but is not acceptable.
    #[error("{path}: `{key}`: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key at fault.
        key: String,
        /// Why, with the value.
        why: String,
    },
}

/// Parses a size: a byte count, or a number with a `K`, `M` or `G` suffix (binary units,
/// optionally followed by `B` or `iB`, case-insensitive): `"256M"`, `"4G"`, `"65536"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, shift) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 10),
        Some('m') => (&body[..body.len() - 1], 20),
        Some('g') => (&body[..body.len() - 1], 30),
        _ => (body, 0),
    };
    let digits = digits.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "size \"{text}\" is not a number with an optional K/M/G suffix (e.g. \"256M\")"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("size \"{text}\" is too large"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size \"{text}\" is too large"))
}

/// Guest RAM size: parsed with [`parse_size`], then checked (not zero, 4 KiB aligned, at
/// most [`MAX_MEMORY`]).
fn check_memory(text: &str, bytes: u64) -> Result<u64, String> {
    if bytes == 0 {
        return Err(format!("memory \"{text}\" is zero"));
    }
    if bytes % MEMORY_ALIGN != 0 {
        return Err(format!(
            "memory \"{text}\" ({bytes} bytes) is not a multiple of 4 KiB"
        ));
    }
    if bytes > MAX_MEMORY {
        return Err(format!(
            "memory \"{text}\" ({bytes} bytes) is larger than the {} MiB a TD may have below \
             the 32-bit device hole",
            MAX_MEMORY >> 20
        ));
    }
    Ok(bytes)
}

fn de_memory<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct MemVisitor;
    impl Visitor<'_> for MemVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size such as \"256M\" or a byte count")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            let bytes = parse_size(v).map_err(E::custom)?;
            check_memory(v, bytes).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            let bytes =
                u64::try_from(v).map_err(|_| E::custom(format!("memory {v} is negative")))?;
            check_memory(&v.to_string(), bytes).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            check_memory(&v.to_string(), v).map_err(E::custom)
        }
    }
    d.deserialize_any(MemVisitor)
}

fn default_memory() -> u64 {
    DEFAULT_MEMORY
}

/// Parses a 48-byte measurement register value: exactly 96 hex digits, optional `0x`.
pub fn parse_hex48(text: &str) -> Result<[u8; 48], String> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.len() != 96 {
        return Err(format!(
            "\"{text}\" has {} hex digits; a 48-byte register needs exactly 96",
            t.len()
        ));
    }
    let mut out = [0u8; 48];
    for (i, pair) in t.as_bytes().chunks_exact(2).enumerate() {
        let hex = std::str::from_utf8(pair).map_err(|_| format!("\"{text}\" is not hex"))?;
        out[i] = u8::from_str_radix(hex, 16)
            .map_err(|_| format!("\"{text}\" is not hex: \"{hex}\" at byte {i}"))?;
    }
    Ok(out)
}

fn de_hex48<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 48], D::Error> {
    let s = String::deserialize(d)?;
    parse_hex48(&s).map_err(de::Error::custom)
}

fn zero48() -> [u8; 48] {
    [0; 48]
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTd {
    #[serde(default)]
    debug: bool,
    #[serde(default = "yes")]
    sept_ve_disable: bool,
    #[serde(default)]
    xfam: Option<u64>,
    #[serde(default = "zero48", deserialize_with = "de_hex48")]
    mrconfigid: [u8; 48],
    #[serde(default = "zero48", deserialize_with = "de_hex48")]
    mrowner: [u8; 48],
    #[serde(default = "zero48", deserialize_with = "de_hex48")]
    mrownerconfig: [u8; 48],
}

impl Default for RawTd {
    fn default() -> Self {
        RawTd {
            debug: false,
            sept_ve_disable: true,
            xfam: None,
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    path: PathBuf,
    #[serde(default)]
    read_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVhostUserBlk {
    socket: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    #[serde(default)]
    json: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    backend: BackendKind,
    #[serde(default = "default_memory", deserialize_with = "de_memory")]
    memory: u64,
    #[serde(default = "one")]
    vcpus: u32,
    #[serde(default)]
    payload: Option<PathBuf>,
    #[serde(default)]
    firmware: Option<PathBuf>,
    #[serde(default = "yes")]
    serial: bool,
    #[serde(default)]
    td: RawTd,
    #[serde(default)]
    disk: Vec<RawDisk>,
    #[serde(default)]
    vhost_user_blk: Vec<RawVhostUserBlk>,
    #[serde(default)]
    report: Option<RawReport>,
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

impl TdConfig {
    /// Reads and checks `path`; relative paths inside are resolved against its directory.
    /// Does not open the payload, firmware or disks (the image builder and the devices do,
    /// and name the file when it is missing).
    pub fn from_file(path: &Path) -> Result<TdConfig, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        TdConfig::parse(&text, path, base)
    }

    /// Parses td.toml `text`; `name` is used in messages, `base` resolves relative paths.
    /// Touches no file.
    pub fn parse(text: &str, name: &Path, base: &Path) -> Result<TdConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((0, 0));
            ConfigError::Parse {
                path: name.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let invalid = |key: &str, why: String| ConfigError::Invalid {
            path: name.to_path_buf(),
            key: key.to_string(),
            why,
        };
        if raw.vcpus == 0 || raw.vcpus > MAX_VCPUS {
            return Err(invalid(
                "vcpus",
                format!("{} is not between 1 and {MAX_VCPUS}", raw.vcpus),
            ));
        }
        let boot = match (raw.payload, raw.firmware) {
            (Some(p), None) if p.as_os_str() == BUILTIN_PAYLOAD => Boot::Payload(p),
            (Some(p), None) => Boot::Payload(resolve(base, p)),
            (None, Some(f)) => Boot::Firmware(resolve(base, f)),
            (Some(p), Some(f)) => {
                return Err(invalid(
                    "payload/firmware",
                    format!(
                        "both are set (payload = {}, firmware = {}); a TD boots exactly one",
                        p.display(),
                        f.display()
                    ),
                ))
            }
            (None, None) => {
                return Err(invalid(
                    "payload/firmware",
                    "neither is set; give `payload = \"x.elf\"` (an ELF payload) or \
                     `firmware = \"OVMF.fd\"` (a TDVF image)"
                        .to_string(),
                ))
            }
        };
        if raw.backend == BackendKind::Kvm {
            if let Boot::Payload(p) = &boot {
                return Err(invalid(
                    "payload",
                    format!(
                        "{}: an ELF payload needs backend = \"emulated\"; TDX hardware starts \
                         TDs only at the reset vector (use `firmware`)",
                        p.display()
                    ),
                ));
            }
        }
        if let Some(xfam) = raw.td.xfam {
            // x87 and SSE state are architecturally required in XFAM.
            if xfam & 0x3 != 0x3 {
                return Err(invalid(
                    "td.xfam",
                    format!("{xfam:#x} lacks the x87 and SSE bits (0x3) every TD has"),
                ));
            }
        }
        let devices = raw.disk.len() + raw.vhost_user_blk.len();
        if devices as u64 > VIRTIO_MMIO_MAX {
            return Err(invalid(
                "disk/vhost_user_blk",
                format!(
                    "{} disks and {} vhost-user-blk sockets: at most {VIRTIO_MMIO_MAX} \
                     virtio devices in all",
                    raw.disk.len(),
                    raw.vhost_user_blk.len()
                ),
            ));
        }
        let disks = raw
            .disk
            .into_iter()
            .map(|d| BlkDisk {
                path: resolve(base, d.path),
                read_only: d.read_only,
            })
            .collect();
        let vhost_user_blk = raw
            .vhost_user_blk
            .into_iter()
            .map(|v| resolve(base, v.socket))
            .collect();
        let report = match raw.report.and_then(|r| r.json) {
            Some(p) => ReportSink::JsonFile(resolve(base, p)),
            None => ReportSink::Stdout,
        };
        Ok(TdConfig {
            backend: raw.backend,
            memory: raw.memory,
            vcpus: raw.vcpus,
            td: TdOptions {
                debug: raw.td.debug,
                sept_ve_disable: raw.td.sept_ve_disable,
                xfam: raw.td.xfam,
                mrconfigid: raw.td.mrconfigid,
                mrowner: raw.td.mrowner,
                mrownerconfig: raw.td.mrownerconfig,
            },
            boot,
            disks,
            vhost_user_blk,
            serial: raw.serial,
            report,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TdConfig, ConfigError> {
        TdConfig::parse(text, Path::new("td.toml"), Path::new("/base"))
    }

    #[test]
    fn minimal_payload_defaults() {
        let c = parse("payload = \"p.elf\"\n").unwrap();
        assert_eq!(c.backend, BackendKind::Emulated);
        assert_eq!(c.memory, DEFAULT_MEMORY);
        assert_eq!(c.vcpus, 1);
        assert_eq!(c.boot, Boot::Payload(PathBuf::from("/base/p.elf")));
        assert!(c.serial);
        assert_eq!(c.td.attributes(), ATTR_SEPT_VE_DISABLE);
        assert_eq!(c.report, ReportSink::Stdout);
    }

    #[test]
    fn full_config() {
        let text = r#"
backend = "kvm"
memory = "1G"
vcpus = 2
firmware = "/abs/OVMF.fd"
serial = false
[td]
debug = true
sept_ve_disable = false
xfam = 0xe7
mrconfigid = "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
[[disk]]
path = "d.img"
read_only = true
[[vhost_user_blk]]
socket = "vu.sock"
[report]
json = "out/report.json"
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.backend, BackendKind::Kvm);
        assert_eq!(c.memory, 1 << 30);
        assert_eq!(c.vcpus, 2);
        assert_eq!(c.boot, Boot::Firmware(PathBuf::from("/abs/OVMF.fd")));
        assert_eq!(c.td.attributes(), ATTR_DEBUG);
        assert_eq!(c.td.xfam, Some(0xe7));
        assert_eq!(c.td.mrconfigid[0x2f], 0x2f);
        assert_eq!(c.td.mrowner, [0; 48]);
        assert_eq!(c.disks[0].path, PathBuf::from("/base/d.img"));
        assert!(c.disks[0].read_only);
        assert_eq!(c.vhost_user_blk, vec![PathBuf::from("/base/vu.sock")]);
        assert_eq!(
            c.report,
            ReportSink::JsonFile(PathBuf::from("/base/out/report.json"))
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("8192"), Ok(8192));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(parse_size("17179869184G").is_err());
    }

    fn err(text: &str) -> String {
        format!("{}", parse(text).unwrap_err())
    }

    #[test]
    fn misspelt_key_names_key_and_line() {
        let e = err("payload = \"p\"\nmemroy = \"1G\"\n");
        assert!(e.contains("memroy") && e.contains("line 2"), "{e}");
        let e = err("payload = \"p\"\n[td]\ndebg = true\n");
        assert!(e.contains("debg") && e.contains("line 3"), "{e}");
        let e = err("payload = \"p\"\n[[disk]]\npath = \"x\"\nreadonly = true\n");
        assert!(e.contains("readonly") && e.contains("line 4"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = err("payload = \"p\"\nmemory = \"0\"\n");
        assert!(e.contains("zero") && e.contains("line 2"), "{e}");
        let e = err("payload = \"p\"\nmemory = \"4097\"\n");
        assert!(e.contains("4097") && e.contains("4 KiB"), "{e}");
        let e = err("payload = \"p\"\nmemory = \"64G\"\n");
        assert!(e.contains("64G") && e.contains("larger"), "{e}");
        let e = err("payload = \"p\"\nmemory = \"lots\"\n");
        assert!(e.contains("lots"), "{e}");
        let e = err("payload = \"p\"\nbackend = \"xen\"\n");
        assert!(e.contains("xen"), "{e}");
        let e = err("payload = \"p\"\nvcpus = 0\n");
        assert!(e.contains("vcpus") && e.contains('0'), "{e}");
        let e = err("payload = \"p\"\n[td]\nmrowner = \"abcd\"\n");
        assert!(e.contains("abcd") && e.contains("96"), "{e}");
        let e = err("payload = \"p\"\n[td]\nxfam = 4\n");
        assert!(e.contains("0x4"), "{e}");
    }

    #[test]
    fn exactly_one_of_payload_and_firmware() {
        let e = err("payload = \"a\"\nfirmware = \"b\"\n");
        assert!(e.contains("both"), "{e}");
        let e = err("memory = \"1G\"\n");
        assert!(e.contains("neither"), "{e}");
    }

    #[test]
    fn kvm_needs_firmware() {
        let e = err("backend = \"kvm\"\npayload = \"p.elf\"\n");
        assert!(e.contains("emulated") && e.contains("p.elf"), "{e}");
        assert!(parse("backend = \"kvm\"\nfirmware = \"f.fd\"\n").is_ok());
    }

    #[test]
    fn too_many_devices() {
        let mut text = String::from("payload = \"p\"\n");
        for i in 0..9 {
            text.push_str(&format!("[[disk]]\npath = \"d{i}\"\n"));
        }
        let e = err(&text);
        assert!(e.contains("9 disks"), "{e}");
    }
}
