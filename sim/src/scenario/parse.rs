//! Parsing: script text to [`Scenario`], with line/column errors.

use std::collections::HashMap;

use super::lex::{
    Cursor, parse_duration, parse_flags, parse_open_mode, parse_prot, parse_size, tokens,
};
use super::{Op, ParallelOp, ParseError, RingSize, Scenario, Step};
use crate::vm::{OpenMode, map_flags, prot};

fn parse_op(c: &mut Cursor<'_>) -> Result<Op, ParseError> {
    let t = c.next("an operation")?;
    let op = match t.text {
        "open" => {
            let path = c.path()?;
            let mut mode = OpenMode::ReadOnly;
            if let Some(t) = c.peek().cloned()
                && t.text != "as"
            {
                mode = parse_open_mode(t.text).ok_or_else(|| ParseError {
                    line: c.line,
                    col: t.col,
                    msg: format!("bad open mode `{}` (use ro, rw or evtonly)", t.text),
                })?;
                c.i += 1;
            }
            let fd = c.as_label("descriptor name")?;
            Op::Open { path, mode, fd }
        }
        "close" => Op::Close {
            fd: c.label("descriptor name")?,
        },
        "mmap" => {
            let fd = c.label("descriptor name")?;
            let (mut p, mut flags, mut offset, mut len) = (prot::READ, map_flags::PRIVATE, 0, None);
            while let Some(t) = c.peek().cloned() {
                let Some((key, val)) = t.text.split_once('=') else {
                    break;
                };
                c.i += 1;
                let bad = |what: &str| ParseError {
                    line: c.line,
                    col: t.col + key.len() + 1,
                    msg: format!("bad {what} `{val}`"),
                };
                match key {
                    "prot" => p = parse_prot(val).ok_or_else(|| bad("prot (use r, w, x, none)"))?,
                    "flags" => {
                        flags = parse_flags(val)
                            .ok_or_else(|| bad("flags (shared or private[,fixed])"))?
                    }
                    "offset" => offset = parse_size(val).ok_or_else(|| bad("offset"))?,
                    "len" => {
                        len = Some(
                            parse_size(val)
                                .filter(|n| *n > 0)
                                .ok_or_else(|| bad("len"))?,
                        )
                    }
                    _ => return c.err(t.col, format!("unknown mmap option `{key}`")),
                }
            }
            let map = c.as_label("mapping name")?;
            Op::Mmap {
                fd,
                prot: p,
                flags,
                offset,
                len,
                map,
            }
        }
        "touch" => {
            let map = c.label("mapping name")?;
            let offset = if c.peek().is_some() {
                c.size("offset")?
            } else {
                0
            };
            let len = if c.peek().is_some() {
                Some(c.size("length")?)
            } else {
                None
            };
            Op::Touch { map, offset, len }
        }
        "munmap" => Op::Munmap {
            map: c.label("mapping name")?,
        },
        "exec" => Op::Exec { path: c.path()? },
        "unmount" => {
            let on = c.path()?;
            Op::Unmount {
                on,
                force: c.force_flag(),
            }
        }
        "exit" => Op::Exit,
        "fork" => Op::Fork {
            child: c.as_label("process name")?,
        },
        "spawn" => {
            let path = c.path()?;
            Op::Spawn {
                path,
                child: c.as_label("process name")?,
            }
        }
        other => return c.err(t.col, format!("unknown operation `{other}`")),
    };
    c.done()?;
    Ok(op)
}

