"""Docs tests only: let a Python process started by a docs block accept weight stand-ins.

The docs test writes random-weight files under the official file names and puts their
digests in ``PERCEPTUAL_DOCS_TEST_HASHES`` (JSON, registry key -> digest); this file, found
on ``PYTHONPATH`` by Python's ``site`` module at start-up, swaps those registry entries for
copies with the stand-ins' digests. The library's hash check itself runs unchanged. Without
the variable nothing happens.
"""

import json
import os

_HASHES = os.environ.get("PERCEPTUAL_DOCS_TEST_HASHES")
if _HASHES:
    import dataclasses

    from perceptual_loss import weights as _weights

    for _key, _digest in json.loads(_HASHES).items():
        _spec = _weights.get_weight_spec(_key)
        _weights._REGISTRY._items[_key] = dataclasses.replace(_spec, hash_value=_digest)
