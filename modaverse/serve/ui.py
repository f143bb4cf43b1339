"""The Gradio chat demo of ``modaverse serve``.

Unlike the research demos, files uploaded at any turn join the conversation (PandaGPT's
ignored uploads after the first turn until "Clear History"); each turn's inputs stay in
the history with their embeddings. Generated images, videos and audio appear inline, the
meta-response sits in a collapsed panel, generation settings can be changed between
turns, and Clear and Retry work on the conversation. Requests go through the same
:class:`~modaverse.serve.service.Service` as the REST API: the same queue, the same limits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from modaverse.core.errors import ModaverseError
from modaverse.core.modality import MODALITIES
from modaverse.media.sniff import SUPPORTED
from modaverse.serve.service import Limits, Settings, UploadError, check_uploads

AUTO = "auto"
log = logging.getLogger("modaverse")


def _check_files(files: list[str], limits: Limits, modality: str | None) -> list[tuple[Path, str | None]]:
    paths = [Path(f) for f in files]
    check_uploads([(p.name, p.stat().st_size, modality) for p in paths], limits)
    return [(p, modality) for p in paths]


#: Gradio draws a Share icon on every media message (it works only on Spaces); this hides it.
CSS = '#chat button[aria-label="Share"], #chat button[title="Share"] { display: none !important; }'
UPLOAD_RETENTION = (600, 3600)  # (every N seconds, delete uploads older than M seconds)


def build_ui(service: Callable[[], object], limits: Limits):
    """The Blocks; ``service`` is looked up per request, so building the UI loads no model."""
    import gradio as gr

    def respond(message: dict, chat: list, turns: list, modality: str, temperature: float, max_new_tokens: int,
                seed: int):
        text, files = (message or {}).get("text", ""), (message or {}).get("files", [])
        try:
            if not text.strip() and not files:
                raise ModaverseError("type a request, attach files, or both")
            uploads = _check_files(files, limits, None if modality == AUTO else modality)
            result = service().generate(text, uploads, turns, Settings(temperature, int(max_new_tokens),
                                                                      int(seed or 0)))
        except (UploadError, ModaverseError) as e:
            # The user's mistake: one toast and one log line; the conversation stays as it was and
            # the box is emptied, so the next send does not fail on the same attachment again.
            log.info("chat request refused: %s", e)
            gr.Warning(str(e))
            return gr.MultimodalTextbox(value=None), chat, turns, gr.skip(), gr.skip()
        turn = result.turn
        chat = chat + [{"role": "user", "content": {"path": f}} for f in files]
        if text.strip():
            chat.append({"role": "user", "content": text})
        chat.append({"role": "assistant", "content": turn.text or "(no text)"})
        chat += [{"role": "assistant", "content": {"path": str(p)}} for p in turn.outputs]
        chat += [{"role": "assistant", "content": f"⚠️ {e}"} for e in turn.errors]
        last = {"message": message, "chat": len(chat)}
        return gr.MultimodalTextbox(value=None), chat, turns + [turn], turn.meta.as_dict(), last

    def retry(chat: list, turns: list, last: dict | None, modality: str, temperature: float,
              max_new_tokens: int, seed: int):
        if not last or not turns:
            gr.Warning("Nothing to retry yet.")
            return gr.skip(), chat, turns, gr.skip(), last
        message = last["message"]
        shown = len(message.get("files", [])) + bool(message.get("text", "").strip())
        previous = chat[: _start_of_last_turn(chat, shown)]
        return respond(message, previous, turns[:-1], modality, temperature, max_new_tokens, int(seed or 0) + 1)

    def clear():
        return None, [], [], {}, None

    # Uploads live in Gradio's cache: files older than an hour are deleted every ten minutes (and all of
    # them when the server restarts); the conversation keeps their embeddings, so it goes on regardless.
    with gr.Blocks(title="modaverse", delete_cache=UPLOAD_RETENTION) as demo:
        gr.Markdown("## modaverse\nAttach images, video, audio, depth, thermal or IMU files at any turn; "
                    "generated media appear in the chat.")
        # No "share" button: it posts to Hugging Face Spaces, and this server is private by design. The
        # conversation's is left out here; the one Gradio draws on each media message is hidden by CSS.
        chat = gr.Chatbot(label="conversation", height=480, buttons=["copy", "copy_all"], feedback_options=None,
                          elem_id="chat")
        box = gr.MultimodalTextbox(placeholder="Ask, or attach files (<media> marks where each goes)",
                                   file_count="multiple", file_types=list(SUPPORTED), show_label=False,
                                   elem_id="request")
        with gr.Row():
            retry_btn = gr.Button("Retry", elem_id="retry")
            clear_btn = gr.Button("Clear", elem_id="clear")
        with gr.Accordion("Generation settings", open=False):
            modality = gr.Dropdown([AUTO, *MODALITIES], value=AUTO, label="read attachments as",
                                   info="auto detects from the file; choose to read e.g. a grey PNG as thermal")
            temperature = gr.Slider(0, 2, value=0.0, step=0.05, label="temperature (0 = greedy)")
            max_new_tokens = gr.Slider(96, 1024, value=256, step=16, label="max new tokens")
            seed = gr.Number(0, precision=0, label="seed")
        with gr.Accordion("Meta-response", open=False):
            meta = gr.JSON(label="last meta-response", elem_id="meta")
        turns, last = gr.State([]), gr.State(None)
        settings = [modality, temperature, max_new_tokens, seed]
        box.submit(respond, [box, chat, turns, *settings], [box, chat, turns, meta, last])
        retry_btn.click(retry, [chat, turns, last, *settings], [box, chat, turns, meta, last])
        clear_btn.click(clear, None, [box, chat, turns, meta, last])
    return demo


def _start_of_last_turn(chat: list, user_messages: int) -> int:
    """Index where the last exchange starts: its user messages, then the assistant's."""
    i = len(chat)
    while i > 0 and chat[i - 1]["role"] == "assistant":
        i -= 1
    return max(0, i - user_messages)
