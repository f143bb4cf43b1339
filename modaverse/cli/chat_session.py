"""``modaverse chat``: a multi-turn REPL over one :class:`~modaverse.pipeline.assistant.ModaVerse`.

Attachments can be added at any turn (PandaGPT's demo ignores media after the first one),
history keeps every earlier input, and a bad file or a failed generation prints one line
while the session goes on. Each turn's response is saved as JSON in the session folder.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TextIO

from modaverse.cli.display import invocation_lines, printable
from modaverse.core.atomic import write_json_atomic
from modaverse.core.errors import ModaverseError, one_line
from modaverse.core.modality import MODALITIES
from modaverse.media import MediaInput
from modaverse.pipeline.assistant import ModaVerse, Turn

HELP = """commands:
  /attach FILE [MODALITY]  attach a file to the next message (any number, any modality)
  /reset                   forget the conversation and pending attachments
  /save PATH               save the conversation as JSON
  /help                    this list
  /quit                    leave (Ctrl-D works too)
type anything else to send it; '<media>' in a message places the attachments inline"""


class ChatSession:
    """State of one REPL session; :meth:`handle` processes one input line."""

    def __init__(self, pipe: ModaVerse, out_dir: Path, stdout: TextIO = sys.stdout, **generate_kwargs):
        self.pipe, self.out_dir, self.stdout = pipe, out_dir, stdout
        self.kwargs = generate_kwargs
        self.history: list[Turn] = []
        self.pending: list[MediaInput] = []
        self.turns_saved = 0  # numbers turn files for the whole session: /reset never reuses a name

    def say(self, text: str = "", end: str = "\n") -> None:
        self.stdout.write(text + end)
        self.stdout.flush()

    def handle(self, line: str) -> bool:
        """Returns False when the session should end."""
        line = line.strip()
        if not line:
            return True
        if line.startswith("/"):
            return self._command(line)
        self._send(line)
        return True

    def _command(self, line: str) -> bool:
        try:
            name, *args = shlex.split(line)
        except ValueError as e:
            raise ModaverseError(f"cannot read the command ({e})") from None
        if name in ("/quit", "/exit", "/q"):
            return False
        if name == "/help":
            self.say(HELP)
        elif name == "/reset":
            self.history.clear()
            self.pending.clear()
            self.say(f"conversation cleared (turn files so far stay in {self.out_dir})")
        elif name == "/attach":
            self._attach(args)
        elif name == "/save":
            self._save(args)
        else:
            raise ModaverseError(f"unknown command {name}; type /help for the list")
        return True

    def _attach(self, args: list[str]) -> None:
        if not args or len(args) > 2:
            raise ModaverseError("usage: /attach FILE [MODALITY]")
        modality = args[1] if len(args) == 2 else None
        if modality is not None and modality not in MODALITIES:
            raise ModaverseError(f"unknown modality {modality!r}; choose from {', '.join(MODALITIES)}")
        item = self.pipe.encoder.load(Path(args[0]).expanduser(), modality)
        self.pending.append(item)
        self.say(f"attached {item.modality}: {args[0]} ({len(self.pending)} pending)")

    def _save(self, args: list[str]) -> None:
        if len(args) != 1:
            raise ModaverseError("usage: /save PATH")
        path = Path(args[0]).expanduser()
        if path.exists():
            raise ModaverseError(f"{path}: already exists; choose a new name (nothing was overwritten)")
        doc = {"config": self.pipe.config.name, "turns": [t.to_dict() for t in self.history]}
        try:
            write_json_atomic(path, doc)
        except OSError as e:
            raise ModaverseError(f"{path}: cannot write ({e.strerror})") from None
        self.say(f"saved {len(self.history)} turn(s) to {path}")

    def _send(self, text: str) -> None:
        self.say("assistant> ", end="")
        try:
            turn = self.pipe(text, self.pending, self.history, on_text=lambda s: self.say(printable(s), end=""),
                             output_dir=self.out_dir, **self.kwargs)
        finally:
            self.say()
        self.pending = []
        self.history.append(turn)
        if turn.fallback:
            self.say(f"note: {turn.fallback}")
        for line in invocation_lines(turn):
            self.say(line)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.turns_saved += 1
        path = self.out_dir / f"turn-{self.turns_saved:03d}.json"
        while path.exists():  # a folder reused from an earlier session: never overwrite its turns
            self.turns_saved += 1
            path = self.out_dir / f"turn-{self.turns_saved:03d}.json"
        write_json_atomic(path, turn.to_dict())
        self.say(f"  [saved {path}]")


def repl(session: ChatSession, stdin: TextIO = sys.stdin) -> int:
    """Reads lines until /quit or end of input; errors print one line and the loop goes on."""
    interactive = stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    session.say(f"modaverse chat ({session.pipe.config.name}); /help for commands, /quit to leave")
    while True:
        try:
            line = input("you> ") if interactive else stdin.readline()
        except EOFError:
            line = ""
            interactive = False
        except KeyboardInterrupt:
            session.say()
            return 130
        if not interactive and not line:
            break
        try:
            if not session.handle(line):
                break
        except ModaverseError as e:
            session.say(f"error: {e}")
        except KeyboardInterrupt:
            session.say("(interrupted)")
        except Exception as e:  # a failed generation must not end the session
            session.say(f"error: {one_line(e)}")
    return 0
