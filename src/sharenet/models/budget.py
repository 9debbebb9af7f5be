"""A parameter budget met by every scheme: the ring's size, or the widest network that fits.

- ring: the count is (everything outside the ring) + ring_size, so the ring size that makes
  `count_params` exactly N is N minus the rest; feasible from one entry up to one per kernel entry
  (the unshared network's count).
- every other scheme: the widest network (the scheme's other options as given) whose count is at
  most N. Counts grow with the width, so a binary search over widths finds it; a width the
  architecture cannot take (odd widths under option A shortcuts) counts as the next feasible one
  below it.
Counting builds the network on the meta device: no memory, no initialisation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InvalidArgumentError
from .accounting import count_params

MAX_WIDTH = 1 << 16  # far past any network a budget could buy; ends the search for an unreachable one


def count_on_meta(
    build: Callable[..., torch.nn.Module], count: Callable[[torch.nn.Module], int] = count_params, **kwargs
) -> int:
    """What `count` counts (its parameters, by default) of `build(**kwargs)` built on the meta device:
    no memory, no initialisation, no random numbers drawn from the caller's stream; a model `build`
    refuses raises as it would on any device."""
    with torch.device("meta"):
        return count(build(**kwargs))


def chosen(config: dict) -> str:
    """What a budget chose for a model (its `config`), as `sharenet params` and `sharenet train` print it."""
    if config["share"] == "ring":
        relaxed = f", corrections of rank {config['relax_rank']}" if config.get("relax_rank") else ""
        return f"ring of {config['ring_size']:,} entries{relaxed}"
    if config.get("relax_rank"):
        return f"width {config['width']}, corrections of rank {config['relax_rank']} (the largest that fits)"
    return f"width {config['width']} (the widest that fits)"


def ring_size_for(params: int, build: Callable[..., torch.nn.Module], what: str) -> int:
    """The ring size whose network counts exactly `params` (`build(ring_size=...)` makes it)."""
    with torch.device("meta"):  # builds nothing real, draws no random numbers
        model = build(ring_size=1)
    rest = count_params(model) - 1
    total = model.plan.ring_total
    if not rest < params <= rest + total:
        raise InvalidArgumentError(
            f"params={params:,} is out of reach of {what}: the stem, BatchNorms and classifier need {rest:,}, "
            f"and the ring can hold one to {total:,} entries (the unshared network's count), so a budget must be "
            f"in [{rest + 1:,}, {rest + total:,}]"
        )
    return params - rest


def widest_for(params: int, build: Callable[..., torch.nn.Module], what: str) -> int:
    """The largest width whose network (`build(width=...)`) counts at most `params`."""
    cache: dict[int, tuple[int, int] | None] = {}

    def feasible_below(width: int) -> tuple[int, int] | None:
        """(width, count) of the widest buildable network at most `width` wide, or None."""
        for w in range(width, max(0, width - 4), -1):
            if w not in cache:
                try:
                    cache[w] = (w, count_on_meta(build, width=w))
                except InvalidArgumentError:
                    cache[w] = None
            if cache[w] is not None:
                return cache[w]
        return None

    def fits(width: int) -> bool:
        found = feasible_below(width)
        return found is not None and found[1] <= params

    narrowest = next((feasible_below(w) for w in range(1, 5) if feasible_below(w)), None)
    if narrowest is None or narrowest[1] > params:
        least = f": the narrowest (width {narrowest[0]}) has {narrowest[1]:,} parameters" if narrowest else ""
        raise InvalidArgumentError(f"no width of {what} fits params={params:,}{least}")
    low, high = narrowest[0], 2 * narrowest[0]
    while fits(high):
        if high >= MAX_WIDTH:
            raise InvalidArgumentError(f"params={params:,} buys {what} wider than {MAX_WIDTH:,} channels")
        low, high = high, 2 * high
    while high - low > 1:  # fits(low), not fits(high)
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return feasible_below(low)[0]
