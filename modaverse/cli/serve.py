"""``serve``: the web demo, the REST API and the OpenAI-compatible chat API on one server."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from modaverse.cli.common import add_checkpoint_arg, add_config_args, load, positive_float, positive_int
from modaverse.core.errors import ModaverseError


def cmd_serve(args: argparse.Namespace) -> int:
    """Web demo and REST API on one server; loopback unless --host says otherwise, never a share link."""
    import ipaddress
    import tempfile

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local server
    import uvicorn

    from modaverse.serve.api import create_app
    from modaverse.serve.service import Limits

    config = load(args)
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    api_key = args.api_key or os.environ.get("MODAVERSE_API_KEY") or None
    if not loopback and not api_key:
        raise ModaverseError(f"--host {args.host} lets other machines in: give --api-key KEY (or set "
                             "MODAVERSE_API_KEY); clients then send Authorization: Bearer KEY")
    import socket

    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
        try:  # before the models load: a 7B model should not load only to find the port taken
            probe.bind((args.host, args.port))
        except OSError as e:
            raise ModaverseError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}; "
                                 "choose another --port or --host") from None
    outputs = Path(args.outputs) if args.outputs else Path(tempfile.mkdtemp(prefix="modaverse-serve-"))
    limits = Limits(args.max_upload_mb, args.max_files, args.queue_size, args.max_batch, args.batch_wait_ms,
                    args.embedding_cache, args.outputs_ttl, args.sse_keepalive)
    app = create_app(config, outputs, limits, ui=not args.no_ui, api_key=api_key, cors_origins=args.cors_origin)
    print(f"modaverse: loading {config.name}, then serving http://{args.host}:{args.port} "
          f"(outputs in {outputs})", file=sys.stderr)
    # X-Forwarded-Proto and -For are believed from these addresses only: a proxy's, so output URLs
    # carry the scheme clients used (the proxy passes the Host header itself: configs/nginx/modaverse.conf)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5,
                proxy_headers=True, forwarded_allow_ips=args.forwarded_allow_ips)
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="web demo, REST API and OpenAI-compatible chat API on one server",
                       description="Starts the Gradio chat (at /), the OpenAI-compatible chat API (POST "
                       "/v1/chat/completions with images, audio and video as content parts, streaming; GET "
                       "/v1/models) and the REST API (POST /v1/generate, GET /v1/outputs/{id}/{name}, GET "
                       "/healthz, OpenAPI at /docs) on one server. Requests that arrive together decode as one "
                       "batch. Models load once, before the server answers. It binds 127.0.0.1 unless --host "
                       "says otherwise (which then needs --api-key) and never opens a public share link. "
                       "See docs/serve.md.")
    add_config_args(p)
    add_checkpoint_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=positive_int, default=7860, help="port (default 7860)")
    p.add_argument("--queue-size", type=positive_int, default=8, metavar="N",
                   help="requests that may wait for the model; more get 503 at once (default 8)")
    p.add_argument("--max-upload-mb", type=positive_float, default=50.0, metavar="MB",
                   help="largest file accepted (default 50)")
    p.add_argument("--max-files", type=positive_int, default=8, metavar="N", help="files per request (default 8)")
    p.add_argument("--outputs", metavar="DIR", help="where generated files are kept (default: a new temporary folder); "
                   "replicas may share one")
    p.add_argument("--outputs-ttl", type=positive_float, metavar="SECONDS",
                   help="remove an output folder this many seconds after it was written (default: keep them)")
    p.add_argument("--max-batch", type=positive_int, default=8, metavar="N",
                   help="requests decoded together at most (default 8; 16 to 32 suit a GPU)")
    p.add_argument("--batch-wait-ms", type=positive_float, default=50.0, metavar="MS",
                   help="under load, how long a batch's first request waits for others (default 50; a lone "
                   "request under light load does not wait)")
    p.add_argument("--embedding-cache", type=positive_int, default=256, metavar="N",
                   help="embeddings of media already seen kept by content, so a conversation's earlier "
                   "media are not encoded again (default 256)")
    p.add_argument("--api-key", metavar="KEY", help="require Authorization: Bearer KEY on every route (default: "
                   "$MODAVERSE_API_KEY; required with a non-loopback --host)")
    p.add_argument("--forwarded-allow-ips", default="127.0.0.1", metavar="IPS",
                   help="comma-separated addresses (or *) of proxies whose X-Forwarded-Proto and X-Forwarded-For "
                   "are believed, so output URLs are right behind them (default 127.0.0.1; docs/serve.md)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="a web page origin (e.g. https://chat.example.org) allowed to call the APIs from a browser; "
                   "repeat for several; preflights need no key (default: none)")
    p.add_argument("--sse-keepalive", type=positive_float, default=15.0, metavar="SECONDS",
                   help="a keep-alive comment on a silent stream this often, so proxies keep it open (default 15)")
    p.add_argument("--no-ui", action="store_true", help="serve the APIs only, without the web chat")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (default info)")
    p.set_defaults(func=cmd_serve)
