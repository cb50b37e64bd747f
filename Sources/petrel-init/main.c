// petrel-init: PID 1 of every sandbox.
//
// The daemon's C layer (CPetrelLinux/spawn.c) clones into new namespaces,
// builds the root, joins the cgroups, and then execs this program, so that a
// sandbox's init is a small process of its own rather than a copy of the
// daemon's address space (which every fork of the command would copy again,
// and whose page tables each waiting sandbox would hold).
//
// It starts as root with exactly the fds of CPetrelInitProtocol.h, reports
// READY, waits for the command (petrel_start), forks it with every privilege
// dropped and the seccomp filter installed, then drops its own privileges,
// forwards signals to the command and reaps everything; when the command
// ends it reports EXITED and leaves, which ends the whole PID namespace.
#define _GNU_SOURCE
#include <CPetrelInitProtocol.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif

static const int sfd = PETREL_INIT_STATUS_FD;

static struct {
    uid_t uid;
    gid_t gid;
    uint64_t nofile, nproc;
    struct sock_filter filter[BPF_MAXINSNS];
    size_t filter_len;
} cfg;

static char start_buf[PETREL_START_MAX];
static char *start_argv[PETREL_START_MAX_STRINGS + 1];
static char *start_envp[PETREL_START_MAX_STRINGS + 1];

static uint64_t number(const char *s, const char *what) {
    uint64_t v = 0;
    if (!s || !*s) { errno = EINVAL; petrel_record_fail(sfd, "petrel-init argument", what); }
    for (; *s; s++) {
        if (*s < '0' || *s > '9') { errno = EINVAL; petrel_record_fail(sfd, "petrel-init argument", what); }
        v = v * 10 + (uint64_t)(*s - '0');
    }
    return v;
}

// ---- privileges -----------------------------------------------------------------

static void drop_privileges(void) {
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        petrel_record_fail(sfd, "prctl", "PR_CAP_AMBIENT_CLEAR_ALL");
    for (int cap = 0; cap < 64; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) petrel_record_fail(sfd, "prctl", "PR_CAPBSET_DROP");
    }
    if (syscall(SYS_setgroups, 0, NULL) < 0) petrel_record_fail(sfd, "setgroups", NULL);
    if (syscall(SYS_setresgid, cfg.gid, cfg.gid, cfg.gid) < 0) petrel_record_fail(sfd, "setresgid", NULL);
    if (syscall(SYS_setresuid, cfg.uid, cfg.uid, cfg.uid) < 0) petrel_record_fail(sfd, "setresuid", NULL);
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    if (syscall(SYS_capset, &h, d) < 0) petrel_record_fail(sfd, "capset", NULL);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) petrel_record_fail(sfd, "prctl", "PR_SET_NO_NEW_PRIVS");
}

static void install_seccomp(void) {
    if (cfg.filter_len == 0) return;
    struct sock_fprog prog = { (unsigned short)cfg.filter_len, cfg.filter };
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) petrel_record_fail(sfd, "seccomp", NULL);
}

static void set_limit(int res, uint64_t v, const char *name) {
    struct rlimit rl = { v, v };
    if (setrlimit(res, &rl) < 0) petrel_record_fail(sfd, "setrlimit", name);
}

// ---- the command ------------------------------------------------------------------

static const char *env_get(char *const *envp, const char *name) {
    size_t n = petrel_s_len(name);
    for (; envp && *envp; envp++)
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=') return *envp + n + 1;
    return NULL;
}

static void exec_command(char *const *argv, char *const *envp) {
    const char *a0 = argv[0];
    if (strchr(a0, '/')) {
        execve(a0, argv, envp);
    } else {
        const char *path = env_get(envp, "PATH");
        if (!path) path = "/usr/local/bin:/usr/bin:/bin";
        int saw_eacces = 0;
        while (*path) {
            char cand[4096] = {0};
            size_t i = 0;
            while (path[i] && path[i] != ':' && i < 4000) { cand[i] = path[i]; i++; }
            path += i;
            if (*path == ':') path++;
            if (i == 0) continue;
            petrel_s_cat(cand, sizeof cand, "/");
            petrel_s_cat(cand, sizeof cand, a0);
            execve(cand, argv, envp);
            if (errno == EACCES) saw_eacces = 1;
            else if (errno != ENOENT && errno != ENOTDIR) break;
        }
        if (saw_eacces && errno == ENOENT) errno = EACCES;
    }
    petrel_record_write(sfd, PETREL_RECORD_EXEC_ERROR, errno, 0, "execve", a0);
    _exit(127);
}

