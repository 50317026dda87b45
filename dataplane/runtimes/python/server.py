"""The Python runtime (standard library only).

A generic instance the pool manager specializes once with a function's code
(Fission's POST /v2/specialize contract); then every other request invokes it.

Handlers: main(request) returning str, bytes, a dict or list (sent as JSON),
an iterable of chunks (streamed), or (body, status[, headers]); Fission's
main() with no arguments works too. A raising handler gives a 500 and the
instance goes on serving.
"""

import hmac
import importlib
import inspect
import json
import os
import sys
import threading
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REQUEST_ID = "x-spore-request-id"
_current = threading.local()
_handler = None
_lock = threading.Lock()


class _TaggedStream:
    """Prefixes each line written while serving a request with its id: \\x1e<id>\\x1f<line>."""

    def __init__(self, stream):
        self._stream = stream
        self._pending = threading.local()

    def write(self, text):
        rid = getattr(_current, "request_id", None)
        if not rid:
            return self._stream.write(text)
        buf = getattr(self._pending, "buf", "") + text
        *lines, rest = buf.split("\n")
        self._pending.buf = rest
        for line in lines:
            self._stream.write(f"\x1e{rid}\x1f{line}\n")
        return len(text)

    def flush_pending(self):
        rest = getattr(self._pending, "buf", "")
        if rest:
            self._pending.buf = ""
            self.write(rest + "\n")
        self._stream.flush()

    def flush(self):
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


sys.stdout = _TaggedStream(sys.stdout)
sys.stderr = _TaggedStream(sys.stderr)


class Request:
    """What main(request) receives."""

    def __init__(self, method, path, headers, body):
        parsed = urllib.parse.urlsplit(path)
        self.method = method
        self.url = path
        self.path = parsed.path
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.args = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        self.query = self.args
        self.params = {k[len("x-spore-param-"):]: v for k, v in self.headers.items() if k.startswith("x-spore-param-")}
        self.body = body
        self.data = body

    def get_data(self, as_text=False):
        return self.body.decode("utf-8") if as_text else self.body

    @property
    def text(self):
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body or b"null")

    get_json = json


def resolve_entrypoint(function_name):
    """module.function split on the last dot; empty -> main.main; one word -> main.<word>."""
    if not function_name:
        return "main", "main"
    if "." not in function_name:
        return "main", function_name
    module, _, func = function_name.rpartition(".")
    return module, func


