// Network namespaces: made on a short-lived thread of their own (unshare
// affects only the calling thread), configured there, and kept alive by an fd.
#define _GNU_SOURCE
#include "CPetrelLinux.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <nftables/libnftables.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

struct ns_job {
    // in
    int join_fd;              // setns into this first (>= 0), or create a new namespace (-1)
    const char *nft_rules;
    const char *const *argv;  // a command to run inside, may be NULL
    const char *stdin_text;
    const int *listen_ports;  // TCP listeners to open on 127.0.0.1 inside
    size_t n_ports;
    const char *const *listen_names; // AF_UNIX stream listeners to open at these abstract names inside
    size_t n_names;
    // out
    int *listen_fds;          // n_ports + n_names fds, in that order
    int ns_fd;
    int status;
    char err[512];
    int err_no;
};

static int lo_up(char *err, size_t len) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return petrel_err(err, len, "socket", "for loopback");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    int r = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (r == 0) { ifr.ifr_flags |= IFF_UP | IFF_RUNNING; r = ioctl(s, SIOCSIFFLAGS, &ifr); }
    if (r < 0) { petrel_err(err, len, "ioctl", "lo up"); close(s); return -1; }
    close(s);
    return 0;
}

struct rules_job {
    const char *rules;
    char err[512];
    int err_no;
};

// libnftables waits on its netlink socket with select(), whose fd_set holds descriptors
// below 1024 only (glibc aborts the process on a larger one), and a daemon with many
// instances holds more than 1024. So the rules are loaded by a thread with a private copy
// of the descriptor table, emptied above stderr, where the socket gets a small number.
// The thread was made in the sandbox's network namespace's thread, whose namespace it has.
static void *rules_thread(void *arg) {
    struct rules_job *j = arg;
    if (unshare(CLONE_FILES) < 0) { j->err_no = errno; petrel_err(j->err, sizeof j->err, "unshare", "files"); return NULL; }
    syscall(SYS_close_range, 3, ~0U, 0);
    struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!nft) { j->err_no = ENOMEM; petrel_errmsg(j->err, sizeof j->err, ENOMEM, "nft_ctx_new failed"); return NULL; }
    nft_ctx_buffer_output(nft);
    nft_ctx_buffer_error(nft);
    int r = nft_run_cmd_from_buffer(nft, j->rules);
    if (r != 0) {
        const char *e = nft_ctx_get_error_buffer(nft);
        char m[480];
        snprintf(m, sizeof m, "nftables rejected the sandbox firewall: %s", e && *e ? e : "(no detail)");
        petrel_errmsg(j->err, sizeof j->err, EINVAL, m);
        j->err_no = EINVAL;
    }
    nft_ctx_free(nft);
    return NULL;
}

static int load_rules(const char *rules, char *err, size_t len) {
    struct rules_job j;
    memset(&j, 0, sizeof j);
    j.rules = rules;
    pthread_t t;
    int r = pthread_create(&t, NULL, rules_thread, &j);
    if (r != 0) { errno = r; return petrel_err(err, len, "pthread_create", "nftables"); }
    pthread_join(t, NULL);
    if (j.err_no) {
        snprintf(err, len, "%s", j.err);
        errno = j.err_no;
        return -1;
    }
    return 0;
}

static int run_here(const char *const *argv, const char *stdin_text, int *status, char *err, size_t len) {
    int in[2] = { -1, -1 };
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (stdin_text) {
        if (pipe2(in, O_CLOEXEC) < 0) return petrel_err(err, len, "pipe2", NULL);
        posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    }
    // Helpers (ip, mkfs.ext4) get stdin, stdout and stderr only. Not every fd in the
    // daemon is CLOEXEC (SwiftNIO's sockets are not): a helper that outlives a killed
    // daemon must not keep its listening socket, or the next daemon's port, busy.
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    pid_t pid;
    int r = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (stdin_text) close(in[0]);
    if (r != 0) {
        if (stdin_text) close(in[1]);
        errno = r;
        return petrel_err(err, len, "posix_spawn", argv[0]);
    }
    if (stdin_text) {
        size_t n = strlen(stdin_text), off = 0;
        while (off < n) {
            ssize_t w = write(in[1], stdin_text + off, n - off);
            if (w < 0) { if (errno == EINTR) continue; break; }
            off += (size_t)w;
        }
        close(in[1]);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) if (errno != EINTR) return petrel_err(err, len, "waitpid", argv[0]);
    *status = st;
    return 0;
}

