/*
 * fsinfo.d - DTrace's view of the VM test's workload, to compare with maptrace's counts.
 * Counts fsinfo mmap/pagein/mnomap probes for files under $$1 (the workload directory).
 * Run by `cargo xtask vm-test` as: dtrace -q -s fsinfo.d DIR -o counts.txt
 */
fsinfo:::mmap, fsinfo:::pagein, fsinfo:::mnomap
/strstr(args[0]->fi_pathname, $$1) != NULL/
{
    @counts[probename] = count();
}

END
{
    printa("%s %@d\n", @counts);
}
