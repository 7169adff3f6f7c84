//! The machine: CPU, memory, TPM, AMD SEV, network interfaces.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::FileTypeExt;

use thiserror::Error;

use crate::config::{AddressSource, CpuidSource, ProbeConfig, TpmAccess};
use crate::fsx::{self, Loc, Roots};
use crate::model::{
    Cpu, CpuFeatures, IfAddress, IpFamily, Memory, NetInterface, Platform, Sev, SevGuest, SevHost,
    SevLevel, Tpm, Unknown, known, note,
};

/// Largest number of network interfaces reported.
const MAX_INTERFACES: usize = 1024;

/// The CPUID values the SEV host capability is derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuidSnapshot {
    /// Vendor string from leaf 0, e.g. `AuthenticAMD`.
    pub vendor: String,
    /// Highest extended leaf (leaf 0x80000000 EAX).
    pub max_extended_leaf: u32,
    /// Leaf 0x8000001F as [EAX, EBX, ECX, EDX] when the processor has it.
    pub leaf_8000_001f: Option<[u32; 4]>,
}

/// CPUID could not be executed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CpuidError {
    /// Not an x86-64 processor.
    #[error("CPUID exists only on x86-64 processors")]
    NotX86,
}

impl CpuidSnapshot {
    /// Executes CPUID on this processor.
    pub fn native() -> Result<Self, CpuidError> {
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::__cpuid;
            let leaf0 = __cpuid(0);
            let mut vendor = Vec::with_capacity(12);
            for reg in [leaf0.ebx, leaf0.edx, leaf0.ecx] {
                vendor.extend_from_slice(&reg.to_le_bytes());
            }
            let max_extended_leaf = __cpuid(0x8000_0000).eax;
            let leaf_8000_001f = (max_extended_leaf >= 0x8000_001F).then(|| {
                let r = __cpuid(0x8000_001F);
                [r.eax, r.ebx, r.ecx, r.edx]
            });
            Ok(Self {
                vendor: String::from_utf8_lossy(&vendor).into_owned(),
                max_extended_leaf,
                leaf_8000_001f,
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Err(CpuidError::NotX86)
        }
    }
}

/// Summary of /proc/cpuinfo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuinfoSummary {
    /// `vendor_id` of the first processor.
    pub vendor: Option<String>,
    /// `model name` of the first processor.
    pub model_name: Option<String>,
    /// Number of `processor` entries.
    pub threads: u32,
    /// Distinct (`physical id`, `core id`) pairs; `None` when the fields are absent.
    pub cores: Option<u32>,
    /// Distinct `physical id`s; `None` when absent.
    pub sockets: Option<u32>,
    /// Flags of the first processor.
    pub flags: BTreeSet<String>,
}

/// Most processor entries counted (bounds a hostile file).
const MAX_PROCESSORS: u32 = 65_536;

/// Parses /proc/cpuinfo (x86 layout: blank-line separated `key : value` blocks).
#[must_use]
pub fn parse_cpuinfo(text: &str) -> CpuinfoSummary {
    let mut s = CpuinfoSummary::default();
    let mut cores = BTreeSet::new();
    let mut sockets = BTreeSet::new();
    let mut physical: Option<String> = None;
    let mut saw_core_id = false;
    for line in text
        .lines()
        .take(usize::try_from(MAX_PROCESSORS).unwrap_or(usize::MAX) * 64)
    {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => {
                s.threads = s.threads.saturating_add(1).min(MAX_PROCESSORS);
                physical = None;
            }
            "vendor_id" if s.vendor.is_none() => s.vendor = Some(value.to_owned()),
            "model name" if s.model_name.is_none() => s.model_name = Some(value.to_owned()),
            "flags" if s.flags.is_empty() => {
                s.flags = value
                    .split_whitespace()
                    .take(1024)
                    .map(str::to_owned)
                    .collect();
            }
            "physical id" => {
                physical = Some(value.to_owned());
                sockets.insert(value.to_owned());
            }
            "core id" => {
                saw_core_id = true;
                cores.insert((physical.clone().unwrap_or_default(), value.to_owned()));
            }
            _ => {}
        }
    }
    let count = |set: usize| u32::try_from(set).ok();
    s.cores = if saw_core_id {
        count(cores.len())
    } else {
        None
    };
    s.sockets = if sockets.is_empty() {
        None
    } else {
        count(sockets.len())
    };
    s
}

