//! The config target: every input is written to `kern.maptrace.config`
//! through the real shim's sysctl handler on one simulator per process.
//!
//! Oracles: a non-root write is EPERM and changes nothing; a refused root
//! write is EINVAL and leaves the config and the stats byte-for-byte as they
//! were; an input the ABI calls valid is accepted; an accepted write reads
//! back as written, is marked with a CONFIG marker when the new config wants
//! markers, and the kext then records exactly the kinds the config asks for.

use crate::shim_support::{Tunables, boot_loaded, drain, raw_name, read_config, write_config};
use maptrace_abi::decode::{Decoder, Event, Record};
use maptrace_abi::{EventKind, Mark, raw};
use maptrace_sim::{Config, Cred, Proc, Sim, map_flags, prot};

const EPERM: i32 = 1;
const EINVAL: i32 = 22;
const PAGE: u64 = 4096;
/// The file the workload maps (one of the harness's files).
pub const FILE: &str = "/data/b.bin";
/// uid of the workload process.
const UID: u32 = 501;

/// The ABI's reading of a config write (maptrace_abi.h, `struct mt_config`),
/// written here independently of the core's parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    flags: u32,
    mask: u32,
    pid: u32,
}

impl Wanted {
    /// `Some` when the ABI says the kext must accept `bytes`.
    pub fn parse(bytes: &[u8]) -> Option<Wanted> {
        let size = size_of::<raw::mt_config>();
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or([0; 4]));
        if bytes.len() != size {
            return None;
        }
        let version = u16::from_le_bytes([bytes[0], bytes[1]]);
        let declared = u16::from_le_bytes([bytes[2], bytes[3]]);
        let (flags, mask, pid) = (word(4), word(8), word(12));
        let both = raw::MT_CF_PID_FILTER | raw::MT_CF_PID_EXCLUDE;
        let ok = u32::from(version) == raw::MT_CONFIG_VERSION
            && usize::from(declared) == size
            && flags & !raw::MT_CF_ALL == 0
            && flags & both != both
            && mask & !raw::MT_EVMASK_ALL == 0
            && (16..size).step_by(4).all(|i| word(i) == 0);
        ok.then_some(Wanted { flags, mask, pid })
    }

    /// Whether this config records `kind` from `pid`.
    pub fn wants(self, kind: EventKind, pid: u32) -> bool {
        self.flags & raw::MT_CF_ENABLE != 0
            && self.mask & (1 << kind as u32) != 0
            && !(self.flags & raw::MT_CF_PID_FILTER != 0 && pid != self.pid)
            && !(self.flags & raw::MT_CF_PID_EXCLUDE != 0 && pid == self.pid)
    }

    /// Whether this config records markers: they describe the kext, not a
    /// process, so the pid filters do not apply to them.
    pub fn wants_marks(self) -> bool {
        self.flags & raw::MT_CF_ENABLE != 0 && self.mask & (1 << EventKind::Mark as u32) != 0
    }
}

/// One simulator with the shim loaded, a process and a decoder.
pub struct Harness {
    /// The simulator (the process's only one).
    pub sim: Sim,
    proc: Proc,
    dec: Decoder,
}

impl Harness {
    /// Boots, loads the shim with the default tunables, spawns the workload
    /// process and drains the start markers.
    pub fn boot() -> Harness {
        Harness::boot_with(Tunables::default())
    }

    /// As [`Harness::boot`] with other tunables (a small ring for lossy seeds).
    pub fn boot_with(t: Tunables) -> Harness {
        let sim = boot_loaded(Config::default(), t);
        let proc = sim.spawn("fuzzed", UID);
        let mut h = Harness {
            sim,
            proc,
            dec: Decoder::new(),
        };
        drain(&h.sim, &mut h.dec);
        h
    }

    /// One round of the workload.
    pub fn workload(&self) {
        workload(&self.sim, &self.proc);
    }

    /// The pid of the workload process (seeds filter on it).
    pub fn pid(&self) -> u32 {
        self.proc.pid() as u32
    }

