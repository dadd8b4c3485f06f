//! The sysctl contract of the kext (`kern.maptrace.*`): the portable logic
//! (ABI check, size query, growing the buffer on `ENOMEM`, errno → message)
//! over a [`Sysctl`] trait, with the real `sysctlbyname` on macOS only.
//! The simulator implements the same trait, so it is read exactly like macOS.

use crate::pagesize::PageSize;
use crate::source::{Next, Source, SourceError};
use crate::wallclock::Anchor;
use maptrace_abi::{AbiVersion, raw};
use zerocopy::{FromZeros, IntoBytes};

/// `kern.maptrace.abi` as a Rust string.
pub const ABI: &str = "kern.maptrace.abi";
/// `kern.maptrace.stats`.
pub const STATS: &str = "kern.maptrace.stats";
/// `kern.maptrace.config`.
pub const CONFIG: &str = "kern.maptrace.config";
/// `kern.maptrace.events`.
pub const EVENTS: &str = "kern.maptrace.events";

/// Times a read is retried with a doubled buffer after `ENOMEM` (the batch
/// grew between the size query and the read).
pub const ENOMEM_RETRIES: u32 = 6;

/// The errno values the contract gives meaning to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysErr {
    /// `ENOENT`: no such sysctl (the kext is not loaded).
    NoEnt,
    /// `EPERM` or `EACCES`: not root.
    Perm,
    /// `ENOMEM`: the buffer is too small.
    NoMem,
    /// `EINVAL`: a write was refused.
    Inval,
    /// Anything else, as the raw errno.
    Other(i32),
}

/// Access to sysctls by name: the real one on macOS, the simulator's, or a
/// fake in tests.
pub trait Sysctl {
    /// Reads `name`. With `buf == None` this is a size query and returns the
    /// bytes to allocate; otherwise it returns the bytes copied into `buf`.
    fn read(&mut self, name: &str, buf: Option<&mut [u8]>) -> Result<usize, SysErr>;
    /// Writes `data` to `name`.
    fn write(&mut self, name: &str, data: &[u8]) -> Result<(), SysErr>;
    /// The kext's clock now, as it stamps records (nanoseconds since
    /// boot), when this side can read it; `None` leaves the source without
    /// wall-clock times.
    fn kext_clock_ns(&mut self) -> Option<u64> {
        None
    }
    /// The VM page size of the kext's machine by this side's own means,
    /// when `vm.pagesize` does not say ([`kernel_page_size`]).
    fn page_size(&mut self) -> Option<PageSize> {
        None
    }
}

/// The sysctl with the kernel's own page size.
pub const VM_PAGESIZE: &str = "vm.pagesize";

/// The traced kernel's page size: `vm.pagesize`, XNU's `page_size`
/// (`SYSCTL_INT(_vm, OID_AUTO, pagesize, ...)`, bsd/vm/vm_unix.c,
/// xnu-7195.141.2 and xnu-11417.121.6), the same for every caller; unlike
/// `hw.pagesize` and `sysconf`, which give the caller's map's page (4 KiB
/// for an x86_64 build under Rosetta on a 16 KiB kernel). Without it, the
/// side's own answer ([`Sysctl::page_size`]).
pub fn kernel_page_size<S: Sysctl + ?Sized>(api: &mut S) -> Option<PageSize> {
    let mut word = [0u8; 4];
    let from_kernel = match api.read(VM_PAGESIZE, Some(&mut word)) {
        Ok(4) => PageSize::new(u64::from(u32::from_ne_bytes(word))).ok(),
        _ => None,
    };
    from_kernel.or_else(|| api.page_size())
}

fn map_err(name: &str, e: SysErr, writing: bool) -> SourceError {
    match e {
        SysErr::NoEnt => SourceError::KextNotLoaded { name: name.into() },
        SysErr::Perm => SourceError::NotRoot {
            name: name.into(),
            what: if writing { "written" } else { "read" },
        },
        SysErr::Inval if writing => SourceError::ConfigRefused(
            "wrong size, version, unknown bits, or both --pid and --exclude-pid".into(),
        ),
        SysErr::Inval => SourceError::Sysctl {
            name: name.into(),
            detail: "invalid argument (EINVAL)".into(),
        },
        SysErr::NoMem => SourceError::Sysctl {
            name: name.into(),
            detail: "buffer too small (ENOMEM)".into(),
        },
        SysErr::Other(n) => SourceError::Sysctl {
            name: name.into(),
            detail: format!("errno {n}"),
        },
    }
}

