"""``secsync keygen``: a new signing key pair and document key, as JSON."""

from __future__ import annotations

import argparse
import json

from secsync.cli.common import Inputs


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def cmd_keygen(args: argparse.Namespace, inputs: Inputs) -> int:
    from secsync.protocol.crypto import SigningKeyPair, generate_key
    from secsync.protocol.keys import encode_key

    pair = SigningKeyPair.generate()
    out = {
        "signingSecretKey": pair.to_b64(),  # libsodium's seed ‖ public key
        "signingPublicKey": _b64(pair.public_key),
        "documentKey": encode_key(generate_key()),
    }
    print(json.dumps(out, indent=2))
    return 0
