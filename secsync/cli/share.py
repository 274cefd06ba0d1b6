"""``secsync share`` (a new share link) and ``secsync join`` (open a document from one and print
its text)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from secsync.cli.common import ENV_LINK, Inputs, ProgressBar, UsageError, split_urls


def cmd_share(args: argparse.Namespace, inputs: Inputs) -> int:
    from secsync.access.share import ShareLink

    print(ShareLink.create(args.doc_id))
    return 0


def cmd_join(args: argparse.Namespace, inputs: Inputs) -> int:
    import asyncio

    link = inputs.secret(args.link, args.link_file, ENV_LINK, what="the link file")
    if not link:
        raise UsageError(f"a share link needed: LINK, --link-file PATH or ${ENV_LINK}")
    passphrase = inputs.passphrase(args)
    urls = split_urls(args.url)
    return asyncio.run(
        _join(
            link,
            urls,
            passphrase,
            args.text,
            args.append,
            create=args.create,
            progress=ProgressBar(sys.stderr, force=args.progress),
        )
    )


async def _join(
    link: str,
    urls: list[str],
    passphrase: str | None,
    text_name: str,
    append: str | None,
    *,
    create: bool,
    progress: ProgressBar,
) -> int:
    import pycrdt

    import secsync
    from secsync.access.share import ShareLink, open_shared
    from secsync.errors import DocumentNotFoundError

    parsed = ShareLink.parse(link)
    signer = secsync.SigningKeyPair.generate()  # an anonymous participant
    ydoc: pycrdt.Doc[Any] = secsync.new_yjs_doc(signer)
    async with secsync.connect(urls) as client:
        try:
            document = await open_shared(
                client,
                parsed,
                crdt=ydoc,
                passphrase=passphrase,
                signing_key=signer,
                on_progress=progress,
            )
        finally:
            progress.done()
        try:
            empty = document.session.active_snapshot is None and document.last_sequence == 0
            if empty and not create:
                raise DocumentNotFoundError(
                    f"the broker has no document {parsed.doc_id!r} "
                    "(to start it: --create --append TEXT)"
                )
            text = ydoc.get(text_name, type=pycrdt.Text)
            if append:
                text.insert(len(text), append)
                await document.flush(30)
            print(str(text))
        finally:
            await document.close()
    return 0