/// Parses /proc/meminfo into bytes per key (`kB` values times 1024).
#[must_use]
pub fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines().take(1024) {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let Some(value) = parts.next().and_then(|v| v.parse::<u64>().ok()) else {
            continue;
        };
        let bytes = match parts.next() {
            Some("kB") => value.checked_mul(1024),
            None => Some(value),
            Some(_) => None,
        };
        if let Some(b) = bytes {
            out.insert(key.trim().to_owned(), b);
        }
    }
    out
}

pub(crate) fn probe_platform(config: &ProbeConfig, roots: &Roots) -> Platform {
    let mut unknown = Unknown::new();
    let cpuinfo = fsx::read_text(&roots.proc("cpuinfo")).map(|t| parse_cpuinfo(&t));
    let cpu = cpu(&cpuinfo);
    let memory = memory(roots);
    let tpm = tpm(config, roots);
    let sev = sev(config, roots, &cpuinfo);
    let network = match network(config, roots) {
        Ok(n) => n,
        Err(e) => {
            note(&mut unknown, "network", e);
            Vec::new()
        }
    };
    Platform {
        cpu,
        memory,
        tpm,
        sev,
        network,
        unknown,
    }
}

fn cpu(cpuinfo: &Result<CpuinfoSummary, fsx::ReadAttrError>) -> Cpu {
    let mut unknown = Unknown::new();
    let info = match cpuinfo {
        Ok(i) => i,
        Err(e) => {
            for f in [
                "vendor",
                "model_name",
                "sockets",
                "cores",
                "threads",
                "features",
            ] {
                note(&mut unknown, f, e.to_string());
            }
            return Cpu {
                vendor: None,
                model_name: None,
                sockets: None,
                cores: None,
                threads: None,
                features: None,
                unknown,
            };
        }
    };
    let missing = |u: &mut Unknown, f: &str, v: bool, why: &str| {
        if !v {
            note(u, f, why);
        }
    };
    missing(
        &mut unknown,
        "vendor",
        info.vendor.is_some(),
        "no vendor_id in /proc/cpuinfo",
    );
    missing(
        &mut unknown,
        "model_name",
        info.model_name.is_some(),
        "no model name in /proc/cpuinfo",
    );
    missing(
        &mut unknown,
        "sockets",
        info.sockets.is_some(),
        "no physical id in /proc/cpuinfo",
    );
    missing(
        &mut unknown,
        "cores",
        info.cores.is_some(),
        "no core id in /proc/cpuinfo",
    );
    missing(
        &mut unknown,
        "threads",
        info.threads > 0,
        "no processor entries in /proc/cpuinfo",
    );
    missing(
        &mut unknown,
        "features",
        !info.flags.is_empty(),
        "no flags in /proc/cpuinfo",
    );
    let has = |f: &str| info.flags.contains(f);
    Cpu {
        vendor: info.vendor.clone(),
        model_name: info.model_name.clone(),
        sockets: info.sockets,
        cores: info.cores,
        threads: (info.threads > 0).then_some(info.threads),
        features: (!info.flags.is_empty()).then(|| CpuFeatures {
            aes: has("aes"),
            vaes: has("vaes"),
            pclmulqdq: has("pclmulqdq"),
            vpclmulqdq: has("vpclmulqdq"),
            avx2: has("avx2"),
            avx512f: has("avx512f"),
            avx512bw: has("avx512bw"),
            sha_ni: has("sha_ni"),
        }),
        unknown,
    }
}

