/*
 * sim_glue.c - the parts of the simulated kernel that are easier in C:
 * the exported data symbols (vnode-op descriptors, the kern sysctl node's
 * children) and the variadic KPIs (IOLog, panic), which format here and
 * hand a finished string to the Rust side (sim/src/kpi/memory.rs).
 *
 * Context: any thread; IOLog never blocks, panic never returns.
 */
#include "mt_xnu.h"

/* libc's formatter; declared here so no libc header meets mt_xnu.h. */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);

/* Implemented in Rust (sim/src/kpi/memory.rs). */
void mt_sim_iolog(const char *msg, size_t len);
void mt_sim_panic(const char *msg, size_t len) MT_XNU_NORETURN;
/* Runs f(arg) as the simulated kernel's own work: the stack it takes is
 * not the kext's (sim/src/stack.rs). */
void mt_sim_as_kernel(void (*f)(void *), void *arg);

/* The exported descriptors. vdesc_offset is 0 until the simulated boot
 * assigns it (vfs_op_init), exactly like bsd/vfs/vnode_if.c. */
struct vnodeop_desc vnop_default_desc = {0, "vnop_default", 0, NULL, -1, -1, -1, -1, -1, NULL};
struct vnodeop_desc vnop_lookup_desc = {0, "vnop_lookup", 0, NULL, 16, -1, -1, 24, 32, NULL};
struct vnodeop_desc vnop_mmap_desc = {0, "vnop_mmap", 0, NULL, -1, -1, -1, -1, 24, NULL};
struct vnodeop_desc vnop_mnomap_desc = {0, "vnop_mnomap", 0, NULL, -1, -1, -1, -1, 16, NULL};
struct vnodeop_desc vnop_close_desc = {0, "vnop_close", 0, NULL, -1, -1, -1, -1, 24, NULL};
struct vnodeop_desc vnop_pagein_desc = {0, "vnop_pagein", 0, NULL, -1, -1, -1, -1, 56, NULL};
struct vnodeop_desc vnop_mmap_check_desc = {0, "vnop_mmap_check", 0, NULL, -1, -1, -1, -1, 24, NULL};
struct vnodeop_desc vnop_reclaim_desc = {0, "vnop_reclaim", 0, NULL, -1, -1, -1, -1, 16, NULL};
struct vnodeop_desc vnop_inactive_desc = {0, "vnop_inactive", 0, NULL, -1, -1, -1, -1, 16, NULL};

/* kern's children: the root the simulated sysctl tree hangs off. */
struct sysctl_oid_list sysctl__kern_children = {NULL};

/**
 * The default vnode operation: every vector slot a filesystem leaves empty.
 * @return ENOTSUP
 * Context: any.
 */
int vn_default_error(void)
{
    return ENOTSUP;
}

/* IOLog's arguments, handed to its kernel part. */
struct mt_sim_log_args {
    const char *format;
    va_list *ap;
};

/**
 * IOLog's kernel part: formats into a bounded buffer and appends one line
 * to the simulator's log.
 * Context: inside mt_sim_as_kernel.
 */
static void mt_sim_iolog_format(void *arg)
{
    const struct mt_sim_log_args *a = arg;
    char buf[1024];
    int n = vsnprintf(buf, sizeof(buf), a->format, *a->ap);
    if (n < 0) {
        n = 0;
    }
    size_t len = (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1;
    mt_sim_iolog(buf, len);
}

/**
 * IOLog. Its formatting runs as kernel code, as XNU's does (the kext's
 * stack budget counts only the kext's frames: kext-shim/stack.tsv).
 * Context: any; never blocks.
 */
void IOLog(const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    struct mt_sim_log_args a = {format, &ap};
    mt_sim_as_kernel(mt_sim_iolog_format, &a);
    va_end(ap);
}

/**
 * panic: the kernel stops. The simulator reports the message and aborts
 * the process (no unwinding through kext frames).
 * Context: any.
 */
void panic(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
    }
    size_t len = (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1;
    mt_sim_panic(buf, len);
}

/**
 * strlcpy as libkern has it (glibc before 2.38 lacks it).
 * @return strlen(src)
 * Context: any.
 */
size_t strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);
    if (size > 0) {
        size_t c = n < size - 1 ? n : size - 1;
        memcpy(dst, src, c);
        dst[c] = '\0';
    }
    return n;
}
