// Loop devices for the sandbox's /tmp: a sparse ext4 image per sandbox.
#define _GNU_SOURCE
#include "CPetrelLinux.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int petrel_loop_attach(const char *backing_path, char *dev_path, size_t dev_len,
                       char *errbuf, size_t errlen) {
    int back = open(backing_path, O_RDWR | O_CLOEXEC);
    if (back < 0) return petrel_err(errbuf, errlen, "open", backing_path);
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) { int e = errno; close(back); errno = e; return petrel_err(errbuf, errlen, "open", "/dev/loop-control"); }
    for (int attempt = 0; attempt < 64; attempt++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0) { petrel_err(errbuf, errlen, "ioctl", "LOOP_CTL_GET_FREE"); break; }
        char path[64];
        snprintf(path, sizeof path, "/dev/loop%d", n);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) { if (errno == ENOENT) continue; petrel_err(errbuf, errlen, "open", path); break; }
        struct loop_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.fd = (unsigned)back;
        cfg.block_size = 0;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        snprintf((char *)cfg.info.lo_file_name, LO_NAME_SIZE, "petrel:%s", backing_path);
        if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0) {
            close(back); close(ctl);
            snprintf(dev_path, dev_len, "%s", path);
            return fd;
        }
        int e = errno;
        close(fd);
        if (e == EBUSY) continue; // raced with another attach
        errno = e;
        petrel_err(errbuf, errlen, "ioctl LOOP_CONFIGURE", path);
        break;
    }
    int e = errno ? errno : EBUSY;
    close(back); close(ctl);
    errno = e;
    return -1;
}

int petrel_loop_detach(int loop_fd) {
    // With LO_FLAGS_AUTOCLEAR, a device still mounted detaches at its last close.
    int r = ioctl(loop_fd, LOOP_CLR_FD, 0);
    int e = errno;
    close(loop_fd);
    if (r < 0 && e != ENXIO && e != EBUSY) { errno = e; return -1; }
    return 0;
}