fn memory(roots: &Roots) -> Memory {
    let mut unknown = Unknown::new();
    let info = match fsx::read_text(&roots.proc("meminfo")) {
        Ok(t) => parse_meminfo(&t),
        Err(e) => {
            for f in ["total_bytes", "available_bytes", "swap_total_bytes"] {
                note(&mut unknown, f, e.to_string());
            }
            BTreeMap::new()
        }
    };
    let mut get = |key: &str, field: &str| {
        let v = info.get(key).copied();
        if v.is_none() {
            note(&mut unknown, field, format!("no {key} in /proc/meminfo"));
        }
        v
    };
    let total_bytes = get("MemTotal", "total_bytes");
    let available_bytes = get("MemAvailable", "available_bytes");
    let swap_total_bytes = get("SwapTotal", "swap_total_bytes");
    Memory {
        total_bytes,
        available_bytes,
        swap_total_bytes,
        unknown,
    }
}

fn node_path(roots: &Roots, name: &str) -> Option<(Loc, bool)> {
    let loc = roots.dev(name);
    let meta = fs::metadata(&loc.real).ok()?;
    let is_char = meta.file_type().is_char_device();
    Some((loc, is_char))
}

fn tpm(config: &ProbeConfig, roots: &Roots) -> Tpm {
    let mut unknown = Unknown::new();
    let class = roots.sys("class/tpm");
    let sysfs_devices: Vec<String> = match fsx::list_dir(&class) {
        Ok(names) => names
            .into_iter()
            .filter(|n| n.starts_with("tpm") && !n.starts_with("tpmrm"))
            .collect(),
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => {
            note(&mut unknown, "sysfs_devices", e.to_string());
            Vec::new()
        }
    };
    let tpm0 = node_path(roots, "tpm0");
    let tpmrm0 = node_path(roots, "tpmrm0");
    let device_node = tpm0.as_ref().map(|(l, _)| l.shown.clone());
    let resource_manager_node = tpmrm0.as_ref().map(|(l, _)| l.shown.clone());
    if device_node.is_none() {
        note(&mut unknown, "device_node", "no /dev/tpm0");
    }
    if resource_manager_node.is_none() {
        note(&mut unknown, "resource_manager_node", "no /dev/tpmrm0");
    }
    let present =
        !sysfs_devices.is_empty() || device_node.is_some() || resource_manager_node.is_some();
    let (version_major, pcr_banks_sysfs) = match sysfs_devices.first() {
        Some(first) => {
            let dir = class.join(first);
            let version = known(
                &mut unknown,
                "version_major",
                fsx::read_num::<u8>(&dir.join("tpm_version_major")),
            );
            let banks = fsx::list_dir(&dir).map(|entries| {
                entries
                    .into_iter()
                    .filter_map(|e| e.strip_prefix("pcr-").map(str::to_owned))
                    .collect::<Vec<_>>()
            });
            let banks = known(&mut unknown, "pcr_banks_sysfs", banks);
            if banks.as_ref().is_some_and(Vec::is_empty) {
                note(
                    &mut unknown,
                    "pcr_banks_sysfs",
                    "no pcr-<alg> directories (kernel < 5.12 or TPM 1.2)",
                );
            }
            (version, banks)
        }
        None => {
            let why = if present {
                "TPM device node without a sysfs entry"
            } else {
                "no TPM"
            };
            note(&mut unknown, "version_major", why);
            note(&mut unknown, "pcr_banks_sysfs", why);
            (None, None)
        }
    };
    let mut tpm = Tpm {
        present,
        sysfs_devices,
        version_major,
        device_node,
        resource_manager_node,
        pcr_banks_sysfs,
        pcr_banks: None,
        manufacturer: None,
        firmware_version: None,
        unknown,
    };
    let tcti = match &config.tpm {
        TpmAccess::Disabled(why) => Err(format!("TPM not queried: {why}")),
        TpmAccess::Tcti(t) => Ok(t.clone()),
        TpmAccess::Auto => match (&tpmrm0, &tpm0) {
            (Some((l, true)), _) | (None, Some((l, true))) => {
                Ok(format!("device:{}", l.real.display()))
            }
            (Some((l, false)), _) | (None, Some((l, false))) => Err(format!(
                "{} is not a character device: TPM not queried",
                l.shown
            )),
            (None, None) => Err("no TPM device node: TPM not queried".to_owned()),
        },
    };
    match tcti {
        Ok(tcti) => query_tpm(&tcti, &mut tpm),
        Err(why) => {
            for f in ["pcr_banks", "manufacturer", "firmware_version"] {
                note(&mut tpm.unknown, f, why.clone());
            }
        }
    }
    tpm
}

