// The sandbox's birth: clone3 into new namespaces, assemble the root, then
// become the sandbox's init (PID 1) and fork the command.
//
// The child is a copy of a multi-threaded Swift process, so from clone() to
// exec() it calls only raw system calls and the string helpers below: no
// malloc, no stdio, no locks. Every failure is written to the status pipe as a
// struct petrel_record before the child exits.
#define _GNU_SOURCE
#include "CPetrelLinux.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

// ---- tiny async-signal-safe helpers -----------------------------------------

static size_t s_len(const char *s) { size_t n = 0; while (s && s[n]) n++; return n; }

// Appends src to dst (capacity cap); always terminates.
static void s_cat(char *dst, size_t cap, const char *src) {
    size_t n = s_len(dst);
    while (src && *src && n + 1 < cap) dst[n++] = *src++;
    dst[n] = 0;
}

static void record(int fd, int kind, int err, int value, const char *a, const char *b) {
    struct petrel_record r;
    memset(&r, 0, sizeof r);
    r.kind = kind; r.err = err; r.value = value;
    s_cat(r.message, sizeof r.message, a);
    if (b) { s_cat(r.message, sizeof r.message, " "); s_cat(r.message, sizeof r.message, b); }
    ssize_t w;
    do { w = write(fd, &r, sizeof r); } while (w < 0 && errno == EINTR);
}

_Noreturn static void fail(int fd, const char *what, const char *path) {
    int e = errno;
    record(fd, PETREL_RECORD_SETUP_ERROR, e, 0, what, path);
    _exit(126);
}

static int mkdir_p(char *path, mode_t mode) {
    size_t n = s_len(path);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] == '/' || path[i] == 0) {
            char c = path[i];
            path[i] = 0;
            if (mkdir(path, mode) < 0 && errno != EEXIST) { path[i] = c; return -1; }
            path[i] = c;
        }
    }
    return 0;
}

static int mkdir_parent(char *path) {
    size_t n = s_len(path);
    while (n > 0 && path[n - 1] != '/') n--;
    if (n <= 1) return 0;
    path[n - 1] = 0;
    int r = mkdir_p(path, 0755);
    path[n - 1] = '/';
    return r;
}

// ---- the root -----------------------------------------------------------------

