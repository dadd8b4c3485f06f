# A launch as launchd does it: fork (the child inherits launchd's mappings
# without any VNOP_MMAP), then exec (the inherited image goes; the new one's
# segments are mapped through ubc_map and the entry page faults in).
mount apfs /
file /sbin/launchd 256K
file /usr/libexec/helper 128K

proc launchd uid=0
launchd: exec /sbin/launchd
launchd: fork as helper
helper: exec /usr/libexec/helper
helper: exit
launchd: exit
