/*
 * mt_proc.c - names the processes events come from.
 *
 * Role: before a hook records an event, the core is asked (lock-free)
 * whether the event's pid still needs its name recorded: the first time it
 * is seen, after it exec'd (mt_mac.c forgets it from
 * mpo_proc_notify_exec_complete), after a config write, and after the ring
 * dropped its PROC record. Only then is proc_selfname read and a PROC record
 * written ahead of the event.
 *
 * Calls: mt_core_proc_claim, mt_core_record_proc, proc_selfname.
 */
#include "mt_shim.h"

/* p_name is 2 * MAXCOMLEN + 1 bytes (bsd/sys/proc_internal.h,
 * xnu-11417.121.6); p_comm before macOS 12 is MAXCOMLEN + 1. A buffer
 * longer than the record's name lets the core see (and flag) a cut. */
#define MT_PROC_NAME_BUF 33

/**
 * Records the PROC record naming ev->pid that mt_proc_note claimed. ev is
 * the event about to be recorded by the calling hook: the PROC record takes
 * its pid, tid and timestamp. ev->pid must be the current process
 * (proc_selfpid), since the name is proc_selfname's.
 * Context: any hook, including the pagein path: proc_selfname copies
 *          p_name (p_comm at xnu-7195.141.2) without a lock
 *          (bsd/kern/kern_proc.c); never blocks or allocates.
 */
void mt_proc_record_name(const struct mt_core *core, uint32_t hint, const struct mt_event *ev)
{
    char name[MT_PROC_NAME_BUF];
    /* xnu-7195.141.2's proc_selfname neither zeroes the buffer nor writes
     * anything without a current proc: zero it here. */
    memset(name, 0, sizeof(name));
    proc_selfname(name, (int)sizeof(name));
    name[sizeof(name) - 1] = '\0';
    (void)mt_core_record_proc(core, hint, ev, (const uint8_t *)name, strlen(name));
}
