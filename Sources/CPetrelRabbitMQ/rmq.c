#include "petrel_rmq.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

struct petrel_rmq {
    amqp_connection_state_t conn;
    amqp_envelope_t envelope;
    int has_envelope;
};

static void say(char *err, size_t len, const char *what, amqp_rpc_reply_t r) {
    if (!err || !len) return;
    switch (r.reply_type) {
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(err, len, "%s: %s", what, amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = (amqp_connection_close_t *)r.reply.decoded;
            snprintf(err, len, "%s: the broker closed the connection (%u %.*s)", what, m->reply_code, (int)m->reply_text.len,
                     (char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = (amqp_channel_close_t *)r.reply.decoded;
            snprintf(err, len, "%s: the broker closed the channel (%u %.*s)", what, m->reply_code, (int)m->reply_text.len,
                     (char *)m->reply_text.bytes);
        } else {
            snprintf(err, len, "%s: the broker refused (method %08X)", what, r.reply.id);
        }
        break;
    default:
        snprintf(err, len, "%s: no reply", what);
    }
}

petrel_rmq *petrel_rmq_connect(const char *host, int port, const char *vhost, const char *user, const char *password,
                               int timeout_ms, const char *tls_ca, char *err, size_t err_len) {
    petrel_rmq *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->conn = amqp_new_connection();
    amqp_socket_t *socket = tls_ca ? amqp_ssl_socket_new(c->conn) : amqp_tcp_socket_new(c->conn);
    if (!socket) {
        snprintf(err, err_len, "cannot make a socket");
        amqp_destroy_connection(c->conn);
        free(c);
        return NULL;
    }
    if (tls_ca) {
        // The broker's certificate must chain to the CA and name the host we asked for.
        const char *ca = *tls_ca ? tls_ca : "/etc/ssl/certs/ca-certificates.crt";
        amqp_ssl_socket_set_verify_peer(socket, 1);
        amqp_ssl_socket_set_verify_hostname(socket, 1);
        int st = amqp_ssl_socket_set_cacert(socket, ca);
        if (st != AMQP_STATUS_OK) {
            snprintf(err, err_len, "cannot read the CA certificates %s: %s", ca, amqp_error_string2(st));
            amqp_destroy_connection(c->conn);
            free(c);
            return NULL;
        }
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    int status = amqp_socket_open_noblock(socket, host, port, &tv);
    if (status != AMQP_STATUS_OK) {
        snprintf(err, err_len, "cannot reach the broker at %s:%d: %s", host, port, amqp_error_string2(status));
        amqp_destroy_connection(c->conn);
        free(c);
        return NULL;
    }
    amqp_set_handshake_timeout(c->conn, &tv);
    amqp_set_rpc_timeout(c->conn, &tv);
    amqp_rpc_reply_t r = amqp_login(c->conn, vhost, 0, 131072, 60, AMQP_SASL_METHOD_PLAIN, user, password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        say(err, err_len, "cannot log in", r);
        amqp_destroy_connection(c->conn);
        free(c);
        return NULL;
    }
    amqp_channel_open(c->conn, 1);
    r = amqp_get_rpc_reply(c->conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        say(err, err_len, "cannot open a channel", r);
        petrel_rmq_close(c);
        return NULL;
    }
    return c;
}

int petrel_rmq_consume(petrel_rmq *c, const char *queue, int prefetch, char *err, size_t err_len) {
    amqp_basic_qos(c->conn, 1, 0, (uint16_t)prefetch, 0);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c->conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        say(err, err_len, "cannot set the prefetch", r);
        return -1;
    }
    amqp_basic_consume(c->conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    r = amqp_get_rpc_reply(c->conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        say(err, err_len, "cannot consume the queue", r);
        return -1;
    }
    return 0;
}

// A growing JSON text.
typedef struct {
    char *s;
    size_t len, cap;
} buf;

static void put(buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 256);
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) return;
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}
static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static void put_string(buf *b, const void *bytes, size_t n) {
    const unsigned char *p = bytes;
    puts_(b, "\"");
    for (size_t i = 0; i < n; i++) {
        char tmp[8];
        unsigned char ch = p[i];
        if (ch == '"' || ch == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)ch;
            put(b, tmp, 2);
        } else if (ch < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", ch);
            puts_(b, tmp);
        } else {
            put(b, (const char *)&ch, 1);
        }
    }
    puts_(b, "\"");
}

