"""The `jarvis` command: `up` (run the stack), `talk` (a client), `models`, `calibrate`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="jarvis", description="Self-hosted speech-to-speech assistant")
    sub = ap.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole stack locally (embedded Redis, every service)")
    up.add_argument("--stub", action="store_true", help="stub models (plumbing, instant)")
    up.add_argument(
        "--profile", choices=["stub", "cpu", "gpu"], default=os.environ.get("JARVIS_PROFILE", "cpu")
    )
    up.add_argument("--port", type=int, default=int(os.environ.get("JARVIS_PORT", "8765")))
    up.add_argument(
        "--orchestrators",
        type=int,
        default=int(os.environ.get("JARVIS_ORCHESTRATORS", "0")) or None,
        help="orchestrator processes (default: one per core, up to 4)",
    )
    # one host's share of a deployment over several hosts (docs/DEPLOY.md, "Several hosts")
    up.add_argument(
        "--host",
        default=os.environ.get("JARVIS_HOST", "127.0.0.1"),
        help="the address the gateway binds (default 127.0.0.1: this machine only)",
    )
    up.add_argument(
        "--roles",
        type=_roles,
        default=None,
        help="what runs on this host: a comma-separated subset of gateway, orchestrator, workers, "
        "resource (default: gateway, orchestrator and workers, plus resource for the gpu profile)",
    )
    up.add_argument(
        "--redis-url",
        default=os.environ.get("JARVIS_REDIS_URL"),
        help="the Redis every host shares (default: an embedded one in the work dir)",
    )
    up.add_argument("--workdir", default="var", help="logs (and the embedded Redis's data) go here")
    up.add_argument(
        "--sessions-dir",
        default=os.environ.get("JARVIS_SESSIONS_DIR"),
        help="session files, shared by every orchestrator of the deployment (default: WORKDIR/sessions)",
    )

    talk = sub.add_parser("talk", help="talk to a running Jarvis")
    talk.add_argument("--url", default=os.environ.get("JARVIS_URL", "ws://127.0.0.1:8765/ws"))
    talk.add_argument("--wav", help="16-bit PCM WAV to speak (resampled to 16 kHz mono)")
    talk.add_argument("--text", help="a typed question (chat pipeline)")
    talk.add_argument("--image", help="a JPEG/PNG for the vision pipeline")
    talk.add_argument("--pipeline", help="sts, chat or vision (default from the inputs)")
    talk.add_argument("--out", help="save the spoken reply here (WAV)")
    talk.add_argument("--session", help="resume this session id (with --secret)")
    talk.add_argument(
        "--secret",
        default=os.environ.get("JARVIS_RESUME_SECRET"),
        help="the session's resume secret (printed when the session was opened)",
    )
    talk.add_argument("--token", default=os.environ.get("JARVIS_AUTH_TOKEN"))
    talk.add_argument("--timeout", type=float, default=180.0)
    talk.add_argument(
        "--mic", action="store_true", help="live microphone mode (needs the sounddevice package)"
    )
    talk.add_argument("--ptt", action="store_true", help="with --mic: Enter starts and ends a turn")
    talk.add_argument(
        "--duplex", action="store_true", help="with --mic: keep the mic open while Jarvis talks (headphones)"
    )
    talk.add_argument(
        "--realtime",
        action="store_true",
        help="talk through the OpenAI Realtime API (/v1/realtime, the official openai SDK)",
    )

    _add_subcommand(
        sub, "models_cmd", "models", "show or change the models the resource service keeps resident"
    )
    _add_subcommand(sub, "calibrate_cmd", "calibrate", "measure each model's GPU memory")

    args = ap.parse_args(argv)
    if args.command == "up":
        from jarvis.launcher import up as run_up

        return run_up(
            "stub" if args.stub else args.profile,
            args.port,
            args.orchestrators,
            host=args.host,
            roles=args.roles,
            redis_url=args.redis_url,
            workdir=args.workdir,
            sessions_dir=args.sessions_dir,
        )
    if args.command == "talk" and args.realtime:
        from jarvis.realtime_talk import talk_realtime

        url = args.url if "/v1/realtime" in args.url else args.url.rsplit("/ws", 1)[0] + "/v1/realtime"
        asyncio.run(
            talk_realtime(
                url, wav=args.wav, text=args.text, token=args.token, session_id=args.session, out=args.out
            )
        )
        return 0
    if args.command == "talk":
        from jarvis.talk import main as talk_main

        return talk_main(args)
    result = args.func(args)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    return int(result or 0)


def _roles(text: str) -> frozenset[str]:
    from jarvis.launcher import parse_roles

    try:
        return parse_roles(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _add_subcommand(sub: argparse._SubParsersAction, module: str, command: str, help_text: str) -> None:
    """Add the subcommand `jarvis.<module>` defines; if it can't be imported, the subcommand
    still shows (with the reason) and running it prints the import error."""
    try:
        mod = importlib.import_module(f"jarvis.{module}")
    except ImportError as exc:
        reason = f"{type(exc).__name__}: {exc}"
        broken = sub.add_parser(command, help=f"{help_text} (unavailable: {reason})")

        def unavailable(_args: argparse.Namespace) -> int:
            print(f"jarvis {command}: unavailable, its module failed to import: {reason}", file=sys.stderr)
            return 1

        broken.set_defaults(func=unavailable)
        return
    mod.add_parser(sub)


if __name__ == "__main__":
    sys.exit(main())