static void do_mount(int sfd, const struct petrel_spawn_config *cfg, const struct petrel_mount *m) {
    char t[4096] = {0};
    s_cat(t, sizeof t, cfg->root_dir);
    s_cat(t, sizeof t, m->target);
    struct stat st;
    switch (m->kind) {
    case PETREL_MOUNT_DIR:
        if (mkdir_p(t, 0755) < 0) fail(sfd, "mkdir", m->target);
        return;
    case PETREL_MOUNT_SYMLINK:
        if (mkdir_parent(t) < 0) fail(sfd, "mkdir", m->target);
        if (symlink(m->source, t) < 0 && errno != EEXIST) fail(sfd, "symlink", m->target);
        return;
    case PETREL_MOUNT_BIND_RO:
    case PETREL_MOUNT_BIND_RW:
        if (stat(m->source, &st) < 0) fail(sfd, "stat bind source", m->source);
        if (S_ISDIR(st.st_mode)) {
            if (mkdir_p(t, 0755) < 0) fail(sfd, "mkdir", m->target);
        } else {
            if (mkdir_parent(t) < 0) fail(sfd, "mkdir", m->target);
            int f = open(t, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
            if (f < 0 && errno != EEXIST) fail(sfd, "create mountpoint", m->target);
            if (f >= 0) close(f);
        }
        if (mount(m->source, t, NULL, MS_BIND | MS_REC, NULL) < 0) fail(sfd, "bind mount", m->source);
        if (m->kind == PETREL_MOUNT_BIND_RO) {
            unsigned long fl = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID;
            if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) fl |= MS_NODEV;
            if (mount(NULL, t, NULL, fl, NULL) < 0) fail(sfd, "remount read-only", m->target);
        }
        return;
    case PETREL_MOUNT_TMPFS:
        if (mkdir_p(t, 0755) < 0) fail(sfd, "mkdir", m->target);
        if (mount("tmpfs", t, "tmpfs", MS_NOSUID | MS_NODEV, m->data) < 0) fail(sfd, "mount tmpfs", m->target);
        return;
    case PETREL_MOUNT_PROC:
        if (mkdir_p(t, 0755) < 0) fail(sfd, "mkdir", m->target);
        if (mount("proc", t, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) fail(sfd, "mount proc", m->target);
        return;
    case PETREL_MOUNT_DEVPTS:
        if (mkdir_p(t, 0755) < 0) fail(sfd, "mkdir", m->target);
        if (mount("devpts", t, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") < 0)
            fail(sfd, "mount devpts", m->target);
        return;
    case PETREL_MOUNT_EXT4:
        if (mkdir_p(t, 0755) < 0) fail(sfd, "mkdir", m->target);
        if (mount(m->source, t, "ext4", MS_NOSUID | MS_NODEV, m->data) < 0) fail(sfd, "mount ext4", m->source);
        // the scratch disk is the function's: world-writable with the sticky bit, like /tmp
        if (chmod(t, 01777) < 0) fail(sfd, "chmod", m->target);
        return;
    case PETREL_MOUNT_OVERLAY_RO:
        if (mkdir_p(t, 0755) < 0) fail(sfd, "mkdir", m->target);
        if (mount("overlay", t, "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, m->data) < 0)
            fail(sfd, "mount overlay", m->target);
        return;
    default:
        errno = EINVAL;
        fail(sfd, "unknown mount kind for", m->target);
    }
}

// ---- privileges -----------------------------------------------------------------

static void drop_privileges(int sfd, const struct petrel_spawn_config *cfg) {
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        fail(sfd, "prctl", "PR_CAP_AMBIENT_CLEAR_ALL");
    for (int cap = 0; cap < 64; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) fail(sfd, "prctl", "PR_CAPBSET_DROP");
    }
    if (syscall(SYS_setgroups, 0, NULL) < 0) fail(sfd, "setgroups", NULL);
    if (syscall(SYS_setresgid, cfg->gid, cfg->gid, cfg->gid) < 0) fail(sfd, "setresgid", NULL);
    if (syscall(SYS_setresuid, cfg->uid, cfg->uid, cfg->uid) < 0) fail(sfd, "setresuid", NULL);
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    if (syscall(SYS_capset, &h, d) < 0) fail(sfd, "capset", NULL);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail(sfd, "prctl", "PR_SET_NO_NEW_PRIVS");
}

static void install_seccomp(int sfd, const struct petrel_spawn_config *cfg) {
    if (!cfg->seccomp_filter || cfg->seccomp_len == 0) return;
    struct sock_fprog prog = { (unsigned short)cfg->seccomp_len, (struct sock_filter *)cfg->seccomp_filter };
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) fail(sfd, "seccomp", NULL);
}

static void set_limit(int sfd, int res, uint64_t v, const char *name) {
    struct rlimit rl = { v, v };
    if (setrlimit(res, &rl) < 0) fail(sfd, "setrlimit", name);
}

// ---- the command ------------------------------------------------------------------

// What petrel_start sends: one SOCK_SEQPACKET message with a header, the
// strings (cwd, argv..., envp...) NUL-separated, and the fds as SCM_RIGHTS.
struct start_header {
    uint32_t magic;
    uint32_t argc;
    uint32_t envc;
    uint32_t has_code;
    uint32_t has_opt;
};
#define START_MAGIC 0x70657472u
#define START_MAX 65536
#define START_MAX_STRINGS 2048

static char start_buf[START_MAX];
static char *start_argv[START_MAX_STRINGS + 1];
static char *start_envp[START_MAX_STRINGS + 1];

static const char *env_get(char *const *envp, const char *name) {
    size_t n = s_len(name);
    for (; envp && *envp; envp++)
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=') return *envp + n + 1;
    return NULL;
}

static void exec_command(int sfd, char *const *argv, char *const *envp) {
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
            s_cat(cand, sizeof cand, "/");
            s_cat(cand, sizeof cand, a0);
            execve(cand, argv, envp);
            if (errno == EACCES) saw_eacces = 1;
            else if (errno != ENOENT && errno != ENOTDIR) break;
        }
        if (saw_eacces && errno == ENOENT) errno = EACCES;
    }
    record(sfd, PETREL_RECORD_EXEC_ERROR, errno, 0, "execve", a0);
    _exit(127);
}

static void noop_handler(int sig) { (void)sig; }

_Noreturn static void payload_main(const struct petrel_spawn_config *cfg, int sfd, int fds[3],
                                   const char *cwd, char *const *argv, char *const *envp) {
    sigset_t none; sigemptyset(&none);
    for (int s = 1; s < 65; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        struct sigaction sa; memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(s, &sa, NULL);
    }
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int i = 0; i < 3; i++)
        if (dup2(fds[i], i) < 0) fail(sfd, "dup2", "stdio");
    set_limit(sfd, RLIMIT_NOFILE, cfg->rlimit_nofile, "RLIMIT_NOFILE");
    set_limit(sfd, RLIMIT_NPROC, cfg->rlimit_nproc, "RLIMIT_NPROC");
    set_limit(sfd, RLIMIT_CORE, 0, "RLIMIT_CORE");
    drop_privileges(sfd, cfg);
    if (chdir(cwd) < 0) fail(sfd, "chdir", cwd);
    syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);
    install_seccomp(sfd, cfg);
    exec_command(sfd, argv, envp);
    _exit(127);
}

