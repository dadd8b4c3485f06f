//! The JSON lines contract of `stream --json`, as types.
//!
//! `output` writes the lines by hand for speed; these types say the same
//! thing the slow, obvious way. They are the source of the JSON Schema
//! (`maptrace schema`, checked in as `companion/schema/events.schema.json`),
//! the reference the hand-written writer must match byte for byte (tests),
//! and the rows of `--format csv`.

use crate::pipeline::{Ev, Item, Loss, Totals};
use crate::text::prot_str;
use crate::wallclock::{Anchor, rfc3339_micros};
use maptrace_abi::{Counts, Event, Mark, ProbeMethod};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Serialize, Serializer};
use std::borrow::Cow;

/// The name in the stream's first line.
pub const SCHEMA_NAME: &str = "maptrace.events";
/// The contract's version. Adding a field or a line type keeps it (readers
/// ignore what they do not know); renaming, removing or retyping a field
/// bumps it.
pub const SCHEMA_VERSION: u32 = 1;

/// A 64-bit id or opaque value, written as a string of decimal digits:
/// readers that hold numbers as doubles (jq, JavaScript) would round it
/// above 2^53.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecId(pub u64);

impl Serialize for DecId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl JsonSchema for DecId {
    fn schema_name() -> Cow<'static, str> {
        "DecId".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A 64-bit unsigned value as a string of decimal digits (exact where a JSON number would be rounded above 2^53).",
            "type": "string",
            "pattern": "^(0|[1-9][0-9]{0,19})$"
        })
    }
}

/// A vnode id: the kext's keyed hash, as 16 lower-case hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VnodeId(pub u64);

impl Serialize for VnodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:016x}", self.0))
    }
}

impl JsonSchema for VnodeId {
    fn schema_name() -> Cow<'static, str> {
        "VnodeId".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Keyed hash of the vnode and its vid, 16 lower-case hex digits; all zeros when the event names no vnode.",
            "type": "string",
            "pattern": "^[0-9a-f]{16}$"
        })
    }
}

/// `PROT_*` bits as `rwx` letters (`"r-x"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prot(pub u32);

impl Serialize for Prot {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = prot_str(self.0);
        s.serialize_str(std::str::from_utf8(&p).unwrap_or("???"))
    }
}

impl JsonSchema for Prot {
    fn schema_name() -> Cow<'static, str> {
        "Prot".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "PROT_READ, PROT_WRITE, PROT_EXEC as letters.",
            "type": "string",
            "pattern": "^[r-][w-][x-]$"
        })
    }
}

/// A field that is always present and may be `null` (an `Option` field
/// would be optional in the schema; this one is required).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Nullable<T>(pub Option<T>);

impl<T: JsonSchema> JsonSchema for Nullable<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("Nullable_{}", T::schema_name()).into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({ "anyOf": [generator.subschema_for::<T>(), { "type": "null" }] })
    }
}

/// One line of `stream --json`, told apart by `type`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// The first line: which contract the rest follows.
    Schema {
        /// Always `maptrace.events`.
        schema: String,
        /// The contract's version.
        version: u32,
    },
    /// A recorded event.
    Event(EventLine),
    /// Records that went missing here.
    Loss(LossLine),
    /// Part of the stream could not be decoded.
    Corrupt {
        /// What was wrong, in words.
        message: String,
    },
    /// The kext was reloaded: vnode ids and paths start over.
    Reload {
        /// The new load's generation.
        generation: DecId,
    },
    /// The closing line (unless `--no-summary`).
    Summary {
        /// Batches read.
        batches: u64,
        /// Records decoded.
        events: u64,
        /// Records the kext dropped.
        dropped: u64,
        /// Slots skipped by position gaps.
        gap_slots: u64,
        /// Corrupt parts of the stream.
        corrupt: u64,
        /// Bytes missing at the end of a recording cut mid-frame (0 when
        /// whole, and for live sources).
        cut_bytes: u64,
        /// Of `events`, those the filters (`--pid`, `--kind`, `--path`) let
        /// through; absent without a filter.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shown: Option<u64>,
    },
}

