// What the daemon and a sandbox's init say to each other. Shared by the C layer
// under PetrelSandbox (which builds a sandbox, then execs petrel-init in it)
// and by petrel-init itself, a small program of its own so that a sandbox's
// PID 1 is not a copy of the daemon's address space.
//
// Every function here is safe between clone() and exec() of a multi-threaded
// process: raw system calls and plain loops, no malloc, no stdio, no locks.
#ifndef CPETREL_INIT_PROTOCOL_H
#define CPETREL_INIT_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Record kinds written on the status pipe by the sandbox's init.
enum petrel_record_kind {
    PETREL_RECORD_SETUP_ERROR = 1, // setup failed before exec: message + errno
    PETREL_RECORD_EXEC_ERROR = 2,  // execve of the command failed: message + errno
    PETREL_RECORD_STARTED = 3,     // the command was forked; `value` is its pid inside the sandbox
    PETREL_RECORD_EXITED = 4,      // the command ended; `value` is its wait status
    PETREL_RECORD_READY = 5,       // set up and waiting for its command
    PETREL_RECORD_STEM_READY = 6   // a pre-started command said it is loaded and waits for its go
};

struct petrel_record {
    int32_t kind;
    int32_t err;
    int32_t value;
    int32_t reserved;
    char message[240];
};

// What petrel_start sends: one SOCK_SEQPACKET message with this header, the
// strings (cwd, argv..., envp...) NUL-separated, and the fds as SCM_RIGHTS
// (stdin, stdout, stderr, then the /var/task and /opt trees when present).
//
// With PETREL_START_STEM the command is *pre-started*: it is forked at once with
// the other end of a socket at PETREL_STEM_FD, writes one byte there when it has
// loaded (init reports STEM_READY), and waits. Init keeps its privileges until
// petrel_go's message (magic PETREL_GO_MAGIC, argc 0, no stdio: cwd, envp and the
// trees) arrives; it then moves the trees into place, drops its privileges and
// writes the strings (cwd\0envp...\0) to the command, then closes the socket.
struct petrel_start_header {
    uint32_t magic;
    uint32_t argc;
    uint32_t envc;
    uint32_t has_code;
    uint32_t has_opt;
    uint32_t flags;
};
#define PETREL_START_MAGIC 0x70657472u
#define PETREL_GO_MAGIC 0x70657467u
#define PETREL_START_STEM 1u
// Where a pre-started command finds its end of the stem socket (its number is in
// $PETREL_STEM_FD too). High, so that the command's own descriptors are numbered
// as in a fresh start; policies with fewer open files get no pre-started commands.
#define PETREL_STEM_FD 63
#define PETREL_START_MAX 65536
#define PETREL_START_MAX_STRINGS 2048

// The fds petrel-init finds open when it starts, and nothing else.
#define PETREL_INIT_STATUS_FD 3   // write end of the status pipe
#define PETREL_INIT_CONTROL_FD 4  // the sandbox's end of the control socket
#define PETREL_INIT_LIFELINE_FD 5 // read end of the daemon's lifeline (EOF: the daemon is gone)
#define PETREL_INIT_SECCOMP_FD 6  // a memfd holding the struct sock_filter[] program
// argv: petrel-init UID GID RLIMIT_NOFILE RLIMIT_NPROC SECCOMP_INSTRUCTIONS
#define PETREL_INIT_ARGC 6

size_t petrel_s_len(const char *s);
// Appends src to dst (capacity cap); always terminates.
void petrel_s_cat(char *dst, size_t cap, const char *src);
// Writes one record ("a b" as its message) to fd.
void petrel_record_write(int fd, int kind, int err, int value, const char *a, const char *b);
// Reports a setup error (errno, "what path") on fd and exits with 126.
_Noreturn void petrel_record_fail(int fd, const char *what, const char *path);
// Writes v in decimal into buf (capacity cap); always terminates.
void petrel_u64(char *buf, size_t cap, uint64_t v);
// Closes every fd from 3 up except those in keep (at most PETREL_CLOSE_KEEP_MAX; any
// beyond that are closed too).
#define PETREL_CLOSE_KEEP_MAX 32
void petrel_close_all_but(const int *keep, int n);

#ifdef __cplusplus
}
#endif
#endif
