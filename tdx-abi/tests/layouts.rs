//! Independent layout tables typed from the fact sheet (§5.1-§5.9): for every structure, each
//! field's (offset, size) is checked by writing a marker through the field and finding it in
//! the byte image, plus a bytes round trip.

use tdx_abi::report::{ReportMacStruct, TdInfo, TdReport, TeeTcbInfo};
use tdx_abi::sysinfo::TdSysInfo;
use tdx_abi::td_params::{CpuidConfig, TdParams};
use tdx_abi::ve::VeInfo;
use zerocopy::{FromBytes, IntoBytes};

/// Checks that `set` (which fills one field with 0xFF bytes) changes exactly
/// `[offset, offset + size)` of a zeroed `T`.
fn check_field<T: FromBytes + IntoBytes + zerocopy::Immutable>(
    name: &str,
    offset: usize,
    size: usize,
    set: impl Fn(&mut T),
) {
    let mut v = T::new_zeroed();
    set(&mut v);
    let bytes = v.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let inside = i >= offset && i < offset + size;
        assert_eq!(
            *b == 0xFF,
            inside,
            "{name}: byte {i} (field at {offset}, {size} B)"
        );
    }
}

fn round_trip<T: FromBytes + IntoBytes + zerocopy::Immutable + PartialEq + core::fmt::Debug>(
    size: usize,
) {
    let bytes: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
    let v = T::read_from_bytes(&bytes).unwrap();
    assert_eq!(v.as_bytes(), &bytes[..]);
    assert!(T::read_from_bytes(&bytes[..size - 1]).is_err());
}

