# Launches. launchd starts nearly everything with posix_spawn: its own
# thread maps the child's image and /usr/lib/dyld (those VNOP_MMAPs are
# pid 1's), and the child faults its entry pages on its own thread.
# A shell-style fork + exec is shown too: the child inherits the parent's
# mappings without any VNOP_MMAP, exec maps the new image and dyld while the
# inherited image is still mapped, then the inherited image goes.
mount apfs /
file /sbin/launchd 256K
file /usr/lib/dyld 512K
file /usr/libexec/helper 128K
file /usr/libexec/agent 128K

proc launchd uid=0
launchd: exec /sbin/launchd
launchd: spawn /usr/libexec/agent as agent
launchd: fork as helper
helper: exec /usr/libexec/helper
helper: exit
agent: exit
launchd: exit