static void *ns_thread(void *arg) {
    struct ns_job *j = arg;
    j->ns_fd = -1;
    if (j->join_fd >= 0) {
        if (setns(j->join_fd, CLONE_NEWNET) < 0) { petrel_err(j->err, sizeof j->err, "setns", "net"); goto fail; }
    } else {
        if (unshare(CLONE_NEWNET) < 0) { petrel_err(j->err, sizeof j->err, "unshare", "net"); goto fail; }
        if (lo_up(j->err, sizeof j->err) < 0) goto fail;
    }
    if (j->nft_rules && load_rules(j->nft_rules, j->err, sizeof j->err) < 0) goto fail;
    if (j->argv && run_here(j->argv, j->stdin_text, &j->status, j->err, sizeof j->err) < 0) goto fail;
    for (size_t i = 0; i < j->n_ports + j->n_names; i++) {
        int tcp = i < j->n_ports;
        int s = socket(tcp ? AF_INET : AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (s < 0) { petrel_err(j->err, sizeof j->err, "socket", "listener"); goto fail; }
        j->listen_fds[i] = s;
        int r;
        if (tcp) {
            int one = 1;
            setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)j->listen_ports[i]),
                                     .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
            r = bind(s, (struct sockaddr *)&a, sizeof a);
        } else {
            // An abstract name (sun_path starts with NUL): it belongs to this network
            // namespace, needs no file and is gone with the last fd. Bound at the full
            // length of sun_path, NUL-padded, which is how libuv (Node) connects to one;
            // other clients pad the same way.
            const char *name = j->listen_names[i - j->n_ports];
            struct sockaddr_un a;
            memset(&a, 0, sizeof a);
            a.sun_family = AF_UNIX;
            size_t n = strlen(name);
            if (n == 0 || n >= sizeof a.sun_path - 1) {
                errno = EINVAL;
                petrel_err(j->err, sizeof j->err, "bind", "abstract socket name length");
                goto fail;
            }
            memcpy(a.sun_path + 1, name, n);
            r = bind(s, (struct sockaddr *)&a, (socklen_t)sizeof a);
        }
        if (r < 0 || listen(s, 128) < 0) {
            petrel_err(j->err, sizeof j->err, "bind/listen", tcp ? "127.0.0.1 in the sandbox" : "abstract socket in the sandbox");
            goto fail;
        }
    }
    if (j->join_fd < 0) {
        j->ns_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (j->ns_fd < 0) { petrel_err(j->err, sizeof j->err, "open", "/proc/thread-self/ns/net"); goto fail; }
    }
    return NULL;
fail:
    j->err_no = errno ? errno : EIO;
    for (size_t i = 0; j->listen_fds && i < j->n_ports + j->n_names; i++) {
        if (j->listen_fds[i] >= 0) close(j->listen_fds[i]);
        j->listen_fds[i] = -1;
    }
    return NULL;
}

static int run_job(struct ns_job *j, char *errbuf, size_t errlen) {
    pthread_t t;
    int r = pthread_create(&t, NULL, ns_thread, j);
    if (r != 0) { errno = r; return petrel_err(errbuf, errlen, "pthread_create", NULL); }
    pthread_join(t, NULL);
    if (j->err_no) {
        if (errbuf && errlen) snprintf(errbuf, errlen, "%s", j->err);
        errno = j->err_no;
        return -1;
    }
    return 0;
}

