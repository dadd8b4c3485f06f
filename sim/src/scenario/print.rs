//! Printing: a [`Scenario`] back to script text (parsing it round-trips).

use std::fmt;

use super::lex::{fmt_duration, fmt_flags, fmt_open_mode, fmt_prot, fmt_size};
use super::{Op, Scenario, Step};

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Open { path, mode, fd } => {
                write!(f, "open {path}{} as {fd}", fmt_open_mode(*mode))
            }
            Op::Close { fd } => write!(f, "close {fd}"),
            Op::Mmap {
                fd,
                prot,
                flags,
                offset,
                len,
                map,
            } => {
                write!(
                    f,
                    "mmap {fd} prot={} flags={} offset={}",
                    fmt_prot(*prot),
                    fmt_flags(*flags),
                    fmt_size(*offset)
                )?;
                if let Some(l) = len {
                    write!(f, " len={}", fmt_size(*l))?;
                }
                write!(f, " as {map}")
            }
            Op::Touch { map, offset, len } => {
                write!(f, "touch {map} {}", fmt_size(*offset))?;
                if let Some(l) = len {
                    write!(f, " {}", fmt_size(*l))?;
                }
                Ok(())
            }
            Op::Munmap { map } => write!(f, "munmap {map}"),
            Op::Exec { path } => write!(f, "exec {path}"),
            Op::Exit => write!(f, "exit"),
            Op::Fork { child } => write!(f, "fork as {child}"),
            Op::Spawn { path, child } => write!(f, "spawn {path} as {child}"),
            Op::Unmount { on, force } => {
                write!(f, "unmount {on}{}", if *force { " force" } else { "" })
            }
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.steps {
            match s {
                Step::Mount {
                    fstype,
                    on,
                    from: None,
                } => writeln!(f, "mount {fstype} {on}")?,
                Step::Mount {
                    fstype,
                    on,
                    from: Some(dir),
                } => writeln!(f, "mount {fstype} {on} from {dir}")?,
                Step::File { path, size } => writeln!(f, "file {path} {}", fmt_size(*size))?,
                Step::Proc { name, uid } => writeln!(f, "proc {name} uid={uid}")?,
                Step::Op { proc, op, .. } => writeln!(f, "{proc}: {op}")?,
                Step::Parallel(ops) => {
                    writeln!(f, "parallel")?;
                    for (_, proc, op) in ops {
                        writeln!(f, "  {proc}: {op}")?;
                    }
                    writeln!(f, "end")?;
                }
                Step::Sleep(d) => writeln!(f, "sleep {}", fmt_duration(*d))?,
                Step::Unmount { on, force } => {
                    writeln!(f, "unmount {on}{}", if *force { " force" } else { "" })?
                }
                Step::Jetsam { proc } => writeln!(f, "jetsam {proc}")?,
                Step::Recycle { path } => writeln!(f, "recycle {path}")?,
                Step::Evict { path } => writeln!(f, "evict {path}")?,
                Step::Chapter(text) => writeln!(f, "chapter {text}")?,
                Step::Ring(r) => writeln!(f, "ring slots={} shards={}", r.slots, r.shards)?,
            }
        }
        Ok(())
    }
}