/// What every event has.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Common {
    /// Nanoseconds since boot.
    pub ts_ns: u64,
    /// The UTC time of `ts_ns` (RFC 3339, microseconds), with
    /// `--time wall`; absent otherwise.
    // Absent, never null: the schema says "string" (not required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    #[schemars(regex(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"
    ))]
    pub time: Option<String>,
    /// The ring shard the record was made in (chosen by CPU; not a CPU
    /// number: one shard may serve several CPUs).
    pub shard: u16,
    /// The record's position in its shard.
    pub pos: u64,
    /// Process id.
    pub pid: u32,
    /// The process's name, once a `proc` line named the pid (the latest:
    /// an exec renames it); absent before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub comm: Option<String>,
    /// Thread id (64-bit, so a string).
    pub tid: DecId,
    /// The file.
    pub vnode: VnodeId,
    /// The file's path (invalid UTF-8 replaced by U+FFFD), or null when no
    /// PATH record named the vnode yet.
    pub path: Nullable<String>,
    /// errno returned by the original operation.
    pub error: u8,
    /// Records this shard dropped just before this one.
    pub lost_before: u64,
}

/// How the usecounts were measured.
#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CountMethod {
    /// Read at validated offsets: every count.
    Offset,
    /// The `vnode_isinuse` fallback: only `usecount_minus_kusecount`.
    Isinuse,
    /// Not measured.
    None,
}

/// The vnode counts before the operation; null when not measured.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct CountsLine {
    /// `v_usecount` (O_EVTONLY references included).
    pub usecount: Nullable<u16>,
    /// `v_kusecount`.
    pub kusecount: Nullable<u16>,
    /// `v_usecount - v_kusecount`, what `vnode_isinuse` compares.
    pub usecount_minus_kusecount: Nullable<u16>,
    /// Raw `v_iocount`.
    pub iocount: Nullable<u16>,
    /// How they were measured.
    pub count_method: CountMethod,
    /// A count was clamped to 16 bits.
    pub counts_saturated: bool,
}

/// Where a `VNOP_MMAP` came from.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Via {
    /// An mmap(2) call: its MAC check's arguments.
    Mmap {
        /// The offset argument of mmap(2).
        file_pos: u64,
        /// `PROT_*` allowed.
        maxprot: Prot,
        /// `MAP_*` flags.
        mmap_flags: u32,
        /// 1, or 2 for the second `VNOP_MMAP` of a `MAP_SHARED` call.
        call_map: u8,
    },
    /// Exec or the loader (no mmap(2) call).
    Exec,
}

/// The name of a mark.
#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MarkName {
    /// The kext started: `arg1` slots per shard, `arg2` shards.
    Start,
    /// A config was applied: `arg0` the kind mask, `arg1` flags << 32 | pid.
    Config,
    /// A vnode-op vector was hooked: `arg0` its number.
    VectorPatched,
    /// A mark this companion does not know.
    Unknown,
}

/// An event, told apart by `kind`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventLine {
    /// `VNOP_MMAP`.
    Mmap {
        /// Common fields.
        #[serde(flatten)]
        common: Common,
        /// The file's open mode as `PROT_*`.
        prot: Prot,
        /// The vnode's vid.
        vid: u32,
        /// Time in the original `VNOP_MMAP`.
        duration_ns: u32,
        /// Counts before the operation.
        #[serde(flatten)]
        counts: CountsLine,
        /// The call it belongs to.
        #[serde(flatten)]
        via: Via,
    },
    /// `VNOP_PAGEIN`.
    Pagein {
        /// Common fields.
        #[serde(flatten)]
        common: Common,
        /// File offset.
        offset: i64,
        /// Bytes requested.
        size: u32,
        /// Time in the original `VNOP_PAGEIN`.
        duration_ns: u32,
        /// Counts before the operation.
        #[serde(flatten)]
        counts: CountsLine,
        /// `UPL_*` flags.
        upl_flags: u16,
    },
    /// `VNOP_MNOMAP`: the last unmap.
    Mnomap {
        /// Common fields.
        #[serde(flatten)]
        common: Common,
        /// The vnode's vid.
        vid: u32,
        /// Time in the original `VNOP_MNOMAP`.
        duration_ns: u32,
        /// Counts before the operation.
        #[serde(flatten)]
        counts: CountsLine,
    },
    /// The mmap(2) MAC check.
    FileMmap {
        /// Common fields.
        #[serde(flatten)]
        common: Common,
        /// The offset argument of mmap(2).
        file_pos: u64,
        /// `PROT_*` requested.
        prot: Prot,
        /// `PROT_*` allowed.
        maxprot: Prot,
        /// `MAP_*` flags.
        mmap_flags: u32,
    },
    /// A process's name (`proc_selfname`), recorded before its first event
    /// and again after an exec, a config write or the drop of its record.
    Proc {
        /// Common fields.
        #[serde(flatten)]
        common: Common,
        /// The name (invalid UTF-8 replaced by U+FFFD).
        name: String,
        /// The name was cut at `MT_PROC_NAME_BYTES`.
        truncated: bool,
    },
    /// An open of a regular file (MAC `vnode_notify_open`), after it took
    /// its usecount.
    Open {
        /// Common fields.
        #[serde(flatten)]
        common: Common,
        /// The vnode's vid.
        vid: u32,
        /// The open's `FREAD | FWRITE | O_EVTONLY` bits.
        fmode: u32,
        /// Counts after the open's reference.
        #[serde(flatten)]
        counts: CountsLine,
    },
    /// The last close of an open file (`VNOP_CLOSE`), before the open's
    /// usecount goes.
    Close {
        /// Common fields.
        #[serde(flatten)]
        common: Common,
        /// The vnode's vid.
        vid: u32,
        /// The close's `fflag` (neither FREAD nor FWRITE: a forced unmount).
        fflag: u32,
        /// Time in the original `VNOP_CLOSE`.
        duration_ns: u32,
        /// Counts before the operation.
        #[serde(flatten)]
        counts: CountsLine,
    },
    /// A PATH record naming a vnode.
    Path {
        /// Common fields.
        #[serde(flatten)]
        common: Common,
        /// The vnode's vid.
        vid: u32,
        /// The path was cut at `MT_PATH_MAX`.
        truncated: bool,
    },
    /// A kext mark.
    Mark {
        /// Common fields.
        #[serde(flatten)]
        common: Common,
        /// Which mark.
        mark: MarkName,
        /// First argument.
        arg0: u32,
        /// Second argument (64-bit, so a string).
        arg1: DecId,
        /// Third argument (64-bit, so a string).
        arg2: DecId,
    },
}