/// Reads a whole variable-size sysctl: size query, allocate, read, and
/// retry with a doubled buffer on `ENOMEM`. Returns the bytes read into
/// `buf` (0: nothing to read).
pub fn read_sized<S: Sysctl + ?Sized>(
    api: &mut S,
    name: &str,
    buf: &mut Vec<u8>,
) -> Result<usize, SourceError> {
    let need = api.read(name, None).map_err(|e| map_err(name, e, false))?;
    if need == 0 {
        return Ok(0);
    }
    if buf.len() < need {
        buf.resize(need, 0);
    }
    for _ in 0..=ENOMEM_RETRIES {
        match api.read(name, Some(buf.as_mut_slice())) {
            Ok(n) => return Ok(n.min(buf.len())),
            Err(SysErr::NoMem) => {
                let grown = buf.len().saturating_mul(2).max(4096);
                buf.resize(grown, 0);
            }
            Err(e) => return Err(map_err(name, e, false)),
        }
    }
    Err(SourceError::Sysctl {
        name: name.into(),
        detail: format!("still ENOMEM with a {} byte buffer", buf.len()),
    })
}

/// Reads `kern.maptrace.abi` and checks that this build can read the kext.
pub fn check_abi<S: Sysctl + ?Sized>(api: &mut S) -> Result<u32, SourceError> {
    let mut word = [0u8; 4];
    let n = api
        .read(ABI, Some(&mut word))
        .map_err(|e| map_err(ABI, e, false))?;
    if n != word.len() {
        return Err(SourceError::Sysctl {
            name: ABI.into(),
            detail: format!("returned {n} bytes, expected 4"),
        });
    }
    let kext = AbiVersion::from_word(u32::from_le_bytes(word));
    kext.check().map_err(SourceError::AbiMismatch)?;
    Ok(kext.word())
}

/// A [`Source`] over any [`Sysctl`]: the kext on macOS, or the simulator.
#[derive(Debug)]
pub struct SysctlSource<S> {
    api: S,
    label: String,
    abi: u32,
    anchor: Option<Anchor>,
    page_size: Option<PageSize>,
}

impl<S: Sysctl> SysctlSource<S> {
    /// Opens the source: checks the ABI first, so a missing kext, a
    /// non-root user or a version mismatch is reported before anything else.
    pub fn open(mut api: S, label: &str) -> Result<SysctlSource<S>, SourceError> {
        let abi = check_abi(&mut api)?;
        // Both clocks read now, at open: every record's time maps to UTC
        // through this one pair (the kext's clock does not jump; the Unix
        // clock may be stepped later, which the mapping then ignores).
        let anchor = Anchor::now(|| api.kext_clock_ns());
        let page_size = kernel_page_size(&mut api);
        Ok(SysctlSource {
            api,
            label: label.into(),
            abi,
            anchor,
            page_size,
        })
    }

    /// The kext's ABI version.
    pub fn abi(&self) -> u32 {
        self.abi
    }

    /// The underlying sysctl access.
    pub fn api_mut(&mut self) -> &mut S {
        &mut self.api
    }
}

impl<S: Sysctl> Source for SysctlSource<S> {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn is_live(&self) -> bool {
        true
    }

    fn anchor(&self) -> Option<Anchor> {
        self.anchor
    }

    fn page_size(&self) -> Result<PageSize, String> {
        self.page_size
            .ok_or_else(|| format!("{} did not say", self.label))
    }

    fn next_batch(&mut self, buf: &mut Vec<u8>) -> Result<Next, SourceError> {
        match read_sized(&mut self.api, EVENTS, buf)? {
            0 => Ok(Next::Idle),
            n => Ok(Next::Batch(n)),
        }
    }

