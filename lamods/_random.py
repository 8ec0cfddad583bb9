"""The one place lamods turns ``seed`` / ``generator`` arguments into a ``torch.Generator``.

Rules every sampling module follows: at most one of ``seed`` and ``generator``;
a ``seed`` gives a fresh generator each call (so refitting draws the same
numbers); neither uses torch's global generator. Random numbers are drawn on the
generator's device (the CPU for a seed) in one dtype, then cast, so the same
seed gives the same draws in float32 and float64 and on every device.
"""

from __future__ import annotations

import torch


def check_randomness(name: str, seed: object, generator: object = None) -> None:
    """Raise unless ``seed`` is None or an int, ``generator`` None or a Generator, not both."""
    if generator is not None and seed is not None:
        raise ValueError(f"{name}: expected at most one of generator and seed, got both")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"{name}: expected seed to be an int or None, got {seed!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name}: expected generator to be a torch.Generator, "
                        f"got {type(generator).__name__}")


def make_generator(name: str, seed: int | None = None,
                   generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> torch.Generator | None:
    """A generator to draw from: fresh on ``device`` from ``seed``, the user's ``generator``,
    or None (torch's global generator) when neither is given."""
    check_randomness(name, seed, generator)
    if seed is not None:
        return torch.Generator(device=device).manual_seed(seed)
    return generator


def generator_device(gen: torch.Generator | None) -> torch.device:
    """Where ``gen`` draws (the CPU for torch's global generator)."""
    return gen.device if gen is not None else torch.device("cpu")
