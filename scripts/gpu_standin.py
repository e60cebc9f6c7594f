"""A model server of known GPU footprint for the GPU check: vLLM's HTTP surface, torch memory.

    python scripts/gpu_standin.py --port 8301 --base-mib 4000 --grow-mib 2000 --held-mib 512

It takes `--base-mib` of CUDA memory while it "loads" (`--start-s`), answers `GET /health`
once loaded, takes `--grow-mib` more on its first chat completion (a KV cache, CUDA graphs),
and speaks vLLM's sleep mode: `POST /sleep?level=1` moves its memory to host RAM but keeps
`--held-mib` on the GPU (what a sleeping vLLM keeps: its CUDA context and pools),
`POST /wake_up` brings it back, `GET /is_sleeping`. Listens on 127.0.0.1 only. Needs torch
with CUDA; it exits with status 3 when a CUDA allocation fails (an overcommit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MIB = 1 << 20


class Standin:
    def __init__(self, args: argparse.Namespace):
        import torch

        self.torch = torch
        self.args = args
        self.lock = threading.Lock()
        self.gpu: list[Any] = []  # tensors on the GPU
        self.host: list[Any] = []  # tensors moved to host RAM while asleep
        self.grown = False
        self.sleeping = 0
        self.ready = False

    def _take(self, mib: int) -> Any:
        try:
            t = self.torch.empty(mib * MIB, dtype=self.torch.uint8, device="cuda")
            t[:: 1 << 20].fill_(1)  # touch every MiB: really resident
            return t
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
            print(f"standin: CUDA allocation of {mib} MiB failed: {exc}", file=sys.stderr, flush=True)
            os._exit(3)  # from any thread: the planner sees a dead server

    def load(self) -> None:
        self.torch.cuda.init()
        deadline = time.monotonic() + self.args.start_s
        self.gpu.append(self._take(self.args.base_mib))
        time.sleep(max(0.0, deadline - time.monotonic()))
        self.ready = True

    def complete(self) -> None:
        with self.lock:
            if self.sleeping:
                raise RuntimeError("sleeping")
            if not self.grown and self.args.grow_mib:
                self.gpu.append(self._take(self.args.grow_mib))
                self.grown = True

    def sleep(self, level: int) -> None:
        with self.lock:
            if self.sleeping:
                return
            self.host = [t.cpu() for t in self.gpu] if level == 1 else []
            self.gpu = [self._take(self.args.held_mib)] if self.args.held_mib else []
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()
            self.sleeping = level

    def wake(self) -> None:
        with self.lock:
            if not self.sleeping:
                return
            held, self.gpu = self.gpu, []
            del held
            self.torch.cuda.empty_cache()
            sizes = [t.numel() // MIB for t in self.host] or [self.args.base_mib]
            self.gpu = [self._take(n) for n in sizes]
            self.host = []
            self.sleeping = 0


def handler(s: Standin) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: Any) -> None:
            pass

        def _send(self, status: int, obj: Any = None) -> None:
            data = b"" if obj is None else json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/health":
                self._send(200 if s.ready else 503)
            elif path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "standin", "object": "model"}]})
            elif path == "/is_sleeping":
                self._send(200, {"is_sleeping": bool(s.sleeping)})
            else:
                self._send(
                    404, {"error": {"message": f"no route {path}", "type": "NotFoundError", "code": 404}}
                )

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path, _, query = self.path.partition("?")
            if path == "/sleep":
                level = int(dict(q.partition("=")[::2] for q in query.split("&") if q).get("level", "1"))
                s.sleep(level)
                self._send(200)
            elif path == "/wake_up":
                s.wake()
                self._send(200)
            elif path == "/v1/chat/completions":
                try:
                    s.complete()
                except RuntimeError as exc:
                    self._send(
                        500, {"error": {"message": str(exc), "type": "InternalServerError", "code": 500}}
                    )
                    return
                self._send(
                    200,
                    {
                        "id": "standin",
                        "object": "chat.completion",
                        "model": "standin",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "ok"},
                                "finish_reason": "stop",
                            }
                        ],
                    },
                )
            else:
                self._send(
                    404, {"error": {"message": f"no route {path}", "type": "NotFoundError", "code": 404}}
                )

    return H


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--base-mib", type=int, required=True)
    ap.add_argument("--grow-mib", type=int, default=0)
    ap.add_argument("--held-mib", type=int, default=256)
    ap.add_argument("--start-s", type=float, default=0.0)
    args = ap.parse_args()
    s = Standin(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(s))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    s.load()
    threading.Event().wait()  # until SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