_Noreturn static void payload_main(int fds[3], const char *cwd, char *const *argv, char *const *envp, int stem) {
    sigset_t none; sigemptyset(&none);
    for (int s = 1; s < 65; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        struct sigaction sa; memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(s, &sa, NULL);
    }
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int i = 0; i < 3; i++)
        if (dup2(fds[i], i) < 0) petrel_record_fail(sfd, "dup2", "stdio");
    set_limit(RLIMIT_NOFILE, cfg.nofile, "RLIMIT_NOFILE");
    set_limit(RLIMIT_NPROC, cfg.nproc, "RLIMIT_NPROC");
    set_limit(RLIMIT_CORE, 0, "RLIMIT_CORE");
    drop_privileges();
    if (chdir(cwd) < 0) petrel_record_fail(sfd, "chdir", cwd);
    syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);
    // A pre-started command keeps its end of the stem socket, and only that (dup2 clears CLOEXEC).
    if (stem >= 0) {
        if (stem == PETREL_STEM_FD ? fcntl(stem, F_SETFD, 0) < 0 : dup2(stem, PETREL_STEM_FD) < 0)
            petrel_record_fail(sfd, "dup2", "stem socket");
    }
    install_seccomp();
    exec_command(argv, envp);
    _exit(127);
}

// ---- PID 1 ------------------------------------------------------------------------

static void noop_handler(int sig) { (void)sig; }

static const int forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, SIGALRM };

// Receives a start (stdio 3) or go (stdio 0) message once the control socket is readable.
// Returns the length of its strings, or -1 when the daemon discarded the sandbox.
static int receive_message(int ctl, int fds[5], struct petrel_start_header *h, uint32_t magic, int stdio) {
    struct iovec iov[2] = { { h, sizeof *h }, { start_buf, sizeof start_buf - 1 } };
    union { char buf[CMSG_SPACE(5 * sizeof(int))]; struct cmsghdr align; } c;
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = iov; m.msg_iovlen = 2;
    m.msg_control = c.buf; m.msg_controllen = sizeof c.buf;
    ssize_t n;
    do { n = recvmsg(ctl, &m, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n <= 0) return -1; // EOF: discarded
    if ((size_t)n < sizeof *h || h->magic != magic || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        errno = EPROTO; petrel_record_fail(sfd, "start message", "malformed");
    }
    int want = stdio + (h->has_code ? 1 : 0) + (h->has_opt ? 1 : 0);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    int nfds = 0;
    if (cm) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) { errno = EPROTO; petrel_record_fail(sfd, "start message", "no fds"); }
        nfds = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    }
    if (nfds != want) { errno = EPROTO; petrel_record_fail(sfd, "start message", "wrong number of fds"); }
    int got[5];
    if (nfds > 0) memcpy(got, CMSG_DATA(cm), (size_t)nfds * sizeof(int));
    for (int i = 0; i < stdio; i++) fds[i] = got[i];
    int k = stdio;
    fds[3] = h->has_code ? got[k++] : -1;
    fds[4] = h->has_opt ? got[k++] : -1;
    start_buf[(size_t)n - sizeof *h] = 0;
    return (int)((size_t)n - sizeof *h);
}

// Waits until the control socket is readable. 0, or -1 when the daemon is gone.
static int await_control(int ctl, int lifeline) {
    for (;;) {
        struct pollfd p[2] = { { ctl, POLLIN, 0 }, { lifeline, POLLIN, 0 } };
        int r = poll(p, lifeline >= 0 ? 2 : 1, -1);
        if (r < 0 && errno == EINTR) continue;
        if (lifeline >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) return -1;
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) return 0;
    }
}

// Handles what the signalfd holds: forwards signals to the command, reaps children, and
// leaves (with the command's status) when the command has ended.
static void handle_signals(int sigfd, pid_t cpid) {
    struct signalfd_siginfo si;
    while (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if ((int)si.ssi_signo != SIGCHLD) { kill(cpid, (int)si.ssi_signo); continue; }
        int st;
        pid_t w;
        while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
            if (w == cpid) {
                petrel_record_write(sfd, PETREL_RECORD_EXITED, 0, st, "exited", NULL);
                // Leaving takes every other process of the sandbox with us.
                _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            }
        }
    }
}