/// Records that went missing, told apart by `reason`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum LossLine {
    /// The kext dropped records because a shard was full.
    Dropped {
        /// The shard.
        shard: u16,
        /// Records dropped.
        count: u64,
        /// The drops sit right before this position; null for drops after
        /// the shard's last record read.
        before_pos: Nullable<u64>,
    },
    /// Positions jumped: another reader took them, or they were lost.
    Gap {
        /// The shard.
        shard: u16,
        /// Slots skipped.
        slots: u64,
    },
}

fn counts(c: &Counts) -> CountsLine {
    let (usecount, kusecount, diff, iocount, count_method) = match c.method {
        ProbeMethod::Offset => (
            Some(c.usecount),
            Some(c.kusecount),
            Some(c.usecount.saturating_sub(c.kusecount)),
            c.iocount,
            CountMethod::Offset,
        ),
        ProbeMethod::IsInUse => (None, None, Some(c.usecount), None, CountMethod::Isinuse),
        ProbeMethod::None => (None, None, None, None, CountMethod::None),
    };
    CountsLine {
        usecount: Nullable(usecount),
        kusecount: Nullable(kusecount),
        usecount_minus_kusecount: Nullable(diff),
        iocount: Nullable(iocount),
        count_method,
        counts_saturated: c.saturated,
    }
}

impl EventLine {
    /// The line of one event.
    pub fn of(ev: &Ev) -> EventLine {
        EventLine::of_at(ev, None)
    }

