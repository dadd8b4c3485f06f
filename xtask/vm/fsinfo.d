/*
 * fsinfo.d - DTrace's view of the VM test's workload, to compare with maptrace's counts.
 * Counts fsinfo mmap/pagein/mnomap probes for files in a directory named $$1 (the workload's
 * directory, a name unique on the VM). Matches on fi_dirname: macOS's translator renders
 * fi_pathname as "??/<parent>/<name>" (bsd/dev/dtrace/scripts/io.d, xnu-11417.101.15), so a
 * full-path match never fires.
 * Run by `cargo xtask vm-test run` as: dtrace -q -s fsinfo.d NAME -o counts.txt
 * and stopped with SIGTERM (a background job has SIGINT ignored).
 */
fsinfo:::mmap, fsinfo:::pagein, fsinfo:::mnomap
/args[0]->fi_dirname == $$1/
{
    @counts[probename] = count();
}

END
{
    printa("%s %@d\n", @counts);
}
