//! report.json: the report model for programs. Schema `tracer-report/1`:
//!
//! ```text
//! { "schema": "tracer-report/1", "mode": "exact"|"watch", "elapsed_s", "interval_s",
//!   "started_unix" (when tracing began, seconds since the epoch: the series' times add to it),
//!   "budget": null | { "window_ms", "percent" },
//!   "processes": [ { "pid", "comm", "container" (short id, null on the host), "interpreter",
//!       "exited_after_s" (null while alive; the time of the exec for an entry closed by one),
//!       "exec_into" (null, or the program the process exec'd: the entry's figures are up to
//!           the exec, and the pid's new program, if CPython, has an entry of its own),
//!       "checkpoints", "outstanding_bytes", "outstanding_allocations", "open_fds",
//!       "sampled" (watch mode: memory figures are samples),
//!       "suspects": [ { "resource": "memory"|"descriptors", "verdict":
//!           "growing"|"stable"|"freed"|"unknown", "growth_per_min", "now", "objects",
//!           "oldest_age_s" (null if unknown), "line" (innermost Python frame of the stack:
//!           its application frame when it has one), "stack" (frames, root first: down to
//!           the application frame, when the stack has one; descriptors: then the kind),
//!           "app_frame" (null, or the innermost frame of the application's code:
//!           `--app-path`, by default any file outside the standard library and packages),
//!           "via": [ { "line" (innermost Python frame below the application frame: the
//!               library line that allocates or opens), "stack" (the frames below the
//!               application frame, root first), "now" (bytes or descriptors) } ] (largest
//!               first, at most 3) } ],
//!       "census": null | { "passes", "partial_passes", "last_pass_ms", "objects" (gc-tracked),
//!           "stack_samples" (Python stacks read from outside, all threads, every 10 ms
//!           while a growing container hangs from a module global), "rss_bytes",
//!           "rss_verdict", "rss_growth_per_min" (resident memory at each pass),
//!           "rss_unexplained_growth" (resident memory grows and nothing the census reaches
//!           does: no container, no type; false until every container is judged),
//!           "error" (null, or why the last pass failed),
//!           "containers": [ { "name" (`module.global`, `module.global["key"]`,
//!               `module.Class.attr`, a reference path such as
//!               `logging.Logger.manager.loggerDict` or `app.Service.quote (functools
//!               lru_cache)`, `function() local name[.attr]`, or `TYPE at 0xADDR` when no path
//!               to a module or a running frame was found (yet)),
//!               "named", "type", "len", "verdict", "growth_per_min" (items),
//!               "root" ("global" | "local" (a local of a running frame) | "unreached"),
//!               "fed_from": null | { "app_frame" (the innermost application frame of the
//!               most sampled stack through the uses that has one), "via" (null, or the use
//!               below it, in a library) },
//!               "uses" (`function (file:LINE)`: for a global, the code that loads it; for
//!               a local, the line its frame is running),
//!               "stacks": [ { "frames" (root first), "samples" } ] (for a global: the call
//!               paths to those lines in Python stacks sampled from outside every 10 ms, most
//!               seen first, cut at the use; for a local: the stack down to its frame),
//!               "holds": null | { "sampled", "types": [[name, count]], "mean_bytes" (shallow),
//!                   "mean_deep_bytes" (with the gc header, the container's slot, what each
//!                   item holds alone: the objects only it refers to, up to four references
//!                   deep, and the buffers they own: bytearray, array.array, BytesIO, mmap,
//!                   numpy arrays that own their data), "shared_bytes" (what the sampled
//!                   items refer to that other objects hold too, counted once) } } ],
//!           "types": [ { "name", "count", "verdict", "growth_per_min", "held_at" (null, or
//!               the reference path of one of a growing type's newest objects) } ],
//!           "tasks": null (no asyncio task seen) | { "pending" (asyncio tasks not done at the
//!               last complete pass), "verdict", "growth_per_min" (a growing count: tasks
//!               piling up), "series" ([seconds since tracing began, pending] at each complete
//!               pass; add "started_unix" for the wall clock), "by_coroutine": [ {
//!               "coroutine" (`function (file:LINE)`, the line most of them wait at), "count",
//!               "verdict", "growth_per_min", "awaited_by": [ { "coroutine" (the awaiting
//!               task's, or null: no task awaits them), "count" } ] } ] } },
//!       "resident": null | { "rss_bytes", "verdict", "growth_per_min", "readings",
//!           "series" ([seconds since tracing began, rss_bytes] of each reading: what the
//!           verdict judged), "last_ms", "parts": [ { "part" (small_objects,
//!               small_object_free, malloc_in_use, malloc_free, large_blocks, other_anonymous,
//!               thread_stacks, code_and_static_data, mapped_files_and_shared: they sum to
//!               rss_bytes),
//!               "label", "bytes", "verdict", "growth_per_min" } ],
//!           "small_object_allocator": { "pool_size", "arenas", "pools", "empty_pools",
//!               "in_use_bytes", "resident_bytes" },
//!           "malloc": { "heaps", "in_use_bytes", "free_bytes", "free_chunks",
//!               "resident_bytes", "free_resident_bytes", "trimmable_bytes" (what
//!               malloc_trim(0) would give back), "mapped_chunks", "mapped_bytes",
//!               "mapped_resident_bytes", "partial" },
//!           "threads", "notes",
//!           "reading": null | { "kind": "grows", "part" } | { "kind": "fragmented",
//!               "free_bytes", "trimmable_bytes" } },
//!       "heap_growth": [ { "line", "stack", "brk_bytes" (the program break moved up there
//!           since attach), "mapped_bytes" (anonymous memory mapped there, still mapped, or
//!           made writable) } ] (the call paths the heap grew at, most first, at most 8) } ],
//!   "health": { "allocator_calls", "dropped_allocations", "dropped_descriptors" (map full),
//!       "stacks_lost", "python_stacks_lost", "ended_not_listed" (processes that ended, beyond the ones kept),
//!       "missed": { "exited_before_attach" (Python processes found that ended before they
//!           could be attached), "forks_lost" (forks of traced processes the kernel could not
//!           record) } } }
//! ```
//! Memory amounts are bytes; descriptor amounts are descriptors.

