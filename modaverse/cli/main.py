"""The ``modaverse`` console script: a table of command groups, each a module with its parsers
beside its handlers (plain functions, litgpt style).

Heavy imports (torch, transformers) happen inside the commands, so ``--help`` is instant.
User errors (:class:`~modaverse.core.errors.ModaverseError`) print one line and exit 2; no
traceback is shown for them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from modaverse.cli import assistant, bind, data, encode, evaluate, instructions, serve, setup, train, zoo
from modaverse.cli.common import Parser
from modaverse.core.errors import ModaverseError

#: Command groups in the order ``modaverse --help`` lists them: use, data, training, evaluation, serving, setup.
GROUPS = (assistant, zoo, encode, data, instructions, bind, train, evaluate, serve, setup)


def build_parser() -> argparse.ArgumentParser:
    from modaverse import __version__

    parser = Parser(prog="modaverse", description="Any-to-any multimodal assistant: ImageBind inputs, LLM "
                    "meta-responses, text-to-x outputs.")
    parser.add_argument("--version", action="version", version=f"modaverse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for group in GROUPS:
        group.register(sub)
    return parser


class _LogFormat(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"modaverse: {record.levelname.lower()}: {record.getMessage()}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # a bare `modaverse` is a question: answer it with the commands
        build_parser().print_help()
        return 0
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormat())
    logging.getLogger("modaverse").addHandler(handler)
    # Under `accelerate launch`, every process runs this; only the first speaks (N copies of each
    # message and error helped nobody). The others still exit with the same status.
    quiet_rank = os.environ.get("RANK", "0") != "0"
    if quiet_rank:
        handler.setLevel(logging.ERROR + 10)
    try:
        return args.func(args)
    except ModaverseError as e:
        if not quiet_rank:
            print(f"modaverse: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("modaverse: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