#[cfg(feature = "tpm")]
fn query_tpm(tcti: &str, tpm: &mut Tpm) {
    match crate::tpm::query(tcti) {
        Ok(q) => {
            tpm.present = true;
            tpm.pcr_banks = Some(q.pcr_banks);
            tpm.manufacturer = q.manufacturer;
            tpm.firmware_version = q.firmware_version;
            for (field, why) in q.unknown {
                note(&mut tpm.unknown, &field, why);
            }
        }
        Err(e) => {
            for f in ["pcr_banks", "manufacturer", "firmware_version"] {
                note(&mut tpm.unknown, f, e.to_string());
            }
        }
    }
}

#[cfg(not(feature = "tpm"))]
fn query_tpm(_tcti: &str, tpm: &mut Tpm) {
    for f in ["pcr_banks", "manufacturer", "firmware_version"] {
        note(
            &mut tpm.unknown,
            f,
            "dw-probe was built without the `tpm` feature (no libtss2)",
        );
    }
}

fn sev(
    config: &ProbeConfig,
    roots: &Roots,
    cpuinfo: &Result<CpuinfoSummary, fsx::ReadAttrError>,
) -> Sev {
    let mut hu = Unknown::new();
    let cpuid = match &config.cpuid {
        CpuidSource::Native => CpuidSnapshot::native().map_err(|e| e.to_string()),
        CpuidSource::Fixed(s) => Ok(s.clone()),
        CpuidSource::Unavailable(why) => Err(why.clone()),
    };
    let (cpu_sev, cpu_sev_es, cpu_sev_snp, c_bit_position, max_encrypted_guests) = match &cpuid {
        Err(why) => {
            for f in [
                "cpu_sev",
                "cpu_sev_es",
                "cpu_sev_snp",
                "c_bit_position",
                "max_encrypted_guests",
            ] {
                note(&mut hu, f, format!("CPUID unavailable: {why}"));
            }
            (None, None, None, None, None)
        }
        Ok(s) => match s.leaf_8000_001f {
            Some([eax, ebx, ecx, _]) if s.vendor == "AuthenticAMD" => (
                Some(eax & (1 << 1) != 0),
                Some(eax & (1 << 3) != 0),
                Some(eax & (1 << 4) != 0),
                u8::try_from(ebx & 0x3f).ok(),
                Some(ecx),
            ),
            _ => {
                let why = if s.vendor == "AuthenticAMD" {
                    "processor has no CPUID leaf 0x8000001F"
                } else {
                    "not an AMD processor"
                };
                note(&mut hu, "c_bit_position", why);
                note(&mut hu, "max_encrypted_guests", why);
                (Some(false), Some(false), Some(false), None, None)
            }
        },
    };
    let params = roots.sys("module/kvm_amd/parameters");
    let mut kvm = |name: &str| {
        let r = fsx::read_param_bool(&params.join(name));
        match r {
            Ok(v) => Some(v),
            Err(e) if e.is_not_found() => {
                note(
                    &mut hu,
                    &format!("kvm_{name}"),
                    "kvm_amd module not loaded (or parameter absent)",
                );
                None
            }
            Err(e) => {
                note(&mut hu, &format!("kvm_{name}"), e.to_string());
                None
            }
        }
    };
    let kvm_sev = kvm("sev");
    let kvm_sev_es = kvm("sev_es");
    let kvm_sev_snp = kvm("sev_snp");
    let dev_sev = fsx::exists(&roots.dev("sev"));
    let all = |a: Option<bool>, b: Option<bool>| a == Some(true) && b == Some(true) && dev_sev;
    let usable_level = if all(cpu_sev_snp, kvm_sev_snp) {
        SevLevel::SevSnp
    } else if all(cpu_sev_es, kvm_sev_es) {
        SevLevel::SevEs
    } else if all(cpu_sev, kvm_sev) {
        SevLevel::Sev
    } else {
        SevLevel::None
    };
    let host = SevHost {
        cpu_sev,
        cpu_sev_es,
        cpu_sev_snp,
        c_bit_position,
        max_encrypted_guests,
        kvm_sev,
        kvm_sev_es,
        kvm_sev_snp,
        dev_sev,
        usable_level,
        unknown: hu,
    };
    let mut gu = Unknown::new();
    let dev_sev_guest = fsx::exists(&roots.dev("sev-guest"));
    let flags = match cpuinfo {
        Ok(i) if !i.flags.is_empty() => Some(&i.flags),
        Ok(_) => {
            for f in [
                "hypervisor",
                "cpuinfo_sev",
                "cpuinfo_sev_es",
                "cpuinfo_sev_snp",
                "level",
            ] {
                note(&mut gu, f, "no flags in /proc/cpuinfo");
            }
            None
        }
        Err(e) => {
            for f in [
                "hypervisor",
                "cpuinfo_sev",
                "cpuinfo_sev_es",
                "cpuinfo_sev_snp",
                "level",
            ] {
                note(&mut gu, f, e.to_string());
            }
            None
        }
    };
    let flag = |f: &str| flags.map(|fl| fl.contains(f));
    let hypervisor = flag("hypervisor");
    let (g_sev, g_es, g_snp) = (flag("sev"), flag("sev_es"), flag("sev_snp"));
    // The sev* flags also appear on SEV-capable hosts; only with `hypervisor` do they describe
    // this machine as a guest.
    let level = hypervisor.map(|hv| {
        if !hv {
            SevLevel::None
        } else if g_snp == Some(true) || dev_sev_guest {
            SevLevel::SevSnp
        } else if g_es == Some(true) {
            SevLevel::SevEs
        } else if g_sev == Some(true) {
            SevLevel::Sev
        } else {
            SevLevel::None
        }
    });
    let guest = SevGuest {
        dev_sev_guest,
        hypervisor,
        cpuinfo_sev: g_sev,
        cpuinfo_sev_es: g_es,
        cpuinfo_sev_snp: g_snp,
        level,
        unknown: gu,
    };
    Sev { host, guest }
}