    fn stats(&mut self) -> Result<Vec<u8>, SourceError> {
        let mut buf = Vec::new();
        let n = read_sized(&mut self.api, STATS, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    fn config(&mut self) -> Result<raw::mt_config, SourceError> {
        let mut cfg = raw::mt_config::new_zeroed();
        let n = self
            .api
            .read(CONFIG, Some(cfg.as_mut_bytes()))
            .map_err(|e| map_err(CONFIG, e, false))?;
        if n != size_of::<raw::mt_config>() {
            return Err(SourceError::Sysctl {
                name: CONFIG.into(),
                detail: format!("returned {n} bytes"),
            });
        }
        Ok(cfg)
    }

    fn set_config(&mut self, cfg: &raw::mt_config) -> Result<(), SourceError> {
        self.api
            .write(CONFIG, cfg.as_bytes())
            .map_err(|e| map_err(CONFIG, e, true))
    }
}

/// The real `sysctlbyname(3)`.
#[cfg(target_os = "macos")]
#[derive(Debug, Default)]
pub struct MacSysctl;

#[cfg(target_os = "macos")]
impl MacSysctl {
    fn errno() -> SysErr {
        match std::io::Error::last_os_error().raw_os_error().unwrap_or(0) {
            libc::ENOENT => SysErr::NoEnt,
            libc::EPERM | libc::EACCES => SysErr::Perm,
            libc::ENOMEM => SysErr::NoMem,
            libc::EINVAL => SysErr::Inval,
            n => SysErr::Other(n),
        }
    }
}

#[cfg(target_os = "macos")]
impl Sysctl for MacSysctl {
    fn read(&mut self, name: &str, buf: Option<&mut [u8]>) -> Result<usize, SysErr> {
        let cname = std::ffi::CString::new(name).map_err(|_| SysErr::NoEnt)?;
        let (ptr, mut len) = match buf {
            Some(b) => (b.as_mut_ptr().cast::<libc::c_void>(), b.len()),
            None => (std::ptr::null_mut(), 0),
        };
        // SAFETY: `cname` is NUL-terminated; `ptr` is null (size query) or
        // points to `len` writable bytes borrowed for this call; no new value.
        let rc =
            unsafe { libc::sysctlbyname(cname.as_ptr(), ptr, &mut len, std::ptr::null_mut(), 0) };
        if rc == 0 { Ok(len) } else { Err(Self::errno()) }
    }

    fn write(&mut self, name: &str, data: &[u8]) -> Result<(), SysErr> {
        let cname = std::ffi::CString::new(name).map_err(|_| SysErr::NoEnt)?;
        let new = data.as_ptr().cast_mut().cast::<libc::c_void>();
        // SAFETY: `cname` is NUL-terminated; no old value is requested; the
        // kernel only reads `data.len()` bytes from `new`.
        let rc = unsafe {
            libc::sysctlbyname(
                cname.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                new,
                data.len(),
            )
        };
        if rc == 0 { Ok(()) } else { Err(Self::errno()) }
    }

    /// What the kext's `mt_now_ns()` computes, from userspace:
    /// `mach_absolute_time()` scaled by `mach_timebase_info` (the kernel's
    /// `absolutetime_to_nanoseconds` uses the same timebase; XNU
    /// osfmk/arm/rtclock.c, osfmk/i386/rtclock.c at xnu-11417.121.6).
    fn kext_clock_ns(&mut self) -> Option<u64> {
        mach_clock_ns()
    }

    /// `sysconf(_SC_PAGESIZE)`, when `vm.pagesize` cannot be read:
    /// libsyscall's `vm_page_size`, read from the commpage's user page shift
    /// (libsyscall/mach/mach_init.c). The kernel writes its own `PAGE_SHIFT`
    /// there on x86_64 and `SIXTEENK_PAGE_SHIFT` on arm64 (osfmk/i386/
    /// commpage/commpage.c, osfmk/arm/commpage/commpage.c), where its page
    /// is 16 KiB too (`ARM_PGSHIFT` 14, osfmk/arm64/proc_reg.h); all at
    /// xnu-11417.121.6. (An x86_64 build under Rosetta runs in a 4 KiB map
    /// and would see 4 KiB, which is why `vm.pagesize` comes first.)
    fn page_size(&mut self) -> Option<PageSize> {
        // SAFETY: sysconf takes a constant and touches no memory of ours.
        let bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(bytes)
            .ok()
            .and_then(|b| PageSize::new(b).ok())
    }
}

/// `struct mach_timebase_info` (`<mach/mach_time.h>`).
#[cfg(target_os = "macos")]
#[repr(C)]
#[derive(Default)]
struct MachTimebaseInfo {
    numer: u32,
    denom: u32,
}

#[cfg(target_os = "macos")]
unsafe extern "C" {
    // Declared here: the libc crate's declarations are deprecated.
    fn mach_absolute_time() -> u64;
    fn mach_timebase_info(info: *mut MachTimebaseInfo) -> i32;
}

/// `mach_absolute_time()` in nanoseconds (`None` if the timebase is not
/// available, which no Mac does).
#[cfg(target_os = "macos")]
fn mach_clock_ns() -> Option<u64> {
    let mut tb = MachTimebaseInfo::default();
    // SAFETY: `tb` is a valid, writable `mach_timebase_info` for the call.
    let rc = unsafe { mach_timebase_info(&mut tb) };
    if rc != 0 || tb.denom == 0 {
        return None;
    }
    // SAFETY: no arguments; reads the clock.
    let ticks = unsafe { mach_absolute_time() };
    let ns = u128::from(ticks) * u128::from(tb.numer) / u128::from(tb.denom);
    u64::try_from(ns).ok()
}

/// Opens the kext's sysctl source on this machine.
#[cfg(target_os = "macos")]
pub fn open_kext() -> Result<SysctlSource<MacSysctl>, SourceError> {
    SysctlSource::open(MacSysctl, "sysctl")
}

/// Opens the kext's sysctl source on this machine (macOS only).
#[cfg(not(target_os = "macos"))]
pub fn open_kext() -> Result<SysctlSource<NoKext>, SourceError> {
    Err(SourceError::Unsupported(
        "--source sysctl needs macOS with the maptrace kext; here, use --source sim \
         (or `maptrace demo`) or --source file:PATH"
            .into(),
    ))
}

/// Stands in for `sysctlbyname` where it does not exist.
#[cfg(not(target_os = "macos"))]
#[derive(Debug, Default)]
pub struct NoKext;

#[cfg(not(target_os = "macos"))]
impl Sysctl for NoKext {
    fn read(&mut self, _name: &str, _buf: Option<&mut [u8]>) -> Result<usize, SysErr> {
        Err(SysErr::NoEnt)
    }

    fn write(&mut self, _name: &str, _data: &[u8]) -> Result<(), SysErr> {
        Err(SysErr::NoEnt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A scripted kext: an ABI word, queued event batches and failures.
    #[derive(Debug, Default)]
    struct Fake {
        abi: Option<Result<u32, SysErr>>,
        /// Per read of EVENTS: (size reported by the size query, batch or error).
        events: VecDeque<Result<Vec<u8>, SysErr>>,
        /// The batch grows by this much between the size query and the read.
        grow_after_query: usize,
        reads: Vec<usize>,
        config: Vec<u8>,
        refuse_writes: Option<SysErr>,
        /// What `vm.pagesize` answers (None: no such sysctl).
        vm_pagesize: Option<Vec<u8>>,
        /// The side's own page size (sysconf's, on macOS).
        own_page_size: Option<PageSize>,
    }

    impl Sysctl for Fake {
        fn read(&mut self, name: &str, buf: Option<&mut [u8]>) -> Result<usize, SysErr> {
            match name {
                ABI => {
                    let v = self.abi.ok_or(SysErr::NoEnt)??;
                    let b = buf.ok_or(SysErr::Inval)?;
                    b.get_mut(..4)
                        .ok_or(SysErr::NoMem)?
                        .copy_from_slice(&v.to_le_bytes());
                    Ok(4)
                }
                EVENTS => {
                    let front = self.events.front().cloned().unwrap_or(Ok(Vec::new()));
                    let batch = front?;
                    match buf {
                        None => Ok(batch.len().saturating_sub(self.grow_after_query)),
                        Some(b) => {
                            self.reads.push(b.len());
                            if b.len() < batch.len() {
                                return Err(SysErr::NoMem);
                            }
                            self.events.pop_front();
                            b[..batch.len()].copy_from_slice(&batch);
                            Ok(batch.len())
                        }
                    }
                }
                CONFIG => {
                    let b = buf.ok_or(SysErr::Inval)?;
                    b.get_mut(..self.config.len())
                        .ok_or(SysErr::NoMem)?
                        .copy_from_slice(&self.config);
                    Ok(self.config.len())
                }
                VM_PAGESIZE => {
                    let v = self.vm_pagesize.as_ref().ok_or(SysErr::NoEnt)?;
                    let b = buf.ok_or(SysErr::Inval)?;
                    let n = v.len().min(b.len());
                    b[..n].copy_from_slice(&v[..n]);
                    Ok(n)
                }
                _ => Err(SysErr::NoEnt),
            }
        }

        fn write(&mut self, name: &str, data: &[u8]) -> Result<(), SysErr> {
            if let Some(e) = self.refuse_writes {
                return Err(e);
            }
            assert_eq!(name, CONFIG);
            self.config = data.to_vec();
            Ok(())
        }

        fn page_size(&mut self) -> Option<PageSize> {
            self.own_page_size
        }
    }

    #[test]
    fn the_kernels_page_size_comes_before_the_callers_own() {
        let with = |vm: Option<Vec<u8>>, own: Option<PageSize>| {
            let mut f = Fake {
                vm_pagesize: vm,
                own_page_size: own,
                ..abi_ok()
            };
            kernel_page_size(&mut f)
        };
        let word = |v: u32| Some(v.to_ne_bytes().to_vec());
        // An x86_64 build under Rosetta: its own map says 4 KiB, the
        // kernel's page is 16 KiB.
        assert_eq!(
            with(word(16384), Some(PageSize::FOUR_K)),
            Some(PageSize::SIXTEEN_K)
        );
        assert_eq!(with(word(4096), None), Some(PageSize::FOUR_K));
        // No such sysctl, a short answer or a size that is no page size:
        // the side's own answer, or none.
        assert_eq!(
            with(None, Some(PageSize::SIXTEEN_K)),
            Some(PageSize::SIXTEEN_K)
        );
        assert_eq!(
            with(Some(vec![0, 0x40]), Some(PageSize::FOUR_K)),
            Some(PageSize::FOUR_K)
        );
        for bad in [0, 3, 1 << 20] {
            assert_eq!(
                with(word(bad), Some(PageSize::FOUR_K)),
                Some(PageSize::FOUR_K),
                "{bad}"
            );
        }
        assert_eq!(with(word(12345), None), None);
        // The source keeps what it found at open.
        let f = Fake {
            vm_pagesize: word(16384),
            own_page_size: Some(PageSize::FOUR_K),
            ..abi_ok()
        };
        let src = SysctlSource::open(f, "test").unwrap();
        assert_eq!(src.page_size(), Ok(PageSize::SIXTEEN_K));
    }

    fn abi_ok() -> Fake {
        Fake {
            abi: Some(Ok(raw::MT_ABI_VERSION)),
            ..Fake::default()
        }
    }

    #[test]
    fn missing_kext_says_it_is_not_loaded() {
        let e = SysctlSource::open(Fake::default(), "sysctl").unwrap_err();
        assert!(matches!(e, SourceError::KextNotLoaded { .. }), "{e:?}");
        assert!(e.to_string().contains("not loaded"), "{e}");
        // On macOS 11+ the first load of a build only stages it: say what else it takes.
        assert!(
            e.to_string()
                .contains("allow it in System Settings and restart"),
            "{e}"
        );
    }

    #[test]
    fn permission_errors_say_run_as_root() {
        let f = Fake {
            abi: Some(Ok(raw::MT_ABI_VERSION)),
            events: VecDeque::from([Err(SysErr::Perm)]),
            ..Fake::default()
        };
        let mut s = SysctlSource::open(f, "sysctl").unwrap();
        let e = s.next_batch(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("sudo"), "{e}");
        assert!(matches!(e, SourceError::NotRoot { what: "read", .. }));
        // Every leaf is root only: the ABI check at open already says so.
        let f = Fake {
            abi: Some(Err(SysErr::Perm)),
            ..Fake::default()
        };
        let e = SysctlSource::open(f, "sysctl").unwrap_err();
        assert!(
            matches!(&e, SourceError::NotRoot { name, what: "read" } if name == ABI),
            "{e:?}"
        );
        assert!(e.to_string().contains("run maptrace as root"), "{e}");
    }

    #[test]
    fn another_major_version_is_refused_with_both_versions() {
        let f = Fake {
            abi: Some(Ok(0x0203)),
            ..Fake::default()
        };
        let e = SysctlSource::open(f, "sysctl").unwrap_err();
        let msg = e.to_string();
        // What was found, what was expected, and what to do.
        assert!(
            msg.contains("ABI mismatch")
                && msg.contains("ABI 2.3")
                && msg.contains("reads 1.x")
                && msg.contains("use the maptrace binary built with that kext"),
            "{msg}"
        );
        // Older and much newer major versions are refused too.
        for abi in [0x0001, 0x0000, 0xff01] {
            let f = Fake {
                abi: Some(Ok(abi)),
                ..Fake::default()
            };
            let e = SysctlSource::open(f, "sysctl").unwrap_err();
            assert!(
                matches!(e, SourceError::AbiMismatch(m) if m.found.word() == abi),
                "{abi:#x}: {e:?}"
            );
        }
        // A newer minor version of the same major is readable.
        let f = Fake {
            abi: Some(Ok(raw::MT_ABI_VERSION + 5)),
            ..Fake::default()
        };
        assert!(SysctlSource::open(f, "sysctl").is_ok());
    }

    #[test]
    fn empty_reads_are_idle_and_batches_are_returned_whole() {
        let batch: Vec<u8> = (0..200u8).collect();
        let mut f = abi_ok();
        f.events = VecDeque::from([Ok(Vec::new()), Ok(batch.clone())]);
        let mut s = SysctlSource::open(f, "sysctl").unwrap();
        let mut buf = Vec::new();
        // The fake pops on a successful read only; an empty one stays queued
        // until a non-empty size query, so drain it by hand.
        assert_eq!(s.next_batch(&mut buf).unwrap(), Next::Idle);
        s.api_mut().events.pop_front();
        assert_eq!(s.next_batch(&mut buf).unwrap(), Next::Batch(200));
        assert_eq!(&buf[..200], batch.as_slice());
    }

    #[test]
    fn a_batch_that_grew_after_the_size_query_is_read_with_a_bigger_buffer() {
        let batch = vec![7u8; 10_000];
        let mut f = abi_ok();
        f.events = VecDeque::from([Ok(batch.clone())]);
        f.grow_after_query = 6_000;
        let mut s = SysctlSource::open(f, "sysctl").unwrap();
        let mut buf = Vec::new();
        assert_eq!(s.next_batch(&mut buf).unwrap(), Next::Batch(10_000));
        assert_eq!(s.api_mut().reads, vec![4_000, 8_000, 16_000]);
        assert_eq!(&buf[..10_000], batch.as_slice());
    }

    #[test]
    fn endless_enomem_gives_up_with_a_message() {
        #[derive(Debug)]
        struct Stingy;
        impl Sysctl for Stingy {
            fn read(&mut self, name: &str, buf: Option<&mut [u8]>) -> Result<usize, SysErr> {
                match (name, buf) {
                    (ABI, Some(b)) => {
                        b[..4].copy_from_slice(&raw::MT_ABI_VERSION.to_le_bytes());
                        Ok(4)
                    }
                    (_, None) => Ok(64),
                    _ => Err(SysErr::NoMem),
                }
            }
            fn write(&mut self, _: &str, _: &[u8]) -> Result<(), SysErr> {
                Ok(())
            }
        }
        let mut s = SysctlSource::open(Stingy, "sysctl").unwrap();
        let e = s.next_batch(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("ENOMEM"), "{e}");
    }

    #[test]
    fn config_round_trips_and_refusals_explain_themselves() {
        let mut cfg = raw::mt_config::new_zeroed();
        cfg.version = raw::MT_CONFIG_VERSION as u16;
        cfg.size = 32;
        cfg.event_mask = raw::MT_EVMASK_ALL;
        let mut f = abi_ok();
        f.config = cfg.as_bytes().to_vec();
        let mut s = SysctlSource::open(f, "sysctl").unwrap();
        assert_eq!(s.config().unwrap(), cfg);
        cfg.flags = raw::MT_CF_ENABLE;
        s.set_config(&cfg).unwrap();
        assert_eq!(s.config().unwrap().flags, raw::MT_CF_ENABLE);
        s.api_mut().refuse_writes = Some(SysErr::Inval);
        assert!(matches!(
            s.set_config(&cfg),
            Err(SourceError::ConfigRefused(_))
        ));
        s.api_mut().refuse_writes = Some(SysErr::Perm);
        let e = s.set_config(&cfg).unwrap_err();
        assert!(
            matches!(
                e,
                SourceError::NotRoot {
                    what: "written",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_errno_is_named() {
        let f = Fake {
            abi: Some(Err(SysErr::Other(5))),
            ..Fake::default()
        };
        let e = SysctlSource::open(f, "sysctl").unwrap_err();
        assert!(e.to_string().contains("errno 5"), "{e}");
    }
}
