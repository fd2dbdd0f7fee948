"""Test servers for the remote-storage tests, on 127.0.0.1 only.

    stores.py moto [--objects PREFIX:N] an S3 server (moto) holding the bucket `bkt`,
                                        with N one-byte objects PREFIX/k000000...
                                        made in the server's own memory (not
                                        uploaded one by one)
    stores.py proxy UPSTREAM [--port P] [--fail-every N] [--log]
                                        a proxy in front of it that answers every
                                        Nth request with a throttling or server
                                        error instead of passing it on; with
                                        --log, prints each request it passes
                                        ("METHOD PATH?QUERY") after its port
    stores.py gcs                       a GCS server (gcp-storage-emulator, in memory)
                                        holding the bucket `bkt`
    stores.py webdav DIR [--user U --password P]
                                        a WebDAV server (wsgidav) serving DIR, which
                                        keeps dead properties (an mtime) in memory;
                                        basic authentication when a user is given
    stores.py azure-container PORT NAME makes a container on the Azurite server
                                        at PORT (a request signed with the
                                        emulator's published key)

The servers bind their own port (0 unless --port is given, so no other
process can take it between a pick and a bind), print it on a line of its
own, and serve until their standard input closes or they are killed.
"""

import argparse
import os
import base64
import email.utils
import hashlib
import hmac
import http.client
import sys
import threading
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve_moto(objects=None):
    import logging

    from moto.s3.responses import S3Response
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    # S3 checks a conditional write's condition and makes the write in one
    # step; moto checks, then writes, so two writers of one new key at
    # once could both win. One lock makes each one step, as on S3.
    one_at_a_time = threading.Lock()

    def atomically(handler):
        def run(self, *args, **kwargs):
            with one_at_a_time:
                return handler(self, *args, **kwargs)

        return run

    S3Response.put_object = atomically(S3Response.put_object)
    S3Response._key_response_post = atomically(S3Response._key_response_post)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/bkt", method="PUT")
    with urllib.request.urlopen(request) as response:
        assert response.status == 200, response.status
    if objects:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        prefix, count = objects.rsplit(":", 1)
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
        for i in range(int(count)):
            backend.put_object("bkt", f"{prefix}/k{i:06d}", b"x")
    return port


def serve_gcs():
    import logging

    from gcp_storage_emulator.handlers import objects
    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    # The emulator fails on an upload with an empty body (it reads it as
    # no body at all), answers one without a Content-Type with a null
    # contentType, and ignores `ifGenerationMatch=0`; real GCS takes the
    # first (a folder marker `name/`), gives the second its default type,
    # and refuses the third (412) where the object exists, when a resumable
    # upload starts and again when it completes.
    from gcp_storage_emulator.storage import Storage

    media_upload = objects._media_upload
    start_resumable = objects._create_resumable_upload
    finalize_resumable = objects._finalize_resumable_object
    content_type = objects._content_type_from_request
    register_resumable = Storage.create_resumable_upload
    one_at_a_time = threading.Lock()
    starting = threading.local()
    create_only = set()

    def exists(storage, bucket, name):
        try:
            storage.get_file_obj(bucket, name)
            return True
        except Exception:
            return False

    def empty_or_not(request, response, storage):
        if request.data is None:
            request._data = b""
        return media_upload(request, response, storage)

    def typed(request, default=None):
        return content_type(request, default) or "application/octet-stream"

    def start_if_new(request, response, storage):
        new_only = request.query.get("ifGenerationMatch") == ["0"]
        name = request.query.get("name", [None])[0] or (request.data or {}).get("name")
        if new_only and "upload_id" not in request.query:
            if exists(storage, request.params["bucket_name"], name):
                response.status = HTTPStatus.PRECONDITION_FAILED
                return None
        starting.new_only = new_only
        try:
            return start_resumable(request, response, storage)
        finally:
            starting.new_only = False

    def register(self, bucket_name, file_name, file_obj):
        upload_id = register_resumable(self, bucket_name, file_name, file_obj)
        if getattr(starting, "new_only", False):
            create_only.add(upload_id)
        return upload_id

    def finalize_if_new(response, storage, obj, data, upload_id):
        with one_at_a_time:
            if upload_id in create_only and exists(storage, obj["bucket"], obj["name"]):
                response.status = HTTPStatus.PRECONDITION_FAILED
                return None
            return finalize_resumable(response, storage, obj, data, upload_id)

    objects._media_upload = empty_or_not
    objects._create_resumable_upload = start_if_new
    objects._finalize_resumable_object = finalize_if_new
    Storage.create_resumable_upload = register
    objects._content_type_from_request = typed
    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket="bkt")
    server.start()
    return server._api._httpd.server_address[1]