fn network(config: &ProbeConfig, roots: &Roots) -> Result<Vec<NetInterface>, String> {
    let class = roots.sys("class/net");
    let names = fsx::list_dir(&class).map_err(|e| e.to_string())?;
    let addresses: Result<BTreeMap<String, Vec<IfAddress>>, String> =
        match &config.interface_addresses {
            AddressSource::System => system_addresses(),
            AddressSource::Fixed(list) => {
                let mut map: BTreeMap<String, Vec<IfAddress>> = BTreeMap::new();
                for (name, addr) in list {
                    map.entry(name.clone()).or_default().push(addr.clone());
                }
                Ok(map)
            }
            AddressSource::Unavailable(why) => Err(why.clone()),
        };
    let mut out = Vec::new();
    for name in names.into_iter().take(MAX_INTERFACES) {
        let dir = class.join(&name);
        let mut unknown = Unknown::new();
        let mac = known(
            &mut unknown,
            "mac",
            fsx::read_nonempty(&dir.join("address")),
        );
        let mtu = known(&mut unknown, "mtu", fsx::read_num::<u32>(&dir.join("mtu")));
        let operstate = known(
            &mut unknown,
            "operstate",
            fsx::read_nonempty(&dir.join("operstate")),
        );
        let speed_mbps = match fsx::read_num::<i64>(&dir.join("speed")) {
            Ok(s) if s > 0 => u32::try_from(s).ok(),
            Ok(_) => {
                note(
                    &mut unknown,
                    "speed_mbps",
                    "the driver reports no speed (-1)",
                );
                None
            }
            Err(e) => {
                note(
                    &mut unknown,
                    "speed_mbps",
                    format!("link down or speed not reported: {e}"),
                );
                None
            }
        };
        let is_virtual = !fsx::exists(&dir.join("device"));
        let driver = if is_virtual {
            note(&mut unknown, "driver", "virtual interface (no device)");
            None
        } else {
            known(
                &mut unknown,
                "driver",
                fsx::link_basename(&dir.join("device/driver")),
            )
        };
        let addrs = match &addresses {
            Ok(map) => {
                let mut a = map.get(&name).cloned().unwrap_or_default();
                a.sort();
                Some(a)
            }
            Err(why) => {
                note(&mut unknown, "addresses", why.clone());
                None
            }
        };
        out.push(NetInterface {
            name,
            mac,
            mtu,
            operstate,
            speed_mbps,
            driver,
            is_virtual,
            addresses: addrs,
            unknown,
        });
    }
    Ok(out)
}

