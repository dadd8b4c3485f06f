/*
 * workload.c - the VM test's workload: maps files and touches their pages, so the kext sees
 * VNOP_MMAP, VNOP_PAGEIN and VNOP_MNOMAP for files whose count is known.
 *
 *   workload create DIR NFILES NPAGES   write NFILES files of NPAGES pages, uncached (F_NOCACHE)
 *   workload touch DIR NFILES           mmap each file, read one byte per page, munmap, close
 *
 * Built on the Mac by `cargo xtask vm-test run` (xcrun clang, for the VM's CPU) and copied to the VM.
 * Prints one line per phase; exits non-zero on the first failing call.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(const char *what, const char *path)
{
    fprintf(stderr, "workload: %s %s: %s\n", what, path, strerror(errno));
    return 1;
}

static int create(const char *dir, int nfiles, int npages)
{
    long page = sysconf(_SC_PAGESIZE);
    char *buf = malloc((size_t)page);
    if (buf == NULL) {
        return fail("malloc", "");
    }
    for (int i = 0; i < nfiles; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/file%03d.bin", dir, i);
        int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
        if (fd < 0) {
            return fail("open", path);
        }
        /* Keep the data out of the cache so the later mapping pages it in. */
        (void)fcntl(fd, F_NOCACHE, 1);
        for (int p = 0; p < npages; p++) {
            memset(buf, 'a' + (p % 26), (size_t)page);
            if (write(fd, buf, (size_t)page) != page) {
                return fail("write", path);
            }
        }
        close(fd);
    }
    free(buf);
    printf("created %d files of %d pages in %s\n", nfiles, npages, dir);
    return 0;
}

static int touch(const char *dir, int nfiles)
{
    long page = sysconf(_SC_PAGESIZE);
    unsigned long sum = 0;
    long pages = 0;
    for (int i = 0; i < nfiles; i++) {
        char path[1024];
        struct stat st;
        snprintf(path, sizeof path, "%s/file%03d.bin", dir, i);
        int fd = open(path, O_RDONLY);
        if (fd < 0 || fstat(fd, &st) != 0) {
            return fail("open", path);
        }
        volatile const char *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            return fail("mmap", path);
        }
        for (off_t off = 0; off < st.st_size; off += page) {
            sum += (unsigned char)m[off];
            pages++;
        }
        munmap((void *)m, (size_t)st.st_size);
        close(fd);
    }
    printf("mapped %d files, touched %ld pages (checksum %lu)\n", nfiles, pages, sum);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "create") == 0) {
        return create(argv[2], atoi(argv[3]), atoi(argv[4]));
    }
    if (argc == 4 && strcmp(argv[1], "touch") == 0) {
        return touch(argv[2], atoi(argv[3]));
    }
    fprintf(stderr, "usage: workload create DIR NFILES NPAGES | workload touch DIR NFILES\n");
    return 2;
}
