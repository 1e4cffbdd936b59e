from __future__ import annotations

import streamprov.clock as clock


def test_public_names_are_exported() -> None:
    assert sorted(clock.__all__) == clock.__all__
    for name in clock.__all__:
        assert getattr(clock, name) is not None
    public = {n for n in vars(clock) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(clock.__all__)
