// CPetrelLinux: the thin C layer under PetrelSandbox.
//
// Everything that must run between clone() and exec() lives here, because no
// Swift code may run in a forked child of a multi-threaded process. Failures in
// the child are reported to the parent over a CLOEXEC pipe as fixed-size
// records (struct petrel_record), never by printing.
#ifndef CPETREL_LINUX_H
#define CPETREL_LINUX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <CPetrelInitProtocol.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- mounts assembled in the child's new mount namespace -------------------

enum petrel_mount_kind {
    PETREL_MOUNT_BIND_RO = 1,   // bind source (dir or file) read-only
    PETREL_MOUNT_BIND_RW = 2,   // bind source read-write
    PETREL_MOUNT_TMPFS = 3,     // tmpfs with `data` as options
    PETREL_MOUNT_PROC = 4,      // a fresh procfs (the new PID namespace's)
    PETREL_MOUNT_DEVPTS = 5,    // a private devpts instance
    PETREL_MOUNT_EXT4 = 6,      // source is a block device (a loop device)
    PETREL_MOUNT_SYMLINK = 7,   // create symlink target -> source
    PETREL_MOUNT_DIR = 8,       // just create the directory target
    PETREL_MOUNT_OVERLAY_RO = 9 // overlay with `data` = "lowerdir=a:b", read-only
};

struct petrel_mount {
    int kind;
    const char *source;   // host path, device, or symlink text
    const char *target;   // absolute path inside the sandbox ("/var/task")
    const char *data;     // filesystem options, may be NULL
};

// ---- spawning one sandbox ----------------------------------------------------

struct petrel_spawn_config {
    const char *root_dir;            // host directory to build the new root on (exists, empty)
    const struct petrel_mount *mounts;
    size_t n_mounts;
    const char *hostname;
    int netns_fd;                    // network namespace to join; -1: a new empty one
    const int *cgroup_procs_fds;     // open cgroup.procs files (one per hierarchy) to join
    size_t n_cgroup_fds;
    uid_t uid;
    gid_t gid;
    int seccomp_fd;                  // sealed memfd of the struct sock_filter[] program (petrel_memfd_sealed)
    size_t seccomp_len;              // number of sock_filter instructions; 0: no filter
    uint64_t rlimit_nofile;
    uint64_t rlimit_nproc;
    int lifeline_fd;                 // read end of a pipe the daemon holds; EOF kills the sandbox
    int init_fd;                     // petrel-init, opened for execveat (the sandbox's PID 1 after setup)
};

struct petrel_spawn_result {
    pid_t pid;       // PID 1 of the sandbox, as the host sees it
    int pidfd;       // pidfd of that process (CLOEXEC)
    int status_fd;   // read end of the status pipe (CLOEXEC, non-blocking)
    int control_fd;  // our end of the control socket (CLOEXEC); closing it before start discards the sandbox
};

// Prepares a sandbox: its first process (PID 1 of new PID, mount, IPC, UTS and
// cgroup namespaces, in the given network namespace and cgroups) builds the
// root, then execs petrel-init, which reports READY and waits for petrel_start. Returns 0, or -1 with a
// message in errbuf (errno kept).
int petrel_spawn(const struct petrel_spawn_config *cfg, struct petrel_spawn_result *out,
                 char *errbuf, size_t errlen);

// Starts the command in a prepared sandbox: argv[0] is resolved through PATH
// in envp when it has no '/'; stdio are host fds (duplicated into the sandbox);
// code_tree and opt_tree are detached mounts (petrel_tree_open / petrel_overlay_open)
// for /var/task and /opt, or -1; flags: PETREL_START_STEM pre-starts the command (no trees
// then: they come with petrel_go). 0, or -1 with a message.
int petrel_start(int control_fd, const char *const *argv, const char *const *envp, const char *cwd,
                 int stdin_fd, int stdout_fd, int stderr_fd, int code_tree, int opt_tree, int flags,
                 char *errbuf, size_t errlen);

// Lets a pre-started command go: the function's trees, its working directory and its
// whole environment (which replaces the one it was started with). 0, or -1 with a message.
int petrel_go(int control_fd, const char *const *envp, const char *cwd, int code_tree, int opt_tree,
              char *errbuf, size_t errlen);

// A memfd (CLOEXEC) holding len bytes of data, sealed against any change; its
// readers use pread, so one can be handed to many processes. -1 with a message.
int petrel_memfd_sealed(const char *name, const void *data, size_t len, char *errbuf, size_t errlen);

// Waits up to timeout_ms for one record. 1 read, 0 timeout or EOF, -1 error.
int petrel_wait_record(int fd, int timeout_ms, struct petrel_record *rec);

