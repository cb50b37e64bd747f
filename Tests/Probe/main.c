// sandbox-probe: runs inside a sandbox in the tests. Each subcommand tries one
// thing and prints one line, "RESULT <what> ok" or "RESULT <what> <ERRNO>", so a
// test can tell "refused the expected way" from "worked" and from "crashed".
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/fscrypt.h>
#include <linux/io_uring.h>
#include <linux/netlink.h>
#include <linux/sched.h>
#include <sys/ioctl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static int result(const char *what, long r) {
    if (r >= 0) printf("RESULT %s ok\n", what);
    else printf("RESULT %s %s\n", what, strerrorname_np(errno));
    fflush(stdout);
    return 0;
}

static int tcp_connect(const char *host, int port, int timeout_ms) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s < 0) return -1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) { int e = errno; close(s); errno = e; return -1; }
    struct pollfd p = { s, POLLOUT, 0 };
    int r = poll(&p, 1, timeout_ms);
    if (r == 0) { close(s); errno = ETIMEDOUT; return -1; }
    int err = 0; socklen_t l = sizeof err;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) { close(s); errno = err; return -1; }
    fcntl(s, F_SETFL, 0);
    struct timeval tv = { 3, 0 };
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return s;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) { fprintf(stderr, "usage: sandbox-probe COMMAND [ARGS]\n"); return 2; }
    const char *c = argv[1];
    const char *a2 = argc > 2 ? argv[2] : NULL;
    const char *a3 = argc > 3 ? argv[3] : NULL;

    if (!strcmp(c, "ptrace")) {
        pid_t child = fork();
        if (child == 0) { pause(); _exit(0); }
        long r = ptrace(PTRACE_ATTACH, a2 ? atoi(a2) : child, 0, 0);
        result("ptrace", r);
        kill(child, SIGKILL); waitpid(child, NULL, 0);
        return 0;
    }
    if (!strcmp(c, "vmread")) {
        char buf[16]; static char target[16] = "secret";
        pid_t child = fork();
        if (child == 0) { pause(); _exit(0); }
        struct iovec l = { buf, sizeof buf }, r = { target, sizeof target };
        result("process_vm_readv", process_vm_readv(child, &l, 1, &r, 1, 0));
        kill(child, SIGKILL); waitpid(child, NULL, 0);
        return 0;
    }
    if (!strcmp(c, "iouring")) {
        struct io_uring_params p; memset(&p, 0, sizeof p);
        return result("io_uring_setup", syscall(__NR_io_uring_setup, 4, &p));
    }
    if (!strcmp(c, "clone3")) {
        struct clone_args ca; memset(&ca, 0, sizeof ca);
        ca.exit_signal = SIGCHLD;
        long r = syscall(SYS_clone3, &ca, sizeof ca);
        if (r == 0) _exit(0);
        if (r > 0) waitpid((pid_t)r, NULL, 0);
        return result("clone3", r);
    }
    if (!strcmp(c, "tiocsti")) { char ch = 'x'; return result("tiocsti", ioctl(0, TIOCSTI, &ch)); }
    if (!strcmp(c, "netlink")) {
        int proto = !strcmp(a2, "route") ? NETLINK_ROUTE : !strcmp(a2, "audit") ? NETLINK_AUDIT : NETLINK_KOBJECT_UEVENT;
        char what[64]; snprintf(what, sizeof what, "netlink_%s", a2);
        return result(what, socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, proto));
    }
    if (!strcmp(c, "rawsock")) return result("raw_socket", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    if (!strcmp(c, "packetsock")) return result("packet_socket", socket(AF_PACKET, SOCK_RAW, 0));
    if (!strcmp(c, "tcpsock")) return result("tcp_socket", socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!strcmp(c, "mount")) return result("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
    if (!strcmp(c, "unshare")) return result("unshare", unshare(CLONE_NEWUSER | CLONE_NEWNS));
    if (!strcmp(c, "clone-userns")) {
        long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (r == 0) _exit(0);
        if (r > 0) waitpid((pid_t)r, NULL, 0);
        return result("clone_newuser", r);
    }
    if (!strcmp(c, "setns")) {
        int fd = open("/proc/self/ns/net", O_RDONLY);
        if (fd < 0) return result("setns_open", -1);
        return result("setns", setns(fd, CLONE_NEWNET));
    }
    if (!strcmp(c, "keyctl")) return result("keyctl", syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, "probe"));
    if (!strcmp(c, "bpf")) {
        union bpf_attr at; memset(&at, 0, sizeof at);
        at.map_type = BPF_MAP_TYPE_ARRAY; at.key_size = 4; at.value_size = 4; at.max_entries = 1;
        return result("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &at, sizeof at));
    }
    if (!strcmp(c, "write")) {
        char p[4096]; snprintf(p, sizeof p, "%s/probe-write", a2);
        int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (fd >= 0) { (void)!write(fd, "x", 1); close(fd); }
        return result(a2, fd);
    }
    if (!strcmp(c, "pids")) {
        DIR *d = opendir("/proc");
        int n = 0;
        struct dirent *e;
        printf("PIDS");
        while (d && (e = readdir(d))) if (e->d_name[0] >= '0' && e->d_name[0] <= '9') { printf(" %s", e->d_name); n++; }
        printf("\nRESULT pids %d\n", n);
        return 0;
    }
    if (!strcmp(c, "connect")) {
        int s = tcp_connect(a2, atoi(a3), 3000);
        result("connect", s);
        if (s >= 0) { char b[64] = {0}; ssize_t n = read(s, b, sizeof b - 1); if (n > 0) printf("READ %s\n", b); }
        return 0;
    }
    if (!strcmp(c, "connect-abstract")) {
        // connect-abstract NAME: an AF_UNIX stream socket at the abstract NAME.
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0) return result("connect", -1);
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        size_t n = strlen(a2);
        if (n >= sizeof a.sun_path - 1) { errno = ENAMETOOLONG; return result("connect", -1); }
        memcpy(a.sun_path + 1, a2, n);
        int r = connect(s, (struct sockaddr *)&a, (socklen_t)sizeof a); // the whole NUL-padded sun_path, as petreld binds
        result("connect", r < 0 ? -1 : s);
        if (r == 0) { char b[64] = {0}; ssize_t k = read(s, b, sizeof b - 1); if (k > 0) printf("READ %s\n", b); }
        return 0;
    }
    if (!strcmp(c, "connect-gateway")) {
        // The default gateway from /proc/net/route (hex, little-endian), then connect to PORT there.
        FILE *f = fopen("/proc/net/route", "r");
        char line[256], ifn[32]; unsigned dest, gw; int found = 0;
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, "%31s %x %x", ifn, &dest, &gw) == 3 && dest == 0) { found = 1; break; }
        if (f) fclose(f);
        if (!found) { errno = ENETUNREACH; return result("connect", -1); }
        struct in_addr a = { gw };
        char host[32]; inet_ntop(AF_INET, &a, host, sizeof host);
        int s = tcp_connect(host, atoi(a2), 3000);
        result("connect", s);
        if (s >= 0) { char b[64] = {0}; ssize_t n = read(s, b, sizeof b - 1); if (n > 0) printf("READ %s\n", b); }
        return 0;
    }
    if (!strcmp(c, "listen")) {
        // listen PORT SECONDS: counts the connections accepted from loopback and from elsewhere;
        // before it stops, it connects to itself over loopback to prove the listener works.
        int port = atoi(a2), secs = a3 ? atoi(a3) : 3;
        int s = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1; setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY) };
        if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 16) < 0) return result("listen", -1);
        printf("LISTENING %d\n", port);
        int loopback = 0, external = 0;
        for (int i = 0; i <= secs * 10; i++) {
            if (i == secs * 10) { int c2 = tcp_connect("127.0.0.1", port, 1000); if (c2 >= 0) close(c2); }
            struct pollfd p = { s, POLLIN, 0 };
            while (poll(&p, 1, i == secs * 10 ? 500 : 100) > 0) {
                struct sockaddr_in peer; socklen_t pl = sizeof peer;
                int c3 = accept(s, (struct sockaddr *)&peer, &pl);
                if (c3 < 0) break;
                if ((ntohl(peer.sin_addr.s_addr) >> 24) == 127) loopback++; else external++;
                close(c3);
            }
        }
        printf("RESULT listen loopback=%d external=%d\n", loopback, external);
        return 0;
    }
    if (!strcmp(c, "fill")) {
        char p[4096]; snprintf(p, sizeof p, "%s/fill", a2);
        int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (fd < 0) return result("fill_open", -1);
        static char block[1 << 20];
        memset(block, 'x', sizeof block);
        long long total = 0;
        for (;;) {
            ssize_t w = write(fd, block, sizeof block);
            if (w <= 0) break;
            total += w;
        }
        int e = errno;
        if (fsync(fd) < 0 && e == 0) e = errno;
        printf("WROTE %lld\n", total);
        errno = e;
        return result("fill", -1);
    }
    if (!strcmp(c, "scratch")) {
        // Lists /tmp, fills 16 MiB of /tmp/marker with the text a2 and fsyncs it, prints /tmp's
        // encryption policy, then waits to be killed (the test reads the raw disk meanwhile).
        DIR *d = opendir("/tmp");
        printf("TMP_ENTRIES");
        for (struct dirent *e; d && (e = readdir(d));) if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) printf(" %s", e->d_name);
        printf("\n");
        if (d) closedir(d);
        // The file's name holds the marker too: names are encrypted as well as contents.
        char name[512];
        snprintf(name, sizeof name, "/tmp/%s", a2);
        int fd = open(name, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (fd < 0) return result("scratch_open", -1);
        static char block[1 << 20];
        size_t n = strlen(a2);
        for (size_t i = 0; i + n <= sizeof block; i += n) memcpy(block + i, a2, n);
        for (int i = 0; i < 16; i++) if (write(fd, block, sizeof block) != sizeof block) return result("scratch_write", -1);
        if (fsync(fd) < 0) return result("scratch_fsync", -1);
        close(fd);
        struct fscrypt_get_policy_ex_arg arg;
        memset(&arg, 0, sizeof arg);
        arg.policy_size = sizeof arg.policy;
        int t = open("/tmp", O_RDONLY | O_DIRECTORY);
        if (ioctl(t, FS_IOC_GET_ENCRYPTION_POLICY_EX, &arg) < 0) {
            result("policy", -1);
        } else {
            printf("POLICY v%d contents %d names %d key ", arg.policy.version, arg.policy.v2.contents_encryption_mode,
                   arg.policy.v2.filenames_encryption_mode);
            for (int i = 0; i < FSCRYPT_KEY_IDENTIFIER_SIZE; i++) printf("%02x", arg.policy.v2.master_key_identifier[i]);
            printf("\n");
        }
        printf("WRITTEN\n");
        fflush(stdout);
        for (;;) pause();
    }
    if (!strcmp(c, "alloc")) {
        long mb = atol(a2);
        for (long i = 0; i < mb; i++) {
            char *p = malloc(1 << 20);
            if (!p) return result("alloc", -1);
            memset(p, (int)i, 1 << 20);
        }
        printf("ALLOCATED %ld\n", mb);
        return result("alloc", 0);
    }
    if (!strcmp(c, "forkbomb")) {
        int n = 0;
        for (;;) {
            pid_t p = fork();
            if (p == 0) { for (;;) pause(); }
            if (p < 0) break;
            n++;
            if (n > 100000) break;
        }
        printf("FORKED %d\n", n);
        return result("fork", -1);
    }
    if (!strcmp(c, "stubborn")) {
        // Ignores SIGTERM, as do the children it spawns; reports them and waits forever.
        signal(SIGTERM, SIG_IGN);
        for (int i = 0; i < 5; i++) {
            pid_t p = fork();
            if (p == 0) { setsid(); for (;;) pause(); }
            printf("CHILD %d\n", p);
        }
        printf("READY\n");
        for (;;) pause();
    }
    if (!strcmp(c, "sleep")) { sleep((unsigned)atoi(a2)); return result("sleep", 0); }
    if (!strcmp(c, "exit")) return atoi(a2);
    if (!strcmp(c, "kill-self")) { kill(getpid(), atoi(a2)); pause(); return 0; }
    if (!strcmp(c, "init")) {
        // PID 1 (petrel-init) drops its own privileges right after it forks us: wait for that
        // (at most 2 s), then show its status and whether its fds can be listed.
        char line[256], status[4096];
        for (int i = 0; i < 200; i++) {
            status[0] = 0;
            FILE *f = fopen("/proc/1/status", "r");
            while (f && fgets(line, sizeof line, f))
                if (!strncmp(line, "Name:", 5) || !strncmp(line, "Uid:", 4) || !strncmp(line, "Cap", 3) ||
                    !strncmp(line, "Seccomp:", 8) || !strncmp(line, "NoNewPrivs", 10)) strncat(status, line, sizeof status - strlen(status) - 1);
            if (f) fclose(f);
            if (!strstr(status, "Uid:\t0\t")) break;
            usleep(10000);
        }
        fputs(status, stdout);
        DIR *d = opendir("/proc/1/fd");
        printf("RESULT init_fds %s\n", d ? "listed" : errno == EACCES ? "EACCES" : strerror(errno));
        if (d) closedir(d);
        printf("SELF_UID %d\n", getuid());
        return 0;
    }
    if (!strcmp(c, "whoami")) {
        char host[256] = {0};
        gethostname(host, sizeof host);
        struct rlimit nofile, nproc;
        getrlimit(RLIMIT_NOFILE, &nofile); getrlimit(RLIMIT_NPROC, &nproc);
        printf("UID %d GID %d PID %d HOST %s NOFILE %llu NPROC %llu NNP %d\n", getuid(), getgid(), getpid(), host,
               (unsigned long long)nofile.rlim_cur, (unsigned long long)nproc.rlim_cur, prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
        FILE *f = fopen("/proc/self/status", "r");
        char line[256];
        while (f && fgets(line, sizeof line, f))
            if (!strncmp(line, "Cap", 3) || !strncmp(line, "Seccomp:", 8) || !strncmp(line, "NoNewPrivs", 10)) fputs(line, stdout);
        if (f) fclose(f);
        return 0;
    }
    fprintf(stderr, "sandbox-probe: unknown command %s\n", c);
    return 2;
}