int petrel_netns_create(const char *nft_rules, const char *veth_host_name,
                        const char *inside_cidr, const char *gateway, const char *peer_netns,
                        char *errbuf, size_t errlen) {
    struct ns_job j;
    memset(&j, 0, sizeof j);
    j.join_fd = -1;
    j.nft_rules = nft_rules;
    char batch[768];
    const char *argv[] = { "/usr/sbin/ip", "-batch", "-", NULL };
    if (veth_host_name) {
        // Made from inside: eth0 stays here, its peer goes to the caller's namespace (or to
        // the named one, an operator's network: `ip netns` names it).
        char peer[300];
        if (peer_netns) snprintf(peer, sizeof peer, "%s", peer_netns); else snprintf(peer, sizeof peer, "%d", (int)getpid());
        snprintf(batch, sizeof batch,
                 "link add eth0 type veth peer name %s netns %s\n"
                 "addr add %s dev eth0\n"
                 "link set eth0 up\n"
                 "route add default via %s\n",
                 veth_host_name, peer, inside_cidr, gateway);
        j.argv = argv;
        j.stdin_text = batch;
    }
    if (run_job(&j, errbuf, errlen) < 0) return -1;
    if (veth_host_name && !(WIFEXITED(j.status) && WEXITSTATUS(j.status) == 0)) {
        close(j.ns_fd);
        if (!peer_netns) petrel_link_delete(veth_host_name);
        return petrel_errmsg(errbuf, errlen, EIO, "ip could not set up the sandbox's veth pair");
    }
    return j.ns_fd;
}

int petrel_run_in_netns(int nsfd, const char *const *argv, const char *stdin_text,
                        char *errbuf, size_t errlen) {
    if (nsfd < 0) {
        int st;
        if (run_here(argv, stdin_text, &st, errbuf, errlen) < 0) return -1;
        return st;
    }
    struct ns_job j;
    memset(&j, 0, sizeof j);
    j.join_fd = nsfd;
    j.argv = argv;
    j.stdin_text = stdin_text;
    if (run_job(&j, errbuf, errlen) < 0) return -1;
    return j.status;
}

int petrel_netns_listen(int nsfd, const int *ports, size_t n_ports, const char *const *names, size_t n_names,
                        int *fds, char *errbuf, size_t errlen) {
    struct ns_job j;
    memset(&j, 0, sizeof j);
    for (size_t i = 0; i < n_ports + n_names; i++) fds[i] = -1;
    j.join_fd = nsfd;
    j.listen_ports = ports;
    j.n_ports = n_ports;
    j.listen_names = names;
    j.n_names = n_names;
    j.listen_fds = fds;
    return run_job(&j, errbuf, errlen);
}

int petrel_link_exists(const char *name) { return if_nametoindex(name) != 0; }

int petrel_link_delete(const char *name) {
    unsigned idx = if_nametoindex(name);
    if (idx == 0) return -1;
    int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (s < 0) return -1;
    struct { struct nlmsghdr nh; struct ifinfomsg ifi; } req;
    memset(&req, 0, sizeof req);
    req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    req.nh.nlmsg_type = RTM_DELLINK;
    req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    req.nh.nlmsg_seq = 1;
    req.ifi.ifi_family = AF_UNSPEC;
    req.ifi.ifi_index = (int)idx;
    int rc = -1;
    if (send(s, &req, req.nh.nlmsg_len, 0) == (ssize_t)req.nh.nlmsg_len) {
        char buf[1024];
        ssize_t n = recv(s, buf, sizeof buf, 0);
        if (n >= (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
            struct nlmsghdr *h = (struct nlmsghdr *)buf;
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(h);
                if (e->error == 0) rc = 0; else errno = -e->error;
            }
        }
    }
    int e = errno;
    close(s);
    errno = e;
    return rc;
}
