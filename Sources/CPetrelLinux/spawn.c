// The sandbox's birth: clone3 into new namespaces, assemble the root, join the
// cgroups, then exec petrel-init (Sources/petrel-init), which is the sandbox's
// PID 1 and forks the command.
//
// The child is a copy of a multi-threaded Swift process, so from clone() to
// exec() it calls only raw system calls and the string helpers of
// CPetrelInitProtocol: no malloc, no stdio, no locks. Every failure is written
// to the status pipe as a struct petrel_record before the child exits.
#define _GNU_SOURCE
#include "CPetrelLinux.h"
#include "internal.h"
#include <CPetrelInitProtocol.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/fscrypt.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <stdlib.h>
#include <unistd.h>


// ---- directories -------------------------------------------------------------------

static int mkdir_p(char *path, mode_t mode) {
    size_t n = petrel_s_len(path);
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
    size_t n = petrel_s_len(path);
    while (n > 0 && path[n - 1] != '/') n--;
    if (n <= 1) return 0;
    path[n - 1] = 0;
    int r = mkdir_p(path, 0755);
    path[n - 1] = '/';
    return r;
}

// ---- the scratch disk ------------------------------------------------------------

// The name of the encrypted directory on the scratch disk that becomes /tmp.
#define SCRATCH_DIR "tmp"

// Makes the scratch disk mounted at `mnt` unreadable at rest: a fresh random key
// (64 bytes from getrandom) goes into the filesystem's keyring and is wiped from
// this process at once; a directory encrypted under it (fscrypt v2: AES-256-XTS
// contents, AES-256-CTS names) is bound over `mnt`, so /tmp is that directory.
// The key never leaves the kernel: it goes with the filesystem when the sandbox's
// mount namespace ends, and a recycled disk is formatted and given a new one.
// Returns 0, or -1 with `*what` naming the step that failed (errno kept).
static int encrypt_scratch(const char *mnt, const char **what) {
    // The argument with the key after it (`raw` is its flexible array member).
    _Alignas(struct fscrypt_add_key_arg) unsigned char buf[sizeof(struct fscrypt_add_key_arg) + FSCRYPT_MAX_KEY_SIZE];
    struct fscrypt_add_key_arg *arg = (struct fscrypt_add_key_arg *)buf;
    int dir = -1, sub = -1, r = -1, e = 0;
    memset(buf, 0, sizeof buf);
    *what = "open scratch disk";
    dir = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) goto out;
    *what = "getrandom (scratch key)";
    for (size_t got = 0; got < FSCRYPT_MAX_KEY_SIZE;) {
        long n = syscall(SYS_getrandom, arg->raw + got, FSCRYPT_MAX_KEY_SIZE - got, 0);
        if (n < 0) { if (errno == EINTR) continue; goto out; }
        got += (size_t)n;
    }
    arg->key_spec.type = FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER;
    arg->raw_size = FSCRYPT_MAX_KEY_SIZE;
    *what = "FS_IOC_ADD_ENCRYPTION_KEY (Petrel encrypts /tmp: the kernel needs CONFIG_FS_ENCRYPTION)";
    if (ioctl(dir, FS_IOC_ADD_ENCRYPTION_KEY, arg) < 0) goto out;
    explicit_bzero(arg->raw, FSCRYPT_MAX_KEY_SIZE);
    *what = "mkdir scratch directory";
    if (mkdirat(dir, SCRATCH_DIR, 0700) < 0) goto out;
    sub = openat(dir, SCRATCH_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sub < 0) goto out;
    struct fscrypt_policy_v2 policy;
    memset(&policy, 0, sizeof policy);
    policy.version = FSCRYPT_POLICY_V2;
    policy.contents_encryption_mode = FSCRYPT_MODE_AES_256_XTS;
    policy.filenames_encryption_mode = FSCRYPT_MODE_AES_256_CTS;
    policy.flags = FSCRYPT_POLICY_FLAGS_PAD_32;
    memcpy(policy.master_key_identifier, arg->key_spec.u.identifier, FSCRYPT_KEY_IDENTIFIER_SIZE);
    *what = "FS_IOC_SET_ENCRYPTION_POLICY";
    if (ioctl(sub, FS_IOC_SET_ENCRYPTION_POLICY, &policy) < 0) goto out;
    // The function's: world-writable with the sticky bit, like /tmp.
    *what = "chmod scratch directory";
    if (fchmod(sub, 01777) < 0) goto out;
    char src[4096] = {0};
    petrel_s_cat(src, sizeof src, mnt);
    petrel_s_cat(src, sizeof src, "/" SCRATCH_DIR);
    *what = "bind the encrypted directory over /tmp";
    if (mount(src, mnt, NULL, MS_BIND, NULL) < 0) goto out;
    r = 0;
