"""`medpo-ray explore --run DIR`: the run explorer web page (medpo_ray/explore), served by uvicorn."""
from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

from medpo_ray.errors import MedpoError

DEFAULT_PORT = 8766


def register(add) -> None:
    """Register `explore`."""
    p = add("explore", help="serve a web page over a finished or running run: its pairs with images, spans and "
                            "the critic's verdict, its training curves, and clinician review marks")
    p.add_argument("--run", required=True, metavar="DIR", help="the run directory (run.out_dir)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; any other needs --token-env)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--token-env", metavar="VAR", help="environment variable holding the token every request must "
                                                     "carry (required when --host is not loopback)")
    p.set_defaults(func=_explore)


def command(run_dir: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> str:
    """The command line that serves `run_dir` (what the demo prints at its end)."""
    extra = "" if (host, port) == ("127.0.0.1", DEFAULT_PORT) else f" --host {host} --port {port}"
    return f"medpo-ray explore --run {run_dir}{extra}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _explore(args) -> int:
    import uvicorn

    from medpo_ray.explore.app import create_app

    run = Path(args.run)
    if not (run / "metrics.jsonl").is_file() and not (run / "audit").is_dir():
        raise MedpoError(f"--run {str(run)!r} is not a run directory (no metrics.jsonl, no audit/)")
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env, "")
        if len(token) < 16:
            raise MedpoError(f"--token-env {args.token_env}: the variable must hold a token of at least 16 characters")
    if not _loopback(args.host) and not token:
        raise MedpoError(f"--host {args.host} is not loopback: the page shows patient data; pass --token-env VAR "
                         "with a token in VAR, or keep the default 127.0.0.1")
    print(f"explore: http://{args.host}:{args.port}/ over {run} (Ctrl-C stops)", file=sys.stderr, flush=True)
    uvicorn.run(create_app(run, token), host=args.host, port=args.port, log_level="warning")
    return 0