use serde_json::{json, Value};

use crate::frame::{labels, python_line, Frame};
use crate::report::census::CensusReport;
use crate::report::Mode;
use crate::report::{CensusReading, Coverage, Report, Resource};

fn census(c: &CensusReport, reading: Option<&CensusReading>) -> Value {
    json!({
        "passes": c.passes,
        "partial_passes": c.partial,
        "last_pass_ms": c.last_ms,
        "objects": c.objects,
        "stack_samples": c.stack_samples,
        "rss_bytes": c.rss,
        "rss_verdict": c.rss_trend.verdict.to_string(),
        "rss_growth_per_min": c.rss_trend.per_min,
        "rss_unexplained_growth": reading.is_some_and(|r| r.grows_out_of_reach),
        "error": c.error,
        "containers": c.containers.iter().enumerate().map(|(i, k)| json!({
            "name": k.name,
            "named": k.named,
            "type": k.type_name,
            "len": k.len,
            "verdict": k.trend.verdict.to_string(),
            "growth_per_min": k.trend.per_min,
            "root": k.root,
            "fed_from": reading.and_then(|r| r.fed_from(i)).map(|f| json!({
                "app_frame": f.app_frame.to_string(),
                "via": f.via.as_ref().map(|v| v.to_string()),
            })),
            "uses": labels(&k.uses),
            "stacks": k.stacks.iter().map(|(frames, n)| json!({"frames": labels(frames), "samples": n})).collect::<Vec<_>>(),
            "holds": k.holds.as_ref().map(|h| json!({
                "sampled": h.sampled,
                "types": h.types,
                "mean_bytes": h.mean_bytes,
                "mean_deep_bytes": h.mean_deep_bytes,
                "shared_bytes": h.shared_bytes,
            })),
        })).collect::<Vec<_>>(),
        "types": c.types.iter().map(|t| json!({
            "name": t.name,
            "count": t.count,
            "verdict": t.trend.verdict.to_string(),
            "growth_per_min": t.trend.per_min,
            "held_at": t.held_at,
        })).collect::<Vec<_>>(),
        "tasks": c.tasks.as_ref().map(|t| json!({
            "pending": t.pending,
            "verdict": t.trend.verdict.to_string(),
            "growth_per_min": t.trend.per_min,
            "series": t.series,
            "by_coroutine": t.by_coroutine.iter().map(|g| json!({
                "coroutine": g.coroutine.to_string(),
                "count": g.count,
                "verdict": g.trend.verdict.to_string(),
                "growth_per_min": g.trend.per_min,
                "awaited_by": g.awaited_by.iter().map(|(f, n)| json!({
                    "coroutine": f.as_ref().map(|f| f.to_string()),
                    "count": n,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
    })
}

fn resident(r: &crate::report::resident::ResidentReport) -> Value {
    use crate::report::resident::Reading;
    json!({
        "rss_bytes": r.rss,
        "verdict": r.trend.verdict.to_string(),
        "growth_per_min": r.trend.per_min,
        "readings": r.readings,
        "series": r.series,
        "last_ms": r.last_ms,
        "parts": r.parts.iter().map(|p| json!({
            "part": p.part.key(),
            "label": p.part.label(),
            "bytes": p.bytes,
            "verdict": p.trend.verdict.to_string(),
            "growth_per_min": p.trend.per_min,
        })).collect::<Vec<_>>(),
        "small_object_allocator": {
            "pool_size": r.pools.pool_size,
            "arenas": r.pools.arenas,
            "pools": r.pools.pools,
            "empty_pools": r.pools.empty_pools,
            "in_use_bytes": r.pools.used,
            "resident_bytes": r.pools.resident,
        },
        "malloc": {
            "heaps": r.heaps.heaps,
            "in_use_bytes": r.heaps.in_use,
            "free_bytes": r.heaps.free,
            "free_chunks": r.heaps.free_chunks,
            "resident_bytes": r.heaps.resident,
            "free_resident_bytes": r.heaps.free_resident,
            "trimmable_bytes": r.heaps.trimmable,
            "mapped_chunks": r.heaps.mmapped,
            "mapped_bytes": r.heaps.mmapped_bytes,
            "mapped_resident_bytes": r.heaps.mmapped_resident,
            "partial": r.heaps.partial,
        },
        "threads": r.threads,
        "notes": r.notes,
        "reading": match r.reading {
            Some(Reading::Grows(part)) => json!({"kind": "grows", "part": part.key()}),
            Some(Reading::Fragmented { free, trimmable, .. }) => json!({"kind": "fragmented", "free_bytes": free, "trimmable_bytes": trimmable}),
            None => Value::Null,
        },
    })
}

pub fn render(r: &Report) -> String {
    let procs: Vec<Value> = r
        .procs
        .iter()
        .map(|p| {
            let suspects: Vec<Value> = p
                .suspects
                .iter()
                .map(|s| {
                    let frames = match s.resource {
                        Resource::Memory => &s.frames[..],
                        Resource::Descriptors => &s.frames[..s.frames.len().saturating_sub(1)],
                    };
                    json!({
                        "resource": match s.resource {
                            Resource::Memory => "memory",
                            Resource::Descriptors => "descriptors",
                        },
                        "verdict": s.trend.verdict.to_string(),
                        "growth_per_min": s.trend.per_min,
                        "now": s.now,
                        "objects": s.count,
                        "oldest_age_s": s.oldest_age.map(|a| a.as_secs_f64()),
                        "line": python_line(frames),
                        "stack": labels(&s.frames),
                        "app_frame": s.app_frame.as_ref().map(Frame::to_string),
                        "via": s.via.iter().map(|v| json!({
                            "line": python_line(&v.frames),
                            "stack": labels(&v.frames),
                            "now": v.now,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "pid": p.pid,
                "comm": p.comm,
                "container": p.container,
                "interpreter": p.interpreter,
                "exited_after_s": p.exited_after.map(|d| d.as_secs_f64()),
                "exec_into": p.execd,
                "checkpoints": p.checkpoints,
                "outstanding_bytes": p.total_bytes,
                "outstanding_allocations": p.total_allocs,
                "open_fds": p.open_fds,
                "sampled": matches!(p.coverage, Coverage::Windowed { .. }),
                "suspects": suspects,
                "census": p.census.as_ref().map(|c| census(c, p.census_reading.as_ref())),
                "resident": p.resident.as_ref().map(resident),
                "heap_growth": p.heap_growth.iter().map(|g| json!({
                    "line": python_line(&g.frames),
                    "stack": labels(&g.frames),
                    "brk_bytes": g.brk,
                    "mapped_bytes": g.mapped,
                })).collect::<Vec<_>>(),
                "warning": p.warning,
            })
        })
        .collect();
    let v = json!({
        "schema": "tracer-report/1",
        "mode": match r.mode { Mode::Exact => "exact", Mode::Watch => "watch" },
        "elapsed_s": r.elapsed.as_secs_f64(),
        "started_unix": r.started_unix,
        "interval_s": r.interval.as_secs_f64(),
        "budget": r.budget.map(|(w, b)| json!({"window_ms": w.as_millis() as u64, "percent": b})),
        "processes": procs,
        "health": {
            "allocator_calls": r.health.alloc_calls,
            "dropped_allocations": r.health.alloc_map_full,
            "dropped_descriptors": r.health.fd_map_full,
            "stacks_lost": r.health.stacks_lost,
            "python_stacks_lost": r.health.py_stacks_lost,
            "ended_not_listed": r.health.closed_dropped,
            "missed": {
                "exited_before_attach": r.health.missed.exited_before_attach,
                "forks_lost": r.health.missed.forks_lost,
            },
        },
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}