static void put_field(buf *b, const char *name, int present, amqp_bytes_t v) {
    puts_(b, ",\"");
    puts_(b, name);
    puts_(b, "\":");
    if (present)
        put_string(b, v.bytes, v.len);
    else
        puts_(b, "null");
}

static void put_value(buf *b, const amqp_field_value_t *v);

static void put_table(buf *b, const amqp_table_t *t) {
    puts_(b, "{");
    for (int i = 0; i < t->num_entries; i++) {
        if (i) puts_(b, ",");
        put_string(b, t->entries[i].key.bytes, t->entries[i].key.len);
        puts_(b, ":");
        put_value(b, &t->entries[i].value);
    }
    puts_(b, "}");
}

static void put_value(buf *b, const amqp_field_value_t *v) {
    char n[64];
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN: puts_(b, v->value.boolean ? "true" : "false"); return;
    case AMQP_FIELD_KIND_I8: snprintf(n, sizeof n, "%d", v->value.i8); break;
    case AMQP_FIELD_KIND_U8: snprintf(n, sizeof n, "%u", v->value.u8); break;
    case AMQP_FIELD_KIND_I16: snprintf(n, sizeof n, "%d", v->value.i16); break;
    case AMQP_FIELD_KIND_U16: snprintf(n, sizeof n, "%u", v->value.u16); break;
    case AMQP_FIELD_KIND_I32: snprintf(n, sizeof n, "%d", v->value.i32); break;
    case AMQP_FIELD_KIND_U32: snprintf(n, sizeof n, "%u", v->value.u32); break;
    case AMQP_FIELD_KIND_I64: snprintf(n, sizeof n, "%lld", (long long)v->value.i64); break;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP: snprintf(n, sizeof n, "%llu", (unsigned long long)v->value.u64); break;
    case AMQP_FIELD_KIND_F32: snprintf(n, sizeof n, "%g", v->value.f32); break;
    case AMQP_FIELD_KIND_F64: snprintf(n, sizeof n, "%g", v->value.f64); break;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES: {
        // As Lambda's Amazon MQ events show string headers: {"bytes": [...]}.
        puts_(b, "{\"bytes\":[");
        const unsigned char *p = v->value.bytes.bytes;
        for (size_t i = 0; i < v->value.bytes.len; i++) {
            snprintf(n, sizeof n, i ? ",%d" : "%d", (signed char)p[i]);
            puts_(b, n);
        }
        puts_(b, "]}");
        return;
    }
    case AMQP_FIELD_KIND_TABLE: put_table(b, &v->value.table); return;
    case AMQP_FIELD_KIND_ARRAY:
        puts_(b, "[");
        for (int i = 0; i < v->value.array.num_entries; i++) {
            if (i) puts_(b, ",");
            put_value(b, &v->value.array.entries[i]);
        }
        puts_(b, "]");
        return;
    default: puts_(b, "null"); return;
    }
    puts_(b, n);
}

