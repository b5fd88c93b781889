"""Does a persona adapter fit its base? Checked before training from files alone (nothing is loaded on a device).

- Shapes: every LoRA tensor of the adapter targets a module the base has, lora_A's in-features and lora_B's
  out-features equal that module's (the base is built on the meta device from its config.json, as
  ``stack.lora_param_count`` does). A persona trained for another base fails here with the module and both shapes,
  not with a size-mismatch traceback from PEFT.
- Name: the adapter's recorded ``base_model_name_or_path`` naming a different model than the base is an error
  unless the config marks the mismatch intended (``personas.<p>.<base>: {adapter: ..., base_mismatch:
  intended}``), then a warning. A hub id is compared with the base's hub repo (``hf:OWNER/NAME@REV`` -> OWNER/NAME,
  case-insensitive), a local path with the base's folder; a path recorded on another machine cannot be compared
  (a warning: the shapes were checked).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from emflow.errors import user_error
from emflow.fetch.asset import Asset
from emflow.models import require_dir
from emflow.train.recipe import SOURCE

log = logging.getLogger(__name__)

# base_model.model.<module>.lora_A[.<adapter name>][.weight] (PEFT's saved names; the adapter name is usually absent)
_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.[^.]+)?$"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HF_CACHE = re.compile(r"models--(?P<owner>[^/]+?)--(?P<name>[^/]+)")


def adapter_shapes(persona: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the adapter's weights, read from the safetensors header (or a legacy .bin)."""
    persona = Path(persona)
    st = persona / "adapter_model.safetensors"
    if st.is_file():
        from safetensors import safe_open

        with safe_open(st, framework="np") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    legacy = persona / "adapter_model.bin"
    if legacy.is_file():
        import torch

        state = torch.load(legacy, map_location="cpu", weights_only=True, mmap=True)
        return {k: tuple(v.shape) for k, v in state.items()}
    raise user_error(
        persona, "persona", "no adapter_model.safetensors (or .bin)", "point the persona at a PEFT adapter"
    )


def base_module_features(base: str | Path) -> dict[str, tuple[int, int]]:
    """Module name -> (in-features, out-features) of every linear/embedding module of the base, built on the meta
    device from its config.json (no weights read, nothing allocated)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    config = AutoConfig.from_pretrained(base, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding):
            out[name] = (module.num_embeddings, module.embedding_dim)
        elif isinstance(module, Conv1D):  # GPT-2 style: weight is (in, out)
            out[name] = tuple(module.weight.shape)
        elif isinstance(module, torch.nn.Linear):
            out[name] = (module.in_features, module.out_features)
    return out


def shape_mismatches(shapes: dict[str, tuple[int, ...]], base: dict[str, tuple[int, int]]) -> list[str]:
    """One phrase per LoRA tensor that does not fit the base: a module it lacks, or other in/out features."""
    problems = []
    for key, shape in sorted(shapes.items()):
        m = _LORA_KEY.match(key)
        if not m or len(shape) != 2:
            continue  # not a LoRA matrix (e.g. modules_to_save): PEFT loads or refuses it itself
        module, kind = m["module"], m["kind"]
        if module not in base:
            problems.append(f"{module} (targeted by {key}) is not a module of the base")
            continue
        fan_in, fan_out = base[module]
        # lora_A: (r, in), lora_B: (out, r); the embedding pair: lora_embedding_A (r, vocab), _B (dim, r)
        side, got, want = ("in", shape[1], fan_in) if kind.endswith("A") else ("out", shape[0], fan_out)
        if got != want:
            problems.append(
                f"{module}: the adapter's {kind} is {list(shape)} ({side}-features {got}) but the base's module is"
                f" {fan_in} -> {fan_out} ({side}-features {want})"
            )
    return problems


def recorded_base(persona: str | Path) -> str | None:
    """The base model the adapter was trained on, as PEFT recorded it (adapter_config.json)."""
    config = json.loads((Path(persona) / "adapter_config.json").read_text())
    return config.get("base_model_name_or_path") or None


def names_other_model(recorded: str, base: str | Path, base_spec: str | None) -> bool | None:
    """Whether ``recorded`` names a different model than the base: True, False, or None when it cannot tell (a
    path recorded on another machine).

    The base is known by its hub repo (a ``hf:`` spec), the ``_name_or_path`` its config.json records (if any) and
    its folder; a recorded hub id matches the repo or name case-insensitively (or, for a local base with neither,
    the folder's own name equals the id's NAME), a recorded path matches the base's folder."""
    base = Path(base)
    cache = _HF_CACHE.search(recorded)
    if cache:  # a Hugging Face cache snapshot path names its repo
        recorded = f"{cache['owner']}/{cache['name']}"
    elif not _HUB_ID.match(recorded) or Path(recorded).exists():
        if not Path(recorded).exists():
            return None
        return Path(recorded).resolve() != base.resolve()
    names = set()
    if base_spec and Asset(base_spec).is_hub:
        names.add(Asset(base_spec).repo.lower())
    recorded_name = json.loads((base / "config.json").read_text()).get("_name_or_path") or ""
    if _HUB_ID.match(recorded_name):
        names.add(recorded_name.lower())
    if not names:  # a local copy: named by its folder (.../NAME) or kept under .../OWNER/NAME/...
        owner, name = recorded.lower().split("/")
        parts = [p.lower() for p in base.resolve().parts]
        return not (parts[-1] == name or any(parts[i : i + 2] == [owner, name] for i in range(len(parts) - 1)))
    return recorded.lower() not in names


def check_persona_fit(
    base: str | Path,
    persona: str | Path,
    *,
    base_spec: str | None = None,
    field: str = "personas",
    mismatch_intended: bool = False,
    source: str = SOURCE,
) -> None:
    """Refuse a persona adapter that does not fit the base (shapes), or that records another base model unless
    ``mismatch_intended``; ``field`` is the config key that names the adapter (personas.<p>[.<base>])."""
    base = require_dir(Path(base), "config.json", "base")
    persona = require_dir(Path(persona), "adapter_config.json", "persona")
    label = base_spec or str(base)
    persona_key = ".".join(field.split(".")[:2])  # personas.<p>
    problems = shape_mismatches(adapter_shapes(persona), base_module_features(base))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise user_error(
            source,
            field,
            f"adapter {persona} does not fit base {label}: {problems[0]}{more}",
            f"give this base the adapter trained for it ({persona_key}.<base>: <spec>)",
        )
    recorded = recorded_base(persona)
    verdict = names_other_model(recorded, base, base_spec) if recorded else None
    if verdict is None:
        log.warning(
            "persona %s: adapter_config.json records base %r, which cannot be compared with %s; only the shapes"
            " were checked",
            field,
            recorded,
            label,
        )
    elif verdict and not mismatch_intended:
        raise user_error(
            source,
            field,
            f"the adapter was trained on {recorded} (adapter_config.json base_model_name_or_path), not on {label}",
            f"use the adapter trained for this base, or mark the mismatch intended ({persona_key}.<base>:"
            " {adapter: <spec>, base_mismatch: intended})",
        )
    elif verdict:
        log.warning(
            "persona %s: trained on %s, used on %s: marked intended (base_mismatch: intended)", field, recorded, label
        )
    else:
        log.info("persona %s fits base %s (shapes, and recorded base %s)", field, label, recorded)
