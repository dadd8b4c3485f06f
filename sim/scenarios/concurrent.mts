# Three readers map and fault one shared library and one data file at the
# same time, each on its own thread; then they go away one by one.
mount apfs /
file /usr/lib/libshared.dylib 512K
file /data/table.bin 2M

proc r1
proc r2
proc r3

parallel
  r1: open /usr/lib/libshared.dylib as lib
  r2: open /usr/lib/libshared.dylib as lib
  r3: open /data/table.bin as tab
end
parallel
  r1: mmap lib prot=rx flags=private as text
  r2: mmap lib prot=rx flags=private as text
  r3: mmap tab prot=r flags=shared len=1M as lo
end
parallel
  r1: touch text 0 128K
  r2: touch text 64K 128K
  r3: touch lo
end
r3: mmap tab prot=r flags=shared offset=1M len=1M as hi
r3: touch hi 0 256K
r1: munmap text
r2: exit
r1: exit
r3: exit