def serve_webdav(root, user, password):
    import logging

    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp

    logging.getLogger("wsgidav").setLevel(logging.ERROR)
    users = {user: {"password": password}} if user else True
    app = WsgiDAVApp(
        {
            "provider_mapping": {"/": root},
            "simple_dc": {"user_mapping": {"*": users}},
            "http_authenticator": {
                "accept_basic": True,
                "accept_digest": False,
                "default_to_digest": False,
            },
            "property_manager": True,
            "lock_storage": True,
            "verbose": 0,
            "logging": {"enable": False},
        }
    )
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=16)
    server.prepare()
    threading.Thread(target=server.serve, daemon=True).start()
    return server.bind_addr[1]


# What a store says when it is asked too often, or fails for a moment.
FAULTS = [
    (503, "SlowDown", "Please reduce your request rate."),
    (500, "InternalError", "We encountered an internal error. Please try again."),
    (429, "TooManyRequests", "Too many requests."),
]


def serve_proxy(upstream, port, fail_every, log=False):
    counter = {"requests": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def handle_any(self):
            body = self.body()
            if log:
                with lock:
                    print(f"{self.command} {self.path}", flush=True)
            with lock:
                counter["requests"] += 1
                n = counter["requests"]
            if fail_every and n % fail_every == 0:
                status, code, message = FAULTS[(n // fail_every) % len(FAULTS)]
                reply = (
                    f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    f"<Message>{message}</Message></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(reply)))
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply)
                return
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("transfer-encoding", "connection", "content-length")
            }
            headers["Content-Length"] = str(len(body))
            connection = http.client.HTTPConnection("127.0.0.1", upstream, timeout=60)
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for k, v in response.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                length = response.getheader("Content-Length")
                if self.command == "HEAD" and length is not None:
                    self.send_header("Content-Length", length)
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                connection.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


AZURE_ACCOUNT = "devstoreaccount1"
AZURE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azure_container(port, name):
    """Create Container, signed with Shared Key (path-style, as Azurite is
    addressed: the account is the first segment of the path)."""
    date = email.utils.formatdate(usegmt=True)
    version = "2021-08-06"
    to_sign = (
        "PUT\n" + "\n" * 11
        + f"x-ms-date:{date}\nx-ms-version:{version}\n"
        + f"/{AZURE_ACCOUNT}/{AZURE_ACCOUNT}/{name}\nrestype:container"
    )
    key = base64.b64decode(AZURE_KEY)
    signature = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest())
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(
        "PUT",
        f"/{AZURE_ACCOUNT}/{name}?restype=container",
        headers={
            "x-ms-date": date,
            "x-ms-version": version,
            "Authorization": f"SharedKey {AZURE_ACCOUNT}:{signature.decode()}",
            "Content-Length": "0",
        },
    )
    response = connection.getresponse()
    body = response.read()
    if response.status != 201:
        sys.exit(f"create container {name}: {response.status} {body[:300]!r}")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    moto = sub.add_parser("moto")
    moto.add_argument("--objects")
    sub.add_parser("gcs")
    proxy = sub.add_parser("proxy")
    proxy.add_argument("upstream", type=int)
    proxy.add_argument("--port", type=int, default=0)
    proxy.add_argument("--fail-every", type=int, default=0)
    proxy.add_argument("--log", action="store_true")
    webdav = sub.add_parser("webdav")
    webdav.add_argument("root")
    webdav.add_argument("--user")
    webdav.add_argument("--password")
    container = sub.add_parser("azure-container")
    container.add_argument("port", type=int)
    container.add_argument("name")
    args = parser.parse_args()
    if args.what == "azure-container":
        azure_container(args.port, args.name)
        return
    if args.what == "moto":
        port = serve_moto(args.objects)
    elif args.what == "gcs":
        port = serve_gcs()
    elif args.what == "webdav":
        port = serve_webdav(args.root, args.user, args.password)
    else:
        port = serve_proxy(args.upstream, args.port, args.fail_every, args.log)
    print(port, flush=True)
    sys.stdin.read()
    # Server threads that are not daemons (the GCS emulator's) end with us.
    os._exit(0)


if __name__ == "__main__":
    main()
