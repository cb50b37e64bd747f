#define _GNU_SOURCE
#include "CPetrelLinux.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int petrel_err(char *buf, size_t len, const char *call, const char *path) {
    int e = errno;
    if (buf && len) {
        if (path) snprintf(buf, len, "%s %s: %s", call, path, strerror(e));
        else snprintf(buf, len, "%s: %s", call, strerror(e));
    }
    errno = e;
    return -1;
}

int petrel_errmsg(char *buf, size_t len, int err, const char *msg) {
    if (buf && len) snprintf(buf, len, "%s", msg);
    errno = err;
    return -1;
}

int petrel_pidfd_kill(int pidfd, int sig) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

int petrel_pidfd_reap(int pidfd, int *status) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r;
    do { r = waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG); } while (r < 0 && errno == EINTR);
    if (r < 0) return -1;
    if (si.si_pid == 0) return 0;
    // Rebuild a classic wait status.
    if (si.si_code == CLD_EXITED) *status = (si.si_status & 0xff) << 8;
    else *status = (si.si_status & 0x7f) | (si.si_code == CLD_DUMPED ? 0x80 : 0);
    return 1;
}

int petrel_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int petrel_epoll_add(int epfd, int fd, uint64_t token) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.u64 = token;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int petrel_epoll_del(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int petrel_epoll_wait(int epfd, uint64_t *tokens, int max, int timeout_ms) {
    struct epoll_event evs[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -1;
    for (int i = 0; i < n; i++) tokens[i] = evs[i].data.u64;
    return n;
}

int petrel_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

const char *petrel_errno_name(int err) {
    const char *n = strerrorname_np(err);
    return n ? n : "E?";
}
