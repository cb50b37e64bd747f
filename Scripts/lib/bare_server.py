"""The benchmark's peer for warm invocations: the same Python handler called by
a plain single-process HTTP/1.1 server (keep-alive, one selector loop), with no
sandbox, no signature check, no logs and no audit. It answers any POST with
the handler's result as JSON, so `petrel load --endpoint` can drive it exactly
as it drives petreld. Usage: bare_server.py HANDLER_DIR PORT (prints READY)."""

import json
import selectors
import socket
import sys

sys.path.insert(0, sys.argv[1])
import app  # noqa: E402

handler = app.handler
sel = selectors.DefaultSelector()
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[2])))
listener.listen(128)
listener.setblocking(False)
sel.register(listener, selectors.EVENT_READ)
buffers = {}


def answer(body):
    try:
        out = json.dumps(handler(json.loads(body) if body else {}, None)).encode()
        status = b"200 OK"
    except Exception as e:  # noqa: BLE001 (an error answer, as a server would give)
        out = json.dumps({"errorMessage": str(e)}).encode()
        status = b"500 Internal Server Error"
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (status, len(out), out)


def serve(conn):
    data = conn.recv(65536)
    if not data:
        sel.unregister(conn)
        conn.close()
        buffers.pop(conn, None)
        return
    buf = buffers.get(conn, b"") + data
    out = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            break
        length = 0
        for line in buf[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(buf) < end + 4 + length:
            break
        out.append(answer(buf[end + 4:end + 4 + length]))
        buf = buf[end + 4 + length:]
    buffers[conn] = buf
    if out:
        conn.sendall(b"".join(out))


print("READY", flush=True)
while True:
    for key, _ in sel.select():
        if key.fileobj is listener:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sel.register(conn, selectors.EVENT_READ)
        else:
            serve(key.fileobj)