static char *properties_json(const amqp_basic_properties_t *p, size_t body_len) {
    buf b = {0};
    amqp_flags_t f = p->_flags;
    puts_(&b, "{\"contentType\":");
    if (f & AMQP_BASIC_CONTENT_TYPE_FLAG)
        put_string(&b, p->content_type.bytes, p->content_type.len);
    else
        puts_(&b, "null");
    put_field(&b, "contentEncoding", f & AMQP_BASIC_CONTENT_ENCODING_FLAG, p->content_encoding);
    puts_(&b, ",\"headers\":");
    if (f & AMQP_BASIC_HEADERS_FLAG)
        put_table(&b, &p->headers);
    else
        puts_(&b, "null");
    char n[64];
    if (f & AMQP_BASIC_DELIVERY_MODE_FLAG) {
        snprintf(n, sizeof n, ",\"deliveryMode\":%u", p->delivery_mode);
        puts_(&b, n);
    } else {
        puts_(&b, ",\"deliveryMode\":null");
    }
    if (f & AMQP_BASIC_PRIORITY_FLAG) {
        snprintf(n, sizeof n, ",\"priority\":%u", p->priority);
        puts_(&b, n);
    } else {
        puts_(&b, ",\"priority\":null");
    }
    put_field(&b, "correlationId", f & AMQP_BASIC_CORRELATION_ID_FLAG, p->correlation_id);
    put_field(&b, "replyTo", f & AMQP_BASIC_REPLY_TO_FLAG, p->reply_to);
    put_field(&b, "expiration", f & AMQP_BASIC_EXPIRATION_FLAG, p->expiration);
    put_field(&b, "messageId", f & AMQP_BASIC_MESSAGE_ID_FLAG, p->message_id);
    if (f & AMQP_BASIC_TIMESTAMP_FLAG) {
        // Lambda writes the timestamp as Java's default date format, in UTC.
        time_t t = (time_t)p->timestamp;
        struct tm tm;
        gmtime_r(&t, &tm);
        char when[64];
        strftime(when, sizeof when, "%b %e, %Y, %l:%M:%S %p", &tm);
        puts_(&b, ",\"timestamp\":");
        put_string(&b, when, strlen(when));
    } else {
        puts_(&b, ",\"timestamp\":null");
    }
    put_field(&b, "type", f & AMQP_BASIC_TYPE_FLAG, p->type);
    put_field(&b, "userId", f & AMQP_BASIC_USER_ID_FLAG, p->user_id);
    put_field(&b, "appId", f & AMQP_BASIC_APP_ID_FLAG, p->app_id);
    put_field(&b, "clusterId", f & AMQP_BASIC_CLUSTER_ID_FLAG, p->cluster_id);
    snprintf(n, sizeof n, ",\"bodySize\":%zu}", body_len);
    puts_(&b, n);
    return b.s;
}

int petrel_rmq_next(petrel_rmq *c, int timeout_ms, petrel_rmq_delivery *out, char *err, size_t err_len) {
    if (c->has_envelope) {
        amqp_destroy_envelope(&c->envelope);
        c->has_envelope = 0;
    }
    amqp_maybe_release_buffers(c->conn);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    amqp_rpc_reply_t r = amqp_consume_message(c->conn, &c->envelope, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) return 0;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        // A frame other than a delivery (a return, a close): read it, and fail on a close.
        amqp_frame_t frame;
        if (amqp_simple_wait_frame_noblock(c->conn, &frame, &tv) != AMQP_STATUS_OK) return 0;
        if (frame.frame_type == AMQP_FRAME_METHOD &&
            (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD || frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD)) {
            snprintf(err, err_len, "the broker closed the consumer");
            return -1;
        }
        return 0;
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        say(err, err_len, "the connection to the broker failed", r);
        return -1;
    }
    c->has_envelope = 1;
    out->delivery_tag = c->envelope.delivery_tag;
    out->redelivered = c->envelope.redelivered;
    out->body = c->envelope.message.body.bytes;
    out->body_len = c->envelope.message.body.len;
    out->properties_json = properties_json(&c->envelope.message.properties, c->envelope.message.body.len);
    return 1;
}

int petrel_rmq_ack(petrel_rmq *c, uint64_t tag) { return amqp_basic_ack(c->conn, 1, tag, 0) == 0 ? 0 : -1; }

int petrel_rmq_reject(petrel_rmq *c, uint64_t tag, int requeue) {
    return amqp_basic_reject(c->conn, 1, tag, requeue ? 1 : 0) == 0 ? 0 : -1;
}

void petrel_rmq_close(petrel_rmq *c) {
    if (!c) return;
    if (c->has_envelope) amqp_destroy_envelope(&c->envelope);
    amqp_channel_close(c->conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c->conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c->conn);
    free(c);
}

void petrel_rmq_free(void *p) { free(p); }