// ---- PID 1 ------------------------------------------------------------------------

static const int forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, SIGALRM };

// Closes every fd from 3 up except those in keep (n small).
static void close_all_but(const int *keep_in, int n) {
    int keep[8];
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

// Receives the start message. Returns the length of its strings, or -1 when the daemon discarded the sandbox.
static int receive_start(int sfd, int ctl, int lifeline, int fds[5], struct start_header *h) {
    for (;;) {
        struct pollfd p[2] = { { ctl, POLLIN, 0 }, { lifeline, POLLIN, 0 } };
        int r = poll(p, lifeline >= 0 ? 2 : 1, -1);
        if (r < 0 && errno == EINTR) continue;
        if (lifeline >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) return -1;
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) break;
    }
    struct iovec iov[2] = { { h, sizeof *h }, { start_buf, sizeof start_buf - 1 } };
    union { char buf[CMSG_SPACE(5 * sizeof(int))]; struct cmsghdr align; } c;
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = iov; m.msg_iovlen = 2;
    m.msg_control = c.buf; m.msg_controllen = sizeof c.buf;
    ssize_t n;
    do { n = recvmsg(ctl, &m, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n <= 0) return -1; // EOF: discarded
    if ((size_t)n < sizeof *h || h->magic != START_MAGIC || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        errno = EPROTO; fail(sfd, "start message", "malformed");
    }
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) { errno = EPROTO; fail(sfd, "start message", "no fds"); }
    int nfds = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    int want = 3 + (int)h->has_code + (int)h->has_opt;
    if (nfds != want) { errno = EPROTO; fail(sfd, "start message", "wrong number of fds"); }
    int got[5];
    memcpy(got, CMSG_DATA(cm), (size_t)nfds * sizeof(int));
    for (int i = 0; i < 3; i++) fds[i] = got[i];
    int k = 3;
    fds[3] = h->has_code ? got[k++] : -1;
    fds[4] = h->has_opt ? got[k++] : -1;
    start_buf[(size_t)n - sizeof *h] = 0;
    return (int)((size_t)n - sizeof *h);
}

