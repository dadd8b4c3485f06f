# maptrace demo: an application launch, a database reader that maps one file
# twice, a process exit and a forced unmount of the volume the database is on.
# On macOS 11+ the system libraries live only in the dyld shared cache (not
# modelled), so the library mapped here is a framework inside the app bundle.
mount apfs /
mount hfs /Volumes/External
file /usr/lib/dyld 512K
file /Applications/Mail.app/Contents/MacOS/Mail 512K
file /Applications/Mail.app/Contents/Frameworks/MailCore.framework/Versions/A/MailCore 256K
file /Volumes/External/Mail/Envelope.db 1M

proc launchd uid=0
proc indexer uid=501

# launchd launches Mail with posix_spawn: launchd's thread maps Mail's
# __TEXT, __DATA and __LINKEDIT and /usr/lib/dyld (no mac_file_check_mmap on
# this path); Mail's own thread faults the entry pages.
launchd: spawn /Applications/Mail.app/Contents/MacOS/Mail as mail
# dyld maps the app's framework with mmap(2), copy-on-write.
mail: open /Applications/Mail.app/Contents/Frameworks/MailCore.framework/Versions/A/MailCore as core
mail: mmap core prot=rx flags=private len=256K as mailcore
mail: touch mailcore 0 64K

# A database-style reader: the whole file and a window of it, two mmaps of
# one file (two VNOP_MMAPs each, as MAP_SHARED), so one usecount reference;
# pages read twice are paged in once.
indexer: open /Volumes/External/Mail/Envelope.db as db
indexer: mmap db prot=r flags=shared len=1M as whole
indexer: mmap db prot=r flags=shared offset=512K len=256K as window
indexer: touch whole 0 128K
indexer: touch window 0 64K
indexer: touch whole 0 128K
sleep 5ms

parallel
  mail: touch mailcore 64K 64K
  indexer: touch whole 256K 128K
end

# The launched process exits: its mappings go (MNOMAP for each file).
mail: exit
# The external volume is ejected while the reader still maps the database:
# diskarbitrationd's unmount(2) unmaps it.
unmount /Volumes/External force
indexer: exit
