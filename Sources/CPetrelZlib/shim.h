// zlib, from Debian's zlib1g-dev: deflate for the log store's chunks, crc32 for the log journal.
#include <zlib.h>