/// One table row: field name, offset, size, and a setter that fills the field with 0xFF.
type Row<T> = (&'static str, usize, usize, fn(&mut T));

macro_rules! ones {
    ($e:expr) => {
        $e.as_mut_bytes().fill(0xFF)
    };
}

#[test]
fn td_params_layout() {
    assert_eq!(core::mem::size_of::<TdParams>(), 1024);
    assert_eq!(core::mem::align_of::<TdParams>(), 1024);
    let table: [Row<TdParams>; 16] = [
        ("ATTRIBUTES", 0, 8, |p| ones!(p.attributes)),
        ("XFAM", 8, 8, |p| ones!(p.xfam)),
        ("MAX_VCPUS", 16, 2, |p| ones!(p.max_vcpus)),
        ("NUM_L2_VMS", 18, 1, |p| ones!(p.num_l2_vms)),
        ("MSR_CONFIG_CTLS", 19, 1, |p| ones!(p.msr_config_ctls)),
        ("reserved", 20, 4, |p| ones!(p.reserved_0)),
        ("EPTP_CONTROLS", 24, 8, |p| ones!(p.eptp_controls)),
        ("CONFIG_FLAGS", 32, 8, |p| ones!(p.config_flags)),
        ("TSC_FREQUENCY", 40, 2, |p| ones!(p.tsc_frequency)),
        ("reserved", 42, 38, |p| ones!(p.reserved_1)),
        ("MRCONFIGID", 80, 48, |p| ones!(p.mr_config_id)),
        ("MROWNER", 128, 48, |p| ones!(p.mr_owner)),
        ("MROWNERCONFIG", 176, 48, |p| ones!(p.mr_owner_config)),
        ("IA32_ARCH_CAPABILITIES_CONFIG", 224, 8, |p| {
            ones!(p.ia32_arch_capabilities_config)
        }),
        ("reserved", 232, 24, |p| ones!(p.reserved_2)),
        ("CPUID_VALUES", 256, 768, |p| ones!(p.cpuid_values)),
    ];
    for (name, off, size, set) in table {
        check_field::<TdParams>(name, off, size, set);
    }
    // CPUID_VALUES[1].ECX at 256 + 16 + 8.
    check_field::<TdParams>("CPUID_VALUES[1].ECX", 280, 4, |p| {
        ones!(p.cpuid_values[1].ecx)
    });
    round_trip::<TdParams>(1024);
}

#[test]
fn cpuid_config_layout() {
    let table: [Row<CpuidConfig>; 6] = [
        ("LEAF", 0, 4, |c| ones!(c.leaf)),
        ("SUBLEAF", 4, 4, |c| ones!(c.subleaf)),
        ("EAX", 8, 4, |c| ones!(c.eax)),
        ("EBX", 12, 4, |c| ones!(c.ebx)),
        ("ECX", 16, 4, |c| ones!(c.ecx)),
        ("EDX", 20, 4, |c| ones!(c.edx)),
    ];
    for (name, off, size, set) in table {
        check_field::<CpuidConfig>(name, off, size, set);
    }
    round_trip::<CpuidConfig>(24);
}

#[test]
fn report_mac_struct_layout() {
    let table: [Row<ReportMacStruct>; 11] = [
        ("TYPE", 0, 1, |r| ones!(r.report_type.type_)),
        ("SUBTYPE", 1, 1, |r| ones!(r.report_type.subtype)),
        ("VERSION", 2, 1, |r| ones!(r.report_type.version)),
        ("REPORTTYPE.reserved", 3, 1, |r| {
            ones!(r.report_type.reserved)
        }),
        ("reserved", 4, 12, |r| ones!(r.reserved_0)),
        ("CPUSVN", 16, 16, |r| ones!(r.cpusvn)),
        ("TEE_TCB_INFO_HASH", 32, 48, |r| ones!(r.tee_tcb_info_hash)),
        ("TEE_INFO_HASH", 80, 48, |r| ones!(r.tee_info_hash)),
        ("REPORTDATA", 128, 64, |r| ones!(r.report_data)),
        ("reserved", 192, 32, |r| ones!(r.reserved_1)),
        ("MAC", 224, 32, |r| ones!(r.mac)),
    ];
    for (name, off, size, set) in table {
        check_field::<ReportMacStruct>(name, off, size, set);
    }
    round_trip::<ReportMacStruct>(256);
}

#[test]
fn tee_tcb_info_layout() {
    assert_eq!(core::mem::size_of::<TeeTcbInfo>(), 239);
    let table: [Row<TeeTcbInfo>; 7] = [
        ("VALID", 0, 8, |t| ones!(t.valid)),
        ("TEE_TCB_SVN", 8, 16, |t| ones!(t.tee_tcb_svn)),
        ("MRSEAM", 24, 48, |t| ones!(t.mr_seam)),
        ("MRSIGNERSEAM", 72, 48, |t| ones!(t.mr_signer_seam)),
        ("ATTRIBUTES", 120, 8, |t| ones!(t.attributes)),
        ("TEE_TCB_SVN2", 128, 16, |t| ones!(t.tee_tcb_svn2)),
        ("reserved", 144, 95, |t| ones!(t.reserved)),
    ];
    for (name, off, size, set) in table {
        check_field::<TeeTcbInfo>(name, off, size, set);
    }
    round_trip::<TeeTcbInfo>(239);
}

#[test]
fn td_info_layout() {
    let table: [Row<TdInfo>; 12] = [
        ("ATTRIBUTES", 0, 8, |t| ones!(t.attributes)),
        ("XFAM", 8, 8, |t| ones!(t.xfam)),
        ("MRTD", 16, 48, |t| ones!(t.mr_td)),
        ("MRCONFIGID", 64, 48, |t| ones!(t.mr_config_id)),
        ("MROWNER", 112, 48, |t| ones!(t.mr_owner)),
        ("MROWNERCONFIG", 160, 48, |t| ones!(t.mr_owner_config)),
        ("RTMR0", 208, 48, |t| ones!(t.rtmr[0])),
        ("RTMR1", 256, 48, |t| ones!(t.rtmr[1])),
        ("RTMR2", 304, 48, |t| ones!(t.rtmr[2])),
        ("RTMR3", 352, 48, |t| ones!(t.rtmr[3])),
        ("SERVTD_HASH", 400, 48, |t| ones!(t.servtd_hash)),
        ("reserved", 448, 64, |t| ones!(t.reserved)),
    ];
    for (name, off, size, set) in table {
        check_field::<TdInfo>(name, off, size, set);
    }
    round_trip::<TdInfo>(512);
}

#[test]
fn td_report_layout() {
    let table: [Row<TdReport>; 5] = [
        ("REPORTMACSTRUCT", 0, 256, |r| ones!(r.report_mac_struct)),
        ("TEE_TCB_INFO", 256, 239, |r| ones!(r.tee_tcb_info)),
        ("reserved", 495, 17, |r| ones!(r.reserved)),
        ("TDINFO_STRUCT", 512, 512, |r| ones!(r.td_info)),
        ("TDINFO.MRTD", 528, 48, |r| ones!(r.td_info.mr_td)),
    ];
    for (name, off, size, set) in table {
        check_field::<TdReport>(name, off, size, set);
    }
    round_trip::<TdReport>(1024);
}

#[test]
fn ve_info_layout() {
    let table: [Row<VeInfo>; 10] = [
        ("EXIT_REASON", 0, 4, |v| ones!(v.exit_reason)),
        ("VALID", 4, 4, |v| ones!(v.valid)),
        ("EXIT_QUALIFICATION", 8, 8, |v| ones!(v.exit_qualification)),
        ("GLA", 16, 8, |v| ones!(v.gla)),
        ("GPA", 24, 8, |v| ones!(v.gpa)),
        ("EPTP_INDEX", 32, 2, |v| ones!(v.eptp_index)),
        ("reserved", 34, 2, |v| ones!(v.reserved_0)),
        ("INSTRUCTION_LENGTH", 36, 4, |v| ones!(v.instruction_length)),
        ("INSTRUCTION_INFO", 40, 4, |v| ones!(v.instruction_info)),
        ("reserved", 44, 84, |v| ones!(v.reserved_1)),
    ];
    for (name, off, size, set) in table {
        check_field::<VeInfo>(name, off, size, set);
    }
    round_trip::<VeInfo>(128);
}

#[test]
fn td_sys_info_layout() {
    let table: [Row<TdSysInfo>; 26] = [
        ("ATTRIBUTES", 0, 4, |s| ones!(s.attributes)),
        ("VENDOR_ID", 4, 4, |s| ones!(s.vendor_id)),
        ("BUILD_DATE", 8, 4, |s| ones!(s.build_date)),
        ("BUILD_NUM", 12, 2, |s| ones!(s.build_num)),
        ("MINOR_VERSION", 14, 2, |s| ones!(s.minor_version)),
        ("MAJOR_VERSION", 16, 2, |s| ones!(s.major_version)),
        ("SYS_RD", 18, 1, |s| ones!(s.sys_rd)),
        ("reserved", 19, 13, |s| ones!(s.reserved_0)),
        ("MAX_TDMRS", 32, 2, |s| ones!(s.max_tdmrs)),
        ("MAX_RESERVED_PER_TDMR", 34, 2, |s| {
            ones!(s.max_reserved_per_tdmr)
        }),
        ("PAMT_ENTRY_SIZE", 36, 2, |s| ones!(s.pamt_entry_size)),
        ("reserved", 38, 10, |s| ones!(s.reserved_1)),
        ("TDCS_BASE_SIZE", 48, 2, |s| ones!(s.tdcs_base_size)),
        ("reserved", 50, 2, |s| ones!(s.reserved_2)),
        ("TDVPS_BASE_SIZE", 52, 2, |s| ones!(s.tdvps_base_size)),
        ("TDVPS_XFAM_DEPENDENT_SIZE", 54, 1, |s| {
            ones!(s.tdvps_xfam_dependent_size)
        }),
        ("reserved", 55, 9, |s| ones!(s.reserved_3)),
        ("ATTRIBUTES_FIXED0", 64, 8, |s| ones!(s.attributes_fixed0)),
        ("ATTRIBUTES_FIXED1", 72, 8, |s| ones!(s.attributes_fixed1)),
        ("XFAM_FIXED0", 80, 8, |s| ones!(s.xfam_fixed0)),
        ("XFAM_FIXED1", 88, 8, |s| ones!(s.xfam_fixed1)),
        ("reserved", 96, 32, |s| ones!(s.reserved_4)),
        ("NUM_CPUID_CONFIG", 128, 4, |s| ones!(s.num_cpuid_config)),
        ("CPUID_CONFIG", 132, 24 * 37, |s| ones!(s.cpuid_config)),
        ("CPUID_CONFIG[1].LEAF", 156, 4, |s| {
            ones!(s.cpuid_config[1].leaf)
        }),
        ("reserved", 1020, 4, |s| ones!(s.reserved_5)),
    ];
    for (name, off, size, set) in table {
        check_field::<TdSysInfo>(name, off, size, set);
    }
    round_trip::<TdSysInfo>(1024);
}