out:
    e = errno;
    explicit_bzero(buf, sizeof buf);
    if (sub >= 0) close(sub);
    if (dir >= 0) close(dir);
    errno = e;
    return r;
}

// ---- the root -----------------------------------------------------------------

static void do_mount(int sfd, const struct petrel_spawn_config *cfg, const struct petrel_mount *m) {
    char t[4096] = {0};
    petrel_s_cat(t, sizeof t, cfg->root_dir);
    petrel_s_cat(t, sizeof t, m->target);
    struct stat st;
    switch (m->kind) {
    case PETREL_MOUNT_DIR:
        if (mkdir_p(t, 0755) < 0) petrel_record_fail(sfd, "mkdir", m->target);
        return;
    case PETREL_MOUNT_SYMLINK:
        if (mkdir_parent(t) < 0) petrel_record_fail(sfd, "mkdir", m->target);
        if (symlink(m->source, t) < 0 && errno != EEXIST) petrel_record_fail(sfd, "symlink", m->target);
        return;
    case PETREL_MOUNT_BIND_RO:
    case PETREL_MOUNT_BIND_RW:
        if (stat(m->source, &st) < 0) petrel_record_fail(sfd, "stat bind source", m->source);
        if (S_ISDIR(st.st_mode)) {
            if (mkdir_p(t, 0755) < 0) petrel_record_fail(sfd, "mkdir", m->target);
        } else {
            if (mkdir_parent(t) < 0) petrel_record_fail(sfd, "mkdir", m->target);
            int f = open(t, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
            if (f < 0 && errno != EEXIST) petrel_record_fail(sfd, "create mountpoint", m->target);
            if (f >= 0) close(f);
        }
        if (mount(m->source, t, NULL, MS_BIND | MS_REC, NULL) < 0) petrel_record_fail(sfd, "bind mount", m->source);
        if (m->kind == PETREL_MOUNT_BIND_RO) {
            unsigned long fl = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID;
            if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) fl |= MS_NODEV;
            if (mount(NULL, t, NULL, fl, NULL) < 0) petrel_record_fail(sfd, "remount read-only", m->target);
        }
        return;
    case PETREL_MOUNT_TMPFS:
        if (mkdir_p(t, 0755) < 0) petrel_record_fail(sfd, "mkdir", m->target);
        if (mount("tmpfs", t, "tmpfs", MS_NOSUID | MS_NODEV, m->data) < 0) petrel_record_fail(sfd, "mount tmpfs", m->target);
        return;
    case PETREL_MOUNT_PROC:
        if (mkdir_p(t, 0755) < 0) petrel_record_fail(sfd, "mkdir", m->target);
        if (mount("proc", t, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) petrel_record_fail(sfd, "mount proc", m->target);
        return;
    case PETREL_MOUNT_DEVPTS:
        if (mkdir_p(t, 0755) < 0) petrel_record_fail(sfd, "mkdir", m->target);
        if (mount("devpts", t, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") < 0)
            petrel_record_fail(sfd, "mount devpts", m->target);
        return;
    case PETREL_MOUNT_EXT4:
        if (mkdir_p(t, 0755) < 0) petrel_record_fail(sfd, "mkdir", m->target);
        if (mount(m->source, t, "ext4", MS_NOSUID | MS_NODEV, m->data) < 0) petrel_record_fail(sfd, "mount ext4", m->source);
        const char *what = NULL;
        if (encrypt_scratch(t, &what) < 0) petrel_record_fail(sfd, what, m->target);
        return;
    case PETREL_MOUNT_OVERLAY_RO:
        if (mkdir_p(t, 0755) < 0) petrel_record_fail(sfd, "mkdir", m->target);
        if (mount("overlay", t, "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, m->data) < 0)
            petrel_record_fail(sfd, "mount overlay", m->target);
        return;
    default:
        errno = EINVAL;
        petrel_record_fail(sfd, "unknown mount kind for", m->target);
    }
}

_Noreturn static void init_main(const struct petrel_spawn_config *cfg, int sfd, int ctl) {
    setsid();

    if (cfg->netns_fd >= 0 && setns(cfg->netns_fd, CLONE_NEWNET) < 0) petrel_record_fail(sfd, "setns", "net");
    if (cfg->hostname && sethostname(cfg->hostname, petrel_s_len(cfg->hostname)) < 0) petrel_record_fail(sfd, "sethostname", cfg->hostname);

    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) petrel_record_fail(sfd, "make mounts private", "/");
    if (mount("tmpfs", cfg->root_dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m,nr_inodes=4096") < 0)
        petrel_record_fail(sfd, "mount root tmpfs", cfg->root_dir);
    for (size_t i = 0; i < cfg->n_mounts; i++) do_mount(sfd, cfg, &cfg->mounts[i]);
    if (mount(NULL, cfg->root_dir, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        petrel_record_fail(sfd, "remount root read-only", cfg->root_dir);
    if (chdir(cfg->root_dir) < 0) petrel_record_fail(sfd, "chdir", cfg->root_dir);
    if (syscall(SYS_pivot_root, ".", ".") < 0) petrel_record_fail(sfd, "pivot_root", cfg->root_dir);
    if (umount2(".", MNT_DETACH) < 0) petrel_record_fail(sfd, "detach old root", NULL);
    if (chdir("/") < 0) petrel_record_fail(sfd, "chdir", "/");

    for (size_t i = 0; i < cfg->n_cgroup_fds; i++) {
        ssize_t w;
        do { w = write(cfg->cgroup_procs_fds[i], "0\n", 2); } while (w < 0 && errno == EINTR);
        if (w < 0) petrel_record_fail(sfd, "join cgroup", "cgroup.procs");
    }
    if (unshare(CLONE_NEWCGROUP) < 0) petrel_record_fail(sfd, "unshare", "cgroup");

    // Only what petrel-init needs stays open, at the numbers it expects.
    int sec = cfg->seccomp_len > 0 ? cfg->seccomp_fd : -1;
    // Copies above the fixed numbers first, so that no dup2 overwrites a source.
    int from[5] = { sfd, ctl, cfg->lifeline_fd, sec, cfg->init_fd };
    for (int i = 0; i < 5; i++) {
        if (from[i] < 0) continue;
        from[i] = (int)fcntl(from[i], F_DUPFD_CLOEXEC, 64);
        if (from[i] < 0) petrel_record_fail(sfd, "fcntl", "F_DUPFD_CLOEXEC");
    }
    int status_fd = from[0];
    for (int i = 0; i < 4; i++) { // dup2 leaves the copies at 3..6 open across exec
        int to = PETREL_INIT_STATUS_FD + i;
        if (from[i] < 0) close(to);
        else if (dup2(from[i], to) < 0) petrel_record_fail(status_fd, "dup2", "petrel-init fds");
    }
    status_fd = PETREL_INIT_STATUS_FD;
    int keep[5] = { 3, 4, 5, 6, from[4] };
    petrel_close_all_but(keep, 5);
    char a_uid[16], a_gid[16], a_nofile[24], a_nproc[24], a_sec[16];
    petrel_u64(a_uid, sizeof a_uid, cfg->uid);
    petrel_u64(a_gid, sizeof a_gid, cfg->gid);
    petrel_u64(a_nofile, sizeof a_nofile, cfg->rlimit_nofile);
    petrel_u64(a_nproc, sizeof a_nproc, cfg->rlimit_nproc);
    petrel_u64(a_sec, sizeof a_sec, cfg->seccomp_len);
    char *const argv[PETREL_INIT_ARGC + 1] = { "petrel-init", a_uid, a_gid, a_nofile, a_nproc, a_sec, NULL };
    char *const envp[] = { NULL };
    syscall(SYS_execveat, from[4], "", argv, envp, AT_EMPTY_PATH);
    petrel_record_fail(status_fd, "execveat", "petrel-init");
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
        // First, before any setup: let go of every fd of the daemon's but those the setup
        // uses. The child is a copy of the daemon's fd table, its API listener and client
        // connections included; held through the mounts, a listener outlived a daemon
        // killed with SIGKILL by those milliseconds, took connections meant for its
        // successor and reset them when the copy closed.
        int keep[PETREL_CLOSE_KEEP_MAX];
        int n = 0;
        int fixed[] = { sp[1], cs[1], cfg->netns_fd, cfg->seccomp_fd, cfg->lifeline_fd, cfg->init_fd };
        for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
            if (fixed[i] >= 0) keep[n++] = fixed[i];
        if (cfg->n_cgroup_fds > (size_t)(PETREL_CLOSE_KEEP_MAX - n)) {
            errno = E2BIG;
            petrel_record_fail(sp[1], "too many cgroup hierarchies to join", NULL);
        }
        for (size_t i = 0; i < cfg->n_cgroup_fds; i++) keep[n++] = cfg->cgroup_procs_fds[i];
        petrel_close_all_but(keep, n);
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

// Sends one start or go message (see petrel_start_header): nstdio is 3 or 0.
static int send_message(int control_fd, struct petrel_start_header h, const char *const *argv, const char *const *envp,
                        const char *cwd, const int *stdio, int nstdio, int code_tree, int opt_tree,
                        char *errbuf, size_t errlen) {
    static const size_t max = PETREL_START_MAX - 1;
    char *buf = malloc(max);
    if (!buf) return petrel_errmsg(errbuf, errlen, ENOMEM, "start: out of memory");
    size_t off = 0;
    h.argc = 0; h.envc = 0; h.has_code = code_tree >= 0; h.has_opt = opt_tree >= 0;
    const char *const *lists[2] = { argv, envp };
    uint32_t *counts[2] = { &h.argc, &h.envc };
    size_t cl = strlen(cwd) + 1;
    if (cl > max) { free(buf); return petrel_errmsg(errbuf, errlen, E2BIG, "start: working directory too long"); }
    memcpy(buf, cwd, cl); off = cl;
    for (int l = 0; l < 2; l++) {
        for (const char *const *s = lists[l]; s && *s; s++) {
            size_t n = strlen(*s) + 1;
            if (off + n > max || *counts[l] >= PETREL_START_MAX_STRINGS) {
                free(buf);
                return petrel_errmsg(errbuf, errlen, E2BIG, "start: the command and environment are larger than 64 KiB");
            }
            memcpy(buf + off, *s, n); off += n;
            (*counts[l])++;
        }
    }
    int fds[5];
    int nfds = 0;
    for (int i = 0; i < nstdio; i++) fds[nfds++] = stdio[i];
    if (code_tree >= 0) fds[nfds++] = code_tree;
    if (opt_tree >= 0) fds[nfds++] = opt_tree;
    struct iovec iov[2] = { { &h, sizeof h }, { buf, off } };
    union { char b[CMSG_SPACE(5 * sizeof(int))]; struct cmsghdr align; } c;
    memset(&c, 0, sizeof c);
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = iov; m.msg_iovlen = 2;
    if (nfds > 0) {
        m.msg_control = c.b; m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        cm->cmsg_level = SOL_SOCKET; cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
    }
    ssize_t r;
    do { r = sendmsg(control_fd, &m, MSG_NOSIGNAL); } while (r < 0 && errno == EINTR);
    int e = errno;
    free(buf);
    if (r < 0) { errno = e; return petrel_err(errbuf, errlen, "sendmsg", "start"); }
    return 0;
}

int petrel_start(int control_fd, const char *const *argv, const char *const *envp, const char *cwd,
                 int stdin_fd, int stdout_fd, int stderr_fd, int code_tree, int opt_tree, int flags,
                 char *errbuf, size_t errlen) {
    struct petrel_start_header h = { PETREL_START_MAGIC, 0, 0, 0, 0, (uint32_t)flags };
    int stdio[3] = { stdin_fd, stdout_fd, stderr_fd };
    return send_message(control_fd, h, argv, envp, cwd, stdio, 3, code_tree, opt_tree, errbuf, errlen);
}

int petrel_go(int control_fd, const char *const *envp, const char *cwd, int code_tree, int opt_tree,
              char *errbuf, size_t errlen) {
    struct petrel_start_header h = { PETREL_GO_MAGIC, 0, 0, 0, 0, 0 };
    return send_message(control_fd, h, NULL, envp, cwd, NULL, 0, code_tree, opt_tree, errbuf, errlen);
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

int petrel_memfd_sealed(const char *name, const void *data, size_t len, char *errbuf, size_t errlen) {
    int fd = (int)syscall(SYS_memfd_create, name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return petrel_err(errbuf, errlen, "memfd_create", name);
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, (const char *)data + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { int e = w < 0 ? errno : EIO; close(fd); errno = e; return petrel_err(errbuf, errlen, "write", name); }
        done += (size_t)w;
    }
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
        int e = errno; close(fd); errno = e;
        return petrel_err(errbuf, errlen, "seal", name);
    }
    return fd;
}