// The throwaway peer a pre-started runtime may exercise its Runtime API client on
// before it waits (so that a JIT has compiled that path): a listening socket at the
// abstract name PETREL_PRESTART_PEER in the sandbox's network namespace, open until the
// command reports STEM_READY. Each connection gets one canned answer.
#define PETREL_PRESTART_PEER "petrel-prestart"

static int peer_listen(void) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path + 1, PETREL_PRESTART_PEER, sizeof PETREL_PRESTART_PEER - 1);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + sizeof PETREL_PRESTART_PEER - 1);
    if (bind(fd, (struct sockaddr *)&a, len) < 0 || listen(fd, 4) < 0) { close(fd); return -1; }
    return fd;
}

static void peer_answer(int listener) {
    int c = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) return;
    struct timeval tv = { 1, 0 };
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char buf[4096];
    size_t got = 0;
    while (got < sizeof buf - 1) {
        ssize_t n = read(c, buf + got, sizeof buf - 1 - got);
        if (n <= 0) break;
        got += (size_t)n;
        buf[got] = 0;
        if (strstr(buf, "\r\n\r\n")) {
            static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
            (void)send(c, answer, sizeof answer - 1, MSG_NOSIGNAL);
            break;
        }
    }
    close(c);
}

// A pre-started command runs: report when it says it has loaded, and wait for the go
// message (or the command's end, or the daemon's). Returns the go message's length.
static int await_go(int ctl, int lifeline, int sigfd, int stem, int peer, pid_t cpid, int fds[5], struct petrel_start_header *h) {
    for (;;) {
        struct pollfd p[5] = {
            { ctl, POLLIN, 0 }, { sigfd, POLLIN, 0 }, { stem, POLLIN, 0 }, { peer, POLLIN, 0 }, { lifeline, POLLIN, 0 }
        };
        int np = lifeline >= 0 ? 5 : 4;
        if (stem < 0) p[2].fd = -1;
        if (peer < 0) p[3].fd = -1;
        int r = poll(p, (nfds_t)np, -1);
        if (r < 0 && errno == EINTR) continue;
        if (np == 5 && (p[4].revents & (POLLIN | POLLHUP | POLLERR))) _exit(137);
        if (p[1].revents & POLLIN) handle_signals(sigfd, cpid);
        if (peer >= 0 && (p[3].revents & POLLIN)) peer_answer(peer);
        if (stem >= 0 && (p[2].revents & (POLLIN | POLLHUP | POLLERR))) {
            char b = 0;
            ssize_t n = read(stem, &b, 1);
            if (n == 1) {
                petrel_record_write(sfd, PETREL_RECORD_STEM_READY, 0, 0, "stem ready", NULL);
                if (peer >= 0) close(peer);
                peer = -1;
            } else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
                stem = -1;
            }
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (peer >= 0) close(peer);
            int len = receive_message(ctl, fds, h, PETREL_GO_MAGIC, 0);
            if (len < 0) _exit(0); // discarded
            return len;
        }
    }
}

static void move_trees(const int fds[5]) {
    if (fds[3] >= 0) {
        if (syscall(SYS_move_mount, fds[3], "", AT_FDCWD, "/var/task", MOVE_MOUNT_F_EMPTY_PATH) < 0)
            petrel_record_fail(sfd, "move_mount", "/var/task");
        close(fds[3]);
    }
    if (fds[4] >= 0) {
        if (syscall(SYS_move_mount, fds[4], "", AT_FDCWD, "/opt", MOVE_MOUNT_F_EMPTY_PATH) < 0)
            petrel_record_fail(sfd, "move_mount", "/opt");
        close(fds[4]);
    }
}

