"""One description per backend, declared in the backend's own module, read by the miner and the fleet.

The miner uses it to build the backend from its settings group. The fleet (``orchestrator``) derives
the backend's section of ``miners.yaml`` from it (every setting of the group, except the ones the fleet
fills in itself: a model is named under ``models:`` instead of a path, a secret is named by its
variable) and loops over the descriptions to choose images, mount models and check miners: adding a
backend is one module, not an ``if backend == ...`` in seven files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from services.miner.backends.base import Backend


# The images every backend may run on, and the Dockerfile target building each; a backend with an image
# of its own names it and its target in its spec.
SHARED_IMAGE_TARGETS: dict[str, str] = {"cpu": "miner", "cuda": "miner-cuda"}


class Memory(StrEnum):
    """What a miner of this backend holds in memory (the fleet sizes container limits from it)."""

    python = "python"  # the Python process only (no model in the miner)
    gguf = "gguf"  # a GGUF model in llama.cpp: the file plus its KV cache
    torch = "torch"  # a transformers model: several times the file


@dataclass(frozen=True)
class BackendSpec:
    """What the miner and the fleet need to know about one backend."""

    name: str  # the backend's name: MINER_BACKEND's value and its settings group (MINER_<NAME>__*)
    settings: type[BaseModel]  # its settings group: ``MinerSettings.<name>``
    create: Callable[[Any], Backend]  # the backend, from its group's settings (heavy imports wait for load)
    summary: str  # one line for the fleet file's docs
    image: str = "cpu"  # the image it runs on without a GPU: cpu or hf
    gpu_image: str | None = "cuda"  # the image with a GPU (None: it has no GPU build)
    # The Dockerfile target that builds ``image`` when that image is the backend's own (None: it runs on
    # the shared images, SHARED_IMAGE_TARGETS).
    image_target: str | None = None
    # Settings the fleet fills in from the model named under `models:`: the model's path, and (if given) a
    # second naming a GGUF file inside the first (a .gguf model then goes as its folder and its name).
    model_settings: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()  # settings passed from the environment by name (`<name>_env` in the fleet)
    model_server: bool = False  # may use one of the fleet's model servers instead of an address of its own
    address: str | None = None  # the setting holding that address of its own (base_url)
    served_model: str | None = None  # the setting naming the model asked of a server (default: the server's)
    shared_slots: str | None = None  # the setting that gets a fleet model server's slots (shared admission)
    gpu_settings: tuple[str, ...] = ()  # settings that put it on a GPU (the fleet checks they have one)
    memory: Memory = Memory.python
    model_name: Callable[[Any], str] = lambda group: ""  # the model's own name, from its group's settings

    @property
    def needs_model(self) -> bool:
        return bool(self.model_settings)

    @property
    def loads_one_file(self) -> bool:
        """Its model is one GGUF file (llama.cpp), never a folder (the fleet checks the path)."""
        return self.memory is Memory.gguf

    @property
    def in_process(self) -> bool:
        """The model runs inside the miner (one generation at a time)."""
        return self.memory is not Memory.python

    def wants_gpu(self, group: BaseModel | None) -> bool:
        """Whether the fleet's options for this backend ask for a GPU (n_gpu_layers, a cuda device)."""
        if group is None:
            return False
        for name in self.gpu_settings:
            value = getattr(group, name, None)
            if isinstance(value, str) and value.startswith("cuda"):
                return True
            if isinstance(value, int) and not isinstance(value, bool) and value != 0:
                return True
        return False
