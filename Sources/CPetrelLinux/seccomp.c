// Compiles an isolation policy's seccomp rules to a BPF program once, so every
// sandbox of that policy installs the same bytes without libseccomp in the child.
#define _GNU_SOURCE
#include "CPetrelLinux.h"
#include "internal.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define NS_FLAGS (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | \
                  CLONE_NEWNET | CLONE_NEWCGROUP | 0x00000080 /* CLONE_NEWTIME */)

static int rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n,
                const struct scmp_arg_cmp *args, char *errbuf, size_t errlen) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) {
        char m[160];
        snprintf(m, sizeof m, "seccomp: unknown system call \"%s\"", name);
        return petrel_errmsg(errbuf, errlen, EINVAL, m);
    }
    int r = seccomp_rule_add_array(ctx, action, nr, n, args);
    if (r < 0) {
        char m[160];
        snprintf(m, sizeof m, "seccomp: cannot add a rule for %s: %s", name, strerror(-r));
        return petrel_errmsg(errbuf, errlen, -r, m);
    }
    return 0;
}

int petrel_seccomp_compile(const char *const *deny, size_t n_deny, int deny_errno,
                           int allow_netlink_route, void **out, size_t *out_len,
                           char *errbuf, size_t errlen) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) return petrel_errmsg(errbuf, errlen, ENOMEM, "seccomp_init failed");
    seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0); // the child sets no_new_privs itself
    uint32_t eperm = SCMP_ACT_ERRNO((uint32_t)deny_errno);
    int rc = -1;

    // The policy's list.
    for (size_t i = 0; i < n_deny; i++)
        if (rule(ctx, eperm, deny[i], 0, NULL, errbuf, errlen) < 0) goto out;

    // Always on, whatever the policy says.
    static const char *const always[] = {
        "ptrace", "process_vm_readv", "process_vm_writev",
        "io_uring_setup", "io_uring_enter", "io_uring_register",
        "unshare", "setns", "mount", "umount2", "pivot_root", "bpf",
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
        "open_by_handle_at",
    };
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++) {
        int dup = 0;
        for (size_t j = 0; j < n_deny; j++) if (strcmp(deny[j], always[i]) == 0) dup = 1;
        if (!dup && rule(ctx, eperm, always[i], 0, NULL, errbuf, errlen) < 0) goto out;
    }
    // New namespaces through clone's flags; clone3 hides its flags behind a
    // pointer, so it reports ENOSYS and the C library falls back to clone.
    for (unsigned bit = 0; bit < 32; bit++) {
        uint64_t f = 1ULL << bit;
        if (!(NS_FLAGS & f)) continue;
        struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_MASKED_EQ, f, f);
        if (rule(ctx, eperm, "clone", 1, &a, errbuf, errlen) < 0) goto out;
    }
    if (rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL, errbuf, errlen) < 0) goto out;
    // Typing into the controlling terminal of someone else.
    {
        struct scmp_arg_cmp a = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffULL, TIOCSTI);
        if (rule(ctx, eperm, "ioctl", 1, &a, errbuf, errlen) < 0) goto out;
    }
    // Sockets: AF_UNIX, AF_INET and AF_INET6 (stream and datagram only), and,
    // when allowed, AF_NETLINK with NETLINK_ROUTE (reads; writes need
    // CAP_NET_ADMIN, which nobody in a sandbox has). Everything else:
    // EAFNOSUPPORT, as on a kernel without that family.
    for (int fam = 0; fam < AF_MAX; fam++) {
        if (fam == AF_UNIX || fam == AF_INET || fam == AF_INET6) continue;
        if (fam == AF_NETLINK && allow_netlink_route) {
            struct scmp_arg_cmp a[2] = { SCMP_A0(SCMP_CMP_EQ, AF_NETLINK), SCMP_A2(SCMP_CMP_NE, 0) };
            if (rule(ctx, eperm, "socket", 2, a, errbuf, errlen) < 0) goto out;
            continue;
        }
        struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_EQ, (uint64_t)fam);
        if (rule(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), "socket", 1, &a, errbuf, errlen) < 0) goto out;
        if (rule(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), "socketpair", 1, &a, errbuf, errlen) < 0) goto out;
    }
    {
        struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_GE, AF_MAX);
        if (rule(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), "socket", 1, &a, errbuf, errlen) < 0) goto out;
    }
    static const int inet[] = { AF_INET, AF_INET6 };
    static const int bad_types[] = { SOCK_RAW, SOCK_RDM, SOCK_SEQPACKET, SOCK_DCCP, SOCK_PACKET };
    for (size_t i = 0; i < 2; i++)
        for (size_t j = 0; j < sizeof bad_types / sizeof bad_types[0]; j++) {
            struct scmp_arg_cmp a[2] = { SCMP_A0(SCMP_CMP_EQ, (uint64_t)inet[i]),
                                         SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, (uint64_t)bad_types[j]) };
            if (rule(ctx, eperm, "socket", 2, a, errbuf, errlen) < 0) goto out;
        }

    // Export the program into memory.
    {
        int mfd = memfd_create("petrel-seccomp", MFD_CLOEXEC);
        if (mfd < 0) { petrel_err(errbuf, errlen, "memfd_create", NULL); goto out; }
        int r = seccomp_export_bpf(ctx, mfd);
        if (r < 0) { close(mfd); petrel_errmsg(errbuf, errlen, -r, "seccomp_export_bpf failed"); goto out; }
        off_t size = lseek(mfd, 0, SEEK_END);
        void *buf = malloc((size_t)size);
        if (!buf || pread(mfd, buf, (size_t)size, 0) != size) {
            free(buf); close(mfd);
            petrel_errmsg(errbuf, errlen, EIO, "reading the exported seccomp program failed");
            goto out;
        }
        close(mfd);
        *out = buf;
        *out_len = (size_t)size / sizeof(struct sock_filter);
        rc = 0;
    }
out:
    seccomp_release(ctx);
    return rc;
}