static void read_filter(size_t insns) {
    if (insns == 0) return;
    if (insns > BPF_MAXINSNS) { errno = E2BIG; petrel_record_fail(sfd, "seccomp filter", "too long"); }
    size_t want = insns * sizeof cfg.filter[0], got = 0;
    while (got < want) {
        ssize_t r = pread(PETREL_INIT_SECCOMP_FD, (char *)cfg.filter + got, want - got, (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { if (r == 0) errno = EIO; petrel_record_fail(sfd, "read seccomp filter", NULL); }
        got += (size_t)r;
    }
    cfg.filter_len = insns;
}

int main(int argc, char **argv) {
    prctl(PR_SET_NAME, "petrel-init", 0, 0, 0);
    if (argc != PETREL_INIT_ARGC) { errno = EINVAL; petrel_record_fail(sfd, "petrel-init", "wrong argument count"); }
    cfg.uid = (uid_t)number(argv[1], "uid");
    cfg.gid = (gid_t)number(argv[2], "gid");
    cfg.nofile = number(argv[3], "nofile");
    cfg.nproc = number(argv[4], "nproc");
    read_filter((size_t)number(argv[5], "seccomp"));
    close(PETREL_INIT_SECCOMP_FD);
    const int ctl = PETREL_INIT_CONTROL_FD;
    int lifeline = fcntl(PETREL_INIT_LIFELINE_FD, F_GETFD) < 0 ? -1 : PETREL_INIT_LIFELINE_FD;

    // Signals: block everything we care about and read them from a signalfd.
    // A real handler is installed too, because the kernel drops signals that an
    // init process leaves at SIG_DFL.
    sigset_t set; sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) sigaddset(&set, forwarded[i]);
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_handler = noop_handler;
    for (int s = 1; s < 65; s++) if (sigismember(&set, s)) sigaction(s, &sa, NULL);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sigfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sigfd < 0) petrel_record_fail(sfd, "signalfd", NULL);

    // Prepared: wait for the command.
    petrel_record_write(sfd, PETREL_RECORD_READY, 0, 0, "ready", NULL);
    struct petrel_start_header h;
    int fds[5];
    if (await_control(ctl, lifeline) < 0) _exit(0);
    int len = receive_message(ctl, fds, &h, PETREL_START_MAGIC, 3);
    if (len < 0) _exit(0);
    int stem_pair[2] = { -1, -1 };
    int peer = -1;
    if (h.flags & PETREL_START_STEM) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, stem_pair) < 0) petrel_record_fail(sfd, "socketpair", "stem");
        peer = peer_listen();
    } else {
        close(ctl);
    }
    if (h.argc == 0 || h.argc > PETREL_START_MAX_STRINGS || h.envc > PETREL_START_MAX_STRINGS) {
        errno = EPROTO; petrel_record_fail(sfd, "start message", "argc");
    }
    char *p = start_buf, *end = start_buf + len;
    const char *cwd = p;
    p += petrel_s_len(p) + 1;
    for (uint32_t i = 0; i < h.argc; i++) {
        if (p >= end) { errno = EPROTO; petrel_record_fail(sfd, "start message", "argv"); }
        start_argv[i] = p; p += petrel_s_len(p) + 1;
    }
    start_argv[h.argc] = NULL;
    for (uint32_t i = 0; i < h.envc; i++) {
        if (p >= end) { errno = EPROTO; petrel_record_fail(sfd, "start message", "envp"); }
        start_envp[i] = p; p += petrel_s_len(p) + 1;
    }
    start_envp[h.envc] = NULL;

    move_trees(fds);

    pid_t cpid = fork();
    if (cpid < 0) petrel_record_fail(sfd, "fork", "command");
    if (cpid == 0) payload_main(fds, cwd, start_argv, start_envp, stem_pair[1]);
    for (int i = 0; i < 3; i++) close(fds[i]);
    petrel_record_write(sfd, PETREL_RECORD_STARTED, 0, (int)cpid, "started", NULL);

    int stem = stem_pair[0];
    if (stem >= 0) {
        close(stem_pair[1]);
        // Pre-started: the function's trees and environment come with the go.
        len = await_go(ctl, lifeline, sigfd, stem, peer, cpid, fds, &h);
        close(ctl);
        move_trees(fds);
    }

    // Init runs with no privilege either.
    drop_privileges();
    install_seccomp();

    if (stem >= 0) {
        // The command's go: its working directory and environment (the go's strings as they came).
        size_t off = 0;
        while (off < (size_t)len) {
            ssize_t w = send(stem, start_buf + off, (size_t)len - off, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) break; // the command is gone: its exit is reported below
            off += (size_t)w;
        }
        close(stem);
    }

    struct pollfd pf[2] = { { sigfd, POLLIN, 0 }, { lifeline, POLLIN, 0 } };
    int np = lifeline >= 0 ? 2 : 1;
    for (;;) {
        int r = poll(pf, np, -1);
        if (r < 0 && errno == EINTR) continue;
        if (np == 2 && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) _exit(137); // the daemon is gone
        if (pf[0].revents & POLLIN) handle_signals(sigfd, cpid);
    }
}
