// A small blocking AMQP 0-9-1 consumer over Debian's rabbitmq-c (librabbitmq): what the
// RabbitMQ event source needs (connect, consume with a prefetch, take the next delivery,
// ack, reject), with a delivery's properties written as JSON in Lambda's Amazon MQ shape.
// One connection is used by one thread at a time.
#ifndef PETREL_RMQ_H
#define PETREL_RMQ_H

#include <stddef.h>
#include <stdint.h>

typedef struct petrel_rmq petrel_rmq;

typedef struct {
    uint64_t delivery_tag;
    int redelivered;
    // The body (owned by the connection until the next call).
    const void *body;
    size_t body_len;
    // Lambda's `basicProperties` object as JSON (malloc'd; free with petrel_rmq_free).
    char *properties_json;
} petrel_rmq_delivery;

// Connects and logs in; NULL with a sentence in `err` when it cannot. `tls_ca`: NULL for
// plain AMQP; otherwise AMQP over TLS, the broker's certificate checked against the CA
// certificates in that PEM file ("" for the system's) and the host name.
petrel_rmq *petrel_rmq_connect(const char *host, int port, const char *vhost, const char *user, const char *password,
                               int timeout_ms, const char *tls_ca, char *err, size_t err_len);
// Starts consuming `queue` (acknowledgements on, at most `prefetch` unacknowledged). 0, or -1 with `err`.
int petrel_rmq_consume(petrel_rmq *c, const char *queue, int prefetch, char *err, size_t err_len);
// The next delivery within `timeout_ms`: 1 (filled in), 0 (none came), -1 (the connection failed; `err` says why).
int petrel_rmq_next(petrel_rmq *c, int timeout_ms, petrel_rmq_delivery *out, char *err, size_t err_len);
// Acknowledges, or rejects (requeued: the queue's delivery limit counts it, then its
// dead-letter exchange takes it; not requeued: straight to the dead-letter exchange). 0 or -1.
int petrel_rmq_ack(petrel_rmq *c, uint64_t tag);
int petrel_rmq_reject(petrel_rmq *c, uint64_t tag, int requeue);
// Closes and frees.
void petrel_rmq_close(petrel_rmq *c);
void petrel_rmq_free(void *p);

#endif