// A detached, read-only, nosuid, nodev copy of the tree at path (open_tree + mount_setattr).
int petrel_tree_open(const char *path, char *errbuf, size_t errlen);
// A detached read-only overlay of the given directories, the first on top.
int petrel_overlay_open(const char *const *lower, size_t n, char *errbuf, size_t errlen);

// ---- seccomp -------------------------------------------------------------------

// Compiles a seccomp filter: the listed syscalls fail with deny_errno; the
// always-on rules (ptrace, io_uring, namespace-creating clone flags, clone3,
// TIOCSTI, socket families and types) are added on top. On success *out is a
// malloc'd array of struct sock_filter and *out_len its instruction count.
int petrel_seccomp_compile(const char *const *deny, size_t n_deny, int deny_errno,
                           int allow_netlink_route, void **out, size_t *out_len,
                           char *errbuf, size_t errlen);

// ---- network namespaces --------------------------------------------------------

// Creates a network namespace (on a short-lived thread of its own), brings its
// loopback up, loads `nft_rules` with libnftables (when not NULL) and, when
// veth_host_name is not NULL, creates a veth pair: `eth0` inside with
// inside_cidr (e.g. "10.213.0.2/30") and a default route via gateway, the
// other end named veth_host_name moved to the caller's namespace, or to the
// named network namespace peer_netns (`ip netns` name) when it is not NULL.
// Returns an O_CLOEXEC fd of the namespace, or -1 with a message.
int petrel_netns_create(const char *nft_rules, const char *veth_host_name,
                        const char *inside_cidr, const char *gateway, const char *peer_netns,
                        char *errbuf, size_t errlen);

// Runs argv (absolute path) inside the network namespace nsfd (or the caller's
// when nsfd < 0), feeding stdin_text, and waits. Returns the wait status, or -1.
int petrel_run_in_netns(int nsfd, const char *const *argv, const char *stdin_text,
                        char *errbuf, size_t errlen);

// Opens non-blocking, CLOEXEC listeners inside the network namespace nsfd, in one trip
// there: TCP on 127.0.0.1:ports[i], then AF_UNIX stream sockets at the abstract names
// names[i] (no leading NUL; abstract names belong to the namespace; the address is the
// whole NUL-padded sun_path, as libuv connects). The sockets stay
// in that namespace. fds gets n_ports + n_names fds in that order, which the caller
// owns. 0, or -1 with errno and none left open.
int petrel_netns_listen(int nsfd, const int *ports, size_t n_ports, const char *const *names, size_t n_names,
                        int *fds, char *errbuf, size_t errlen);

// Deletes a network link by name in the caller's namespace (rtnetlink). 0, or -1 with errno.
int petrel_link_delete(const char *name);
// 1 when a link of that name exists in the caller's namespace, 0 when not.
int petrel_link_exists(const char *name);

// ---- loop devices ----------------------------------------------------------------

// Attaches backing_path to a free loop device with LO_FLAGS_AUTOCLEAR. Returns an
// O_CLOEXEC fd of the loop device and writes its path into dev_path.
int petrel_loop_attach(const char *backing_path, char *dev_path, size_t dev_len,
                       char *errbuf, size_t errlen);
// Detaches (or, when still mounted somewhere, marks for autoclear) and closes.
int petrel_loop_detach(int loop_fd);

// ---- processes -----------------------------------------------------------------

// Kills and reaps: SIGKILL through the pidfd.
int petrel_pidfd_kill(int pidfd, int sig);
// Reaps the process behind pidfd without blocking; returns 1 and the wait
// status when it has exited, 0 when it still runs, -1 on error.
int petrel_pidfd_reap(int pidfd, int *status);

// epoll helpers for the reaper thread.
int petrel_epoll_create(void);
int petrel_epoll_add(int epfd, int fd, uint64_t token);
int petrel_epoll_del(int epfd, int fd);
// Waits up to timeout_ms; fills tokens; returns the count (0 on timeout/EINTR), -1 on error.
int petrel_epoll_wait(int epfd, uint64_t *tokens, int max, int timeout_ms);

// Pipe with O_CLOEXEC on both ends; returns 0 or -1.
int petrel_pipe_cloexec(int fds[2]);
// Reads one status record without blocking: 1 read, 0 none/EOF, -1 error.
int petrel_read_record(int fd, struct petrel_record *rec);

// A human-readable errno name ("EPERM") for probes and messages.
const char *petrel_errno_name(int err);

#ifdef __cplusplus
}
#endif
#endif
