# maptrace demo: three short chapters. An application launch (a storm of
# page-ins), a leak (a helper that keeps a file mapped and open), and a loss
# (a burst of page-ins larger than the kext's ring).
#
# The kext's ring for this run: one shard of 128 slots (8 KiB), small on
# purpose so chapter 3 overflows it. `maptrace demo` reads the ring after each
# step, so chapters 1 and 2 (under 128 records a step) lose nothing, and
# chapter 3 loses the same exact number of records every run.
ring slots=128 shards=1

mount apfs /
mount hfs /Volumes/External
file /usr/lib/dyld 512K
file /Applications/Mail.app/Contents/MacOS/Mail 512K
file /Applications/Mail.app/Contents/Frameworks/MailCore.framework/Versions/A/MailCore 256K
file /Applications/Mail.app/Contents/Frameworks/MailUI.framework/Versions/A/MailUI 1M
file /Volumes/External/Mail/Envelope.db 1M
file /Users/me/Pictures/Holiday.heic 2M
file /Users/me/Movies/Holiday.mov 32M

proc launchd uid=0
proc indexer uid=501

chapter 1. An app launch: a storm of page-ins
# On macOS 11+ the system libraries live only in the dyld shared cache (not
# modelled), so the libraries mapped here are frameworks inside the bundle.
# launchd launches Mail with posix_spawn: launchd's thread maps Mail's
# __TEXT, __DATA and __LINKEDIT and /usr/lib/dyld (no mac_file_check_mmap on
# this path); Mail's own thread faults the entry pages.
launchd: spawn /Applications/Mail.app/Contents/MacOS/Mail as mail
# dyld maps the app's frameworks with mmap(2), copy-on-write, and the first
# screen faults their code in.
mail: open /Applications/Mail.app/Contents/Frameworks/MailCore.framework/Versions/A/MailCore as core
mail: mmap core prot=rx flags=private len=256K as mailcore
mail: open /Applications/Mail.app/Contents/Frameworks/MailUI.framework/Versions/A/MailUI as ui
mail: mmap ui prot=rx flags=private as mailui
mail: touch mailcore 0 64K
mail: touch mailui 0 512K

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

chapter 2. A leak: a helper keeps a file open
# A thumbnail helper opens a photo, maps it and reads its header, then never
# unmaps, closes or exits: at the end of the trace the report lists the photo
# as a leak suspect, still mapped by the helper's pid.
proc thumbnailer uid=501
thumbnailer: open /Users/me/Pictures/Holiday.heic as photo
thumbnailer: mmap photo prot=r flags=private as pixels
thumbnailer: touch pixels 0 64K

chapter 3. A loss: a burst larger than the ring
# A backup reads a 32 MiB movie through one mapping in a single step: some
# 256 page-ins of at most 128 KiB (apfs on an SSD), twice what the ring
# holds. The kext drops what does not fit, counts it, and the reader reports
# exactly how many records were lost and where.
proc backupd uid=0
backupd: open /Users/me/Movies/Holiday.mov as movie
backupd: mmap movie prot=r flags=private as film
backupd: touch film
backupd: munmap film
backupd: close movie
backupd: exit
