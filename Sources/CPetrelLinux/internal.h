// Shared helpers of the C target (not exported to Swift).
#ifndef CPETREL_INTERNAL_H
#define CPETREL_INTERNAL_H
#include <stddef.h>

// Writes "call path: strerror(errno)" into buf, keeps errno, returns -1.
int petrel_err(char *buf, size_t len, const char *call, const char *path);
// Writes a message without errno, sets errno to err, returns -1.
int petrel_errmsg(char *buf, size_t len, int err, const char *msg);

#endif
