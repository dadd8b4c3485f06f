/*
 * mt_kernel.h - the one place where the real XNU kernel and the simulator
 * (sim/, built with -DMT_SIM) differ for the shim, plus the architecture
 * differences of the real kernel. No other shim file uses #ifdef MT_SIM or
 * an architecture test, so the shim the tests run is the shim that ships.
 *
 * Every shim file includes this header first; it brings in the KPI
 * declarations (xnu/mt_xnu.h) and the core's function ABI
 * (maptrace_bridge.h). It calls no mt_core_* function itself.
 */
#ifndef MT_KERNEL_H
#define MT_KERNEL_H

/* Sections are marked with Xcode's #pragma mark; GCC (the simulator's host
 * compiler) does not know it. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#endif

#include "xnu/mt_xnu.h"

#include "maptrace_bridge.h"

#pragma mark - kmod entry points

/*
 * kmod_info names the shim's own start/stop routines in both builds. For a
 * C kext, libkmod's _start/_stop only forward to _realmain/_antimain
 * (xnu:libkern/kmod/c_start.c), so going through them adds two more
 * function pointers in static data. kmod_info's own start/stop are static
 * initializers: clang-22 signs them (ARM64_RELOC_AUTHENTICATED_POINTER,
 * key IA, discriminator 0, as OSKext authenticates kmod_info->start) and
 * the object check refuses any unsigned one. (On Linux a C symbol named
 * _start would also clash with the ELF entry point.)
 */
#define MT_KMOD_START mt_kmod_start
#define MT_KMOD_STOP mt_kmod_stop
#ifdef MT_SIM
#define MT_APPLE_CC 0
#else
#define MT_APPLE_CC __APPLE_CC__
#endif

/* Hidden outside the kext image (XNU's __private_extern__). */
#define MT_PRIVATE_EXTERN __attribute__((visibility("hidden")))

#pragma mark - CPU number for the shard hint

/**
 * The shard hint for the current thread: the CPU number where a public KPI
 * gives it (x86_64, kpi.unsupported), otherwise a hash of the thread id
 * (arm64: cpu_number is kpi.private). The core only uses it as a hint.
 * @param tid thread_tid() of the current thread.
 * @return any value; the core reduces it modulo the shard count.
 * Context: any; never blocks.
 */
static inline uint32_t mt_shard_hint(uint64_t tid)
{
#if defined(__x86_64__)
    (void)tid;
    return (uint32_t)cpu_number();
#else
    uint64_t h = tid * 0x9e3779b97f4a7c15ull;
    return (uint32_t)(h >> 32);
#endif
}

/**
 * The CPU a vnode hook entered on where a public KPI gives it (x86_64),
 * else 0: its counter slot and shard hint both come from this one call.
 * Context: any; never blocks.
 */
static inline uint32_t mt_entry_cpu(void)
{
#if defined(__x86_64__)
    return (uint32_t)cpu_number();
#else
    return 0;
#endif
}

/**
 * mt_shard_hint for a hook that read mt_entry_cpu at entry: on x86_64 that
 * CPU (no second cpu_number; a hook that migrated since still passes a
 * valid hint, see mt_shard_hint), elsewhere the thread-id hash.
 * Context: any; never blocks.
 */
static inline uint32_t mt_shard_hint_at(uint64_t tid, uint32_t entry_cpu)
{
#if defined(__x86_64__)
    (void)tid;
    return entry_cpu;
#else
    (void)entry_cpu;
    return mt_shard_hint(tid);
#endif
}

#pragma mark - arm64e pointer signing

/*
 * sysctl_oid.oid_parent is a DA-signed, address-diversified pointer on
 * arm64e (docs/xnu.md §7, arm64e pointer signing); elsewhere a plain pointer.
 */
#if defined(__arm64e__) && defined(__has_feature)
#if __has_feature(ptrauth_intrinsics)
#define MT_OID_SET_PARENT(oid, list)                                                             \
    ((oid)->oid_parent = __builtin_ptrauth_sign_unauthenticated(                              \
         (list), 2 /* DA */,                                                                   \
         __builtin_ptrauth_blend_discriminator(                                                \
             &(oid)->oid_parent, __builtin_ptrauth_string_discriminator("sysctl_oid.oid_parent"))))
#endif
#endif
#ifndef MT_OID_SET_PARENT
#define MT_OID_SET_PARENT(oid, list) ((oid)->oid_parent = (list))
#endif

#endif /* MT_KERNEL_H */
