"""``slipway send``: deliver a payload to a running ``slipway serve`` as its sender would.

For local trials: the sender's route, event headers and authentication, with the secret from the
setting the receiver checks, read from the environment (where ``--settings`` puts a
local.settings.json). A secret is never printed: a dry run and ``--json`` show each credential
redacted. A delivery id is new for each send unless ``--delivery`` repeats one (a redelivery).
The requests themselves are built in ``shared.app.commands._send_requests``; ``--pull-request``
makes a pull (merge) request event of the five Git hosts (``_send_pull_requests``) and sends it
the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.app.commands._send_pull_requests import (
    ACTIONS,
    NotSendable,
    PullRequestSpec,
    pull_request_body,
)
from shared.app.commands._send_requests import (
    DEFAULT_URL,
    EVENT_GRID_ORIGIN,
    ROUTES,
    SENDERS,
    Outgoing,
    Trial,
    build_requests,
)

# Senders whose deliveries carry no event header (the event is in the body) or no delivery id.
_NO_EVENT_HEADER = frozenset({"azure-devops", "acr", "dockerhub"})
_NO_DELIVERY_ID = frozenset({"azure-devops", "acr", "eventgrid", "dockerhub"})


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "send",
        help="sign a webhook payload and send it to a running 'slipway serve' as its sender would",
        description="Send FILE to a running 'slipway serve' the way SENDER delivers it: its route, event "
        "headers and authentication (an HMAC signature, a token header, HTTP Basic, a bearer token or "
        "the URL's ?token=), with the secret from the same setting the receiver checks. With "
        "--pull-request ACTION --repo URL instead of FILE, a Git host's pull (merge) request event is made "
        "(the shape of the host's own) and sent so. Prints the server's answer; exits 1 when it is not 2xx.",
    )
    parser.add_argument("--sender", required=True, choices=SENDERS, help="who the delivery comes from")
    parser.add_argument(
        "file",
        type=Path,
        metavar="FILE",
        nargs="?",
        help="the payload, sent byte for byte ('-' for stdin); or --pull-request instead",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the app's API root (default {DEFAULT_URL})")
    parser.add_argument(
        "--event",
        help="the event header's value (GitHub X-GitHub-Event, GitLab X-Gitlab-Event, Bitbucket X-Event-Key, "
        "Gitea X-Gitea-Event, Event Grid aeg-event-type); default: the push event, or what the payload says",
    )
    parser.add_argument(
        "--delivery", help="the delivery id header (default: a new one); repeat one to redeliver"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the request(s), credentials redacted; send nothing"
    )
    parser.add_argument("--json", action="store_true", help="print requests and answers as one JSON object")
    pr = parser.add_argument_group(
        "pull requests", "make a pull (merge) request event of the Git host SENDER instead of reading FILE"
    )
    pr.add_argument("--pull-request", choices=ACTIONS, metavar="ACTION", help=f"one of {', '.join(ACTIONS)}")
    pr.add_argument("--repo", help="the base repository, as a target's repo names it (required)")
    pr.add_argument("--number", type=int, default=1, help="the request's number (default 1)")
    pr.add_argument("--head", help="the head commit, 40 hex digits (default: one made up from the others)")
    pr.add_argument("--head-branch", default="feature", help="the source branch (default feature)")
    pr.add_argument("--base", default="main", help="the target branch (default main)")
    pr.add_argument("--head-repo", help="the head's repository: another one makes a fork request")
    pr.add_argument(
        "--label", action="append", default=[], help="a label on the request (repeat; labeled adds the last)"
    )
    parser.set_defaults(handler=run)


def _route_url(base: str, sender: str) -> str:
    from shared.app.cli import CliError

    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise CliError(f"--url {base!r} is not an http(s) URL like {DEFAULT_URL}")
    return base.rstrip("/") + "/" + ROUTES[sender]


def _read(file: Path) -> bytes:
    from shared.app.cli import CliError

    if str(file) == "-":
        return sys.stdin.buffer.read()
    try:
        return file.read_bytes()
    except OSError as exc:
        raise CliError(f"{file}: {exc.strerror or exc}") from None


def _pull_request(args: argparse.Namespace, delivery: str) -> tuple[bytes, str | None]:
    """The body and event header of ``--pull-request``, from its options."""
    from shared.app.cli import CliError

    if args.file is not None:
        raise CliError("FILE and --pull-request: give one or the other")
    if args.event is not None:
        raise CliError("--event: --pull-request sends the event its host sends for the action")
    if not args.repo:
        raise CliError("--pull-request needs --repo, the base repository (as a target's repo names it)")
    spec = PullRequestSpec(
        action=args.pull_request,
        repo=args.repo,
        number=args.number,
        head=args.head,
        head_branch=args.head_branch,
        base_branch=args.base,
        head_repo=args.head_repo,
        labels=tuple(args.label),
    )
    return pull_request_body(args.sender, spec, delivery)


def prepare(args: argparse.Namespace) -> list[Outgoing]:
    """The requests ``args`` ask for; any problem with them is one ``CliError`` line."""
    from shared.app.cli import CliError

    if args.event is not None and args.sender in _NO_EVENT_HEADER:
        raise CliError(f"--event: {args.sender} sends no event header (the event is in the payload)")
    if args.delivery is not None and args.sender in _NO_DELIVERY_ID:
        raise CliError(f"--delivery: {args.sender} sends no delivery id header")
    url = _route_url(args.url, args.sender)
    delivery = args.delivery or str(uuid.uuid4())
    try:
        if args.pull_request is not None:
            body, event = _pull_request(args, delivery)
        elif args.file is None:
            raise CliError("FILE: the payload to send (or --pull-request ACTION --repo URL)")
        elif args.repo is not None or args.head_repo is not None or args.label:
            raise CliError("--repo, --head-repo and --label go with --pull-request")
        else:
            body, event = _read(args.file), args.event
        return build_requests(Trial(args.sender, body, url, event, delivery))
    except NotSendable as exc:
        raise CliError(str(exc)) from None


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    allowed_origin: str | None = None


def _answer_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _handshake_allowed(answer: Answer) -> bool:
    return 200 <= answer.status < 300 and answer.allowed_origin in (EVENT_GRID_ORIGIN, "*")


def deliver(requests: list[Outgoing]) -> list[Answer]:
    """Send each request in turn; a refused handshake ends the exchange, as Event Grid would."""
    from shared.app.cli import CliError
    from shared.platform.http.client import ConnectionFailed, HttpClient

    client = HttpClient(user_agent="slipway-send")
    answers: list[Answer] = []
    for out in requests:
        try:
            response = client.request(out.method, out.url, headers=out.headers, body=out.body)
        except ConnectionFailed as exc:
            # The message names the URL without its query: a token in it is not shown.
            raise CliError(f"{exc} (is 'slipway serve' running there?)") from None
        answer = Answer(
            response.status, _answer_body(response.body), response.header("WebHook-Allowed-Origin")
        )
        answers.append(answer)
        if out.handshake and not _handshake_allowed(answer):
            break
    return answers


def run(args: argparse.Namespace) -> int:
    requests = prepare(args)
    answers: list[Answer] = [] if args.dry_run else deliver(requests)
    ok = all(200 <= a.status < 300 for a in answers) and (args.dry_run or len(answers) == len(requests))
    if args.json:
        _print_json(args.sender, requests, answers, dry_run=args.dry_run, ok=ok)
    else:
        _print_human(requests, answers, dry_run=args.dry_run)
    return 0 if ok else 1


def _print_json(
    sender: str, requests: list[Outgoing], answers: list[Answer], *, dry_run: bool, ok: bool
) -> None:
    from shared.app.commands.output import print_json

    views = []
    for index, out in enumerate(requests):
        view = out.view()
        answer = answers[index] if index < len(answers) else None
        view["status"] = answer.status if answer else None
        view["answer"] = answer.body if answer else None
        views.append(view)
    delivered = answers[-1] if len(answers) == len(requests) and answers else None
    print_json(
        {
            "sender": sender,
            "dry_run": dry_run,
            "ok": ok,
            "status": delivered.status if delivered else None,
            "answer": delivered.body if delivered else None,
            "requests": views,
        }
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _print_human(requests: list[Outgoing], answers: list[Answer], *, dry_run: bool) -> None:
    from rich.console import Console
    from rich.json import JSON as RichJSON
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    for index, out in enumerate(requests):
        console.print(Text.assemble((out.method, "bold"), " ", out.shown_url))
        if dry_run:
            for name, value in out.shown_headers.items():
                console.print(Text(f"  {name}: {value}"))
            if out.body is not None:
                console.print(Text(f"  ({len(out.body)} bytes of body)", style="dim"))
            continue
        if index >= len(answers):
            console.print(Text("  not sent: the handshake was refused", style="yellow"))
            continue
        answer = answers[index]
        style = "green" if 200 <= answer.status < 300 else "red"
        line = Text.assemble("  ", (f"{answer.status} {_phrase(answer.status)}".rstrip(), f"bold {style}"))
        if out.handshake:
            line.append(f"  WebHook-Allowed-Origin: {answer.allowed_origin or '(none)'}")
        console.print(line)
        if isinstance(answer.body, (dict, list)):
            console.print(RichJSON.from_data(answer.body, indent=2))
        elif answer.body:
            console.print(Text(str(answer.body)))
