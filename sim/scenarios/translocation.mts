# App Translocation: a quarantined app downloaded to ~/Downloads is run from
# a read-only nullfs mirror of its folder (mounted by the system under
# /private/var/folders/.../AppTranslocation). The mirror forwards VNOP_MMAP,
# VNOP_MNOMAP and VNOP_CLOSE to the real file's vnode (nullfs_mmap etc.,
# bsd/miscfs/nullfs/null_vnops.c) and pages in by reading it, so maptrace
# records the maps at the real file, and the page-ins at the mirror's vnode.
# The mapping's usecount is the mirror's: the report reads the real file's
# epochs as released (docs/ARCHITECTURE.md, section 1).
mount apfs /
file /sbin/launchd 256K
file /usr/lib/dyld 512K
file /Users/me/Downloads/Viewer.app/Contents/MacOS/Viewer 256K
file /Users/me/Downloads/Viewer.app/Contents/Resources/assets.car 1M
mount nullfs /private/var/folders/zz/AppTranslocation/D1/d from /Users/me/Downloads/Viewer.app

# On a Mac the system volume is hooked when the kext loads; here launchd's
# own exec shows the kext an apfs vnode first.
proc launchd uid=0
launchd: exec /sbin/launchd
launchd: spawn /private/var/folders/zz/AppTranslocation/D1/d/Contents/MacOS/Viewer as viewer
viewer: open /private/var/folders/zz/AppTranslocation/D1/d/Contents/Resources/assets.car as a
viewer: mmap a prot=r flags=shared as assets
viewer: touch assets 0 256K
viewer: munmap assets
viewer: close a
viewer: exit
launchd: exit
