//! The seeded generator of random but valid workloads.

use super::{Op, ParallelOp, Scenario, Step};
use crate::vm::{OpenMode, map_flags, prot};

/// Shape of a generated workload.
#[derive(Clone, Copy, Debug)]
pub struct GenParams {
    /// Processes.
    pub procs: usize,
    /// Data files.
    pub files: usize,
    /// Operations per process (besides exec and exit).
    pub ops_per_proc: usize,
    /// Run the processes' operations in `parallel` blocks.
    pub parallel: bool,
    /// End with a forced unmount of the data volume.
    pub force_unmount: bool,
    /// Sizes and offsets are multiples of this (16 KiB by default: valid
    /// on 4 KiB and 16 KiB page platforms alike).
    pub page_size: u64,
}

impl Default for GenParams {
    fn default() -> GenParams {
        GenParams {
            procs: 4,
            files: 6,
            ops_per_proc: 40,
            parallel: true,
            force_unmount: true,
            page_size: 16384,
        }
    }
}

/// A random but valid workload: the same seed gives the same scenario.
pub fn generate(seed: u64, g: &GenParams) -> Scenario {
    let mut rng = fastrand::Rng::with_seed(seed);
    let ps = g.page_size;
    let mut steps = vec![
        Step::Mount {
            fstype: "apfs".into(),
            on: "/".into(),
            from: None,
        },
        Step::Mount {
            fstype: "hfs".into(),
            on: "/Volumes/Data".into(),
            from: None,
        },
    ];
    let files: Vec<(String, u64)> = (0..g.files.max(1))
        .map(|i| (format!("/Volumes/Data/f{i}"), ps * rng.u64(1..=64)))
        .collect();
    let tools: Vec<(String, u64)> = (0..2)
        .map(|i| (format!("/bin/tool{i}"), ps * rng.u64(4..=32)))
        .collect();
    for (path, size) in files.iter().chain(tools.iter()) {
        steps.push(Step::File {
            path: path.clone(),
            size: *size,
        });
    }
    let names: Vec<String> = (0..g.procs.max(1)).map(|i| format!("p{i}")).collect();
    for n in &names {
        steps.push(Step::Proc {
            name: n.clone(),
            uid: 501,
        });
    }
    // Per-process op lists, generated with label bookkeeping so every op is valid.
    let mut lists: Vec<Vec<Op>> = Vec::new();
    for _ in &names {
        let mut ops = Vec::new();
        if rng.bool() {
            ops.push(Op::Exec {
                path: tools[rng.usize(..tools.len())].0.clone(),
            });
        }
        let mut fds: Vec<(String, u64)> = Vec::new();
        let mut maps: Vec<(String, u64)> = Vec::new();
        let mut next = 0;
        for _ in 0..g.ops_per_proc {
            next += 1;
            let choice = rng.u32(..100);
            if fds.is_empty() || choice < 15 {
                let (path, size) = files[rng.usize(..files.len())].clone();
                let fd = format!("fd{next}");
                ops.push(Op::Open {
                    path,
                    mode: OpenMode::ReadOnly,
                    fd: fd.clone(),
                });
                fds.push((fd, size));
            } else if maps.is_empty() || choice < 40 {
                let (fd, size) = fds[rng.usize(..fds.len())].clone();
                let pages = size / ps;
                let off = rng.u64(..pages);
                let len = ps * rng.u64(1..=pages - off);
                let map = format!("m{next}");
                let flags = if rng.bool() {
                    map_flags::SHARED
                } else {
                    map_flags::PRIVATE
                };
                ops.push(Op::Mmap {
                    fd,
                    prot: prot::READ,
                    flags,
                    offset: off * ps,
                    len: Some(len),
                    map: map.clone(),
                });
                maps.push((map, len));
            } else if choice < 80 {
                let (map, len) = maps[rng.usize(..maps.len())].clone();
                let pages = len / ps;
                let off = rng.u64(..pages);
                let n = rng.u64(1..=(pages - off).min(8));
                ops.push(Op::Touch {
                    map,
                    offset: off * ps,
                    len: Some(n * ps),
                });
            } else if choice < 92 {
                let (map, _) = maps.swap_remove(rng.usize(..maps.len()));
                ops.push(Op::Munmap { map });
            } else if choice < 97 {
                let (fd, _) = fds.swap_remove(rng.usize(..fds.len()));
                ops.push(Op::Close { fd });
            } else {
                // exec replaces the address space; descriptors stay open.
                ops.push(Op::Exec {
                    path: tools[rng.usize(..tools.len())].0.clone(),
                });
                maps.clear();
            }
        }
        ops.push(Op::Exit);
        lists.push(ops);
    }
    if g.parallel {
        let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..longest {
            let block: Vec<ParallelOp> = names
                .iter()
                .zip(&lists)
                .filter_map(|(n, ops)| ops.get(i).map(|op| (0, n.clone(), op.clone())))
                .collect();
            steps.push(Step::Parallel(block));
        }
    } else {
        for (n, ops) in names.iter().zip(lists) {
            steps.extend(ops.into_iter().map(|op| Step::Op {
                line: 0,
                proc: n.clone(),
                op,
            }));
        }
    }
    if g.force_unmount {
        steps.push(Step::Unmount {
            on: "/Volumes/Data".into(),
            force: true,
        });
    }
    let lines = vec![0; steps.len()];
    Scenario { steps, lines }
}
