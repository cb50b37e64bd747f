#define _GNU_SOURCE
#include "CPetrelInitProtocol.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

size_t petrel_s_len(const char *s) { size_t n = 0; while (s && s[n]) n++; return n; }

void petrel_s_cat(char *dst, size_t cap, const char *src) {
    size_t n = petrel_s_len(dst);
    while (src && *src && n + 1 < cap) dst[n++] = *src++;
    dst[n] = 0;
}

void petrel_record_write(int fd, int kind, int err, int value, const char *a, const char *b) {
    struct petrel_record r;
    char *p = (char *)&r;
    for (size_t i = 0; i < sizeof r; i++) p[i] = 0;
    r.kind = kind; r.err = err; r.value = value;
    petrel_s_cat(r.message, sizeof r.message, a);
    if (b) { petrel_s_cat(r.message, sizeof r.message, " "); petrel_s_cat(r.message, sizeof r.message, b); }
    ssize_t w;
    do { w = write(fd, &r, sizeof r); } while (w < 0 && errno == EINTR);
}

_Noreturn void petrel_record_fail(int fd, const char *what, const char *path) {
    int e = errno;
    petrel_record_write(fd, PETREL_RECORD_SETUP_ERROR, e, 0, what, path);
    _exit(126);
}

void petrel_close_all_but(const int *keep_in, int n) {
    int keep[PETREL_CLOSE_KEEP_MAX];
    if (n > PETREL_CLOSE_KEEP_MAX) n = PETREL_CLOSE_KEEP_MAX;
    for (int i = 0; i < n; i++) keep[i] = keep_in[i];
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (keep[j] < keep[i]) { int t = keep[i]; keep[i] = keep[j]; keep[j] = t; }
    unsigned lo = 3;
    for (int i = 0; i < n; i++) {
        if (keep[i] < (int)lo) continue;
        if ((unsigned)keep[i] > lo) syscall(SYS_close_range, lo, (unsigned)keep[i] - 1, 0);
        lo = (unsigned)keep[i] + 1;
    }
    syscall(SYS_close_range, lo, ~0U, 0);
}

void petrel_u64(char *buf, size_t cap, uint64_t v) {
    char tmp[24];
    size_t n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v && n < sizeof tmp);
    size_t i = 0;
    while (n > 0 && i + 1 < cap) buf[i++] = tmp[--n];
    if (cap) buf[i] = 0;
}
