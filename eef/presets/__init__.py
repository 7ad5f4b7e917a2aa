"""The tiny from-scratch presets: a small Llama model with a tokenizer trained on an env's text,
pre-trained on that env's curriculum and cached per machine (docs/tiny-preset.md).

==================  ==========================================================================
``base``            build options (``PretrainConfig``), errors, the ``Curriculum`` interface
``tokenizer``       the preset tokenizer (byte-level BPE, identifiers as added tokens)
``model``           preset sizes (``PRESETS``) and ``init_preset``: a freshly initialised model
``webshop``         WebShop's curriculum (tokenizer text, identifiers, pre-training corpus)
``sciworld``        ScienceWorld's curriculum
``curricula``       the curriculum of each env (``CURRICULA``)
``build``           ``build_preset``: build once, resume, cache; ``replay_sequences``
==================  ==========================================================================

``preset:tiny`` in a config is ``build_preset("tiny", env)`` (or ``init_preset`` with
``model.pretrain: false``).
"""

from eef.presets.base import (BuildInterrupted, Curriculum, PresetError, PretrainConfig,
                              PretrainError)
from eef.presets.build import CODE_VERSION, build_key, build_preset, preset_dir, replay_sequences
from eef.presets.curricula import CURRICULA
from eef.presets.model import INFO_FILE, PRESETS, Preset, get_preset, init_preset, preset_config
from eef.presets.tokenizer import train_tokenizer

__all__ = ["BuildInterrupted", "CODE_VERSION", "CURRICULA", "Curriculum", "INFO_FILE", "PRESETS",
           "Preset", "PresetError", "PretrainConfig", "PretrainError", "build_key",
           "build_preset", "get_preset", "init_preset", "preset_config", "preset_dir",
           "replay_sequences", "train_tokenizer"]