impl Scenario {
    /// Parses a script.
    pub fn parse(text: &str) -> Result<Scenario, ParseError> {
        let mut steps = Vec::new();
        let mut lines = Vec::new();
        let mut procs: HashMap<String, usize> = HashMap::new();
        let mut parallel: Option<(usize, Vec<ParallelOp>)> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let toks = tokens(raw);
            if toks.is_empty() {
                continue;
            }
            let end_col = raw.split('#').next().unwrap_or("").trim_end().len() + 1;
            let mut c = Cursor {
                line,
                toks,
                i: 0,
                end_col,
            };
            let first = c.peek().cloned().ok_or_else(|| ParseError {
                line,
                col: 1,
                msg: "empty".into(),
            })?;
            if let Some(name) = first.text.strip_suffix(':') {
                if !procs.contains_key(name) {
                    return c.err(
                        first.col,
                        format!("unknown process `{name}` (declare it with `proc {name}`)"),
                    );
                }
                c.i += 1;
                let op = parse_op(&mut c)?;
                if let Op::Fork { child } | Op::Spawn { child, .. } = &op {
                    if procs.contains_key(child) {
                        return c.err(first.col, format!("process `{child}` declared twice"));
                    }
                    procs.insert(child.clone(), line);
                }
                match &mut parallel {
                    Some((_, ops)) => ops.push((line, name.to_string(), op)),
                    None => {
                        steps.push(Step::Op {
                            line,
                            proc: name.to_string(),
                            op,
                        });
                        lines.push(line);
                    }
                }
                continue;
            }
            c.i += 1;
            if parallel.is_some() && first.text != "end" {
                return c.err(
                    first.col,
                    "only `NAME: operation` lines may appear inside `parallel`",
                );
            }
            let step = match first.text {
                "mount" => {
                    let fstype = c.label("filesystem type")?;
                    let on = c.path()?;
                    let from = match c.peek() {
                        Some(t) if t.text == "from" => {
                            c.i += 1;
                            Some(c.path()?)
                        }
                        _ => None,
                    };
                    Step::Mount { fstype, on, from }
                }
                "file" => {
                    let path = c.path()?;
                    Step::File {
                        path,
                        size: c.size("size")?,
                    }
                }
                "proc" => {
                    let name = c.label("process name")?;
                    if procs.contains_key(&name) {
                        return c.err(first.col + 5, format!("process `{name}` declared twice"));
                    }
                    let mut uid = 501;
                    if let Some(t) = c.peek().cloned() {
                        let Some(v) = t.text.strip_prefix("uid=") else {
                            return c.err(t.col, format!("expected uid=N, found `{}`", t.text));
                        };
                        uid = v.parse().map_err(|_| ParseError {
                            line,
                            col: t.col + 4,
                            msg: format!("bad uid `{v}`"),
                        })?;
                        c.i += 1;
                    }
                    procs.insert(name.clone(), line);
                    Step::Proc { name, uid }
                }
                "sleep" => {
                    let t = c.next("a duration")?;
                    Step::Sleep(parse_duration(t.text).ok_or_else(|| ParseError {
                        line,
                        col: t.col,
                        msg: format!("bad duration `{}` (use 10ms, 500us or 1s)", t.text),
                    })?)
                }
                "unmount" => {
                    let on = c.path()?;
                    Step::Unmount {
                        on,
                        force: c.force_flag(),
                    }
                }
                "jetsam" => {
                    let t = c.peek().cloned();
                    let name = c.label("process name")?;
                    if !procs.contains_key(&name) {
                        let col = t.map_or(c.end_col, |t| t.col);
                        return c.err(col, format!("unknown process `{name}`"));
                    }
                    Step::Jetsam { proc: name }
                }
                "recycle" => Step::Recycle { path: c.path()? },
                "evict" => Step::Evict { path: c.path()? },
                "chapter" => {
                    let words: Vec<&str> = c.toks.iter().skip(1).map(|t| t.text).collect();
                    if words.is_empty() {
                        return c.err(c.end_col, "expected a chapter title");
                    }
                    c.i = c.toks.len();
                    Step::Chapter(words.join(" "))
                }
                "ring" => {
                    let mut ring = RingSize {
                        shards: 1,
                        slots: 0,
                    };
                    while let Some(t) = c.peek().cloned() {
                        c.i += 1;
                        let Some((key, val)) = t.text.split_once('=') else {
                            return c.err(
                                t.col,
                                format!("expected slots=N or shards=N, found `{}`", t.text),
                            );
                        };
                        let n = val.parse::<u32>().ok().filter(|n| *n > 0);
                        let bad = |what: &str| ParseError {
                            line,
                            col: t.col + key.len() + 1,
                            msg: format!("bad {what} `{val}`"),
                        };
                        match key {
                            "slots" => {
                                ring.slots = n
                                    .filter(|n| n.is_power_of_two())
                                    .ok_or_else(|| bad("slot count (a power of two)"))?
                            }
                            "shards" => ring.shards = n.ok_or_else(|| bad("shard count"))?,
                            _ => {
                                return c.err(
                                    t.col,
                                    format!("unknown ring option `{key}` (use slots=N, shards=N)"),
                                );
                            }
                        }
                    }
                    if ring.slots == 0 {
                        return c.err(c.end_col, "expected slots=N");
                    }
                    Step::Ring(ring)
                }
                "parallel" => {
                    c.done()?;
                    parallel = Some((line, Vec::new()));
                    continue;
                }
                "end" => {
                    c.done()?;
                    let Some((_, ops)) = parallel.take() else {
                        return c.err(first.col, "`end` without `parallel`");
                    };
                    steps.push(Step::Parallel(ops));
                    lines.push(line);
                    continue;
                }
                other => return c.err(first.col, format!("unknown command `{other}`")),
            };
            c.done()?;
            steps.push(step);
            lines.push(line);
        }
        if let Some((line, _)) = parallel {
            return Err(ParseError {
                line,
                col: 1,
                msg: "`parallel` without `end`".into(),
            });
        }
        Ok(Scenario { steps, lines })
    }
}