_Noreturn static void init_main(const struct petrel_spawn_config *cfg, int sfd, int ctl) {
    setsid();
    prctl(PR_SET_NAME, "petrel-init", 0, 0, 0);

    if (cfg->netns_fd >= 0 && setns(cfg->netns_fd, CLONE_NEWNET) < 0) fail(sfd, "setns", "net");
    if (cfg->hostname && sethostname(cfg->hostname, s_len(cfg->hostname)) < 0) fail(sfd, "sethostname", cfg->hostname);

    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) fail(sfd, "make mounts private", "/");
    if (mount("tmpfs", cfg->root_dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m,nr_inodes=4096") < 0)
        fail(sfd, "mount root tmpfs", cfg->root_dir);
    for (size_t i = 0; i < cfg->n_mounts; i++) do_mount(sfd, cfg, &cfg->mounts[i]);
    if (mount(NULL, cfg->root_dir, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        fail(sfd, "remount root read-only", cfg->root_dir);
    if (chdir(cfg->root_dir) < 0) fail(sfd, "chdir", cfg->root_dir);
    if (syscall(SYS_pivot_root, ".", ".") < 0) fail(sfd, "pivot_root", cfg->root_dir);
    if (umount2(".", MNT_DETACH) < 0) fail(sfd, "detach old root", NULL);
    if (chdir("/") < 0) fail(sfd, "chdir", "/");

    for (size_t i = 0; i < cfg->n_cgroup_fds; i++) {
        ssize_t w;
        do { w = write(cfg->cgroup_procs_fds[i], "0\n", 2); } while (w < 0 && errno == EINTR);
        if (w < 0) fail(sfd, "join cgroup", "cgroup.procs");
    }
    if (unshare(CLONE_NEWCGROUP) < 0) fail(sfd, "unshare", "cgroup");

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
    if (sigfd < 0) fail(sfd, "signalfd", NULL);

    // Nothing of the daemon's stays open in the sandbox.
    int lifeline = cfg->lifeline_fd;
    int keep[4] = { sfd, sigfd, lifeline, ctl };
    close_all_but(keep, 4);

    // Prepared: wait for the command.
    record(sfd, PETREL_RECORD_READY, 0, 0, "ready", NULL);
    struct start_header h;
    int fds[5];
    int len = receive_start(sfd, ctl, lifeline, fds, &h);
    if (len < 0) _exit(0);
    close(ctl);
    if (h.argc == 0 || h.argc > START_MAX_STRINGS || h.envc > START_MAX_STRINGS) { errno = EPROTO; fail(sfd, "start message", "argc"); }
    char *p = start_buf, *end = start_buf + len;
    const char *cwd = p;
    p += s_len(p) + 1;
    for (uint32_t i = 0; i < h.argc; i++) { if (p >= end) { errno = EPROTO; fail(sfd, "start message", "argv"); } start_argv[i] = p; p += s_len(p) + 1; }
    start_argv[h.argc] = NULL;
    for (uint32_t i = 0; i < h.envc; i++) { if (p >= end) { errno = EPROTO; fail(sfd, "start message", "envp"); } start_envp[i] = p; p += s_len(p) + 1; }
    start_envp[h.envc] = NULL;

    if (fds[3] >= 0) {
        if (move_mount(fds[3], "", AT_FDCWD, "/var/task", MOVE_MOUNT_F_EMPTY_PATH) < 0) fail(sfd, "move_mount", "/var/task");
        close(fds[3]);
    }
    if (fds[4] >= 0) {
        if (move_mount(fds[4], "", AT_FDCWD, "/opt", MOVE_MOUNT_F_EMPTY_PATH) < 0) fail(sfd, "move_mount", "/opt");
        close(fds[4]);
    }

    long cpid = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (cpid < 0) fail(sfd, "fork", "command");
    if (cpid == 0) payload_main(cfg, sfd, fds, cwd, start_argv, start_envp);
    for (int i = 0; i < 3; i++) close(fds[i]);
    record(sfd, PETREL_RECORD_STARTED, 0, (int)cpid, "started", NULL);

    // Init runs with no privilege either.
    drop_privileges(sfd, cfg);
    install_seccomp(sfd, cfg);

    struct pollfd pf[2] = { { sigfd, POLLIN, 0 }, { lifeline, POLLIN, 0 } };
    int np = lifeline >= 0 ? 2 : 1;
    for (;;) {
        int r = poll(pf, np, -1);
        if (r < 0 && errno == EINTR) continue;
        if (np == 2 && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) _exit(137); // the daemon is gone
        if (!(pf[0].revents & POLLIN)) continue;
        struct signalfd_siginfo si;
        while (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
            if ((int)si.ssi_signo != SIGCHLD) { kill((pid_t)cpid, (int)si.ssi_signo); continue; }
            int st;
            pid_t w;
            while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
                if (w == cpid) {
                    record(sfd, PETREL_RECORD_EXITED, 0, st, "exited", NULL);
                    // Leaving takes every other process of the sandbox with us.
                    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
                }
            }
        }
    }
}

// ---- parent -------------------------------------------------------------------------

int petrel_spawn(const struct petrel_spawn_config *cfg, struct petrel_spawn_result *out,
                 char *errbuf, size_t errlen) {
    int sp[2], cs[2];
    if (pipe2(sp, O_CLOEXEC) < 0) return petrel_err(errbuf, errlen, "pipe2", NULL);
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, cs) < 0) {
        int e = errno; close(sp[0]); close(sp[1]); errno = e;
        return petrel_err(errbuf, errlen, "socketpair", NULL);
    }
    int pidfd = -1;
    struct clone_args ca;
    memset(&ca, 0, sizeof ca);
    ca.flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_PIDFD;
    if (cfg->netns_fd < 0) ca.flags |= CLONE_NEWNET;
    ca.pidfd = (uint64_t)(uintptr_t)&pidfd;
    ca.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &ca, sizeof ca);
    if (pid < 0) {
        int e = errno;
        close(sp[0]); close(sp[1]); close(cs[0]); close(cs[1]);
        errno = e;
        return petrel_err(errbuf, errlen, "clone3", NULL);
    }
    if (pid == 0) {
        close(sp[0]);
        close(cs[0]);
        init_main(cfg, sp[1], cs[1]);
    }
    close(sp[1]);
    close(cs[1]);
    fcntl(sp[0], F_SETFL, O_NONBLOCK);
    out->pid = (pid_t)pid;
    out->pidfd = pidfd;
    out->status_fd = sp[0];
    out->control_fd = cs[0];
    return 0;
}

