# maptrace demo: an application launch, a database reader that maps one file
# twice, a process exit and a forced unmount of the volume the database is on.
mount apfs /
mount hfs /Volumes/External
file /Applications/Mail.app/Contents/MacOS/Mail 512K
file /usr/lib/libsqlite3.dylib 256K
file /Volumes/External/Mail/Envelope.db 1M

proc mail uid=501
proc indexer uid=501

# A process launching: exec maps __TEXT, __DATA and __LINKEDIT and faults
# the entry page (no mac_file_check_mmap on this path).
mail: exec /Applications/Mail.app/Contents/MacOS/Mail
mail: open /usr/lib/libsqlite3.dylib as sqlite
mail: mmap sqlite prot=rx flags=private len=256K as libsqlite
mail: touch libsqlite 0 64K

# A database-style reader: the whole file and a window of it, two mmaps of
# one file, so one usecount reference; pages read twice are paged in once.
indexer: open /Volumes/External/Mail/Envelope.db as db
indexer: mmap db prot=r flags=shared len=1M as whole
indexer: mmap db prot=r flags=shared offset=512K len=256K as window
indexer: touch whole 0 128K
indexer: touch window 0 64K
indexer: touch whole 0 128K
sleep 5ms

parallel
  mail: touch libsqlite 64K 64K
  indexer: touch whole 256K 128K
end

# The launched process exits: its mappings go (MNOMAP for each file).
mail: exit
# The external volume is yanked while the reader still maps the database.
unmount /Volumes/External force
indexer: exit
