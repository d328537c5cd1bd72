"""A TLS client that holds one keep-alive connection to airlockd while the test rotates the
certificate. Commands on stdin, one per line; one answer line each on stdout:
  held   -> request on the held connection: "<status> <sha256 of the peer certificate>"
  fresh  -> request on a new connection:     "<status> <sha256 of the peer certificate>"
Usage: tls_keepalive.py HOST PORT PATH (no certificate verification: the test compares the
certificates' digests itself)."""
import hashlib
import http.client
import ssl
import sys

host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def request(conn):
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    der = conn.sock.getpeercert(binary_form=True)
    return f"{r.status} {hashlib.sha256(der).hexdigest()}"


held = http.client.HTTPSConnection(host, port, context=ctx, timeout=30)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "held":
        out = request(held)
    elif cmd == "fresh":
        c = http.client.HTTPSConnection(host, port, context=ctx, timeout=30)
        out = request(c)
        c.close()
    else:
        out = f"unknown command {cmd!r}"
    print(out, flush=True)