    /// The line of one event, with its UTC time when `wall` maps the
    /// kext's clock to it.
    pub fn of_at(ev: &Ev, wall: Option<&Anchor>) -> EventLine {
        let r = &ev.rec;
        let common = Common {
            ts_ns: r.timestamp_ns,
            time: wall.map(|a| rfc3339_micros(a.unix_ns_of(r.timestamp_ns))),
            shard: r.shard,
            pos: r.pos,
            pid: r.pid,
            comm: ev.comm.as_ref().map(|c| c.text.clone()),
            tid: DecId(r.tid),
            vnode: VnodeId(r.vnode_id),
            path: Nullable(ev.path.as_ref().map(|p| p.text.clone())),
            error: r.error,
            lost_before: r.lost_before,
        };
        match &r.event {
            Event::Mmap {
                fflags,
                vid,
                duration_ns,
                counts: c,
            } => EventLine::Mmap {
                common,
                prot: Prot(*fflags),
                vid: *vid,
                duration_ns: *duration_ns,
                counts: counts(c),
                via: match &ev.call {
                    Some(call) => Via::Mmap {
                        file_pos: call.file_pos,
                        maxprot: Prot(call.maxprot),
                        mmap_flags: call.mmap_flags,
                        call_map: ev.call_map,
                    },
                    None => Via::Exec,
                },
            },
            Event::Pagein {
                offset,
                size,
                duration_ns,
                counts: c,
                upl_flags,
            } => EventLine::Pagein {
                common,
                offset: *offset,
                size: *size,
                duration_ns: *duration_ns,
                counts: counts(c),
                upl_flags: *upl_flags,
            },
            Event::Mnomap {
                vid,
                duration_ns,
                counts: c,
            } => EventLine::Mnomap {
                common,
                vid: *vid,
                duration_ns: *duration_ns,
                counts: counts(c),
            },
            Event::FileMmap {
                file_pos,
                prot,
                maxprot,
                mmap_flags,
            } => EventLine::FileMmap {
                common,
                file_pos: *file_pos,
                prot: Prot(*prot),
                maxprot: Prot(*maxprot),
                mmap_flags: *mmap_flags,
            },
            Event::Proc { name, truncated } => EventLine::Proc {
                common,
                name: String::from_utf8_lossy(name).into_owned(),
                truncated: *truncated,
            },
            Event::Open {
                vid,
                fmode,
                counts: c,
            } => EventLine::Open {
                common,
                vid: *vid,
                fmode: *fmode,
                counts: counts(c),
            },
            Event::Close {
                vid,
                fflag,
                duration_ns,
                counts: c,
            } => EventLine::Close {
                common,
                vid: *vid,
                fflag: *fflag,
                duration_ns: *duration_ns,
                counts: counts(c),
            },
            Event::Path { vid, truncated, .. } => EventLine::Path {
                common,
                vid: *vid,
                truncated: *truncated,
            },
            Event::Mark {
                mark,
                arg0,
                arg1,
                arg2,
            } => EventLine::Mark {
                common,
                mark: match mark {
                    Mark::Start => MarkName::Start,
                    Mark::Config => MarkName::Config,
                    Mark::VectorPatched => MarkName::VectorPatched,
                    Mark::Unknown(_) => MarkName::Unknown,
                },
                arg0: *arg0,
                arg1: DecId(*arg1),
                arg2: DecId(*arg2),
            },
        }
    }
}

impl Line {
    /// The stream's first line.
    pub fn header() -> Line {
        Line::Schema {
            schema: SCHEMA_NAME.into(),
            version: SCHEMA_VERSION,
        }
    }

    /// The line of one item.
    pub fn of(item: &Item) -> Line {
        Line::of_at(item, None)
    }

    /// The line of one item, events with their UTC time when `wall` is
    /// given.
    pub fn of_at(item: &Item, wall: Option<&Anchor>) -> Line {
        match item {
            Item::Event(ev) => Line::Event(EventLine::of_at(ev, wall)),
            Item::Loss(Loss::Dropped {
                shard,
                count,
                before_pos,
            }) => Line::Loss(LossLine::Dropped {
                shard: *shard,
                count: *count,
                before_pos: Nullable(*before_pos),
            }),
            Item::Loss(Loss::Gap { shard, slots }) => Line::Loss(LossLine::Gap {
                shard: *shard,
                slots: *slots,
            }),
            Item::Corrupt(message) => Line::Corrupt {
                message: message.clone(),
            },
            Item::Reload { generation } => Line::Reload {
                generation: DecId(*generation),
            },
        }
    }

    /// The closing line.
    pub fn summary(t: &Totals) -> Line {
        Line::Summary {
            batches: t.batches,
            events: t.events,
            dropped: t.dropped,
            gap_slots: t.gap_slots,
            corrupt: t.corrupt,
            cut_bytes: t.cut_bytes,
            shown: t.shown,
        }
    }
}

/// The JSON Schema of a line, as `maptrace schema` prints it and
/// `companion/schema/events.schema.json` holds it.
pub fn schema() -> Schema {
    let mut s = schemars::schema_for!(Line);
    s.insert("$id".into(), "maptrace.events.schema.json".into());
    s.insert(
        "description".into(),
        format!(
            "One line of `maptrace stream --json` (contract {SCHEMA_NAME} version {SCHEMA_VERSION}): \
             the first line is the `schema` line, then events, losses, corruption, reloads and a \
             closing summary. Readers ignore fields and line types they do not know."
        )
        .into(),
    );
    s
}

/// [`schema`] as pretty JSON text with a final newline.
pub fn schema_text() -> String {
    let mut t = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    t.push('\n');
    t
}
