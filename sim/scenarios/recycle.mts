# A vnode is recycled once nobody uses it, and its kernel block comes back
# with a new identity (vid + 1) for another file.
mount hfs /
file /a.log 64K
file /b.log 64K

proc w uid=0
w: open /a.log as a
w: mmap a prot=r flags=shared as m
w: touch m
w: munmap m
w: close a
recycle /a.log
w: open /b.log as b
w: mmap b prot=r flags=shared as m2
w: touch m2 0 4K
w: exit
