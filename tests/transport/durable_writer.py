"""A writer process for the durability tests: edits a document with a local store, printing
each token's number once the edit has returned (the point after which it must survive).

    python -m tests.transport.durable_writer URL STORE KEY SIGNING_KEY MODE [sync]

MODE: yjs, yjs-poll (reads pending_changes / is_synced after every edit, as a "saving..."
indicator would), automerge. With ``sync``, it only waits until everything is stored, then
prints DONE and exits.
"""

from __future__ import annotations

import asyncio
import re
import sys

import pycrdt
from automerge import core

import secsync
from secsync.config import SecsyncConfig
from tests.factories import automerge_text, automerge_type, plain_yjs_doc

DOC_ID = "durable"


async def main(url: str, store: str, key: str, signer: str, mode: str, sync: bool) -> None:
    config = SecsyncConfig(
        store_path=store,
        batch_interval=0,
        publish_timeout=1.0,
        request_timeout=1.0,
        retry_initial=0.05,
        retry_max=0.3,
        checkpoint_interval=0.2,
    )
    async with secsync.connect(url, config=config) as client:
        if mode == "automerge":
            am = core.Document()
            doc = await client.open(DOC_ID, key=key, signing_key=signer, crdt=am)

            def content() -> str:
                return automerge_text(am)

            def edit(token: str) -> None:
                automerge_type(am, len(content()), token)
                doc.notify_changed()  # the durability point for Automerge
        else:
            ydoc: pycrdt.Doc = plain_yjs_doc()
            text = ydoc.get("text", type=pycrdt.Text)
            doc = await client.open(DOC_ID, key=key, signing_key=signer, crdt=ydoc)

            def content() -> str:
                return str(text)

            def edit(token: str) -> None:
                text.insert(len(text), token)  # durable once the transaction has ended

        if sync:
            await doc.flush(timeout=60)
            print("DONE", flush=True)
            return
        numbers = [int(n) for n in re.findall(r"t(\d+)", content())]
        n = max(numbers, default=-1) + 1
        print("START", n, flush=True)
        while True:
            edit(f" t{n}")
            if mode == "yjs-poll":
                _ = doc.pending_changes, doc.is_synced
            print(n, flush=True)
            n += 1
            await asyncio.sleep(0)


if __name__ == "__main__":
    url, store, key, signer, mode, *rest = sys.argv[1:]
    asyncio.run(main(url, store, key, signer, mode, sync=rest == ["sync"]))