int petrel_start(int control_fd, const char *const *argv, const char *const *envp, const char *cwd,
                 int stdin_fd, int stdout_fd, int stderr_fd, int code_tree, int opt_tree,
                 char *errbuf, size_t errlen) {
    static const size_t max = START_MAX - 1;
    char *buf = malloc(max);
    if (!buf) return petrel_errmsg(errbuf, errlen, ENOMEM, "start: out of memory");
    size_t off = 0;
    struct start_header h = { START_MAGIC, 0, 0, code_tree >= 0, opt_tree >= 0 };
    const char *const *lists[2] = { argv, envp };
    uint32_t *counts[2] = { &h.argc, &h.envc };
    size_t cl = strlen(cwd) + 1;
    if (cl > max) { free(buf); return petrel_errmsg(errbuf, errlen, E2BIG, "start: working directory too long"); }
    memcpy(buf, cwd, cl); off = cl;
    for (int l = 0; l < 2; l++) {
        for (const char *const *s = lists[l]; s && *s; s++) {
            size_t n = strlen(*s) + 1;
            if (off + n > max || *counts[l] >= START_MAX_STRINGS) {
                free(buf);
                return petrel_errmsg(errbuf, errlen, E2BIG, "start: the command and environment are larger than 64 KiB");
            }
            memcpy(buf + off, *s, n); off += n;
            (*counts[l])++;
        }
    }
    int fds[5] = { stdin_fd, stdout_fd, stderr_fd, -1, -1 };
    int nfds = 3;
    if (code_tree >= 0) fds[nfds++] = code_tree;
    if (opt_tree >= 0) fds[nfds++] = opt_tree;
    struct iovec iov[2] = { { &h, sizeof h }, { buf, off } };
    union { char b[CMSG_SPACE(5 * sizeof(int))]; struct cmsghdr align; } c;
    memset(&c, 0, sizeof c);
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = iov; m.msg_iovlen = 2;
    m.msg_control = c.b; m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET; cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
    memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
    ssize_t r;
    do { r = sendmsg(control_fd, &m, MSG_NOSIGNAL); } while (r < 0 && errno == EINTR);
    int e = errno;
    free(buf);
    if (r < 0) { errno = e; return petrel_err(errbuf, errlen, "sendmsg", "start"); }
    return 0;
}

int petrel_read_record(int fd, struct petrel_record *rec) {
    ssize_t r;
    do { r = read(fd, rec, sizeof *rec); } while (r < 0 && errno == EINTR);
    if (r == (ssize_t)sizeof *rec) return 1;
    if (r == 0 || (r < 0 && errno == EAGAIN)) return 0;
    if (r > 0) { errno = EIO; return -1; }
    return -1;
}

int petrel_wait_record(int fd, int timeout_ms, struct petrel_record *rec) {
    struct pollfd p = { fd, POLLIN, 0 };
    int r;
    do { r = poll(&p, 1, timeout_ms); } while (r < 0 && errno == EINTR);
    if (r <= 0) return r;
    return petrel_read_record(fd, rec);
}

// ---- detached mount trees (daemon side) -------------------------------------------

int petrel_tree_open(const char *path, char *errbuf, size_t errlen) {
    int fd = open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (fd < 0) return petrel_err(errbuf, errlen, "open_tree", path);
    struct mount_attr a;
    memset(&a, 0, sizeof a);
    a.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if (mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &a, sizeof a) < 0) {
        int e = errno; close(fd); errno = e;
        return petrel_err(errbuf, errlen, "mount_setattr", path);
    }
    return fd;
}

int petrel_overlay_open(const char *const *lower, size_t n, char *errbuf, size_t errlen) {
    int fs = fsopen("overlay", FSOPEN_CLOEXEC);
    if (fs < 0) return petrel_err(errbuf, errlen, "fsopen", "overlay");
    size_t cap = 16;
    for (size_t i = 0; i < n; i++) cap += 2 * strlen(lower[i]) + 1;
    char *opt = malloc(cap);
    if (!opt) { close(fs); return petrel_errmsg(errbuf, errlen, ENOMEM, "overlay: out of memory"); }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (i) opt[o++] = ':';
        for (const char *c = lower[i]; *c; c++) { if (*c == ':' || *c == '\\') opt[o++] = '\\'; opt[o++] = *c; }
    }
    opt[o] = 0;
    int r = fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir", opt, 0);
    free(opt);
    if (r < 0 || fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
        int e = errno; close(fs); errno = e;
        return petrel_err(errbuf, errlen, "fsconfig", "overlay lowerdir");
    }
    int m = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    int e = errno;
    close(fs);
    if (m < 0) { errno = e; return petrel_err(errbuf, errlen, "fsmount", "overlay"); }
    return m;
}