def load(filepath, function_name):
    folder = filepath if os.path.isdir(filepath) else os.path.dirname(filepath)
    if os.path.isfile(filepath) and not function_name:
        function_name = os.path.splitext(os.path.basename(filepath))[0] + ".main"
    module_name, func_name = resolve_entrypoint(function_name)
    # first on the path: the package's own copies (the dependencies its build installed) win over the host's
    sys.path.insert(0, folder)
    module = importlib.import_module(module_name)
    fn = getattr(module, func_name, None)
    if fn is None:
        raise RuntimeError(f"module {module_name} has no function {func_name!r}")
    if not callable(fn):
        raise RuntimeError(f"{module_name}.{func_name} is not callable")
    try:
        takes_request = len(inspect.signature(fn).parameters) > 0
    except (TypeError, ValueError):
        takes_request = True
    return fn, takes_request


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY every keep-alive response waits ~40 ms on Nagle against the client's delayed ACK.
    disable_nagle_algorithm = True
    # A buffered wfile: status, headers and body leave in one send, when handle_one_request flushes.
    wbufsize = -1

    def handle_expect_100(self):
        ok = super().handle_expect_100()
        self.wfile.flush()  # the client waits for the 100 before it sends the body
        return ok

    def log_message(self, *args):  # access logs are the router's job
        pass

    def _send(self, status, body=b"", headers=None, content_type=None):
        if isinstance(body, str):
            body = body.encode("utf-8")
            content_type = content_type or "text/plain; charset=utf-8"
        self.send_response(status)
        sent = {k.lower() for k in (headers or {})}
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if "content-type" not in sent and content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection and "connection" not in sent:
            # said, so a keep-alive client does not send its next request on a socket about to close
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, obj):
        self._send(status, json.dumps(obj).encode("utf-8"), content_type="application/json")

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _stream(self, status, chunks, headers):
        self._streaming = True
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()  # the status and headers go out before the first chunk is made
        for chunk in chunks:
            data = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
            if data:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _respond(self, result):
        status, headers, body = 200, {}, result
        if isinstance(result, tuple):
            body = result[0]
            status = result[1] if len(result) > 1 else 200
            headers = result[2] if len(result) > 2 else {}
        if body is None:
            return self._send(status, b"", headers)
        if isinstance(body, (str, bytes, bytearray)):
            return self._send(status, bytes(body) if not isinstance(body, str) else body, headers, "application/octet-stream" if not isinstance(body, str) else None)
        if isinstance(body, (dict, list, int, float, bool)):
            return self._send(status, json.dumps(body).encode("utf-8"), headers, "application/json")
        if hasattr(body, "__iter__"):
            return self._stream(status, body, headers)
        raise TypeError(f"main returned {type(body).__name__}; return str, bytes, a dict, or (body, status, headers)")

    def _admitted(self):
        # only the pool manager and the router hold the credential: no other process or function may specialize or call us
        given = self.headers.get(TOKEN)
        del self.headers[TOKEN]  # the function never sees it
        if not _token or given is None or not hmac.compare_digest(given.encode("utf-8"), _token):
            self.close_connection = True  # a body we did not read must not be taken for the next request
        if not _token:
            self._json(503, {"error": "the instance has not received its credential yet"})
            return False
        if given is None or not hmac.compare_digest(given.encode("utf-8"), _token):
            self._json(403, {"error": "this instance answers only its pool manager and router"})
            return False
        return True

    def _invoke(self):
        global _handler
        if not self._admitted():
            return
        if self.path == "/healthz" and self.command == "GET" and _handler is None:  # once specialized, the function's path
            return self._json(200, {"status": "ok", "specialized": _handler is not None, "instance": os.environ.get("SPORE_INSTANCE")})
        if self.path == "/v2/specialize" and self.command == "POST":
            return self._specialize()
        if _handler is None:
            return self._json(503, {"error": "generic instance: not specialized yet"})
        body = self._body()
        self._streaming = False
        _current.request_id = self.headers.get(REQUEST_ID)
        try:
            fn, takes_request = _handler
            result = fn(Request(self.command, self.path, self.headers, body)) if takes_request else fn()
            self._respond(result)
        except Exception as err:  # the runtime never dies from user code
            traceback.print_exc()
            if getattr(self, "_streaming", False):
                self.close_connection = True  # the status is sent: end the response early
            else:
                self._json(500, {"error": "the function failed", "message": str(err)})
        finally:
            sys.stdout.flush_pending()
            sys.stderr.flush_pending()
            _current.request_id = None

    def _specialize(self):
        global _handler
        try:
            req = json.loads(self._body() or b"null")
            filepath, function_name = req["filepath"], req.get("functionName") or ""
        except Exception:
            return self._json(400, {"error": 'the body must be JSON: { "filepath": "...", "functionName": "..." }'})
        with _lock:
            if _handler is not None:
                return self._json(400, {"error": "not a generic instance: already specialized"})
            if not os.path.exists(filepath):
                return self._json(400, {"error": f"filepath {filepath!r} does not exist"})
            os.environ.update({str(k): str(v) for k, v in (req.get("env") or {}).items()})
            try:
                _handler = load(filepath, function_name)
            except Exception as err:
                traceback.print_exc()
                return self._json(500, {"error": f"cannot load the function: {type(err).__name__}: {err}"})
        return self._json(202, {"specialized": True})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _invoke


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a thread per connection; none of them holds up the exit
    # The router may open many connections at once: past the default backlog of 5 they wait on SYN retries (1 s, 3 s, ...) or fail.
    request_queue_size = 1024


_token = None  # this instance's credential: from the env in a pod, else the first line the pool manager writes on our stdin
TOKEN = "X-Spore-Instance-Token"


def _exit_when_parent_goes():
    # The pool manager holds our stdin: when it closes, we leave (no orphans).
    global _token
    try:
        _token = sys.stdin.buffer.readline().strip()
        while sys.stdin.buffer.read(65536):
            pass
    finally:
        os._exit(0)


def _token_from_env():
    """In a pod: the credential comes from a Secret through the env; no stdin, no parent to outlive. The function must not read it back."""
    global _token
    value = os.environ.pop("SPORE_INSTANCE_TOKEN", None)
    if value is None:
        return False
    _token = value.strip().encode("utf-8")
    if not _token:
        sys.stderr.write("SPORE_INSTANCE_TOKEN is empty: refusing to serve without a credential\n")
        sys.exit(1)
    return True


def main():
    port = int(os.environ.get("PORT", "8888"))
    host = os.environ.get("HOST", "127.0.0.1")
    server = Server((host, port), Handler)
    if not _token_from_env():
        threading.Thread(target=_exit_when_parent_goes, daemon=True).start()
    sys.stdout.write(f"spore-runtime listening on {host}:{server.server_address[1]}\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
