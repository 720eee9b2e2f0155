//! The final report of a launch: what the TD's last TDREPORT says (MRTD, RTMR0–3,
//! REPORTDATA, ATTRIBUTES, XFAM), as a table for people or JSON for tools.
use tdx_abi::measure::Measurement;
use tdx_abi::report::TdReport;

use super::ExitStatus;

/// The measurements of the TD, from the TDREPORT it handed out with GetQuote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalReport {
    /// MRTD.
    pub mrtd: Measurement,
    /// RTMR0–3.
    pub rtmr: [Measurement; 4],
    /// REPORTDATA (64 bytes chosen by the guest).
    pub report_data: [u8; 64],
    /// TD ATTRIBUTES.
    pub attributes: u64,
    /// XFAM.
    pub xfam: u64,
}

impl FinalReport {
    /// Parses a 1024-byte TDREPORT_STRUCT; `None` if it is not one.
    pub fn from_tdreport(bytes: &[u8]) -> Option<Self> {
        let r = TdReport::from_bytes(bytes).ok()?;
        let info = &r.td_info;
        Some(FinalReport {
            mrtd: info.mrtd(),
            rtmr: [0, 1, 2, 3].map(|i| Measurement(info.rtmr[i])),
            report_data: r.report_mac_struct.report_data,
            attributes: info.attributes,
            xfam: info.xfam,
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The launch summary as a table.
pub fn to_table(
    status: &ExitStatus,
    mrtd: Option<&Measurement>,
    report: Option<&FinalReport>,
) -> String {
    let mut s = format!("{:<12} {}\n", "exit", status);
    if let Some(m) = mrtd {
        s += &format!("{:<12} {}\n", "MRTD (VMM)", m);
    }
    match report {
        Some(r) => {
            s += &format!("{:<12} {}\n", "MRTD", r.mrtd);
            for (i, m) in r.rtmr.iter().enumerate() {
                s += &format!("{:<12} {}\n", format!("RTMR{i}"), m);
            }
            s += &format!("{:<12} {}\n", "REPORTDATA", hex(&r.report_data));
            s += &format!("{:<12} {:#018x}\n", "ATTRIBUTES", r.attributes);
            s += &format!("{:<12} {:#018x}\n", "XFAM", r.xfam);
        }
        None => s += "report       (the TD handed out no TDREPORT)\n",
    }
    s
}

/// The launch summary as JSON.
pub fn to_json(
    status: &ExitStatus,
    mrtd: Option<&Measurement>,
    report: Option<&FinalReport>,
) -> serde_json::Value {
    serde_json::json!({
        "exit": status.to_string(),
        "exit_code": status.exit_code(),
        "mrtd_vmm": mrtd.map(|m| m.to_string()),
        "report": report.map(|r| serde_json::json!({
            "mrtd": r.mrtd.to_string(),
            "rtmr": r.rtmr.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            "reportdata": hex(&r.report_data),
            "attributes": format!("{:#018x}", r.attributes),
            "xfam": format!("{:#018x}", r.xfam),
        })),
    })
}
