"""The curriculum of each env that has a preset corpus, by env name."""

from __future__ import annotations

from eef.presets import sciworld, webshop
from eef.presets.base import Curriculum

#: env name -> curriculum (tests and other envs may register more)
CURRICULA: dict[str, Curriculum] = {c.env: c for c in (webshop.CURRICULUM, sciworld.CURRICULUM)}