fn system_addresses() -> Result<BTreeMap<String, Vec<IfAddress>>, String> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("getifaddrs failed: {e}"))?;
    let mut map: BTreeMap<String, Vec<IfAddress>> = BTreeMap::new();
    for ifa in addrs.take(4096) {
        let Some(addr) = ifa.address else { continue };
        let entry = if let Some(v4) = addr.as_sockaddr_in() {
            let prefix = ifa
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .and_then(|m| u8::try_from(u32::from(m.ip()).count_ones()).ok());
            IfAddress {
                family: IpFamily::Ipv4,
                address: v4.ip().to_string(),
                prefix_len: prefix,
            }
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            let prefix = ifa
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in6())
                .and_then(|m| u8::try_from(u128::from(m.ip()).count_ones()).ok());
            IfAddress {
                family: IpFamily::Ipv6,
                address: v6.ip().to_string(),
                prefix_len: prefix,
            }
        } else {
            continue;
        };
        map.entry(ifa.interface_name.clone())
            .or_default()
            .push(entry);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9454P 48-Core Processor\n\
physical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu aes pclmulqdq avx2 sha_ni vaes avx512f avx512bw hypervisor sev sev_es\n\n\
processor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9454P 48-Core Processor\n\
physical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu aes\n\n\
processor\t: 2\nphysical id\t: 0\ncore id\t\t: 1\n\n\
processor\t: 3\nphysical id\t: 1\ncore id\t\t: 0\n";

    #[test]
    fn cpuinfo_counts_and_flags() {
        let s = parse_cpuinfo(CPUINFO);
        assert_eq!(s.threads, 4);
        assert_eq!(s.cores, Some(3));
        assert_eq!(s.sockets, Some(2));
        assert_eq!(s.vendor.as_deref(), Some("AuthenticAMD"));
        assert!(s.flags.contains("sha_ni"));
        assert!(!s.flags.contains("fpu aes"));
        let c = cpu(&Ok(s));
        let f = c.features.unwrap();
        assert!(f.aes && f.vaes && f.pclmulqdq && f.avx2 && f.avx512f && f.avx512bw && f.sha_ni);
        assert!(!f.vpclmulqdq);
    }

    #[test]
    fn meminfo_in_bytes() {
        let m = parse_meminfo(
            "MemTotal:       24684096 kB\nMemAvailable:   23870000 kB\nHugePages_Total:       0\nbad line\n",
        );
        assert_eq!(m["MemTotal"], 24_684_096 * 1024);
        assert_eq!(m["HugePages_Total"], 0);
        assert_eq!(m.len(), 3);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let t = String::from_utf8_lossy(&bytes);
            let _ = parse_cpuinfo(&t);
            let _ = parse_meminfo(&t);
        }
    }
}