    /// Everything a write must not change when it is refused.
    fn state(&self) -> (Vec<u8>, Vec<u8>) {
        let config = read_config(&self.sim, Cred::Root).expect("root reads the config");
        (config, self.raw_stats())
    }

    /// `kern.maptrace.stats` as read (what a format 2 recording closes with).
    pub fn raw_stats(&self) -> Vec<u8> {
        let name = raw_name(raw::MT_SYSCTL_STATS);
        let n = self
            .sim
            .sysctl_read(name, None, Cred::Root)
            .expect("stats size");
        let mut buf = vec![0u8; n];
        let got = self
            .sim
            .sysctl_read(name, Some(&mut buf), Cred::Root)
            .expect("stats read");
        buf.truncate(got);
        buf
    }

    /// Runs one input through every oracle; panics on a breach. The root
    /// write goes first, then the same bytes as a user, and one state read
    /// after both checks that neither a refusal nor the user changed a thing.
    pub fn check(&mut self, input: &[u8]) {
        let before = self.state();
        let wanted = Wanted::parse(input);
        let root = write_config(&self.sim, input, Cred::Root);
        let expected = match root {
            Err(e) => {
                assert_eq!(e.errno, EINVAL, "a refused write says EINVAL");
                assert_eq!(wanted, None, "a valid config was refused: {input:02x?}");
                before
            }
            Ok(_) => {
                assert!(
                    wanted.is_some(),
                    "an invalid config was accepted: {input:02x?}"
                );
                let now = self.state();
                assert_eq!(now.0, input, "the config reads back as written");
                now
            }
        };
        let user = write_config(&self.sim, input, Cred::User(UID));
        assert_eq!(
            user.map_err(|e| e.errno),
            Err(EPERM),
            "a user wrote the config"
        );
        assert_eq!(self.state(), expected, "a refused write changed the kext");
        if let Some(wanted) = wanted {
            self.check_records(wanted);
        }
    }

    /// After an accepted write: its marker, then a workload recorded as the
    /// config says.
    fn check_records(&mut self, wanted: Wanted) {
        let marks = drain(&self.sim, &mut self.dec);
        let config_marks: Vec<&Record> = marks
            .iter()
            .filter(|r| {
                matches!(
                    r.event,
                    Event::Mark {
                        mark: Mark::Config,
                        ..
                    }
                )
            })
            .collect();
        if wanted.wants_marks() {
            let expect_arg1 = (u64::from(wanted.flags) << 32) | u64::from(wanted.pid);
            assert!(
                matches!(config_marks.as_slice(), [r] if matches!(r.event,
                    Event::Mark { arg0, arg1, .. } if arg0 == wanted.mask && arg1 == expect_arg1)),
                "one CONFIG marker naming {wanted:?}, got {config_marks:?}"
            );
        } else {
            assert!(config_marks.is_empty(), "{wanted:?} wants no markers");
        }

        self.workload();
        let recs = drain(&self.sim, &mut self.dec);
        let pid = self.pid();
        for kind in [
            EventKind::Mmap,
            EventKind::Pagein,
            EventKind::Mnomap,
            EventKind::FileMmap,
        ] {
            let seen = recs.iter().any(|r| r.kind == kind);
            assert_eq!(
                seen,
                wanted.wants(kind, pid),
                "{kind:?} records under {wanted:?} (pid {pid})"
            );
        }
        assert!(
            recs.iter()
                .all(|r| r.kind != EventKind::Path || wanted.wants(EventKind::Path, pid)),
            "a path record under {wanted:?}"
        );
    }
}

/// open, drop the cached pages (so touches page in), map 4 pages, touch
/// them, unmap, close.
fn workload(sim: &Sim, p: &Proc) {
    let fd = p.open(FILE).expect("open");
    sim.evict(FILE).expect("evict");
    let a = p
        .mmap(fd, 4 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("map");
    p.touch(a, 4 * PAGE).expect("touch");
    p.munmap(a).expect("unmap");
    p.close(fd).expect("close");
}
